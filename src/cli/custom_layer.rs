//! `stream-layered-image custom-layer`: writes the customisation layer of a
//! spec (`layer.tar` and `checksum`) from a directory tree, deterministically
//! (see [`stream_layered_image::custom_layer`]).
//!
//! ```text
//! stream-layered-image custom-layer --root DIR --out DIR [--mtime SECONDS]
//! ```

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context};
use stream_layered_image::custom_layer;

const USAGE: &str =
    "usage: stream-layered-image custom-layer --root DIR --out DIR [--mtime SECONDS]";

/// Runs the `custom-layer` subcommand with the arguments after its name.
pub fn main(args: Vec<OsString>) -> anyhow::Result<()> {
    let mut root: Option<PathBuf> = None;
    let mut out: Option<PathBuf> = None;
    // guix pack's and nixpkgs' own default: one second after the epoch.
    let mut mtime: i64 = 1;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| anyhow::anyhow!("unexpected argument {a:?}\n{USAGE}"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(OsString::from(v))),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> anyhow::Result<OsString> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => bail!("{name} needs a value\n{USAGE}"),
            }
        };
        match flag.as_str() {
            "--root" => root = Some(value("--root")?.into()),
            "--out" => out = Some(value("--out")?.into()),
            "--mtime" => {
                let v = value("--mtime")?;
                let text = v.to_string_lossy();
                mtime = text.parse().with_context(|| {
                    format!("--mtime: {text:?} is not a whole number of seconds")
                })?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unexpected argument {arg:?}\n{USAGE}"),
        }
    }
    let root = root.with_context(|| format!("--root is required\n{USAGE}"))?;
    let out = out.with_context(|| format!("--out is required\n{USAGE}"))?;
    let digest = custom_layer::write(&root, &out, mtime)?;
    println!("{digest}");
    Ok(())
}
