//! Stand-ins for ECR behind the [`EcrApi`] port: [`MemoryEcr`], an in-memory ECR with
//! real ECR's paging and batch limits, and [`CountingEcr`], which counts the calls made
//! through any [`EcrApi`].

use super::{ApiErrorKind, EcrApi, EcrApiError, FetchedManifest, ImageDetail, ImageFailure};
use super::{DESCRIBE_PAGE, GET_BATCH};
use crate::catalog::DELETE_BATCH;
use crate::oci::{media, Sha256Digest};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// An OCI image's DescribeImages entry, pushed 30 days ago (older than any grace period
/// the tests use), for [`MemoryEcr::put`].
pub fn month_old_image() -> ImageDetail {
    ImageDetail {
        pushed_at: Some(chrono::Utc::now() - chrono::Duration::days(30)),
        manifest_media_type: Some(media::OCI_MANIFEST.into()),
        artifact_media_type: Some(media::OCI_CONFIG.into()),
        ..Default::default()
    }
}

/// A small OCI image manifest whose config digest comes from `seed` (so each seed gives
/// another manifest digest) with config media type `config`, no layers, and `extra`
/// appended inside the top-level object (e.g. `,"subject":{...}`).
pub fn seeded_manifest(seed: &str, config: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{config}","digest":"{}","size":2}},"layers":[]{extra}}}"#,
        media::OCI_MANIFEST,
        Sha256Digest::of(seed.as_bytes())
    )
    .into_bytes()
}

/// Counts the calls made through an [`EcrApi`] (benchmark and tests).
#[derive(Default)]
pub struct CallCounts {
    /// DescribeRepositories calls.
    pub describe_repositories: AtomicUsize,
    /// DescribeImages calls.
    pub describe_images: AtomicUsize,
    /// BatchGetImage calls.
    pub batch_get_image: AtomicUsize,
    /// BatchDeleteImage calls.
    pub batch_delete_image: AtomicUsize,
}

impl CallCounts {
    /// DescribeImages + BatchGetImage calls: what listing a repository cost.
    pub fn listing(&self) -> usize {
        self.describe_images.load(Ordering::Relaxed) + self.batch_get_image.load(Ordering::Relaxed)
    }
    /// BatchDeleteImage calls: what deleting cost.
    pub fn deletes(&self) -> usize {
        self.batch_delete_image.load(Ordering::Relaxed)
    }
}

/// An [`EcrApi`] wrapper that counts calls.
pub struct CountingEcr<A> {
    /// The wrapped port.
    pub inner: A,
    /// The calls made through it so far.
    pub counts: CallCounts,
}

impl<A> CountingEcr<A> {
    /// Wraps `inner`, with every count at zero.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            counts: CallCounts::default(),
        }
    }
}

#[async_trait::async_trait]
impl<A: EcrApi> EcrApi for CountingEcr<A> {
    async fn describe_repositories(
        &self,
        next_token: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), EcrApiError> {
        self.counts
            .describe_repositories
            .fetch_add(1, Ordering::Relaxed);
        self.inner.describe_repositories(next_token).await
    }
    async fn describe_images(
        &self,
        repository: &str,
        next_token: Option<String>,
    ) -> Result<(Vec<ImageDetail>, Option<String>), EcrApiError> {
        self.counts.describe_images.fetch_add(1, Ordering::Relaxed);
        self.inner.describe_images(repository, next_token).await
    }
    async fn batch_get_image(
        &self,
        repository: &str,
        digests: &[String],
    ) -> Result<(Vec<FetchedManifest>, Vec<ImageFailure>), EcrApiError> {
        self.counts.batch_get_image.fetch_add(1, Ordering::Relaxed);
        self.inner.batch_get_image(repository, digests).await
    }
    async fn batch_delete_image(
        &self,
        repository: &str,
        digests: &[String],
    ) -> Result<(Vec<String>, Vec<ImageFailure>), EcrApiError> {
        self.counts
            .batch_delete_image
            .fetch_add(1, Ordering::Relaxed);
        self.inner.batch_delete_image(repository, digests).await
    }
}

/// A DescribeImages detail and the manifest bytes.
type StoredImage = (ImageDetail, Vec<u8>);

/// An in-memory ECR with real ECR's paging and limits, which moto lacks (moto returns
/// one page and no `artifactMediaType`): the benchmark counts calls against it.
#[derive(Default)]
pub struct MemoryEcr {
    repos: Mutex<BTreeMap<String, Vec<StoredImage>>>,
}

impl MemoryEcr {
    /// An ECR with no repository.
    pub fn new() -> Self {
        Self::default()
    }
    /// Stores a manifest; its digest is sha256 of `bytes`.
    pub fn put(&self, repository: &str, mut detail: ImageDetail, bytes: Vec<u8>) {
        detail.digest = Sha256Digest::of(&bytes).to_string();
        self.repos
            .lock()
            .unwrap()
            .entry(repository.to_string())
            .or_default()
            .push((detail, bytes));
    }
    /// How many images `repository` holds.
    pub fn len(&self, repository: &str) -> usize {
        self.repos
            .lock()
            .unwrap()
            .get(repository)
            .map_or(0, Vec::len)
    }
    /// True when `repository` holds no image (or does not exist).
    pub fn is_empty(&self, repository: &str) -> bool {
        self.len(repository) == 0
    }
}

fn limit_error(what: &str, n: usize, max: usize) -> Result<(), EcrApiError> {
    if n > max {
        Err(EcrApiError {
            message: format!("{what}: {n} image ids, at most {max} allowed"),
            kind: ApiErrorKind::Invalid,
        })
    } else {
        Ok(())
    }
}

#[async_trait::async_trait]
impl EcrApi for MemoryEcr {
    async fn describe_repositories(
        &self,
        _next_token: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), EcrApiError> {
        Ok((self.repos.lock().unwrap().keys().cloned().collect(), None))
    }
    async fn describe_images(
        &self,
        repository: &str,
        next_token: Option<String>,
    ) -> Result<(Vec<ImageDetail>, Option<String>), EcrApiError> {
        let repos = self.repos.lock().unwrap();
        let images = repos.get(repository).ok_or_else(|| EcrApiError {
            message: format!("RepositoryNotFoundException: {repository}"),
            kind: ApiErrorKind::NotFound,
        })?;
        let start: usize = next_token.map_or(0, |t| t.parse().unwrap_or(0));
        let end = (start + DESCRIBE_PAGE as usize).min(images.len());
        let page = images[start..end].iter().map(|(d, _)| d.clone()).collect();
        Ok((page, (end < images.len()).then(|| end.to_string())))
    }
    async fn batch_get_image(
        &self,
        repository: &str,
        digests: &[String],
    ) -> Result<(Vec<FetchedManifest>, Vec<ImageFailure>), EcrApiError> {
        limit_error("BatchGetImage", digests.len(), GET_BATCH)?;
        let repos = self.repos.lock().unwrap();
        let images = repos.get(repository).map(Vec::as_slice).unwrap_or(&[]);
        let mut found = Vec::new();
        let mut failed = Vec::new();
        for d in digests {
            match images.iter().find(|(i, _)| &i.digest == d) {
                Some((i, bytes)) => found.push(FetchedManifest {
                    digest: d.clone(),
                    bytes: bytes.clone(),
                    media_type: i.manifest_media_type.clone(),
                }),
                None => failed.push(ImageFailure {
                    digest: d.clone(),
                    code: "ImageNotFound".into(),
                    message: "Requested image not found".into(),
                }),
            }
        }
        Ok((found, failed))
    }
    async fn batch_delete_image(
        &self,
        repository: &str,
        digests: &[String],
    ) -> Result<(Vec<String>, Vec<ImageFailure>), EcrApiError> {
        limit_error("BatchDeleteImage", digests.len(), DELETE_BATCH)?;
        let mut repos = self.repos.lock().unwrap();
        let images = repos.entry(repository.to_string()).or_default();
        let mut deleted = Vec::new();
        let mut failed = Vec::new();
        for d in digests {
            match images.iter().position(|(i, _)| &i.digest == d) {
                Some(at) => {
                    images.remove(at);
                    deleted.push(d.clone());
                }
                None => failed.push(ImageFailure {
                    digest: d.clone(),
                    code: "ImageNotFound".into(),
                    message: "Requested image not found".into(),
                }),
            }
        }
        Ok((deleted, failed))
    }
}
