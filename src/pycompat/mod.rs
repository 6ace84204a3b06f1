//! Python compatibility: what it takes to write CPython's exact bytes.
//!
//! nixpkgs' script is Python, and its output depends on how CPython 3.11
//! parses and prints JSON ([`json`]), quotes a list of strings ([`repr`]),
//! decodes and sorts file names ([`str`]) and reads and prints times
//! ([`isotime`]). Nothing else in the crate needs to know any of this.
pub mod isotime;
pub mod json;
pub mod repr;
pub mod str;
