//! Subcommands of the `stream-layered-image` binary.
pub mod build;
pub mod diff;
pub mod hints;
pub mod layers;
