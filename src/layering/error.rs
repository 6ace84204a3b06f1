//! Errors of the layering module.

use std::path::PathBuf;

/// Everything that can go wrong while reading a references graph or
/// splitting it into layers.
///
/// Every variant renders as one line that names the file, line, key or store
/// path at fault.
#[derive(Debug, thiserror::Error)]
pub enum LayeringError {
    /// A file could not be read.
    #[error("{path:?}: {action}: {cause}")]
    Io {
        /// The file or store path.
        path: PathBuf,
        /// What we were doing, e.g. "reading".
        action: &'static str,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// The graph is JSON but not a references graph.
    #[error("{origin}: {message}")]
    BadJson {
        /// Where the graph came from (a file name or "<input>").
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A record of the text or registration format is malformed.
    #[error("{origin}:{line}: {message}")]
    BadRecord {
        /// Where the graph came from.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A store path is listed twice.
    #[error("{origin}: store path {path:?} is listed more than once")]
    Duplicate {
        /// Where the graph came from.
        origin: String,
        /// The store path.
        path: String,
    },
    /// A reference names a store path that has no record of its own.
    #[error("{origin}: {from:?} refers to {to:?}, which is not in the graph")]
    Dangling {
        /// Where the graph came from.
        origin: String,
        /// The referring path.
        from: String,
        /// The missing path.
        to: String,
    },
    /// The references form a cycle (self-references are allowed).
    #[error("{origin}: the references form a cycle: {}", .cycle.join(" -> "))]
    Cycle {
        /// Where the graph came from.
        origin: String,
        /// The paths on the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// The graph holds no store path at all.
    #[error("{origin}: the graph holds no store path")]
    Empty {
        /// Where the graph came from.
        origin: String,
    },
    /// A layering hints file is malformed, of another tool or of a version
    /// this build does not read.
    #[error("{origin}: {message}")]
    BadHints {
        /// The hints file.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A layer budget of zero.
    #[error("the layer budget must be at least 1")]
    ZeroBudget,
    /// The layering pipeline is malformed or fails on this graph.
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// A strategy produced more layers than allowed.
    #[error("{strategy} produced {got} layers, more than the budget of {max}")]
    OverBudget {
        /// The strategy's name.
        strategy: String,
        /// How many layers it made.
        got: usize,
        /// The budget.
        max: usize,
    },
}

/// Result type of the layering module.
pub type Result<T, E = LayeringError> = std::result::Result<T, E>;
