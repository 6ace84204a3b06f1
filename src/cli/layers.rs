//! `stream-layered-image layers` (in progress).
use std::ffi::OsString;

/// Runs the `layers` subcommand with the arguments after `layers`.
pub fn main(_args: Vec<OsString>) -> anyhow::Result<()> {
    anyhow::bail!("the layers subcommand is not implemented yet")
}
