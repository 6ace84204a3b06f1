//! Guix's `guix pack --format=docker --max-layers` rule
//! (`size-sorted-store-items` in `guix/docker.scm`).
//!
//! Store paths are sorted by size, largest first (a stable sort, so equal
//! sizes keep their input order). With a budget of `N` store layers the
//! `N - 1` largest each get a layer of their own and the rest share the last
//! one. Guix counts its customisation layer in `--max-layers`, so Guix's
//! `--max-layers M` corresponds to a budget of `M - 1` here.

use super::graph::Graph;
use super::Layer;

/// Splits `graph` by Guix's size rule into at most `max_layers` layers.
pub fn size_layers(graph: &Graph, max_layers: usize) -> Vec<Layer> {
    let mut order: Vec<usize> = (0..graph.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(graph.node(i).nar_size));
    let singles = if order.len() <= max_layers {
        order.len()
    } else {
        max_layers - 1
    };
    let mut layers: Vec<Layer> = order[..singles]
        .iter()
        .enumerate()
        .map(|(rank, &i)| Layer {
            paths: vec![graph.node(i).path.clone()],
            reason: format!(
                "size: the {} largest path ({} B)",
                ordinal(rank + 1),
                graph.node(i).nar_size
            ),
        })
        .collect();
    if singles < order.len() {
        layers.push(Layer {
            paths: order[singles..]
                .iter()
                .map(|&i| graph.node(i).path.clone())
                .collect(),
            reason: format!(
                "size: the {} smaller paths share the last layer",
                order.len() - singles
            ),
        });
    }
    layers
}

/// "1st", "2nd", "3rd", "4th", ...
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}
