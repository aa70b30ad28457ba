//! What cleanup needs to know about a registry's images, and the one thing it does to
//! them: delete by digest in batches.
//!
//! [`Catalog`] is the port the cleanup planner and executor work against; [`ecr`] is the
//! production adapter (DescribeImages + BatchGetImage + BatchDeleteImage) and
//! [`s3cache`] lists and deletes the objects of an S3 BuildKit cache. [`ecs`] and
//! [`lambda`] list the images the account's workloads use, through the [`workloads`] port.

pub mod account_workloads;
pub mod aws_error;
pub mod consumer_accounts;
pub mod ecr;
pub mod ecs;
pub mod inspector;
pub mod lambda;
pub mod layout;
// Test doubles: for the crate's unit tests and, with `test-util`, the integration tests
// and benchmarks; never in the product.
#[cfg(any(test, feature = "test-util"))]
pub mod memory_workloads;
pub mod paginate;
pub mod repository_policy;
pub mod s3cache;
pub mod workloads;

use crate::oci::{ArtifactKind, Sha256Digest};
pub use aws_error::ApiErrorKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// ECR accepts at most 100 image ids per BatchDeleteImage / BatchGetImage call.
pub const DELETE_BATCH: usize = 100;

/// One image (manifest) of a repository, with what cleanup decides on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The manifest's digest.
    pub digest: Sha256Digest,
    /// Its tags (empty when untagged).
    pub tags: Vec<String>,
    /// When it was pushed (ECR's `imagePushedAt`).
    pub pushed_at: DateTime<Utc>,
    /// ECR's `lastRecordedPullTime` (approximate, refreshed about daily).
    pub last_pulled_at: Option<DateTime<Utc>>,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The config media type / OCI `artifactType`, when known.
    pub artifact_media_type: Option<String>,
    /// What kind of artifact the manifest is.
    pub kind: ArtifactKind,
    /// The manifest this one refers to (OCI 1.1 `subject`, or the `sha256-<hex>.sig`
    /// tag scheme of cosign).
    pub subject: Option<Sha256Digest>,
    /// Manifests an index lists (platform images, attestations, SOCI v2 indexes).
    pub children: Vec<Sha256Digest>,
    /// SOCI v2: the SOCI index an image manifest is bound to by its
    /// `com.amazon.soci.index-digest` annotation.
    pub soci_index: Option<Sha256Digest>,
    /// `imageSizeInBytes` as ECR reports it.
    pub size_bytes: u64,
}

impl ImageRecord {
    /// A plain tagged image manifest for unit tests: its digest is sha256 of `name`, 1 byte.
    #[cfg(test)]
    pub(crate) fn named(name: &str, tags: &[&str], pushed_at: DateTime<Utc>) -> Self {
        ImageRecord {
            digest: Sha256Digest::of(name.as_bytes()),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at,
            last_pulled_at: None,
            manifest_media_type: crate::oci::media::OCI_MANIFEST.into(),
            artifact_media_type: None,
            kind: ArtifactKind::Image,
            subject: None,
            children: Vec::new(),
            soci_index: None,
            size_bytes: 1,
        }
    }

    /// Every manifest this one needs to stay usable: its children and its SOCI index.
    pub fn references(&self) -> impl Iterator<Item = &Sha256Digest> {
        self.children.iter().chain(self.soci_index.iter())
    }
}

/// The outcome of deleting one batch: what went, and what did not with the reason the
/// registry gave (never fatal to a run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOutcome {
    /// The digests deleted.
    pub deleted: Vec<Sha256Digest>,
    /// The digests not deleted, with the reason.
    pub failed: Vec<DeleteFailure>,
}

/// One image a delete call did not delete, with the reason the registry gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteFailure {
    /// The image's digest.
    pub digest: Sha256Digest,
    /// The registry's failure code (ECR's `failureCode`, or `CallFailed` when the whole call failed).
    pub code: String,
    /// The registry's message.
    pub message: String,
}

/// Errors of a catalog call as a whole (per-image failures are in [`DeleteOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A registry call failed (ECR, or the layout a local run cleans up).
    #[error("{operation} on repository {repository:?} failed: {message}")]
    Api {
        /// The operation (`DescribeImages`, `BatchDeleteImage`...).
        operation: &'static str,
        /// The repository (empty for `DescribeRepositories`).
        repository: String,
        /// The error the call returned.
        message: String,
        /// What the call failed with; decides whether a later run may succeed.
        kind: ApiErrorKind,
    },
    /// An image's manifest cannot be read or parsed.
    #[error("repository {repository:?}: image {digest}: {message}")]
    BadImage {
        /// The repository.
        repository: String,
        /// The image's digest.
        digest: String,
        /// What is wrong.
        message: String,
    },
    /// A listing stopped before its last page: a token the service had already returned,
    /// more pages than the cap, or the invocation deadline.
    #[error("{}{error}", if repository.is_empty() { String::new() } else { format!("repository {repository:?}: ") })]
    Paging {
        /// The repository or S3 cache listed (empty for DescribeRepositories).
        repository: String,
        /// Why the listing stopped.
        error: paginate::PagingError,
    },
    /// An S3 call on a BuildKit cache failed.
    #[error("{operation} on {uri} failed: {message}")]
    S3 {
        /// The S3 operation that failed.
        operation: &'static str,
        /// The cache's `s3://bucket/prefix`.
        uri: String,
        /// The error the call returned.
        message: String,
        /// What the call failed with; decides whether a later run may succeed.
        kind: ApiErrorKind,
    },
    /// An object of an S3 cache is malformed (a manifest that is not JSON, a listing entry without `LastModified`).
    #[error("S3 cache {uri}: object {key}: {message}")]
    BadCacheObject {
        /// The cache's `s3://bucket/prefix`.
        uri: String,
        /// The object's key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl CatalogError {
    /// True when a later run may succeed: a call that was throttled, met a server error
    /// or timed out. Access denied, not found, invalid requests and malformed images or
    /// cache objects do not heal by themselves.
    pub fn is_retryable(&self) -> bool {
        match self {
            CatalogError::Api { kind, .. } | CatalogError::S3 { kind, .. } => kind.is_retryable(),
            CatalogError::Paging { error, .. } => error.is_retryable(),
            CatalogError::BadImage { .. } | CatalogError::BadCacheObject { .. } => false,
        }
    }
}

impl From<paginate::PagingError> for CatalogError {
    fn from(error: paginate::PagingError) -> Self {
        CatalogError::Paging {
            repository: String::new(),
            error,
        }
    }
}

impl CatalogError {
    /// The same error, naming `repository` when it is a stopped listing.
    pub fn in_repository(self, repository: &str) -> Self {
        match self {
            CatalogError::Paging { error, .. } => CatalogError::Paging {
                repository: repository.to_string(),
                error,
            },
            other => other,
        }
    }
}

/// The images of a registry, as cleanup sees them.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync {
    /// Names of every repository (for the policy's repository selectors).
    async fn list_repositories(&self) -> Result<Vec<String>, CatalogError>;
    /// Every image of `repository`, with children, subjects and kinds resolved.
    async fn list_images(&self, repository: &str) -> Result<Vec<ImageRecord>, CatalogError>;
    /// Deletes up to [`DELETE_BATCH`] images by digest.
    async fn delete_images(
        &self,
        repository: &str,
        digests: &[Sha256Digest],
    ) -> Result<DeleteOutcome, CatalogError>;
    /// What lists the images in use (ECS, Lambda) where this catalog's images can be
    /// pulled from. `None`: nobody can tell, so a policy that protects images in use
    /// deletes nothing.
    fn in_use(&self) -> Option<&dyn workloads::InUseSource> {
        None
    }
    /// Who else may pull this catalog's images (repository and registry policies).
    /// `None`: nobody else can (an OCI layout).
    fn repository_policies(&self) -> Option<&dyn repository_policy::RepositoryPolicies> {
        None
    }
    /// Sets the deadline of the invocation in progress: every listing from here on
    /// (the images in use included) stops with an error when it comes. `None` clears it.
    fn set_deadline(&self, _deadline: Option<crate::deadline::Deadline>) {}
}
