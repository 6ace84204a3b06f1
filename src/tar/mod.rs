//! The tar side: from store paths to the exact bytes of a layer tar.
//!
//! [`walk`] lists a layer's entries in the reference's order and records
//! each file's identity; [`layer`] encodes them, with headers from
//! [`header`] and file contents read by [`filedata`]; [`relay`] moves the
//! encoded bytes from a producer thread to the output, splicing large files
//! where the output allows it.
pub mod filedata;
pub mod header;
pub mod layer;
pub mod relay;
pub mod walk;
