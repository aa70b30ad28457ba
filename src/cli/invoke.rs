//! `afterpush invoke FUNCTION --event FILE`: runs a Lambda handler in-process on an
//! event file (the same events `sam local invoke -e` takes), against whatever registry
//! and AWS endpoints the environment points to, or an OCI layout with `--layout`.
//!
//! The event goes through [`handle_payload`], as in Lambda: an EventBridge event prints
//! the function's output; Lambda's SQS event (records carrying EventBridge events) prints
//! the partial batch response, and the command succeeds even when records failed, as the
//! invocation does in Lambda (their ids are in `batchItemFailures`).

use crate::lambda::{
    handle_payload, CacheJanitor, Function, FunctionName, Invocation, ManifestStitcher,
    Repositories, SociIndexer,
};
use anyhow::Context;
use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};
use std::io::Read;
use std::path::{Path, PathBuf};

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
    // Read as the functions read it: an object with a key twice is refused.
    let payload: serde_json::Value = crate::strict_json::from_slice(&read_event(&args.event)?)
        .with_context(|| format!("{} is not JSON", args.event.display()))?;
    let repositories = match args.layout {
        Some(dir) => Repositories::Layout(dir),
        None => Repositories::from_env()?,
    };
    // The CLI has no deadline: work runs to its end.
    let no_deadline = Invocation::default();
    match args.function {
        FunctionName::SociIndexer => {
            let indexer = SociIndexer::with_repositories(repositories).await?;
            print(&indexer, payload, &no_deadline).await
        }
        FunctionName::ManifestStitcher => {
            let stitcher = ManifestStitcher::with_repositories(repositories)?;
            print(&stitcher, payload, &no_deadline).await
        }
        FunctionName::CacheJanitor => {
            let janitor = CacheJanitor::with_repositories(repositories).await?;
            print(&janitor, payload, &no_deadline).await
        }
        FunctionName::Reconciler => {
            let reconciler = crate::lambda::Reconciler::from_env().await?;
            print(&reconciler, payload, &no_deadline).await
        }
    }
}

/// The largest event Lambda passes to a function: the 6 MB (6,291,456 bytes) payload
/// quota of synchronous invocations (asynchronous ones allow less).
pub const MAX_EVENT_BYTES: u64 = 6 * 1024 * 1024;

/// Reads an event file of at most [`MAX_EVENT_BYTES`], without reading further.
fn read_event(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_EVENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_EVENT_BYTES {
        anyhow::bail!(
            "{} is larger than {MAX_EVENT_BYTES} bytes, Lambda's largest invocation payload",
            path.display()
        );
    }
    Ok(bytes)
}

/// Runs `function` on the payload and prints its answer as pretty JSON, or fails with
/// the error and its error type.
async fn print<F: Function>(
    function: &F,
    payload: serde_json::Value,
    invocation: &Invocation,
) -> anyhow::Result<()> {
    match Box::pin(handle_payload(function, payload, invocation)).await {
        Ok(answer) => {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{} ({})", e, e.error_type())),
    }
}

/// `afterpush invoke <FUNCTION>`: the functions by their binary names.
impl ValueEnum for FunctionName {
    fn value_variants<'a>() -> &'a [Self] {
        &FunctionName::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.binary()).help(match self {
            FunctionName::SociIndexer => "Builds SOCI indexes for a pushed image",
            FunctionName::ManifestStitcher => "Stitches per-arch tags into a multi-arch tag",
            FunctionName::CacheJanitor => "Cleans up BuildKit caches and old images",
            FunctionName::Reconciler => {
                "Surveys the registry for missing SOCI indexes and stitched tags (ECR only)"
            }
        }))
    }
}
