//! Reading a references graph: the closure of an image's store paths, each
//! with its direct references and its size.
//!
//! Three formats are recognised by their first bytes, so callers never name
//! one:
//!
//! * **Structured JSON** (`exportReferencesGraph` with `__structuredAttrs`):
//!   a list of `{"path", "references", "narSize"}` objects, either at the top
//!   level or under the key `"graph"` of an object, which is how it sits in a
//!   derivation's `.attrs.json`. `references` may or may not list the path
//!   itself. Gzip-compressed input is accepted too.
//! * **Text** (`exportReferencesGraph` without structured attrs, and Guix's
//!   `#:references-graphs`): records of a path, its deriver (often an empty
//!   line), a count, then that many references.
//! * **Registration** (closureInfo's `registration`, the input of
//!   `nix-store --load-db`): like the text format with two extra lines after
//!   the path, the NAR hash and the NAR size.
//!
//! A store path without a size (the text format never has one) is measured
//! on disk: the sum of the `lstat` sizes of its regular files and symlinks,
//! never following a symlink.
//!
//! The graph is validated once here, so the strategies can rely on it: every
//! path is listed once, every reference names a listed path, and apart from
//! self-references the references form no cycle.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value;

use super::error::{LayeringError, Result};

/// One store path of a references graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The store path, e.g. `/nix/store/<hash>-hello-2.12`.
    pub path: String,
    /// Indices of the paths it refers to directly, in input order, without
    /// itself and without repeats.
    pub references: Vec<usize>,
    /// Its size in bytes (`narSize`, or measured on disk).
    pub nar_size: u64,
}

/// A store path as read, before references are resolved to indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawNode {
    /// The store path.
    pub path: String,
    /// The paths it refers to; may include itself.
    pub references: Vec<String>,
    /// Its size, if the input gave one.
    pub nar_size: Option<u64>,
    /// Its NAR hash as the input wrote it (`sha256:<base32 or hex>` or
    /// `sha256-<base64>`), if it gave one.
    pub nar_hash: Option<String>,
}

/// A validated references graph: a closed, acyclic set of store paths.
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    users: Vec<Vec<usize>>,
    /// Each path's NAR hash, where the input gave one; kept apart from
    /// [`Node`] because only the SBOM reads it.
    nar_hashes: Vec<Option<String>>,
}

impl Graph {
    /// Reads a graph file in any of the supported formats (see the module
    /// documentation), measuring missing sizes on disk.
    pub fn read(path: &Path) -> Result<Graph> {
        let bytes = std::fs::read(path).map_err(|cause| LayeringError::Io {
            path: path.to_path_buf(),
            action: "reading",
            cause,
        })?;
        Graph::parse(&bytes, &path.display().to_string())
    }

    /// Parses a graph from bytes; `origin` names it in error messages.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Graph> {
        let raw = parse_raw(bytes, origin)?;
        Graph::from_raw(raw, origin)
    }

    /// Builds and validates a graph from raw records, measuring the size of
    /// every record that has none.
    pub fn from_raw(raw: Vec<RawNode>, origin: &str) -> Result<Graph> {
        if raw.is_empty() {
            return Err(LayeringError::Empty {
                origin: origin.to_string(),
            });
        }
        let mut index = HashMap::with_capacity(raw.len());
        for (i, node) in raw.iter().enumerate() {
            if index.insert(node.path.clone(), i).is_some() {
                return Err(LayeringError::Duplicate {
                    origin: origin.to_string(),
                    path: node.path.clone(),
                });
            }
        }
        let sizes: Vec<u64> = raw
            .par_iter()
            .map(|node| match node.nar_size {
                Some(size) => Ok(size),
                None => measure_on_disk(Path::new(&node.path)),
            })
            .collect::<Result<_>>()?;
        let mut nodes = Vec::with_capacity(raw.len());
        let mut nar_hashes = Vec::with_capacity(raw.len());
        for (i, (node, nar_size)) in raw.into_iter().zip(sizes).enumerate() {
            nar_hashes.push(node.nar_hash);
            let mut references = Vec::with_capacity(node.references.len());
            for reference in &node.references {
                let Some(&target) = index.get(reference) else {
                    return Err(LayeringError::Dangling {
                        origin: origin.to_string(),
                        from: node.path.clone(),
                        to: reference.clone(),
                    });
                };
                if target != i && !references.contains(&target) {
                    references.push(target);
                }
            }
            nodes.push(Node {
                path: node.path,
                references,
                nar_size,
            });
        }
        let mut users = vec![Vec::new(); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            for &r in &node.references {
                users[r].push(i);
            }
        }
        let graph = Graph {
            nodes,
            index,
            users,
            nar_hashes,
        };
        graph.check_acyclic(origin)?;
        Ok(graph)
    }

    fn check_acyclic(&self, origin: &str) -> Result<()> {
        // Iterative depth-first search with three colours.
        const WHITE: u8 = 0;
        const GREY: u8 = 1;
        const BLACK: u8 = 2;
        let mut colour = vec![WHITE; self.nodes.len()];
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for start in 0..self.nodes.len() {
            if colour[start] != WHITE {
                continue;
            }
            colour[start] = GREY;
            stack.push((start, 0));
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&child) = self.nodes[node].references.get(*next) {
                    *next += 1;
                    match colour[child] {
                        WHITE => {
                            colour[child] = GREY;
                            stack.push((child, 0));
                        }
                        GREY => {
                            let from = stack.iter().position(|&(n, _)| n == child).unwrap_or(0);
                            let mut cycle: Vec<String> = stack[from..]
                                .iter()
                                .map(|&(n, _)| self.nodes[n].path.clone())
                                .collect();
                            cycle.push(self.nodes[child].path.clone());
                            return Err(LayeringError::Cycle {
                                origin: origin.to_string(),
                                cycle,
                            });
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = BLACK;
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// Number of store paths.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph holds no path (never true for a parsed graph).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The store paths, in input order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One store path by index.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The index of a store path.
    pub fn index_of(&self, path: &str) -> Option<usize> {
        self.index.get(path).copied()
    }

    /// Indices of the paths that refer to `i` directly.
    pub fn users(&self, i: usize) -> &[usize] {
        &self.users[i]
    }

    /// Total size of all paths.
    pub fn total_size(&self) -> u64 {
        self.nodes.iter().map(|n| n.nar_size).sum()
    }

    /// Indices ordered so that every path comes after all its references.
    pub fn topological_order(&self) -> Vec<usize> {
        let mut pending: Vec<usize> = self.nodes.iter().map(|n| n.references.len()).collect();
        let mut ready: Vec<usize> = (0..self.len()).filter(|&i| pending[i] == 0).rev().collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for &u in self.users(i).iter().rev() {
                pending[u] -= 1;
                if pending[u] == 0 {
                    ready.push(u);
                }
            }
        }
        order
    }

    /// Returns the graph without the given paths (and without references to
    /// them), keeping the input order of the others.
    pub fn without(&self, exclude: &dyn Fn(&str) -> bool) -> Graph {
        let keep: Vec<bool> = self.nodes.iter().map(|n| !exclude(&n.path)).collect();
        let raw: Vec<RawNode> = self
            .nodes
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k)
            .map(|(n, _)| RawNode {
                path: n.path.clone(),
                references: n
                    .references
                    .iter()
                    .filter(|&&r| keep[r])
                    .map(|&r| self.nodes[r].path.clone())
                    .collect(),
                nar_size: Some(n.nar_size),
                nar_hash: None,
            })
            .collect();
        let nar_hashes = (0..self.nodes.len())
            .filter(|&i| keep[i])
            .map(|i| self.nar_hashes[i].clone())
            .collect();
        let mut index = HashMap::with_capacity(raw.len());
        for (i, n) in raw.iter().enumerate() {
            index.insert(n.path.clone(), i);
        }
        let nodes: Vec<Node> = raw
            .into_iter()
            .map(|n| Node {
                references: n.references.iter().map(|r| index[r]).collect(),
                path: n.path,
                nar_size: n.nar_size.unwrap_or(0),
            })
            .collect();
        let mut users = vec![Vec::new(); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            for &r in &node.references {
                users[r].push(i);
            }
        }
        Graph {
            nodes,
            index,
            users,
            nar_hashes,
        }
    }

    /// The NAR hash of path `i`, as the input wrote it, if it gave one.
    pub fn nar_hash(&self, i: usize) -> Option<&str> {
        self.nar_hashes[i].as_deref()
    }
}

/// Measures a store path on disk: the sum of the `lstat` sizes of its
/// regular files and symlinks, without following symlinks.
pub fn measure_on_disk(path: &Path) -> Result<u64> {
    let io = |path: &Path, action: &'static str| {
        let path: PathBuf = path.to_path_buf();
        move |cause| LayeringError::Io {
            path,
            action,
            cause,
        }
    };
    let meta = std::fs::symlink_metadata(path).map_err(io(path, "measuring"))?;
    if !meta.is_dir() {
        return Ok(if meta.is_file() || meta.file_type().is_symlink() {
            meta.len()
        } else {
            0
        });
    }
    let mut total = 0u64;
    let mut todo = vec![path.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir, "listing"))? {
            let entry = entry.map_err(io(&dir, "listing"))?;
            let meta =
                std::fs::symlink_metadata(entry.path()).map_err(io(&entry.path(), "measuring"))?;
            if meta.is_dir() {
                todo.push(entry.path());
            } else if meta.is_file() || meta.file_type().is_symlink() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Parses any supported format into raw records (no validation).
pub fn parse_raw(bytes: &[u8], origin: &str) -> Result<Vec<RawNode>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|cause| LayeringError::Io {
                path: PathBuf::from(origin),
                action: "decompressing",
                cause,
            })?;
        // One level only: each level multiplies what a small file can make
        // us hold in memory by up to a thousand.
        if out.starts_with(&[0x1f, 0x8b]) {
            return Err(LayeringError::Io {
                path: PathBuf::from(origin),
                action: "decompressing",
                cause: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the data is gzip-compressed twice; only one level is accepted",
                ),
            });
        }
        return parse_raw(&out, origin);
    }
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(LayeringError::Empty {
            origin: origin.to_string(),
        }),
        Some(b'[') | Some(b'{') => parse_json(bytes, origin),
        Some(_) => parse_text(bytes, origin),
    }
}

fn bad_json(origin: &str, message: impl Into<String>) -> LayeringError {
    LayeringError::BadJson {
        origin: origin.to_string(),
        message: message.into(),
    }
}

fn parse_json(bytes: &[u8], origin: &str) -> Result<Vec<RawNode>> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        bad_json(
            origin,
            format!(
                "invalid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let list = match &value {
        Value::Array(list) => list,
        Value::Object(map) => match map.get("graph") {
            Some(Value::Array(list)) => list,
            Some(_) => return Err(bad_json(origin, "\"graph\" is not a list")),
            None => {
                // Any single key holding a list of path records, like an
                // .attrs.json whose exportReferencesGraph key is not "graph".
                let mut candidates = map.iter().filter(|(_, v)| {
                    matches!(v, Value::Array(l) if l.first().is_some_and(|x| x.get("path").is_some()))
                });
                match (candidates.next(), candidates.next()) {
                    (Some((_, Value::Array(list))), None) => list,
                    _ => {
                        return Err(bad_json(
                            origin,
                            "expected a list of {path, references, narSize} objects or an object with key \"graph\"",
                        ))
                    }
                }
            }
        },
        _ => return Err(bad_json(origin, "expected a list or an object")),
    };
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let obj = item
                .as_object()
                .ok_or_else(|| bad_json(origin, format!("graph entry {i} is not an object")))?;
            let path = obj
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| bad_json(origin, format!("graph entry {i} has no string \"path\"")))?
                .to_string();
            let references = match obj.get("references") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(refs)) => refs
                    .iter()
                    .map(|r| {
                        r.as_str().map(str::to_string).ok_or_else(|| {
                            bad_json(origin, format!("{path:?}: a reference is not a string"))
                        })
                    })
                    .collect::<Result<_>>()?,
                Some(_) => {
                    return Err(bad_json(
                        origin,
                        format!("{path:?}: \"references\" is not a list"),
                    ))
                }
            };
            let nar_size = match obj.get("narSize") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
                    bad_json(
                        origin,
                        format!("{path:?}: narSize {n} is not a non-negative integer"),
                    )
                })?),
                Some(_) => {
                    return Err(bad_json(
                        origin,
                        format!("{path:?}: narSize is not a number"),
                    ))
                }
            };
            let nar_hash = match obj.get("narHash") {
                None | Some(Value::Null) => None,
                Some(Value::String(hash)) => Some(hash.clone()),
                Some(_) => {
                    return Err(bad_json(
                        origin,
                        format!("{path:?}: narHash is not a string"),
                    ))
                }
            };
            Ok(RawNode {
                path,
                references,
                nar_size,
                nar_hash,
            })
        })
        .collect()
}

fn parse_text(bytes: &[u8], origin: &str) -> Result<Vec<RawNode>> {
    let text = std::str::from_utf8(bytes).map_err(|e| LayeringError::BadRecord {
        origin: origin.to_string(),
        line: bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1,
        message: "not UTF-8".to_string(),
    })?;
    let lines: Vec<&str> = text.split('\n').collect();
    // A trailing newline leaves one empty element; trailing blank lines are
    // tolerated.
    let mut end = lines.len();
    while end > 0 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let lines = &lines[..end];
    let bad = |line: usize, message: String| LayeringError::BadRecord {
        origin: origin.to_string(),
        line: line + 1,
        message,
    };
    // The registration format has a NAR hash where the text format has a
    // deriver (an empty line or a store path).
    let registration = lines
        .get(1)
        .is_some_and(|l| !l.is_empty() && !l.starts_with('/'));
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let path = lines[i];
        if !path.starts_with('/') {
            return Err(bad(i, format!("expected a store path, found {path:?}")));
        }
        i += 1;
        let mut nar_size = None;
        let mut nar_hash = None;
        if registration {
            let hash = lines
                .get(i)
                .ok_or_else(|| bad(i, "missing NAR hash".into()))?;
            if hash.is_empty() || hash.starts_with('/') {
                return Err(bad(i, format!("expected a NAR hash, found {hash:?}")));
            }
            nar_hash = Some(hash.to_string());
            i += 1;
            let size = lines
                .get(i)
                .ok_or_else(|| bad(i, "missing NAR size".into()))?;
            nar_size = Some(
                size.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(i, format!("expected a NAR size, found {size:?}")))?,
            );
            i += 1;
        }
        let deriver = lines
            .get(i)
            .ok_or_else(|| bad(i, "missing deriver line".into()))?;
        if !deriver.is_empty() && !deriver.starts_with('/') {
            return Err(bad(
                i,
                format!("expected a deriver (a path or an empty line), found {deriver:?}"),
            ));
        }
        i += 1;
        let count_line = lines
            .get(i)
            .ok_or_else(|| bad(i, "missing reference count".into()))?;
        let count: usize = count_line.trim().parse().map_err(|_| {
            bad(
                i,
                format!("expected a reference count, found {count_line:?}"),
            )
        })?;
        i += 1;
        // The count is the input's claim: reserve no more than the lines
        // that are left could hold.
        let mut references = Vec::with_capacity(count.min(lines.len() - i));
        for _ in 0..count {
            let reference = lines.get(i).ok_or_else(|| {
                bad(
                    i,
                    format!("{path:?} announces {count} references but the input ends"),
                )
            })?;
            if !reference.starts_with('/') {
                return Err(bad(
                    i,
                    format!("expected a referenced store path, found {reference:?}"),
                ));
            }
            references.push(reference.to_string());
            i += 1;
        }
        out.push(RawNode {
            path: path.to_string(),
            references,
            nar_size,
            nar_hash,
        });
    }
    Ok(out)
}
