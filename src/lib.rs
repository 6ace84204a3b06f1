//! Streams layered container images built from Nix or Guix store paths.
//!
//! The modules follow the data, one folder a stage:
//!
//! 1. [`spec`] reads the JSON spec (with [`pycompat`], which reproduces
//!    CPython's JSON, `repr`, `str` and ISO time so that the bytes match
//!    nixpkgs' script);
//! 2. [`tar`] turns store paths into layer tars: the deterministic walk,
//!    the one layer encoder, CPython-exact headers, bounded file reads and
//!    the relay that hands bytes to the output thread;
//! 3. [`image`] holds what assembles an image around its layers: the base
//!    image, the customisation layer, the config and the OCI documents;
//! 4. [`pipeline`] hashes the layers in parallel and then produces them in
//!    order, feeding every [`sink`] it is given the same stream of layers,
//!    digests and config;
//! 5. [`sink`] has one destination per module (docker-archive, OCI layout,
//!    registry, a local engine's `load`), each behind the [`sink::Sink`]
//!    trait; [`registry`] is the registry client the registry sink uses,
//!    [`engine`] the Docker Engine API client of `--load docker`.
//!
//! [`record`] holds layer digests taken ahead of a build (the
//! `store_layer_digests` spec key), which let the pipeline skip the
//! hashing pass and a push skip reading what the registry has.
//!
//! [`layering`] decides which store paths share a layer, from a references
//! graph, apart from all of the above: it never touches tar.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod compress;
pub mod digest;
pub mod engine;
pub mod error;
pub mod escape;
pub mod image;
pub mod layering;
pub mod pipeline;
pub mod progress;
pub mod pycompat;
pub mod record;
pub mod record_cache;
pub mod registry;
pub mod sbom;
pub mod sink;
pub mod spec;
pub mod tar;

pub use error::{Error, Result};
