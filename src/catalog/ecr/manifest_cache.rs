//! Manifests read once per digest, ever. ECR records a pull on every BatchGetImage, so
//! each manifest the catalog reads moves the image's `lastRecordedPullTime` and makes
//! `unused_for` and `sinceImagePulled` measure the janitor instead of the users. A
//! manifest is immutable (its digest is the sha256 of its bytes), so after the first
//! read it is taken from a [`ManifestStore`] (the report bucket, in the janitor).
//!
//! The store is never trusted: what it returns is used only when its sha256 is the
//! digest it is stored under; anything else is discarded and the manifest read from
//! ECR again (and stored again). A store that fails counts as a miss.

use super::FetchedManifest;
use crate::oci::Sha256Digest;
use futures::StreamExt;
use std::collections::HashMap;

/// Key prefix of the manifests in the store's bucket: `manifests/sha256/<hex>`.
pub const MANIFEST_PREFIX: &str = "manifests/";

/// Manifests larger than this are neither read from the store nor written to it (ECR's
/// own limit on a manifest is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Lookups made at once.
const CONCURRENT_LOOKUPS: usize = 16;

/// A stored manifest: its bytes and media type.
pub type StoredManifest = (Vec<u8>, Option<String>);

/// A failed store call (logged; the manifest is then read from ECR).
#[derive(Debug, Clone, thiserror::Error)]
#[error("manifest store: {0}")]
pub struct ManifestStoreError(pub String);

/// Where manifests are kept by digest: bytes and media type, stored as read.
#[async_trait::async_trait]
pub trait ManifestStore: Send + Sync {
    /// The bytes and media type stored under `digest`, `None` when there are none.
    async fn get(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<StoredManifest>, ManifestStoreError>;
    /// Stores `bytes` (of `media_type`) under `digest`.
    async fn put(
        &self,
        digest: &Sha256Digest,
        bytes: &[u8],
        media_type: Option<&str>,
    ) -> Result<(), ManifestStoreError>;
}

/// A [`ManifestStore`] whose answers are checked against their digests.
pub struct ManifestCache {
    store: Box<dyn ManifestStore>,
}

impl ManifestCache {
    /// Manifests kept in `store`.
    pub fn new(store: impl ManifestStore + 'static) -> Self {
        Self {
            store: Box::new(store),
        }
    }

    /// Moves every digest of `wanted` whose manifest the store holds, verified, into
    /// `found`; returns the digests left to read from ECR.
    pub async fn lookup(
        &self,
        wanted: Vec<String>,
        found: &mut HashMap<String, FetchedManifest>,
    ) -> Vec<String> {
        let answers: Vec<(String, Option<FetchedManifest>)> = futures::stream::iter(wanted)
            .map(|d| async move {
                let hit = self.verified(&d).await;
                (d, hit)
            })
            .buffered(CONCURRENT_LOOKUPS)
            .collect()
            .await;
        let mut missing = Vec::new();
        for (digest, hit) in answers {
            match hit {
                Some(m) => {
                    found.insert(digest, m);
                }
                None => missing.push(digest),
            }
        }
        missing
    }

    async fn verified(&self, digest: &str) -> Option<FetchedManifest> {
        let parsed: Sha256Digest = digest.parse().ok()?;
        match self.store.get(&parsed).await {
            Ok(Some((bytes, media_type))) => {
                if bytes.len() <= MAX_MANIFEST_BYTES && Sha256Digest::of(&bytes) == parsed {
                    Some(FetchedManifest {
                        digest: digest.to_string(),
                        bytes,
                        media_type,
                    })
                } else {
                    tracing::warn!(
                        digest,
                        "stored manifest does not match its digest; read again"
                    );
                    None
                }
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(digest, error = %e, "manifest store unreadable; read from ECR");
                None
            }
        }
    }

    /// Keeps a manifest read from ECR, if its bytes are what its digest names.
    pub async fn remember(&self, manifest: &FetchedManifest) {
        let Ok(digest) = manifest.digest.parse::<Sha256Digest>() else {
            return;
        };
        if manifest.bytes.len() > MAX_MANIFEST_BYTES || Sha256Digest::of(&manifest.bytes) != digest
        {
            return;
        }
        if let Err(e) = self
            .store
            .put(&digest, &manifest.bytes, manifest.media_type.as_deref())
            .await
        {
            tracing::warn!(digest = %digest, error = %e, "manifest not stored; the next run reads it again");
        }
    }
}

/// Manifests in an S3 bucket, at `<prefix>sha256/<hex>`, the media type as the object's
/// content type.
#[derive(Clone)]
pub struct S3ManifestStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3ManifestStore {
    /// Manifests in `bucket` under `prefix` (e.g. [`MANIFEST_PREFIX`]).
    pub fn new(client: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Self {
        Self {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }
    }

    /// The key of `digest`'s manifest.
    pub fn key(&self, digest: &Sha256Digest) -> String {
        format!("{}sha256/{}", self.prefix, digest.hex())
    }
}

#[async_trait::async_trait]
impl ManifestStore for S3ManifestStore {
    async fn get(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<StoredManifest>, ManifestStoreError> {
        let key = self.key(digest);
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => {
                return Err(ManifestStoreError(format!(
                    "GetObject s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )))
            }
        };
        if out
            .content_length()
            .is_some_and(|n| n < 0 || n as usize > MAX_MANIFEST_BYTES)
        {
            return Ok(None);
        }
        let media_type = out.content_type().map(str::to_string);
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| ManifestStoreError(format!("reading s3://{}/{key}: {e}", self.bucket)))?
            .into_bytes()
            .to_vec();
        Ok(Some((bytes, media_type)))
    }

    async fn put(
        &self,
        digest: &Sha256Digest,
        bytes: &[u8],
        media_type: Option<&str>,
    ) -> Result<(), ManifestStoreError> {
        let key = self.key(digest);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_content_type(media_type.map(str::to_string))
            .body(bytes.to_vec().into())
            .send()
            .await
            .map_err(|e| {
                ManifestStoreError(format!(
                    "PutObject s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ))
            })?;
        Ok(())
    }
}

/// Manifests in memory, for tests and benchmarks. Shared through an `Arc` so a test can
/// read and tamper with what a catalog stored.
#[cfg(any(test, feature = "test-util"))]
#[derive(Default)]
pub struct MemoryManifestStore {
    /// Stored manifests by digest (`sha256:<hex>`): bytes and media type.
    pub objects: std::sync::Mutex<HashMap<String, StoredManifest>>,
}

#[cfg(any(test, feature = "test-util"))]
#[async_trait::async_trait]
impl ManifestStore for std::sync::Arc<MemoryManifestStore> {
    async fn get(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<StoredManifest>, ManifestStoreError> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(&digest.to_string())
            .cloned())
    }
    async fn put(
        &self,
        digest: &Sha256Digest,
        bytes: &[u8],
        media_type: Option<&str>,
    ) -> Result<(), ManifestStoreError> {
        self.objects.lock().unwrap().insert(
            digest.to_string(),
            (bytes.to_vec(), media_type.map(str::to_string)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fakes::seeded_manifest, CountingEcr, EcrCatalog, ImageDetail, MemoryEcr};
    use super::*;
    use crate::catalog::Catalog;
    use crate::oci::media;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    /// An ECR of untagged indexes-to-be: no artifact type, so every manifest is fetched.
    fn ecr_with(n: usize) -> MemoryEcr {
        let ecr = MemoryEcr::new();
        for i in 0..n {
            ecr.put(
                "app",
                ImageDetail {
                    pushed_at: Some(chrono::Utc::now()),
                    manifest_media_type: Some(media::OCI_MANIFEST.into()),
                    ..Default::default()
                },
                seeded_manifest(&format!("m{i}"), media::OCI_CONFIG, ""),
            );
        }
        ecr
    }

    #[tokio::test]
    async fn a_second_listing_reads_no_manifest_and_a_forged_one_is_read_again() {
        let store = Arc::new(MemoryManifestStore::default());
        let catalog = EcrCatalog::new(CountingEcr::new(ecr_with(150)))
            .with_manifest_cache(ManifestCache::new(store.clone()));
        let first = catalog.list_images("app").await.unwrap();
        let gets = || catalog.api().counts.batch_get_image.load(Ordering::Relaxed);
        assert_eq!(gets(), 2, "150 manifests: two batches");
        assert_eq!(store.objects.lock().unwrap().len(), 150);
        let second = catalog.list_images("app").await.unwrap();
        assert_eq!(gets(), 2, "nothing read again");
        assert_eq!(first, second);

        // A stored object that is not what its key names is never used.
        let victim = first[0].digest.to_string();
        store.objects.lock().unwrap().insert(
            victim.clone(),
            (seeded_manifest("forged", media::OCI_CONFIG, ""), None),
        );
        let third = catalog.list_images("app").await.unwrap();
        assert_eq!(gets(), 3, "the forged one is read from ECR");
        assert_eq!(first, third);
        let stored = store.objects.lock().unwrap()[&victim].0.clone();
        assert_eq!(
            Sha256Digest::of(&stored).to_string(),
            victim,
            "and stored again"
        );
    }
}
