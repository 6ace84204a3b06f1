//! The customisation layer: a directory holding a ready `layer.tar` and its
//! `checksum`, as nixpkgs' builders make it.
//!
//! The reference trusts the checksum; we check it against the bytes while
//! hashing, and check the file's identity again whenever it is read.

use std::path::{Path, PathBuf};

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// The customisation layer named by the spec's `customisation_layer`.
#[derive(Debug)]
pub struct CustomLayer {
    /// The directory, as the spec wrote it.
    pub dir: String,
    /// `DIR/layer.tar`.
    pub tar_path: PathBuf,
    /// The sha256 that `DIR/checksum` states.
    pub checksum: Sha256Digest,
    /// `layer.tar`'s metadata, taken once; every read is checked against it.
    pub meta: std::fs::Metadata,
}

impl CustomLayer {
    /// Opens the layer in `dir`, checking that `checksum` and `layer.tar`
    /// are there and well-formed.
    pub fn open(dir: &str) -> Result<CustomLayer> {
        let bad = |problem: String| Error::Customisation {
            dir: PathBuf::from(dir),
            problem,
        };
        let checksum_path = Path::new(dir).join("checksum");
        let text = std::fs::read_to_string(&checksum_path)
            .map_err(|e| bad(format!("cannot read \"checksum\": {e}")))?;
        let checksum = Sha256Digest::from_hex(text.trim()).ok_or_else(|| {
            bad(format!(
                "\"checksum\" must hold 64 hex digits, found {:?}",
                text.trim()
            ))
        })?;
        let tar_path = Path::new(dir).join("layer.tar");
        let meta = std::fs::symlink_metadata(&tar_path)
            .map_err(|e| bad(format!("cannot use \"layer.tar\": {e}")))?;
        if !meta.is_file() {
            return Err(bad("\"layer.tar\" is not a regular file".into()));
        }
        Ok(CustomLayer {
            dir: dir.to_owned(),
            tar_path,
            checksum,
            meta,
        })
    }
}
