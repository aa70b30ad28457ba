//! `afterpush invoke FUNCTION --event FILE`: runs a Lambda handler in-process on an
//! event file (the same events `sam local invoke -e` takes), against whatever registry
//! and AWS endpoints the environment points to, or an OCI layout with `--layout`.

use crate::lambda::{CacheJanitor, Invocation, ManifestStitcher, Repositories, SociIndexer};
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// The Lambda function whose handler `afterpush invoke` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FunctionName {
    /// Builds SOCI indexes for a pushed image.
    SociIndexer,
    /// Stitches per-arch tags into a multi-arch tag.
    ManifestStitcher,
    /// Cleans up BuildKit caches and old images.
    CacheJanitor,
}

/// `afterpush invoke`: a function, its event, and where its repositories are.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Which function's handler to run.
    #[arg(value_enum)]
    pub function: FunctionName,
    /// The event JSON (e.g. infra/events/push-image-tag.json).
    #[arg(long, short)]
    pub event: PathBuf,
    /// Use this OCI image layout for every repository the event names, instead of a
    /// registry (same as AFTERPUSH_LAYOUT).
    #[arg(long)]
    pub layout: Option<PathBuf>,
}

/// Runs the function's handler on the event and prints its JSON result.
pub async fn run(args: InvokeArgs) -> anyhow::Result<()> {
    let payload: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&args.event).with_context(|| format!("reading {}", args.event.display()))?,
    )
    .with_context(|| format!("{} is not JSON", args.event.display()))?;
    let repositories = match args.layout {
        Some(dir) => Repositories::Layout(dir),
        None => Repositories::from_env()?,
    };
    // The CLI has no deadline: work runs to its end.
    let no_deadline = Invocation::default();
    let result = match args.function {
        FunctionName::SociIndexer => {
            SociIndexer::with_repositories(repositories)
                .await?
                .handle(payload, &no_deadline)
                .await
        }
        FunctionName::ManifestStitcher => {
            ManifestStitcher::with_repositories(repositories)?
                .handle(payload, &no_deadline)
                .await
        }
        FunctionName::CacheJanitor => {
            CacheJanitor::with_repositories(repositories)
                .await?
                .handle(payload, &no_deadline)
                .await
        }
    };
    match result {
        Ok(outcome) => {
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{} ({})", e, e.error_type())),
    }
}
