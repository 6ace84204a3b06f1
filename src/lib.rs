//! Streams layered container images built from Nix or Guix store paths.
//!
//! The data flows through the modules in this order: [`spec`] reads the
//! JSON spec, [`walk`] lists each layer's store paths deterministically,
//! [`layer`] encodes a layer's tar (with headers from [`tarheader`] and file
//! contents from [`filedata`]), and [`image`] hashes layers in parallel and
//! streams the docker-archive. [`base_image`] reads a `from_image`.
//! [`layering`] decides which store paths share a layer.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod base_image;
pub mod compress;
pub mod custom_layer;
pub mod digest;
pub mod error;
pub mod filedata;
pub mod image;
pub mod isotime;
pub mod layer;
pub mod layering;
pub mod oci;
pub mod progress;
pub mod push;
pub mod pyjson;
pub mod pyrepr;
pub mod pystr;
pub mod relay;
pub mod schedule;
pub mod spec;
pub mod tarheader;
pub mod walk;

pub use error::{Error, Result};
