//! `stream-layered-image hints`: learns layering hints from references
//! graphs, oldest first (see `layering::hints`).
//!
//! ```text
//! stream-layered-image hints --graph G [G...] [--graph G...] [--previous HINTS] [-o HINTS.json]
//! ```

use std::io::Write;

use anyhow::{bail, Context};
use stream_layered_image::layering::{Graph, Hints};

use super::args::HintsArgs;

/// Runs the `hints` subcommand.
pub fn run(args: HintsArgs) -> anyhow::Result<()> {
    let HintsArgs {
        graphs,
        previous,
        output,
    } = args;
    if graphs.is_empty() && previous.is_none() {
        bail!("give at least one --graph; see --help");
    }
    let mut hints = match &previous {
        Some(file) => Hints::read(file)?,
        None => Hints::default(),
    };
    for file in &graphs {
        let graph = Graph::read(file)?;
        hints.learn(std::slice::from_ref(&graph));
    }
    let text = hints.to_json();
    match &output {
        Some(file) => {
            std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))?
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(())
}
