//! Subcommands of the `stream-layered-image` binary.
pub mod build;
pub mod custom_layer;
pub mod diff;
pub mod layers;
