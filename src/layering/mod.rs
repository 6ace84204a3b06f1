//! Layering: deciding which store paths share a container image layer.
//!
//! # Inputs
//!
//! A references graph (see [`graph`] for the three accepted formats: the
//! structured JSON of `exportReferencesGraph`, its text format, and
//! closureInfo's `registration`), a budget of `N` layers, a strategy, and
//! optionally paths to leave out (the `--exclude` file: paths another layer
//! already ships).
//!
//! # Output
//!
//! A list of layers, each a list of store paths, never more than `N`
//! layers; every path of the graph that is not excluded is in exactly one
//! layer. Each layer also carries a one-line reason, shown by
//! `stream-layered-image layers --explain`. This module never touches tar:
//! writing layers is someone else's job.
//!
//! # Strategies
//!
//! * [`Strategy::Popularity`]: nixpkgs' popularity contest
//!   ([`popularity`]), cut as nixpkgs cuts it: the `N - 1` most popular
//!   paths each get a layer and the rest share the last one.
//! * [`Strategy::Auto`]: nixpkgs' `auto-layer.py` ([`auto`]), today's
//!   `streamLayeredImage` default.
//! * [`Strategy::Size`]: Guix's `--max-layers` rule ([`size`]).
//! * [`Strategy::Pipeline`]: a nixpkgs `layeringPipeline` ([`pipeline`]).
//! * [`Strategy::Default`]: ours, described in [`default`]: it puts paths
//!   together when they are replaced together, weighing each layer's bytes
//!   by how often it will have to be pulled again.
//!
//! `default` optionally takes layering [`hints`]: how often each package
//! changed in earlier builds and in how many images it was, learned from
//! their graphs.
//!
//! The first four reproduce their anchors exactly (golden tests compare
//! with outputs of the nixpkgs scripts); the fifth is measured against them
//! by `scripts/layering-bench`.

pub mod auto;
pub mod default;
pub mod error;
pub mod graph;
pub mod hints;
pub mod pipeline;
pub mod popularity;
pub mod size;

use std::collections::HashSet;

pub use error::{LayeringError, Result};
pub use graph::Graph;
pub use hints::Hints;
pub use pipeline::Pipeline;

/// One layer: the store paths it holds and why they were grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Store paths, in the order the strategy gives them.
    pub paths: Vec<String>,
    /// Why these paths share a layer (one line, for `--explain`).
    pub reason: String,
}

/// How to split a graph into layers.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Ours: see [`default`].
    Default,
    /// nixpkgs' popularity contest with `limit_layers`.
    Popularity,
    /// nixpkgs' `auto-layer.py`.
    Auto,
    /// Guix's `--max-layers` rule.
    Size,
    /// A nixpkgs `layeringPipeline`.
    Pipeline(Pipeline),
}

impl Strategy {
    /// Parses a strategy name (`default`, `popularity`, `auto`, `size`).
    pub fn from_name(name: &str) -> Option<Strategy> {
        match name {
            "default" => Some(Strategy::Default),
            "popularity" => Some(Strategy::Popularity),
            "auto" => Some(Strategy::Auto),
            "size" => Some(Strategy::Size),
            _ => None,
        }
    }

    /// The strategy's name.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Default => "default",
            Strategy::Popularity => "popularity",
            Strategy::Auto => "auto",
            Strategy::Size => "size",
            Strategy::Pipeline(_) => "pipeline",
        }
    }
}

/// Splits `graph` into at most `max_layers` layers with `strategy`,
/// leaving out the paths in `exclude`.
///
/// `max_layers` bounds every strategy except a pipeline, whose own steps
/// (`limit_layers`) decide; pass `None` there to accept whatever the
/// pipeline makes. For the other strategies `None` is an error.
pub fn plan(
    graph: &Graph,
    strategy: &Strategy,
    max_layers: Option<usize>,
    exclude: &HashSet<String>,
) -> Result<Vec<Layer>> {
    plan_with_hints(graph, strategy, max_layers, exclude, None)
}

/// [`plan`], with layering hints for the `default` strategy (see
/// [`hints`]); the other strategies reproduce their anchors and take none.
pub fn plan_with_hints(
    graph: &Graph,
    strategy: &Strategy,
    max_layers: Option<usize>,
    exclude: &HashSet<String>,
    hints: Option<&Hints>,
) -> Result<Vec<Layer>> {
    let excluded = |p: &str| exclude.contains(p);
    let budget = || match max_layers {
        Some(0) | None => Err(LayeringError::ZeroBudget),
        Some(n) => Ok(n),
    };
    let layers = match strategy {
        Strategy::Popularity => {
            let n = budget()?;
            let graph = graph.without(&excluded);
            let paths = Pipeline::popularity(n).run(&graph)?;
            let count = paths.len();
            paths
                .into_iter()
                .enumerate()
                .map(|(i, paths)| {
                    let reason = if i + 1 < count || paths.len() == 1 {
                        format!("popularity: the {} most popular path", size::ordinal(i + 1))
                    } else {
                        format!(
                            "popularity: the {} least popular paths share the last layer",
                            paths.len()
                        )
                    };
                    Layer { paths, reason }
                })
                .collect()
        }
        Strategy::Auto => auto::auto_layer(graph, budget()?, &excluded),
        Strategy::Size => size::size_layers(&graph.without(&excluded), budget()?),
        Strategy::Default => match hints {
            Some(hints) => {
                let (weights, _) = hints.weights(graph);
                let classes = hints.shared_classes(graph);
                default::layers_classed(graph, budget()?, &excluded, Some(&weights), &classes)
            }
            None => default::default_layers(graph, budget()?, &excluded),
        },
        Strategy::Pipeline(pipeline) => {
            if max_layers == Some(0) {
                return Err(LayeringError::ZeroBudget);
            }
            let graph = graph.without(&excluded);
            pipeline
                .run(&graph)?
                .into_iter()
                .enumerate()
                .map(|(i, paths)| Layer {
                    paths,
                    reason: format!("pipeline: output {}", i + 1),
                })
                .collect()
        }
    };
    if let Some(max) = max_layers {
        if layers.len() > max {
            return Err(LayeringError::OverBudget {
                strategy: strategy.name().to_string(),
                got: layers.len(),
                max,
            });
        }
    }
    Ok(layers)
}

/// Renders layers as the `store_layers` JSON: a list of lists of paths.
pub fn to_json(layers: &[Layer]) -> String {
    let value = serde_json::Value::Array(
        layers
            .iter()
            .map(|l| {
                serde_json::Value::Array(
                    l.paths
                        .iter()
                        .map(|p| serde_json::Value::String(p.clone()))
                        .collect(),
                )
            })
            .collect(),
    );
    value.to_string()
}
