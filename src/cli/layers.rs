//! `stream-layered-image layers`: splits a closure into layers and prints
//! `store_layers` JSON (a list of layers, each a list of store paths).
//!
//! ```text
//! stream-layered-image layers --graph FILE --max-layers N
//!     [--strategy default|popularity|auto|size | --pipeline FILE]
//!     [--exclude FILE] [--hints FILE] [--explain]
//! stream-layered-image layers --batch FILE
//! ```
//!
//! `--hints` gives `default` layering hints (`stream-layered-image hints`).
//!
//! `--batch` reads JSON lines `{"graph": <graph or file name>,
//! "max_layers": N, "strategy": NAME, "hints": <hints file name>}` and prints one JSON line of layers
//! per request, so tools that compare strategies on many graphs (such as
//! `scripts/layering-bench`) run the real code without one process per
//! graph.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use stream_layered_image::layering::{self, Graph, Hints, Layer, Pipeline, Strategy};
use stream_layered_image::progress::human_bytes;

use super::args::LayersArgs;

const USAGE: &str = "usage: stream-layered-image layers --graph FILE --max-layers N \
[--strategy default|popularity|auto|size | --pipeline FILE] [--exclude FILE] [--explain]
       stream-layered-image layers --batch FILE   (JSON lines: {\"graph\", \"max_layers\", \"strategy\"})";

/// Runs the `layers` subcommand.
pub fn run(args: LayersArgs) -> anyhow::Result<()> {
    if args.max_layers == Some(0) {
        bail!("--max-layers must be at least 1");
    }
    if let Some(batch) = &args.batch {
        return run_batch(batch);
    }
    let graph_file = args
        .graph
        .as_ref()
        .with_context(|| format!("--graph is required\n{USAGE}"))?;
    let strategy = match (&args.strategy, &args.pipeline) {
        (Some(_), Some(_)) => bail!("give either --strategy or --pipeline, not both"),
        (_, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading pipeline {}", file.display()))?;
            Strategy::Pipeline(
                Pipeline::parse(&text).with_context(|| format!("in {}", file.display()))?,
            )
        }
        (Some(name), None) => Strategy::from_name(name).with_context(|| {
            format!("unknown strategy {name:?} (expected default, popularity, auto or size)")
        })?,
        (None, None) => Strategy::Default,
    };
    if args.max_layers.is_none() && !matches!(strategy, Strategy::Pipeline(_)) {
        bail!("--max-layers is required\n{USAGE}");
    }
    let exclude: HashSet<String> = match &args.exclude {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        None => HashSet::new(),
    };
    let hints = match &args.hints {
        Some(_) if strategy != Strategy::Default => {
            bail!(
                "--hints works only with the default strategy, not {}",
                strategy.name()
            )
        }
        Some(file) => Some(Hints::read(file)?),
        None => None,
    };
    let graph = Graph::read(graph_file)?;
    if let (Some(hints), Some(file)) = (&hints, &args.hints) {
        if let Some(warning) = coverage_warning(hints, &graph) {
            eprintln!(
                "stream-layered-image: warning: {}: {warning}",
                file.display()
            );
        }
    }
    let layers =
        layering::plan_with_hints(&graph, &strategy, args.max_layers, &exclude, hints.as_ref())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", layering::to_json(&layers))?;
    stdout.flush()?;
    if args.explain {
        explain(&graph, &layers, &strategy)?;
    }
    Ok(())
}

/// A warning when the hints know too little of `graph` to help much.
fn coverage_warning(hints: &Hints, graph: &Graph) -> Option<String> {
    let (_, known) = hints.weights(graph);
    if known == 0 {
        Some(format!(
            "none of the graph's {} package names is in the hints; layering as without them",
            graph.len()
        ))
    } else if known * 2 < graph.len() {
        Some(format!(
            "only {known} of the graph's {} package names are in the hints",
            graph.len()
        ))
    } else {
        None
    }
}

fn explain(graph: &Graph, layers: &[Layer], strategy: &Strategy) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    let total: u64 = layers
        .iter()
        .flat_map(|l| &l.paths)
        .filter_map(|p| graph.index_of(p))
        .map(|i| graph.node(i).nar_size)
        .sum();
    writeln!(
        err,
        "strategy {}: {} layers, {} paths, {}",
        strategy.name(),
        layers.len(),
        layers.iter().map(|l| l.paths.len()).sum::<usize>(),
        human_bytes(total)
    )?;
    writeln!(
        err,
        "{:>5}  {:>6}  {:>10}  {:>6}  why / paths",
        "layer", "paths", "bytes", "share"
    )?;
    for (i, layer) in layers.iter().enumerate() {
        let bytes: u64 = layer
            .paths
            .iter()
            .filter_map(|p| graph.index_of(p))
            .map(|i| graph.node(i).nar_size)
            .sum();
        let share = if total == 0 {
            0.0
        } else {
            100.0 * bytes as f64 / total as f64
        };
        writeln!(
            err,
            "{:>5}  {:>6}  {:>10}  {:>5.1}%  {}",
            i + 1,
            layer.paths.len(),
            human_bytes(bytes),
            share,
            layer.reason
        )?;
        let mut paths: Vec<(&String, u64)> = layer
            .paths
            .iter()
            .map(|p| (p, graph.index_of(p).map_or(0, |i| graph.node(i).nar_size)))
            .collect();
        paths.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (path, size) in paths {
            writeln!(
                err,
                "{:>5}  {:>6}  {:>10}  {:>6}    {}",
                "",
                "",
                human_bytes(size),
                "",
                path
            )?;
        }
    }
    Ok(())
}

fn run_batch(file: &PathBuf) -> anyhow::Result<()> {
    use rayon::prelude::*;
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let requests: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    // Requests are independent: answer them in parallel, print in order.
    let answers: Vec<anyhow::Result<String>> = requests
        .par_iter()
        .map(|&(n, line)| answer(file, n, line))
        .collect();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for answer in answers {
        writeln!(stdout, "{}", answer?)?;
    }
    stdout.flush()?;
    Ok(())
}

fn answer(file: &std::path::Path, n: usize, line: &str) -> anyhow::Result<String> {
    let at = || format!("{}:{}", file.display(), n + 1);
    let request: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
    let graph = match request.get("graph") {
        Some(serde_json::Value::String(name)) => Graph::read(name.as_ref())?,
        Some(value) => Graph::parse(value.to_string().as_bytes(), &at())?,
        None => bail!("{}: no \"graph\"", at()),
    };
    let max_layers = request
        .get("max_layers")
        .and_then(serde_json::Value::as_u64)
        .map(|v| v as usize);
    let strategy = match request.get("strategy").and_then(serde_json::Value::as_str) {
        Some(name) => Strategy::from_name(name)
            .with_context(|| format!("{}: unknown strategy {name:?}", at()))?,
        None => match request.get("pipeline") {
            Some(p) => Strategy::Pipeline(Pipeline::from_json(p)?),
            None => Strategy::Default,
        },
    };
    let exclude: HashSet<String> = request
        .get("exclude")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let hints = match request.get("hints") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(name)) => Some(Hints::read(name.as_ref())?),
        Some(_) => bail!("{}: \"hints\" is not a file name", at()),
    };
    let layers = layering::plan_with_hints(&graph, &strategy, max_layers, &exclude, hints.as_ref())
        .with_context(at)?;
    Ok(layering::to_json(&layers))
}
