//! The `afterpush` command line: one file per verb, all parsed by clap from [`Cli`].

pub mod stitch;

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
    /// Stitch per-arch tags (`1.2.3-amd64`, `1.2.3-arm64`) into one multi-arch tag.
    Stitch(stitch::StitchArgs),
}

/// Parses the command line, runs the verb, prints errors with their causes.
#[allow(unreachable_code, unused_variables)] // until the first verb lands
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
        Command::Stitch(args) => stitch::run(args).await,
    }
}
