//! The binary's side: parsing (declared once in [`args`]) and one module
//! per subcommand, each a thin layer over the library.
pub mod args;
pub mod build;
pub mod custom_layer;
pub mod diff;
pub mod digest;
pub mod hints;
pub mod layers;
pub mod output;
