//! `stream-layered-image hints`: learns layering hints from references
//! graphs, oldest first (see `layering::hints`).
//!
//! ```text
//! stream-layered-image hints --graph G [G...] [--graph G...] [--previous HINTS] [-o HINTS.json]
//! ```

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use stream_layered_image::layering::{Graph, Hints};

const USAGE: &str =
    "usage: stream-layered-image hints --graph G [G...] [--previous HINTS] [-o HINTS.json]
  (graphs oldest first; without -o the hints go to stdout)";

/// Runs the `hints` subcommand with the arguments after `hints`.
pub fn main(args: Vec<OsString>) -> anyhow::Result<()> {
    let mut graphs: Vec<PathBuf> = Vec::new();
    let mut previous: Option<PathBuf> = None;
    let mut output: Option<PathBuf> = None;
    let mut in_graphs = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy().into_owned();
        let mut value = |name: &str| -> anyhow::Result<OsString> {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match text.as_str() {
            "--graph" => {
                graphs.push(value("--graph")?.into());
                in_graphs = true;
                continue;
            }
            "--previous" => previous = Some(value("--previous")?.into()),
            "-o" | "--output" => output = Some(value("-o")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if in_graphs && !text.starts_with('-') => {
                graphs.push(arg.into());
                continue;
            }
            _ => bail!("unexpected argument {text:?}\n{USAGE}"),
        }
        in_graphs = false;
    }
    if graphs.is_empty() && previous.is_none() {
        bail!("give at least one --graph\n{USAGE}");
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
