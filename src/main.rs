//! The `koogate` binary: parse the command line, load settings, start logging, run.

// Code outside the tests may not panic on a missing value or an index out of range: each
// invariant that allows one says so where it is used, with `#[expect(…, reason = …)]`
// (clippy.toml allows them in tests, where a panic is how a test fails).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use clap::Parser;
use koogate::cli::{self, Cli, Command};
use koogate::config::Settings;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulator plays KooGallery against another server: it needs none of this server's
    // settings, and its report owns standard output.
    let command = match cli.command {
        Command::Simulate(_) if cli.config.is_some() => {
            eprintln!(
                "koogate: simulate reads no settings file (--config or KOOGATE_CONFIG): \
                 give the address and key with --url and --key (or KOOGATE_SIMULATE_KEY)"
            );
            return ExitCode::from(2);
        }
        Command::Simulate(args) => return cli::simulate(args).await,
        command => command,
    };
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("koogate: {error}");
            return ExitCode::from(2);
        }
    };
    koogate::telemetry::init(settings.log.format, &settings.log.filter);
    match cli::run(command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("koogate: {error}");
            ExitCode::FAILURE
        }
    }
}
