//! Subcommands of the `stream-layered-image` binary.
pub mod layers;
