//! Destinations: one [`Sink`] per kind, each in its own module.
//!
//! The pipeline ([`crate::pipeline`]) is the one producer; it hands every
//! sink the same stream: [`Sink::begin`], then each layer in order
//! ([`Sink::layer`]), then the config ([`Sink::finish`]). A sink that can
//! use a layer as soon as it is hashed, out of order and in parallel (a
//! registry upload), also gives the pipeline a [`LayerHook`] that the
//! hashing workers call.
//!
//! * [`docker_archive`]: the `docker save` v1.2 archive, byte-identical to
//!   nixpkgs' script;
//! * [`oci_layout`]: an OCI image layout, as a tar (`oci-archive`, and
//!   `docker+oci` with Docker's `manifest.json` too) or as a directory;
//! * [`registry`]: a push to a registry, through [`crate::registry`];
//! * [`engine`]: `--load`, into a local Docker engine (through its API) or
//!   podman.
//!
//! The two traits are the pipeline's ([`crate::pipeline::Sink`],
//! [`crate::pipeline::LayerHook`]), re-exported here: sinks depend on the
//! pipeline's types, never the other way round.

pub mod docker_archive;
pub mod engine;
pub mod members;
pub mod oci_layout;
pub mod registry;

pub use crate::pipeline::{LayerHook, Sink};
