//! The `afterpush` command line: one file per verb, all parsed by clap from [`Cli`].

pub mod cleanup;
pub mod copy;
pub mod demo;
pub mod invoke;
pub mod reconcile;
pub mod soci;
pub mod stitch;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod ztoc;

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "afterpush",
    version,
    about = "What every Amazon ECR team scripts after `docker push`: SOCI indexes, BuildKit cache cleanup, multi-arch stitching"
)]
pub struct Cli {
    /// The verb to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs of `afterpush`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// SOCI indexes: create, list, info.
    Soci(soci::SociArgs),
    /// Build, inspect and use zTOCs (the per-layer part of a SOCI index).
    Ztoc(ztoc::ZtocArgs),
    /// Copy an image (every platform and attestation; --referrers for the rest) between
    /// OCI layouts, oci-archive tarballs and registries.
    Copy(copy::CopyArgs),
    /// Push sample images into an OCI layout and replay their push events through the
    /// three functions (no cloud, no servers); `--keep DIR` keeps the layout.
    Demo(demo::DemoArgs),
    /// Stitch per-arch tags (`1.2.3-amd64`, `1.2.3-arm64`) into one multi-arch tag.
    Stitch(stitch::StitchArgs),
    /// BuildKit cache cleanup for ECR repositories and S3 caches (dry run: `plan`).
    Cleanup(cleanup::CleanupArgs),
    /// Run a Lambda function's handler in-process on an event file.
    Invoke(invoke::InvokeArgs),
    /// Find the SOCI indexes and stitched tags the current settings call for in existing
    /// repositories; print the plan (dry run), do the work with --apply or send it to the
    /// functions' queues with --enqueue; --redrive lists and moves back the dead letters.
    Reconcile(reconcile::ReconcileArgs),
}

/// Parses the command line, sets up logging (stderr; `RUST_LOG`, else warnings), runs
/// the verb, prints errors with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::lambda::init_cli_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Each cause once: many errors already print their source in their message.
            eprintln!("afterpush: {}", crate::format::cause_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Takes back what a failed run wrote to `repo` (see [`Repository::discard`]: blobs
/// nothing uses, a layout the run created), logging rather than replacing the run's
/// own error when that fails too.
///
/// [`Repository::discard`]: crate::registry::Repository::discard
pub(crate) async fn discard_after_failure(repo: &dyn crate::registry::Repository) {
    if let Err(e) = repo.discard().await {
        tracing::warn!(repository = %repo.location(), error = %e, "cleaning up after the failed run");
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Soci(args) => soci::run(args).await,
        Command::Ztoc(args) => ztoc::run(args),
        Command::Copy(args) => copy::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Stitch(args) => stitch::run(args).await,
        Command::Cleanup(args) => cleanup::run(args).await,
        Command::Invoke(args) => invoke::run(args).await,
        Command::Reconcile(args) => reconcile::run(args).await,
    }
}
