//! Image assembly: what goes around the store layers.
//!
//! [`base`] reads a `from_image`, [`custom`] the customisation layer
//! ([`custom_layer`] writes one from a tree, for builders without GNU tar),
//! [`config`] writes the image config (byte-identical to the reference's),
//! and [`oci`] the OCI manifest, index and layout documents.
pub mod base;
pub mod config;
pub mod custom;
pub mod custom_layer;
pub mod oci;
