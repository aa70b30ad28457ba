//! The cache janitor: a [`policy`], a pure [`planner`], an [`executor`] over a
//! [`Catalog`](crate::catalog::Catalog), the S3 cache collector [`s3gc`], plans as text
//! tables ([`render`]), the runs the Lambda and the CLI share ([`on_push`] and
//! [`sweep`], in `run.rs`) and what they return ([`Report`], in `report.rs`); a sweep
//! fanned out per repository and gathered back ([`fan_out`], its objects in a
//! [`run_store`]).

pub mod ecr_lifecycle;
pub mod executor;
pub mod fan_out;
mod first_seen;
pub mod in_use;
pub mod planner;
pub mod policy;
pub mod render;
mod report;
mod run;
pub mod run_store;
pub mod s3gc;
pub mod shared;
mod yaml_expansion;

pub use report::{gather, Blocked, BlockedRepository, Report};
pub use run::{on_push, on_push_policy, sweep, sweeps_repository, PushedImage, RunOptions};

use crate::catalog::{ApiErrorKind, CatalogError};

/// Errors of a janitor run as a whole (per-image failures are in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    /// A setting or option is unusable: no policy, both `CLEANUP_POLICY` and `AFTERPUSH_CLEANUP_POLICY_FILE`, an invalid policy or `DRY_RUN`, a repository the policy does not select.
    #[error("setting {var}: {message}")]
    Settings {
        /// The variable or option at fault.
        var: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The cleanup policy does not parse or validate.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// Listing or deleting through the catalog (ECR, S3) failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The report could not be written to the report bucket.
    #[error("writing the report to s3://{bucket}/{key}: {message}")]
    Report {
        /// The report bucket.
        bucket: String,
        /// The key it was to be written to.
        key: String,
        /// The S3 error.
        message: String,
        /// What the PutObject call failed with.
        kind: ApiErrorKind,
    },
    /// A sweep that fans out, or one repository's part of it, failed ([`fan_out`]).
    #[error(transparent)]
    FanOut(Box<fan_out::FanOutError>),
    /// The images in use could not be listed: the run deleted nothing.
    #[error("nothing deleted: {reason}")]
    Blocked {
        /// Why the images in use could not be listed.
        reason: String,
        /// Whether a later run may succeed (throttling, 5xx).
        retryable: bool,
    },
}

impl From<fan_out::FanOutError> for JanitorError {
    fn from(e: fan_out::FanOutError) -> Self {
        JanitorError::FanOut(Box::new(e))
    }
}

impl JanitorError {
    /// True when a later run may succeed: API and S3 calls that were throttled, met a
    /// server error or timed out (by the kind the SDK error gave, see
    /// [`ApiErrorKind`]). Access denied, not found, invalid requests, bad settings,
    /// policies, events and malformed images or cache objects do not heal.
    pub fn is_retryable(&self) -> bool {
        match self {
            JanitorError::Catalog(e) => e.is_retryable(),
            JanitorError::Report { kind, .. } => kind.is_retryable(),
            JanitorError::Blocked { retryable, .. } => *retryable,
            JanitorError::FanOut(e) => e.is_retryable(),
            JanitorError::Settings { .. } | JanitorError::Policy(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_call_failures_are_retryable() {
        let api = CatalogError::Api {
            operation: "DescribeImages",
            repository: "app".into(),
            message: "Rate exceeded".into(),
            kind: ApiErrorKind::Throttled,
        };
        assert!(JanitorError::Catalog(api).is_retryable());
        for kind in [
            ApiErrorKind::AccessDenied,
            ApiErrorKind::NotFound,
            ApiErrorKind::Invalid,
        ] {
            let api = CatalogError::Api {
                operation: "DescribeImages",
                repository: "app".into(),
                message: format!("{kind}"),
                kind,
            };
            assert!(!JanitorError::Catalog(api).is_retryable(), "{kind}");
        }
        let bad = CatalogError::BadImage {
            repository: "app".into(),
            digest: "sha256:x".into(),
            message: "not JSON".into(),
        };
        assert!(!JanitorError::Catalog(bad).is_retryable());
        assert!(!JanitorError::Settings {
            var: "CLEANUP_POLICY",
            message: "unset".into()
        }
        .is_retryable());
    }
}
