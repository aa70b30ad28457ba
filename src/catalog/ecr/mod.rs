//! The ECR catalog: DescribeImages (pages of 1000) for tags, times and sizes,
//! BatchGetImage (≤ 100 ids, every manifest media type accepted) only for the manifests
//! whose kind or references DescribeImages cannot tell, BatchDeleteImage (≤ 100 ids).
//!
//! The ECR calls go through the small [`EcrApi`] port so that the listing and batching
//! logic here is the same against the SDK ([`SdkEcr`], in `sdk.rs`) and against the
//! in-memory `MemoryEcr` (in `fakes.rs`) the benchmark uses to count calls at 10,000
//! images.

// Test doubles: built for the crate's own unit tests and, with the `test-util` feature,
// for the integration tests and benchmarks; never in the product.
#[cfg(any(test, feature = "test-util"))]
mod fakes;
pub mod manifest_cache;
mod sdk;

#[cfg(any(test, feature = "test-util"))]
pub use fakes::{month_old_image, seeded_manifest, CallCounts, CountingEcr, MemoryEcr};
pub use sdk::SdkEcr;

use super::{
    ApiErrorKind, Catalog, CatalogError, DeleteFailure, DeleteOutcome, ImageRecord, DELETE_BATCH,
};
use crate::catalog::paginate::Paging;
use crate::catalog::repository_policy::RepositoryPolicies;
use crate::catalog::workloads::InUseSource;
use crate::oci::{
    annotation, is_attestation_descriptor, media, ArtifactKind, DescriptorSummary, ManifestSummary,
    Sha256Digest,
};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// DescribeImages returns at most 1000 images per page.
pub const DESCRIBE_PAGE: i32 = 1000;
/// BatchGetImage takes at most 100 image ids.
pub const GET_BATCH: usize = 100;

/// One `ImageDetail` of DescribeImages, reduced to what cleanup reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDetail {
    /// `imageDigest`.
    pub digest: String,
    /// `imageTags`.
    pub tags: Vec<String>,
    /// `imagePushedAt`.
    pub pushed_at: Option<DateTime<Utc>>,
    /// `lastRecordedPullTime` (approximate, refreshed about daily).
    pub last_pulled_at: Option<DateTime<Utc>>,
    /// `imageManifestMediaType`.
    pub manifest_media_type: Option<String>,
    /// `artifactMediaType` (the config media type or OCI `artifactType`).
    pub artifact_media_type: Option<String>,
    /// `subjectManifestDigest`: the manifest this one refers to, when ECR reports it.
    pub subject: Option<String>,
    /// `imageSizeInBytes`.
    pub size_bytes: u64,
}

/// A manifest as BatchGetImage returns it: the exact stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// `imageId.imageDigest`.
    pub digest: String,
    /// `imageManifest`, byte for byte.
    pub bytes: Vec<u8>,
    /// `imageManifestMediaType`.
    pub media_type: Option<String>,
}

/// A per-image failure of a batch call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFailure {
    /// The image digest the failure is about.
    pub digest: String,
    /// `failureCode` (e.g. `ImageNotFound`).
    pub code: String,
    /// `failureReason`.
    pub message: String,
}

/// A failed ECR call, after the SDK's own retries (the only retry layer: the catalog
/// does not call again).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EcrApiError {
    /// The SDK's error with its context.
    pub message: String,
    /// What the call failed with (throttled, not found, ...).
    pub kind: ApiErrorKind,
}

/// The four ECR calls cleanup makes.
#[async_trait::async_trait]
pub trait EcrApi: Send + Sync {
    /// DescribeRepositories: one page of repository names and the next token.
    async fn describe_repositories(
        &self,
        next_token: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), EcrApiError>;
    /// DescribeImages: one page (up to [`DESCRIBE_PAGE`]) of images and the next token.
    async fn describe_images(
        &self,
        repository: &str,
        next_token: Option<String>,
    ) -> Result<(Vec<ImageDetail>, Option<String>), EcrApiError>;
    /// BatchGetImage: the manifests of up to [`GET_BATCH`] digests, and per-image failures.
    async fn batch_get_image(
        &self,
        repository: &str,
        digests: &[String],
    ) -> Result<(Vec<FetchedManifest>, Vec<ImageFailure>), EcrApiError>;
    /// BatchDeleteImage: the digests deleted (up to [`DELETE_BATCH`] asked) and per-image failures.
    async fn batch_delete_image(
        &self,
        repository: &str,
        digests: &[String],
    ) -> Result<(Vec<String>, Vec<ImageFailure>), EcrApiError>;
}

/// The production [`Catalog`] over ECR.
pub struct EcrCatalog<A = SdkEcr> {
    api: A,
    /// The page cap and deadline of the listings.
    paging: Paging,
    /// The workloads of the same account and region (ECS, Lambda).
    in_use: Option<Box<dyn InUseSource>>,
    /// Manifests already read (each is read from ECR once: a read counts as a pull).
    manifests: Option<manifest_cache::ManifestCache>,
    /// The repository and registry policies (who else may pull).
    policies: Option<Box<dyn RepositoryPolicies>>,
}

impl<A: EcrApi> EcrCatalog<A> {
    /// A catalog with no source of images in use (see [`Self::with_in_use`]).
    pub fn new(api: A) -> Self {
        Self {
            api,
            paging: Paging::default(),
            in_use: None,
            manifests: None,
            policies: None,
        }
    }
    /// The same catalog, reading each manifest from ECR once and then from `cache`.
    pub fn with_manifest_cache(mut self, cache: manifest_cache::ManifestCache) -> Self {
        self.manifests = Some(cache);
        self
    }
    /// The same catalog, its listings under `paging`.
    pub fn with_paging(mut self, paging: Paging) -> Self {
        self.paging = paging;
        self
    }
    /// The same catalog, listing images in use through `source`.
    pub fn with_in_use(mut self, source: impl InUseSource + 'static) -> Self {
        self.in_use = Some(Box::new(source));
        self
    }
    /// The same catalog, reading who else may pull through `policies`.
    pub fn with_repository_policies(mut self, policies: impl RepositoryPolicies + 'static) -> Self {
        self.policies = Some(Box::new(policies));
        self
    }
    /// The ECR port this catalog calls (tests read a fake's counts through it).
    pub fn api(&self) -> &A {
        &self.api
    }
}

/// What DescribeImages cannot tell without the manifest bytes.
fn needs_manifest(d: &ImageDetail) -> bool {
    let mt = d.manifest_media_type.as_deref().unwrap_or("");
    let artifact = d.artifact_media_type.as_deref().unwrap_or("");
    // Indexes: their children. No artifact type: the kind. A config-typed manifest with a
    // subject or a cosign-style tag: image, signature or attestation are told by layers.
    media::is_index(mt)
        || mt.is_empty()
        || artifact.is_empty()
        || ((artifact == media::OCI_CONFIG || artifact == media::DOCKER_CONFIG)
            && (d.subject.is_some() || d.tags.iter().any(|t| cosign_tag_subject(t).is_some())))
}

/// The subject of cosign's tag scheme `sha256-<hex>.sig|.att|.sbom`.
pub fn cosign_tag_subject(tag: &str) -> Option<Sha256Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex_part = rest
        .strip_suffix(".sig")
        .or_else(|| rest.strip_suffix(".att"))
        .or_else(|| rest.strip_suffix(".sbom"))?;
    format!("sha256:{hex_part}").parse().ok()
}

fn parse_digest(repository: &str, what: &str, s: &str) -> Result<Sha256Digest, CatalogError> {
    s.parse()
        .map_err(|e: crate::oci::OciError| CatalogError::BadImage {
            repository: repository.to_string(),
            digest: s.to_string(),
            message: format!("{what}: {e}"),
        })
}

/// Builds the records of one repository from DescribeImages details and the manifests
/// fetched for some of them. Pure: shared by every [`EcrApi`].
pub fn resolve_images(
    repository: &str,
    details: Vec<ImageDetail>,
    manifests: &HashMap<String, FetchedManifest>,
) -> Result<Vec<ImageRecord>, CatalogError> {
    let mut records = Vec::with_capacity(details.len());
    // Edges learnt from index descriptors: (child digest -> kind, soci index).
    let mut child_kind: HashMap<Sha256Digest, ArtifactKind> = HashMap::new();
    let mut child_soci: HashMap<Sha256Digest, Sha256Digest> = HashMap::new();
    for d in details {
        let digest = parse_digest(repository, "imageDigest", &d.digest)?;
        let summary = match manifests.get(&d.digest) {
            Some(m) => ManifestSummary::parse(&format!("manifest {}", d.digest), &m.bytes)
                .map_err(|e| CatalogError::BadImage {
                    repository: repository.to_string(),
                    digest: d.digest.clone(),
                    message: e.to_string(),
                })?,
            // DescribeImages' types stand in for the manifest (same classification rules).
            None => ManifestSummary {
                media_type: d.manifest_media_type.clone(),
                config: d
                    .artifact_media_type
                    .clone()
                    .map(|media_type| DescriptorSummary {
                        media_type,
                        ..Default::default()
                    }),
                ..Default::default()
            },
        };
        let stored = manifests
            .get(&d.digest)
            .and_then(|m| m.media_type.clone())
            .or(d.manifest_media_type.clone());
        let manifest_media_type = summary.effective_media_type(stored.as_deref()).to_string();
        let kind = summary.kind(stored.as_deref());
        let mut children = Vec::new();
        if media::is_index(&manifest_media_type) && kind != ArtifactKind::BuildkitCache {
            for m in &summary.manifests {
                let child = parse_digest(repository, "index child", &m.digest)?;
                if is_attestation_descriptor(m) {
                    child_kind.insert(child.clone(), ArtifactKind::Attestation);
                } else if m
                    .artifact_type
                    .as_deref()
                    .is_some_and(|a| a.starts_with("application/vnd.amazon.soci.index."))
                {
                    child_kind.insert(child.clone(), ArtifactKind::SociIndex);
                    if let Some(img) = m.annotations.get(annotation::SOCI_IMAGE_MANIFEST_DIGEST) {
                        let img = parse_digest(repository, "soci image-manifest-digest", img)?;
                        child_soci.insert(img, child.clone());
                    }
                }
                if let Some(soci) = m.annotations.get(annotation::SOCI_INDEX_DIGEST) {
                    let soci = parse_digest(repository, "soci index-digest", soci)?;
                    child_soci.insert(child.clone(), soci);
                }
                children.push(child);
            }
        }
        let mut subject = match summary.subject.as_ref().map(|s| s.digest.as_str()) {
            Some(s) => Some(parse_digest(repository, "subject", s)?),
            None => match d.subject.as_deref() {
                Some(s) => Some(parse_digest(repository, "subjectManifestDigest", s)?),
                None => None,
            },
        };
        // A referrer is what its own manifest says is a signature or attestation; a tag
        // in cosign's scheme only names the subject of such a manifest. An image (or
        // anything else) tagged `sha256-<hex>.sig` stays what it is, with no subject.
        let referrer_kind = matches!(kind, ArtifactKind::Signature | ArtifactKind::Attestation);
        if !referrer_kind && kind == ArtifactKind::Image {
            subject = None;
        }
        if subject.is_none() && referrer_kind {
            subject = d.tags.iter().find_map(|t| cosign_tag_subject(t));
        }
        let soci_index = match summary.annotations.get(annotation::SOCI_INDEX_DIGEST) {
            Some(s) => Some(parse_digest(repository, "soci index-digest", s)?),
            None => None,
        };
        records.push(ImageRecord {
            digest,
            tags: d.tags,
            // ECR always sets imagePushedAt; an image without one is treated as pushed
            // in the far future, so the grace period protects it even at `--as-of`.
            pushed_at: d.pushed_at.unwrap_or(DateTime::<Utc>::MAX_UTC),
            last_pulled_at: d.last_pulled_at,
            manifest_media_type,
            artifact_media_type: summary.artifact_type().map(str::to_string),
            kind,
            subject,
            children,
            soci_index,
            size_bytes: d.size_bytes,
        });
    }
    for r in &mut records {
        if let Some(k) = child_kind.get(&r.digest) {
            // An index says what its entries are even when their config type does not.
            if matches!(r.kind, ArtifactKind::Image | ArtifactKind::Other) {
                r.kind = *k;
            }
        }
        if r.soci_index.is_none() {
            r.soci_index = child_soci.get(&r.digest).cloned();
        }
    }
    Ok(records)
}

#[async_trait::async_trait]
impl<A: EcrApi> Catalog for EcrCatalog<A> {
    async fn list_repositories(&self) -> Result<Vec<String>, CatalogError> {
        self.paging
            .all("ECR", "DescribeRepositories", |token| async {
                self.api
                    .describe_repositories(token)
                    .await
                    .map_err(|e| CatalogError::Api {
                        operation: "DescribeRepositories",
                        repository: String::new(),
                        message: e.message,
                        kind: e.kind,
                    })
            })
            .await
    }

    async fn list_images(&self, repository: &str) -> Result<Vec<ImageRecord>, CatalogError> {
        let api_error = |operation| {
            move |e: EcrApiError| CatalogError::Api {
                operation,
                repository: repository.to_string(),
                message: e.message,
                kind: e.kind,
            }
        };
        let mut details = self
            .paging
            .all("ECR", "DescribeImages", |token| async {
                self.api
                    .describe_images(repository, token)
                    .await
                    .map_err(api_error("DescribeImages"))
            })
            .await
            .map_err(|e| e.in_repository(repository))?;
        let wanted: Vec<String> = details
            .iter()
            .filter(|d| needs_manifest(d))
            .map(|d| d.digest.clone())
            .collect();
        let mut manifests = HashMap::new();
        let wanted = match &self.manifests {
            Some(cache) => cache.lookup(wanted, &mut manifests).await,
            None => wanted,
        };
        for batch in wanted.chunks(GET_BATCH) {
            let (found, failed) = self
                .paging
                .call("ECR", "BatchGetImage", 0, async {
                    self.api
                        .batch_get_image(repository, batch)
                        .await
                        .map_err(api_error("BatchGetImage"))
                })
                .await
                .map_err(|e| e.in_repository(repository))?;
            let mut gone: Vec<String> = Vec::new();
            for f in failed {
                // An image deleted between the two calls is simply gone; anything else
                // would leave its kind or children unknown, so the run stops here.
                if f.code != "ImageNotFound" {
                    return Err(CatalogError::BadImage {
                        repository: repository.to_string(),
                        digest: f.digest,
                        message: format!("BatchGetImage: {}: {}", f.code, f.message),
                    });
                }
                details.retain(|d| d.digest != f.digest);
                gone.push(f.digest);
            }
            for m in found {
                if let Some(cache) = &self.manifests {
                    cache.remember(&m).await;
                }
                manifests.insert(m.digest.clone(), m);
            }
            // A manifest asked for and neither returned nor reported as failed: its kind
            // and references are unknown, so nothing of the repository may be deleted.
            if let Some(missing) = batch
                .iter()
                .find(|d| !manifests.contains_key(*d) && !gone.contains(d))
            {
                return Err(CatalogError::BadImage {
                    repository: repository.to_string(),
                    digest: missing.clone(),
                    message:
                        "BatchGetImage returned neither the manifest nor a failure for it; \
                              its references are unknown, so the repository's deletions are blocked"
                            .into(),
                });
            }
        }
        resolve_images(repository, details, &manifests)
    }

    async fn delete_images(
        &self,
        repository: &str,
        digests: &[Sha256Digest],
    ) -> Result<DeleteOutcome, CatalogError> {
        let ids: Vec<String> = digests.iter().map(ToString::to_string).collect();
        let mut outcome = DeleteOutcome::default();
        for (at, batch) in ids.chunks(DELETE_BATCH).enumerate() {
            let (deleted, failed) = match self.api.batch_delete_image(repository, batch).await {
                Ok(answer) => answer,
                // What earlier batches deleted is gone whatever happens now: it stays in
                // the outcome, and this batch and the rest are reported not deleted.
                Err(e) => {
                    for d in &digests[at * DELETE_BATCH..] {
                        outcome.failed.push(DeleteFailure {
                            digest: d.clone(),
                            code: "CallFailed".into(),
                            message: format!("BatchDeleteImage failed ({}): {}", e.kind, e.message),
                        });
                    }
                    return Ok(outcome);
                }
            };
            for d in deleted {
                outcome
                    .deleted
                    .push(parse_digest(repository, "deleted imageDigest", &d)?);
            }
            for f in failed {
                outcome.failed.push(DeleteFailure {
                    digest: parse_digest(repository, "failed imageDigest", &f.digest)?,
                    code: f.code,
                    message: f.message,
                });
            }
        }
        Ok(outcome)
    }

    fn in_use(&self) -> Option<&dyn InUseSource> {
        self.in_use.as_deref()
    }

    fn repository_policies(&self) -> Option<&dyn RepositoryPolicies> {
        self.policies.as_deref()
    }

    fn set_deadline(&self, deadline: Option<crate::deadline::Deadline>) {
        self.paging.set_deadline(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use fakes::seeded_manifest as manifest;

    fn manifest_with_layer(seed: &str, layer: &str, subject: &Sha256Digest) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{m}","config":{{"mediaType":"{c}","digest":"{}","size":2}},"layers":[{{"mediaType":"{layer}","digest":"{}","size":3}}],"subject":{{"mediaType":"{m}","digest":"{subject}","size":1}}}}"#,
            Sha256Digest::of(seed.as_bytes()),
            Sha256Digest::of(b"layer"),
            m = media::OCI_MANIFEST,
            c = media::OCI_CONFIG,
        )
        .into_bytes()
    }

    fn detail(tags: &[&str], mt: &str, artifact: Option<&str>) -> ImageDetail {
        ImageDetail {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: Some(Utc::now()),
            manifest_media_type: Some(mt.into()),
            artifact_media_type: artifact.map(str::to_string),
            size_bytes: 10,
            ..Default::default()
        }
    }

    /// Fails the first `n` calls with ThrottlingException, like ECR past the SDK retries.
    struct Throttling {
        inner: CountingEcr<MemoryEcr>,
        left: AtomicUsize,
        /// Every call made, throttled or not.
        calls: AtomicUsize,
    }

    impl Throttling {
        fn check(&self) -> Result<(), EcrApiError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(EcrApiError {
                    message: "ThrottlingException: Rate exceeded".into(),
                    kind: ApiErrorKind::Throttled,
                });
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl EcrApi for Throttling {
        async fn describe_repositories(
            &self,
            t: Option<String>,
        ) -> Result<(Vec<String>, Option<String>), EcrApiError> {
            self.check()?;
            self.inner.describe_repositories(t).await
        }
        async fn describe_images(
            &self,
            r: &str,
            t: Option<String>,
        ) -> Result<(Vec<ImageDetail>, Option<String>), EcrApiError> {
            self.check()?;
            self.inner.describe_images(r, t).await
        }
        async fn batch_get_image(
            &self,
            r: &str,
            d: &[String],
        ) -> Result<(Vec<FetchedManifest>, Vec<ImageFailure>), EcrApiError> {
            self.check()?;
            self.inner.batch_get_image(r, d).await
        }
        async fn batch_delete_image(
            &self,
            r: &str,
            d: &[String],
        ) -> Result<(Vec<String>, Vec<ImageFailure>), EcrApiError> {
            self.check()?;
            self.inner.batch_delete_image(r, d).await
        }
    }

    /// One retry layer: a call the SDK gave up on (throttled past its attempts) is not
    /// made again by the catalog; the error keeps its kind, so the run is retryable.
    #[tokio::test]
    async fn a_throttled_call_is_not_repeated_and_stays_retryable() {
        let ecr = MemoryEcr::new();
        ecr.put(
            "app",
            detail(&["v1"], media::OCI_MANIFEST, Some(media::OCI_CONFIG)),
            manifest("img", media::OCI_CONFIG, ""),
        );
        let api = Throttling {
            inner: CountingEcr::new(ecr),
            left: AtomicUsize::new(1),
            calls: AtomicUsize::new(0),
        };
        let catalog = EcrCatalog::new(api);
        let err = catalog.list_images("app").await.unwrap_err();
        assert!(
            matches!(
                &err,
                CatalogError::Api {
                    operation: "DescribeImages",
                    kind: ApiErrorKind::Throttled,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_retryable());
        assert_eq!(catalog.api().calls.load(Ordering::SeqCst), 1);
        // The next run gets through.
        assert_eq!(catalog.list_images("app").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_missing_repository_is_not_retryable() {
        let catalog = EcrCatalog::new(MemoryEcr::new());
        let err = catalog.list_images("nope").await.unwrap_err();
        assert!(
            matches!(
                &err,
                CatalogError::Api {
                    kind: ApiErrorKind::NotFound,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn lists_with_few_calls_and_resolves_edges() {
        let ecr = MemoryEcr::new();
        // 2,500 caches: 3 DescribeImages pages, and no manifest needs fetching.
        for i in 0..2_500 {
            let bytes = manifest(&format!("c{i}"), media::BUILDKIT_CACHE_CONFIG, "");
            ecr.put(
                "app",
                detail(&[], media::OCI_MANIFEST, Some(media::BUILDKIT_CACHE_CONFIG)),
                bytes,
            );
        }
        // A SOCI v2 index binding, an attestation entry, a cosign tag-scheme signature.
        let img = manifest("img", media::OCI_CONFIG, "");
        let img_d = Sha256Digest::of(&img);
        let soci = manifest("soci", media::SOCI_INDEX_V2, "");
        let soci_d = Sha256Digest::of(&soci);
        let att = manifest("att", media::OCI_CONFIG, "");
        let att_d = Sha256Digest::of(&att);
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{idx}","manifests":[{{"mediaType":"{m}","digest":"{img_d}","size":1,"annotations":{{"com.amazon.soci.index-digest":"{soci_d}"}}}},{{"mediaType":"{m}","digest":"{soci_d}","size":1,"artifactType":"{st}"}},{{"mediaType":"{m}","digest":"{att_d}","size":1,"annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#,
            idx = media::OCI_INDEX,
            m = media::OCI_MANIFEST,
            st = media::SOCI_INDEX_V2,
        )
        .into_bytes();
        let index_d = Sha256Digest::of(&index);
        ecr.put(
            "app",
            detail(&[], media::OCI_MANIFEST, Some(media::OCI_CONFIG)),
            img,
        );
        ecr.put(
            "app",
            detail(&[], media::OCI_MANIFEST, Some(media::SOCI_INDEX_V2)),
            soci,
        );
        ecr.put(
            "app",
            detail(&[], media::OCI_MANIFEST, Some(media::OCI_CONFIG)),
            att,
        );
        ecr.put("app", detail(&["v1"], media::OCI_INDEX, None), index);
        // cosign's tag-scheme signature: its layer says it is one, its tag names the subject.
        let sig = String::from_utf8(manifest("sig", media::OCI_CONFIG, ""))
            .unwrap()
            .replace(
                r#""layers":[]"#,
                &format!(
                    r#""layers":[{{"mediaType":"{}","digest":"{}","size":3}}]"#,
                    media::COSIGN_SIGNATURE,
                    Sha256Digest::of(b"sig layer")
                ),
            )
            .into_bytes();
        let sig_d = Sha256Digest::of(&sig);
        let sig_tag = format!("sha256-{}.sig", img_d.hex());
        ecr.put(
            "app",
            detail(&[&sig_tag], media::OCI_MANIFEST, Some(media::OCI_CONFIG)),
            sig,
        );

        let dsse = manifest_with_layer("dsse", media::DSSE_ENVELOPE, &img_d);
        let dsse_d = Sha256Digest::of(&dsse);
        // Real ECR reports the subject of a referrer (moto does not).
        let mut dsse_detail = detail(&[], media::OCI_MANIFEST, Some(media::OCI_CONFIG));
        dsse_detail.subject = Some(img_d.to_string());
        ecr.put("app", dsse_detail, dsse);

        let catalog = EcrCatalog::new(CountingEcr::new(ecr));
        let images = catalog.list_images("app").await.unwrap();
        assert_eq!(images.len(), 2_506);
        let counts = &catalog.api().counts;
        // 3 pages + one BatchGetImage (the index and the tag-scheme signature).
        assert_eq!(counts.describe_images.load(Ordering::Relaxed), 3);
        assert_eq!(counts.batch_get_image.load(Ordering::Relaxed), 1);
        let by = |d: &Sha256Digest| images.iter().find(|i| &i.digest == d).unwrap();
        assert_eq!(by(&index_d).kind, ArtifactKind::Index);
        assert_eq!(
            by(&index_d).children,
            vec![img_d.clone(), soci_d.clone(), att_d.clone()]
        );
        assert_eq!(by(&img_d).soci_index, Some(soci_d.clone()));
        assert_eq!(by(&soci_d).kind, ArtifactKind::SociIndex);
        assert_eq!(by(&att_d).kind, ArtifactKind::Attestation);
        assert_eq!(by(&sig_d).kind, ArtifactKind::Signature);
        assert_eq!(by(&sig_d).subject, Some(img_d.clone()));
        assert_eq!(by(&dsse_d).kind, ArtifactKind::Attestation);
        assert_eq!(by(&dsse_d).subject, Some(img_d.clone()));

        // Deleting 250 digests takes three calls of at most 100.
        let doomed: Vec<Sha256Digest> = images
            .iter()
            .filter(|i| i.kind == ArtifactKind::BuildkitCache)
            .take(250)
            .map(|i| i.digest.clone())
            .collect();
        let out = catalog.delete_images("app", &doomed).await.unwrap();
        assert_eq!(out.deleted.len(), 250);
        assert_eq!(counts.batch_delete_image.load(Ordering::Relaxed), 3);
        assert_eq!(catalog.api().inner.len("app"), 2_506 - 250);
    }

    /// An ordinary image tagged in cosign's scheme is still an image, with no subject.
    #[tokio::test]
    async fn a_cosign_style_tag_alone_makes_no_signature() {
        let ecr = MemoryEcr::new();
        let subject = Sha256Digest::of(b"Y");
        let tag = format!("sha256-{}.sig", subject.hex());
        ecr.put(
            "app",
            detail(&["v1", &tag], media::OCI_MANIFEST, Some(media::OCI_CONFIG)),
            manifest("X", media::OCI_CONFIG, ""),
        );
        let images = EcrCatalog::new(ecr).list_images("app").await.unwrap();
        assert_eq!(images[0].kind, ArtifactKind::Image);
        assert_eq!(images[0].subject, None);
    }

    #[test]
    fn cosign_tags_name_their_subject() {
        let hex = "a".repeat(64);
        assert_eq!(
            cosign_tag_subject(&format!("sha256-{hex}.att"))
                .unwrap()
                .hex(),
            hex
        );
        assert!(cosign_tag_subject("sha256-abc.sig").is_none());
        assert!(cosign_tag_subject("latest").is_none());
    }
}
