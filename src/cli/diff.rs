//! `stream-layered-image diff` (in progress).
use std::ffi::OsString;

/// Runs the `diff` subcommand with the arguments after `diff`.
pub fn main(_args: Vec<OsString>) -> anyhow::Result<()> {
    anyhow::bail!("the diff subcommand is not implemented yet")
}
