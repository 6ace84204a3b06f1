//! `stream-layered-image`: see `--help`.
mod cli;

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = match args.first().and_then(|a| a.to_str()) {
        Some("layers") => cli::layers::main(args.split_off(1)),
        Some("diff") => cli::diff::main(args.split_off(1)),
        Some("hints") => cli::hints::main(args.split_off(1)),
        _ => cli::build::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::build::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream-layered-image: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
