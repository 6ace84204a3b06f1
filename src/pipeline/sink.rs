//! The interface the pipeline feeds: what a destination implements (the
//! destinations themselves are in [`crate::sink`]).

use std::sync::Arc;

use crate::error::Result;
use crate::image::oci::BlobRef;
use crate::pipeline::{Finished, Layer, Plan};
use crate::progress::Progress;

/// A destination of the image.
pub trait Sink {
    /// The destination, for messages: `-o img.tar`, `registry
    /// localhost:5000/app:1`.
    fn destination(&self) -> String;

    /// Whether the hashing pass must also compress each layer, to learn
    /// its blob's digest and size before [`Sink::layer`].
    fn wants_blobs(&self) -> bool {
        false
    }

    /// Whether the sink reads every layer's bytes. One that reads only
    /// some (a registry: what it lacks) says no; layers known from
    /// `store_layer_digests` are then not walked ahead, and one that is
    /// not wanted is never opened.
    fn reads_layers(&self) -> bool {
        true
    }

    /// Work to do on the hashing workers, if any (called once, before the
    /// run).
    fn hook(&mut self) -> Option<Arc<dyn LayerHook>> {
        None
    }

    /// Before the first layer.
    fn begin(&mut self, _plan: &Plan<'_>) -> Result<()> {
        Ok(())
    }

    /// Each layer, in order, once hashed (and once every hook is done with
    /// it).
    fn layer(&mut self, layer: &Layer<'_>, progress: &Progress) -> Result<()>;

    /// After the last layer, with the config; returns the bytes the sink
    /// wrote as a stream (0 for one that writes none).
    fn finish(&mut self, plan: &Plan<'_>, image: &Finished<'_>, progress: &Progress)
        -> Result<u64>;
}

/// Per-layer work a sink does on the hashing workers, several layers at
/// once, as soon as each is hashed.
pub trait LayerHook: Send + Sync {
    /// Called once per layer; returns the blob the destination now holds,
    /// when it learned one the hashing pass did not compute.
    fn hashed(&self, layer: &Layer<'_>, progress: &Progress) -> Result<Option<BlobRef>>;
}
