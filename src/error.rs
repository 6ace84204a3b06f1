//! The library's error type.
//!
//! Every variant renders as one line that names the file, key or path at
//! fault. Paths are shown with `{:?}` so that newlines, control characters
//! and bytes that are not UTF-8 are escaped instead of breaking the line.

use std::io;
use std::path::PathBuf;

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or inspected.
    #[error("{path:?}: {action}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What we were doing, e.g. "reading".
        action: &'static str,
        /// The underlying error (not a `source()`: the message includes it).
        cause: io::Error,
    },
    /// The spec is not valid JSON.
    #[error("{path:?}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// The spec file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser found.
        message: String,
    },
    /// A spec key is missing or has the wrong type or value.
    #[error("{path:?}: key {key:?}: {problem}")]
    SpecKey {
        /// The spec file.
        path: PathBuf,
        /// The key, with its position for nested values (`store_layers[2][0]`).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A store path does not lie inside `store_dir`.
    #[error("store path {path:?} is not inside store_dir {store_dir:?}")]
    OutsideStore {
        /// The offending path.
        path: String,
        /// The spec's store directory.
        store_dir: String,
    },
    /// A store path holds something a Nix or Guix store cannot.
    #[error(
        "{path:?}: {kind} inside a store path; a store holds only files, directories and symlinks"
    )]
    UnsupportedFileType {
        /// The offending file.
        path: PathBuf,
        /// "fifo", "socket", "character device" or "block device".
        kind: &'static str,
    },
    /// A file changed between the two passes over its layer.
    #[error("{path:?} changed while the image was being written ({what}); refusing to write an image that does not match its digests")]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// What differs.
        what: String,
    },
    /// The bytes streamed for a layer differ from the bytes hashed for it.
    #[error("layer {layer}: streamed bytes have digest sha256:{actual}, but sha256:{expected} was hashed; a store file changed during the run")]
    DigestMismatch {
        /// 1-based layer number.
        layer: usize,
        /// Digest from the hashing pass.
        expected: String,
        /// Digest of what was streamed.
        actual: String,
    },
    /// The streamed size of a layer differs from the hashed size.
    #[error("layer {layer}: streamed {actual} bytes, but {expected} were hashed; a store file changed during the run")]
    SizeMismatch {
        /// 1-based layer number.
        layer: usize,
        /// Size from the hashing pass.
        expected: u64,
        /// Size of what was streamed.
        actual: u64,
    },
    /// A layer's bytes differ from what its record in the record cache
    /// says, though its files kept their identities.
    #[error("layer {layer}: {what} is {actual}, but the record cache's entry {entry:?} records {expected}; a store file changed and kept its inode, size, mtime and ctime: remove the entry")]
    CachedRecordMismatch {
        /// 1-based layer number in the image.
        layer: usize,
        /// The record cache's entry.
        entry: PathBuf,
        /// What was compared.
        what: String,
        /// The recorded digest and size.
        expected: String,
        /// The digest and size of the bytes produced.
        actual: String,
    },
    /// A layer's bytes differ from what the spec's `store_layer_digests`
    /// records for it: the store changed since the record was taken.
    #[error("layer {layer}: {what} is {actual}, but {key} records {expected}; the store changed since stream-layered-image digest ran, so the record is stale: run it again")]
    RecordMismatch {
        /// 1-based layer number in the image.
        layer: usize,
        /// The record, `store_layer_digests[N]`.
        key: String,
        /// What was compared: `its diff_id`, `its gzip:5 blob`.
        what: String,
        /// The recorded digest and size.
        expected: String,
        /// The digest and size of the bytes produced.
        actual: String,
    },
    /// The customisation layer directory is unusable.
    #[error("customisation layer {dir:?}: {problem}")]
    Customisation {
        /// The directory named by `customisation_layer`.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The base image archive is unusable.
    #[error("base image {path:?}: {problem}")]
    BaseImage {
        /// The archive named by `from_image`.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Writing the output failed.
    #[error("writing the image: {0}")]
    Output(io::Error),
    /// A registry refused or failed a push.
    #[error("pushing to {registry}: {problem}")]
    Push {
        /// `HOST[:PORT]`.
        registry: String,
        /// What went wrong.
        problem: String,
    },
    /// A container engine (`--load`) could not be reached, or failed or
    /// refused a call.
    #[error("--load {engine}: {call}: {problem}")]
    Engine {
        /// `docker` or `podman`.
        engine: &'static str,
        /// The call and where it went: `POST /images/load on
        /// /var/run/docker.sock`, `podman load`.
        call: String,
        /// What went wrong.
        problem: String,
    },
    /// An option or combination of options is not valid.
    #[error("{0}")]
    Usage(String),
    /// Some of several destinations failed (each of them alone would have
    /// ended the run with its own error).
    #[error("{}", destinations_message(*total, failed, succeeded))]
    Destinations {
        /// How many destinations the run had.
        total: usize,
        /// Each failed destination and its error.
        failed: Vec<(String, Error)>,
        /// The destinations that got the image.
        succeeded: Vec<String>,
    },
    /// A registry credentials file, credential helper or certificate file
    /// is unusable.
    #[error("{path:?}: {problem}")]
    AuthFile {
        /// The file (for a helper: the file that names it).
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn destinations_message(total: usize, failed: &[(String, Error)], succeeded: &[String]) -> String {
    let failures: Vec<String> = failed
        .iter()
        .map(|(name, e)| {
            // An error that names its destination already (`--load
            // docker: ...`) is not prefixed twice.
            let message = e.to_string();
            match message.strip_prefix(name.as_str()) {
                Some(rest) if rest.starts_with(": ") => message,
                _ => format!("{name}: {message}"),
            }
        })
        .collect();
    let got = if succeeded.is_empty() {
        "none got the image".to_owned()
    } else {
        format!("the image went to {}", succeeded.join(", "))
    };
    format!(
        "{} of {total} destinations failed: {}; {got}",
        failed.len(),
        failures.join("; ")
    )
}

impl Error {
    /// An I/O error on `path` while doing `action`.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, cause: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action,
            cause,
        }
    }

    /// Whether this is a closed pipe on the output, which callers treat as
    /// the reader having seen all it wanted.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}
