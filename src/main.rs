//! `stream-layered-image`: see `--help`.
mod cli;

use std::io::Write;
use std::process::ExitCode;

use cli::args::{self, Command, Parsed};

fn main() -> ExitCode {
    let result =
        args::parse(std::env::args_os().skip(1).collect()).and_then(|parsed| match parsed {
            Parsed::Print(text) => {
                print!("{text}");
                Ok(())
            }
            Parsed::Run(cli) => run(*cli),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::build::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Messages quote inputs; no control sequence of theirs may
            // reach the terminal.
            let message = stream_layered_image::escape::controls(&format!("{e:#}"));
            eprintln!("stream-layered-image: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: args::Cli) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        None => cli::build::run(cli.build),
        Some(Command::Layers(a)) => cli::layers::run(a),
        Some(Command::Hints(a)) => cli::hints::run(a),
        Some(Command::Diff(a)) => cli::diff::run(a),
        Some(Command::CustomLayer(a)) => cli::custom_layer::run(a),
        Some(Command::Digest(a)) => cli::digest::run(a),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut args::command(),
                "stream-layered-image",
                &mut stdout,
            );
            Ok(())
        }
        Some(Command::Man) => {
            let man = clap_mangen::Man::new(args::command());
            man.render(&mut stdout)?;
            Ok(())
        }
        Some(Command::OptionsTable) => {
            stdout.write_all(args::options_table().as_bytes())?;
            Ok(())
        }
    }
}
