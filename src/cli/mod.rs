//! The `afterpush` command line: one file per verb, all parsed by clap from [`Cli`].

pub mod cleanup;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "afterpush",
    version,
    about = "What every Amazon ECR team scripts after `docker push`: SOCI indexes, BuildKit cache cleanup, multi-arch stitching"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// BuildKit cache cleanup for ECR repositories and S3 caches (dry run: `plan`).
    Cleanup(cleanup::CleanupArgs),
}

/// Parses the command line, runs the verb, prints errors with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("afterpush: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cleanup(args) => cleanup::run(args).await,
    }
}
