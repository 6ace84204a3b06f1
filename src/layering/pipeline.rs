//! nixpkgs' `layeringPipeline` (flatten-references-graph): a JSON list of
//! steps, each `[name, args...]`, applied in turn to the references graph.
//!
//! Values flowing through the pipeline are graphs, lists and dicts (the
//! results of `split_paths` and `subcomponent_*`, keyed `main`, `common`,
//! `rest`). The graph starts as igraph does it in nixpkgs: vertices in
//! ascending `narSize` order (stable), self-references dropped, and excluded
//! paths removed first. A graph keeps its vertex order through every step
//! (igraph's `induced_subgraph` and vertex deletion preserve it), which is
//! what `split_every` and the final output see.
//!
//! Steps: `popularity_contest`, `limit_layers N`, `split_paths [spec...]`
//! (a spec is a path or `{"children_of": path or [paths]}`),
//! `subcomponent_in [paths]`, `subcomponent_out [paths]`,
//! `over KEY STEP`, `map STEP`, `pipe [STEP...]`, `split_every N`,
//! `remove_paths PATH-or-[paths]`, `reverse`, `flatten`.
//!
//! Two deliberate differences, both where nixpkgs raises an exception:
//! `limit_layers N` with fewer than `N` graphs returns them unchanged
//! (nixpkgs fails reducing an empty list), and a pipeline that ends in a
//! single graph yields one layer (nixpkgs fails iterating it).

use std::collections::HashMap;

use serde_json::Value;

use super::error::{LayeringError, Result};
use super::graph::Graph;
use super::popularity::popularity_order;

/// A parsed layering pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Spec {
    Path(String),
    ChildrenOf(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    PopularityContest,
    LimitLayers(usize),
    SplitPaths(Vec<Spec>),
    Subcomponent { out: bool, paths: Vec<String> },
    Over(String, Box<Step>),
    Map(Box<Step>),
    Pipe(Vec<Step>),
    SplitEvery(usize),
    RemovePaths(Vec<String>),
    Reverse,
    Flatten,
}

fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(LayeringError::Pipeline(message.into()))
}

impl Pipeline {
    /// Parses a pipeline: a JSON list of steps, or an object holding one
    /// under the key `"pipeline"`.
    pub fn from_json(value: &Value) -> Result<Pipeline> {
        let list = match value {
            Value::Array(_) => value,
            Value::Object(map) => match map.get("pipeline") {
                Some(v) => v,
                None => return err("expected a list of steps or an object with key \"pipeline\""),
            },
            _ => return err("expected a list of steps"),
        };
        Ok(Pipeline {
            steps: parse_steps(list)?,
        })
    }

    /// Parses a pipeline from JSON text.
    pub fn parse(text: &str) -> Result<Pipeline> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| LayeringError::Pipeline(format!("invalid JSON: {e}")))?;
        Pipeline::from_json(&value)
    }

    /// The pipeline nixpkgs uses for the popularity contest with a budget:
    /// `[["popularity_contest"], ["limit_layers", N]]`.
    pub fn popularity(max_layers: usize) -> Pipeline {
        Pipeline {
            steps: vec![Step::PopularityContest, Step::LimitLayers(max_layers)],
        }
    }

    /// Runs the pipeline on `graph` and returns the layers as lists of store
    /// paths, in nixpkgs' order. Layers may be empty, as in nixpkgs.
    pub fn run(&self, graph: &Graph) -> Result<Vec<Vec<String>>> {
        let start = PGraph::from_graph(graph);
        let ctx = Ctx { graph };
        let result = ctx.pipe(&self.steps, Val::Graph(start))?;
        let mut out = Vec::new();
        flatten_into(result, &mut out);
        Ok(out
            .into_iter()
            .map(|g| {
                g.verts
                    .iter()
                    .map(|&v| graph.node(v).path.clone())
                    .collect()
            })
            .collect())
    }
}

fn parse_strings(value: &Value, what: &str) -> Result<Vec<String>> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => err(format!("{what}: expected store paths, found {v}")),
            })
            .collect(),
        _ => err(format!(
            "{what}: expected a list of store paths, found {value}"
        )),
    }
}

fn parse_steps(value: &Value) -> Result<Vec<Step>> {
    match value {
        Value::Array(items) => items.iter().map(parse_step).collect(),
        _ => err(format!("expected a list of steps, found {value}")),
    }
}

fn parse_count(value: Option<&Value>, name: &str) -> Result<usize> {
    value
        .and_then(Value::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&v| v > 0)
        .map_or_else(|| err(format!("{name} needs a positive integer")), Ok)
}

fn parse_step(value: &Value) -> Result<Step> {
    let Some(items) = value.as_array() else {
        return err(format!(
            "a step must be a list [name, args...], found {value}"
        ));
    };
    let Some(name) = items.first().and_then(Value::as_str) else {
        return err(format!("a step must start with its name, found {value}"));
    };
    let args = &items[1..];
    let arity = |n: usize| -> Result<()> {
        if args.len() == n {
            Ok(())
        } else {
            err(format!(
                "{name} takes {n} argument(s), found {}",
                args.len()
            ))
        }
    };
    Ok(match name {
        "popularity_contest" => {
            arity(0)?;
            Step::PopularityContest
        }
        "reverse" => {
            arity(0)?;
            Step::Reverse
        }
        "flatten" => {
            arity(0)?;
            Step::Flatten
        }
        "limit_layers" => {
            arity(1)?;
            Step::LimitLayers(parse_count(args.first(), name)?)
        }
        "split_every" => {
            arity(1)?;
            Step::SplitEvery(parse_count(args.first(), name)?)
        }
        "split_paths" => {
            arity(1)?;
            let Some(specs) = args[0].as_array() else {
                return err("split_paths takes a list of paths or {\"children_of\": ...}");
            };
            Step::SplitPaths(
                specs
                    .iter()
                    .map(|s| match s {
                        Value::String(p) => Ok(Spec::Path(p.clone())),
                        Value::Object(m) => match m.get("children_of") {
                            Some(v) if m.len() == 1 => {
                                Ok(Spec::ChildrenOf(parse_strings(v, "children_of")?))
                            }
                            _ => err("unexpected split path spec: a dict's only key must be \"children_of\""),
                        },
                        _ => err(format!("unexpected split path spec {s}")),
                    })
                    .collect::<Result<_>>()?,
            )
        }
        "subcomponent_in" | "subcomponent_out" => {
            arity(1)?;
            Step::Subcomponent {
                out: name == "subcomponent_out",
                paths: match &args[0] {
                    // Python iterates a string character by character.
                    Value::String(s) => s.chars().map(String::from).collect(),
                    v => parse_strings(v, name)?,
                },
            }
        }
        "remove_paths" => {
            arity(1)?;
            Step::RemovePaths(parse_strings(&args[0], name)?)
        }
        "over" => {
            arity(2)?;
            let Some(key) = args[0].as_str() else {
                return err("over takes a key (\"main\", \"common\" or \"rest\") and a step");
            };
            Step::Over(key.to_string(), Box::new(parse_step(&args[1])?))
        }
        "map" => {
            arity(1)?;
            Step::Map(Box::new(parse_step(&args[0])?))
        }
        "pipe" => {
            arity(1)?;
            Step::Pipe(parse_steps(&args[0])?)
        }
        other => return err(format!("unknown step {other:?}")),
    })
}

/// A graph as igraph holds it: ordered vertices (indices into the base
/// graph) and directed edges between them.
#[derive(Debug, Clone)]
struct PGraph {
    verts: Vec<usize>,
    edges: Vec<(usize, usize)>,
}

impl PGraph {
    fn from_graph(graph: &Graph) -> PGraph {
        let mut verts: Vec<usize> = (0..graph.len()).collect();
        verts.sort_by_key(|&v| graph.node(v).nar_size);
        let mut edges = Vec::new();
        for &v in &verts {
            let mut refs = graph.node(v).references.clone();
            refs.sort_by_key(|&r| graph.node(r).nar_size);
            edges.extend(refs.into_iter().map(|r| (v, r)));
        }
        PGraph { verts, edges }
    }

    fn position(&self) -> HashMap<usize, usize> {
        self.verts
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i))
            .collect()
    }

    fn adjacency(&self, out: bool) -> HashMap<usize, Vec<usize>> {
        let mut adj: HashMap<usize, Vec<usize>> = HashMap::new();
        for &(a, b) in &self.edges {
            let (from, to) = if out { (a, b) } else { (b, a) };
            adj.entry(from).or_default().push(to);
        }
        adj
    }

    /// The subgraph induced by `keep`, in this graph's vertex order.
    fn induced(&self, keep: &dyn Fn(usize) -> bool) -> PGraph {
        PGraph {
            verts: self.verts.iter().copied().filter(|&v| keep(v)).collect(),
            edges: self
                .edges
                .iter()
                .copied()
                .filter(|&(a, b)| keep(a) && keep(b))
                .collect(),
        }
    }

    fn reachable(&self, starts: &[usize], out: bool) -> std::collections::HashSet<usize> {
        let adj = self.adjacency(out);
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<usize> = starts.to_vec();
        while let Some(v) = stack.pop() {
            if seen.insert(v) {
                if let Some(next) = adj.get(&v) {
                    stack.extend(next.iter().copied());
                }
            }
        }
        seen
    }
}

#[derive(Debug, Clone)]
enum Val {
    Graph(PGraph),
    List(Vec<Val>),
    Dict(Vec<(String, Val)>),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Graph(_) => "a graph",
            Val::List(_) => "a list",
            Val::Dict(_) => "a dict",
        }
    }
}

fn flatten_into(value: Val, out: &mut Vec<PGraph>) {
    match value {
        Val::Graph(g) => out.push(g),
        Val::List(items) => items.into_iter().for_each(|v| flatten_into(v, out)),
        Val::Dict(items) => items.into_iter().for_each(|(_, v)| flatten_into(v, out)),
    }
}

struct Ctx<'a> {
    graph: &'a Graph,
}

impl Ctx<'_> {
    fn pipe(&self, steps: &[Step], mut value: Val) -> Result<Val> {
        for step in steps {
            value = self.apply(step, value)?;
        }
        Ok(value)
    }

    fn expect_graph(name: &str, value: Val) -> Result<PGraph> {
        match value {
            Val::Graph(g) => Ok(g),
            other => err(format!("{name} expects a graph, got {}", other.kind())),
        }
    }

    fn expect_list(name: &str, value: Val) -> Result<Vec<Val>> {
        match value {
            Val::List(items) => Ok(items),
            other => err(format!("{name} expects a list, got {}", other.kind())),
        }
    }

    fn find(&self, g: &PGraph, path: &str) -> Option<usize> {
        self.graph.index_of(path).filter(|v| g.verts.contains(v))
    }

    fn apply(&self, step: &Step, value: Val) -> Result<Val> {
        match step {
            Step::Pipe(steps) => self.pipe(steps, value),
            Step::Flatten => {
                let mut out = Vec::new();
                flatten_into(value, &mut out);
                Ok(Val::List(out.into_iter().map(Val::Graph).collect()))
            }
            Step::Reverse => {
                let mut items = Ctx::expect_list("reverse", value)?;
                items.reverse();
                Ok(Val::List(items))
            }
            Step::Map(inner) => Ok(Val::List(
                Ctx::expect_list("map", value)?
                    .into_iter()
                    .map(|v| self.apply(inner, v))
                    .collect::<Result<_>>()?,
            )),
            Step::Over(key, inner) => match value {
                Val::Dict(mut items) => {
                    let Some(slot) = items.iter_mut().find(|(k, _)| k == key) else {
                        let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
                        return err(format!(
                            "over {key:?}: no such key (this result has {keys:?})"
                        ));
                    };
                    let old = std::mem::replace(&mut slot.1, Val::List(Vec::new()));
                    slot.1 = self.apply(inner, old)?;
                    Ok(Val::Dict(items))
                }
                other => err(format!("over expects a dict, got {}", other.kind())),
            },
            Step::LimitLayers(max) => {
                let mut items = Ctx::expect_list("limit_layers", value)?;
                if items.len() < *max {
                    return Ok(Val::List(items));
                }
                let rest = items.split_off(max - 1);
                let mut merged = PGraph {
                    verts: Vec::new(),
                    edges: Vec::new(),
                };
                for item in rest {
                    let g = Ctx::expect_graph("limit_layers", item)?;
                    merged.verts.extend(g.verts);
                    merged.edges.extend(g.edges);
                }
                items.push(Val::Graph(merged));
                Ok(Val::List(items))
            }
            Step::SplitEvery(count) => {
                let g = Ctx::expect_graph("split_every", value)?;
                Ok(Val::List(
                    g.verts
                        .chunks(*count)
                        .map(|chunk| {
                            let set: std::collections::HashSet<usize> =
                                chunk.iter().copied().collect();
                            Val::Graph(g.induced(&|v| set.contains(&v)))
                        })
                        .collect(),
                ))
            }
            Step::RemovePaths(paths) => {
                let g = Ctx::expect_graph("remove_paths", value)?;
                let drop: std::collections::HashSet<usize> =
                    paths.iter().filter_map(|p| self.find(&g, p)).collect();
                Ok(Val::Graph(g.induced(&|v| !drop.contains(&v))))
            }
            Step::Subcomponent { out, paths } => {
                let g = Ctx::expect_graph("subcomponent", value)?;
                let starts: Vec<usize> = paths.iter().filter_map(|p| self.find(&g, p)).collect();
                let main = g.reachable(&starts, *out);
                Ok(Val::Dict(vec![
                    (
                        "main".to_string(),
                        Val::Graph(g.induced(&|v| main.contains(&v))),
                    ),
                    (
                        "rest".to_string(),
                        Val::Graph(g.induced(&|v| !main.contains(&v))),
                    ),
                ]))
            }
            Step::SplitPaths(specs) => {
                let g = Ctx::expect_graph("split_paths", value)?;
                self.split_paths(specs, g)
            }
            Step::PopularityContest => {
                let g = Ctx::expect_graph("popularity_contest", value)?;
                let pos = g.position();
                let mut succ = vec![Vec::new(); g.verts.len()];
                for &(a, b) in &g.edges {
                    succ[pos[&a]].push(pos[&b]);
                }
                let order = popularity_order(g.verts.len(), &succ, &|i| {
                    self.graph.node(g.verts[i]).path.clone()
                });
                Ok(Val::List(
                    order
                        .into_iter()
                        .map(|i| {
                            Val::Graph(PGraph {
                                verts: vec![g.verts[i]],
                                edges: Vec::new(),
                            })
                        })
                        .collect(),
                ))
            }
        }
    }

    fn split_paths(&self, specs: &[Spec], g: PGraph) -> Result<Val> {
        let succ = g.adjacency(true);
        let mut split: Vec<usize> = Vec::new();
        for spec in specs {
            match spec {
                Spec::Path(p) => split.extend(self.find(&g, p)),
                Spec::ChildrenOf(parents) => {
                    for p in parents {
                        if let Some(v) = self.find(&g, p) {
                            split.extend(succ.get(&v).into_iter().flatten().copied());
                        }
                    }
                }
            }
        }
        if split.is_empty() {
            return Ok(Val::Dict(vec![("rest".to_string(), Val::Graph(g))]));
        }
        let has_pred: std::collections::HashSet<usize> = g.edges.iter().map(|&(_, b)| b).collect();
        let roots: Vec<usize> = g
            .verts
            .iter()
            .copied()
            .filter(|v| !has_pred.contains(v))
            .collect();
        // With a single root, that root is the root; otherwise a fake root
        // above all roots, which is never part of a result.
        let single_root = if roots.len() == 1 {
            Some(roots[0])
        } else {
            None
        };
        if let Some(root) = single_root {
            if split.contains(&root) {
                return Ok(Val::Dict(vec![("main".to_string(), Val::Graph(g))]));
            }
        }
        let split_off = g.reachable(&split, true);
        // Delete edges pointing at split paths, then see what the root
        // still reaches.
        let split_set: std::collections::HashSet<usize> = split.iter().copied().collect();
        let pruned = PGraph {
            verts: g.verts.clone(),
            edges: g
                .edges
                .iter()
                .copied()
                .filter(|(_, b)| !split_set.contains(b))
                .collect(),
        };
        let starts: Vec<usize> = match single_root {
            Some(root) => vec![root],
            None => roots
                .iter()
                .copied()
                .filter(|r| !split_set.contains(r))
                .collect(),
        };
        let rest_with_common = pruned.reachable(&starts, true);
        let common: std::collections::HashSet<usize> =
            split_off.intersection(&rest_with_common).copied().collect();
        let main = pruned.induced(&|v| split_off.contains(&v) && !common.contains(&v));
        let common_g = pruned.induced(&|v| common.contains(&v));
        let rest = pruned.induced(&|v| rest_with_common.contains(&v) && !common.contains(&v));
        let mut out = Vec::new();
        for (key, graph) in [("main", main), ("common", common_g), ("rest", rest)] {
            if !graph.verts.is_empty() {
                out.push((key.to_string(), Val::Graph(graph)));
            }
        }
        Ok(Val::Dict(out))
    }
}
