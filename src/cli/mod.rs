//! Subcommands of the `stream-layered-image` binary.
pub mod diff;
pub mod layers;
