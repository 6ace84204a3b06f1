//! nixpkgs' `auto-layer.py`, the default of `streamLayeredImage` since
//! nixpkgs 25.05.
//!
//! Paths are taken largest first (by `narSize`; among equal sizes the one
//! listed last in the graph first, as Python's stable sort followed by
//! `pop()` does). Each becomes a "primary" path. Every path is labelled by
//! the set of primaries it belongs to: a new primary `P` takes over each of
//! its dependencies `D`, dropping from `D`'s label the primaries that depend
//! on `P`, and adding `P` unless the label still names one of `P`'s own
//! dependencies. Paths with equal labels share a layer. Primaries are added
//! until one more would exceed the layer budget.
//!
//! Layers are ordered by the total size of their closure, ascending, and the
//! paths inside a layer by `(name, hash)`. nixpkgs leaves the order of
//! layers with equal closure sizes to Python's set iteration order, which
//! changes from run to run; here such ties are broken by the layer's sorted
//! paths, so the output is deterministic and is one of the orders nixpkgs
//! can produce.

use std::collections::{HashMap, HashSet};

use super::graph::Graph;
use super::Layer;

/// The `(name, hash)` key auto-layer sorts paths by.
fn path_key(path: &str) -> (&str, &str) {
    match path.split_once('-') {
        Some((hash, name)) => (name, hash),
        None => ("", path),
    }
}

fn transitive(start: usize, next: &dyn Fn(usize) -> Vec<usize>, n: usize) -> Vec<bool> {
    let mut seen = vec![false; n];
    let mut stack = next(start);
    while let Some(v) = stack.pop() {
        if v != start && !seen[v] {
            seen[v] = true;
            stack.extend(next(v));
        }
    }
    seen
}

/// Splits `graph` into at most `limit` layers as auto-layer.py does, then
/// drops the paths for which `ignore` is true (and layers left empty).
pub fn auto_layer(graph: &Graph, limit: usize, ignore: &dyn Fn(&str) -> bool) -> Vec<Layer> {
    let n = graph.len();
    // Stable sort by size; popping from the end takes the largest, and
    // among equals the one listed last.
    let mut by_size: Vec<usize> = (0..n).collect();
    by_size.sort_by_key(|&i| graph.node(i).nar_size);
    let deps_of = |i: usize| graph.node(i).references.clone();
    let users_of = |i: usize| graph.users(i).to_vec();

    // Label of every path: the sorted set of primaries it belongs to.
    let mut split: Vec<Vec<usize>> = vec![Vec::new(); n];
    while let Some(primary) = by_size.pop() {
        let deps = transitive(primary, &deps_of, n);
        let users = transitive(primary, &users_of, n);
        let mut changed: Vec<(usize, Vec<usize>)> = Vec::new();
        changed.push((primary, vec![primary]));
        for (dep, _) in deps.iter().enumerate().filter(|(_, &d)| d) {
            let mut label: Vec<usize> = split[dep].iter().copied().filter(|&p| !users[p]).collect();
            if !label.iter().any(|&p| deps[p]) {
                if let Err(pos) = label.binary_search(&primary) {
                    label.insert(pos, primary);
                }
            }
            changed.push((dep, label));
        }
        let mut distinct: HashSet<&[usize]> = HashSet::new();
        let mut is_changed = vec![false; n];
        for (i, label) in &changed {
            is_changed[*i] = true;
            distinct.insert(label);
        }
        for (i, label) in split.iter().enumerate() {
            if !is_changed[i] {
                distinct.insert(label);
            }
        }
        if distinct.len() > limit {
            break;
        }
        for (i, label) in changed {
            split[i] = label;
        }
    }

    // Group by label.
    let mut groups: HashMap<&[usize], Vec<usize>> = HashMap::new();
    for (i, label) in split.iter().enumerate() {
        groups.entry(label.as_slice()).or_default().push(i);
    }
    // (closure size, sorted paths, label, members)
    type Info<'a> = (u64, Vec<&'a str>, Vec<usize>, Vec<usize>);
    let mut layers: Vec<Info> = groups
        .into_iter()
        .map(|(label, members)| {
            let mut in_closure = vec![false; n];
            let mut stack = members.clone();
            let mut closure_size = 0u64;
            while let Some(v) = stack.pop() {
                if !in_closure[v] {
                    in_closure[v] = true;
                    closure_size += graph.node(v).nar_size;
                    stack.extend(graph.node(v).references.iter().copied());
                }
            }
            let mut paths: Vec<&str> = members
                .iter()
                .map(|&i| graph.node(i).path.as_str())
                .collect();
            paths.sort_by(|a, b| path_key(a).cmp(&path_key(b)));
            (closure_size, paths, label.to_vec(), members)
        })
        .collect();
    layers.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    layers
        .into_iter()
        .filter_map(|(closure_size, paths, label, members)| {
            let kept: Vec<String> = paths
                .into_iter()
                .filter(|p| !ignore(p))
                .map(str::to_string)
                .collect();
            if kept.is_empty() {
                return None;
            }
            let layer_size: u64 = members.iter().map(|&i| graph.node(i).nar_size).sum();
            let reason = if label.is_empty() {
                "auto: used by no large path (roots and what only they use)".to_string()
            } else {
                let names: Vec<&str> = label
                    .iter()
                    .map(|&p| short_name(&graph.node(p).path))
                    .collect();
                format!(
                    "auto: used by exactly {{{}}}; layer {} B, closure {} B",
                    names.join(", "),
                    layer_size,
                    closure_size
                )
            };
            Some(Layer {
                paths: kept,
                reason,
            })
        })
        .collect()
}

/// The name part of a store path (after the hash), for messages.
pub fn short_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.split_once('-') {
        Some((_, name)) => name,
        None => base,
    }
}
