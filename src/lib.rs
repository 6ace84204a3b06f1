//! Streams layered container images built from Nix or Guix store paths.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod isotime;
pub mod layering;
pub mod pyjson;
pub mod pyrepr;
