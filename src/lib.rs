//! afterpush: the work every Amazon ECR team scripts by hand after `docker push`.
//!
//! - [`ztoc`] and [`soci`]: SOCI indexes (lazy-loading for ECS/Fargate), streaming.
//! - [`cleanup`] and [`catalog`]: BuildKit cache cleanup with a dry run and a report.
//! - [`stitch`]: per-architecture tags stitched into one multi-arch index.
//!
//! The Lambda functions in `functions/` and the `afterpush` CLI are thin shells over
//! this library.

#![warn(missing_docs)]

pub mod aws_clients;
pub mod catalog;
pub mod cleanup;
#[cfg(feature = "cli")]
pub mod cli;
pub mod deadline;
pub mod events;
pub mod files;
pub mod filters;
pub mod format;
pub mod glob;
pub mod lambda;
pub mod metrics;
pub mod oci;
pub mod queue;
pub mod reconcile;
pub mod registry;
// The demo's sample images: the CLI and the tests use them, the Lambda bootstraps do not.
#[cfg(any(feature = "cli", feature = "test-util"))]
pub mod sample;
pub mod settings;
pub mod soci;
pub mod stitch;
pub mod strict_json;
pub mod ztoc;
