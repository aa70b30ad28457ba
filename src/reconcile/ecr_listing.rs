//! A [`Repository`] that answers the survey's reads of one ECR repository through ECR's
//! own API, and hands everything else (blobs, writes) to the distribution client of the
//! same repository.
//!
//! Through the distribution API a survey of N images costs N manifest GETs, one HTTP
//! request each. ECR answers the same questions in bulk:
//! - the tags: DescribeImages, pages of 1000 images with their tags, read once per
//!   repository and kept ([`Repository::list_tags`], and every tag lookup after it);
//! - the manifests: BatchGetImage, up to 100 digests a call. Asked for one digest, the
//!   wrapper fetches it together with up to 99 others the survey will read too (the
//!   tagged images, in tag order, then the platform manifests and SOCI index manifests
//!   named by the indexes already read), and keeps the bytes;
//! - the referrers: DescribeImages reports each image's `subjectManifestDigest`.
//!
//! So a survey of N images makes about N/1000 DescribeImages and N/100 BatchGetImage
//! calls. What is prefetched is what the survey reads anyway: a BatchGetImage counts as
//! a pull for ECR's `lastRecordedPullTime`, which cleanup policies read, so untagged
//! images nobody names are never fetched. (The platform manifests of an index whose tag
//! the filters leave out are the one exception: they are fetched with the batch though
//! the survey skips them.)
//!
//! What ECR's API cannot answer goes to the inner repository: the image configs the
//! survey reads for each image's platform (blobs: one registry request per image, most
//! of a survey's requests at scale, see docs/benchmarks.md), and the referrers when the
//! listing cannot tell them.
//!
//! The listing is a snapshot: a write through the wrapper drops it (the next read lists
//! again); manifests are kept by digest, which no write can change.

use crate::catalog::ecr::{EcrApi, EcrApiError, FetchedManifest, ImageDetail, GET_BATCH};
use crate::catalog::paginate::{Paging, PagingError};
use crate::catalog::ApiErrorKind;
use crate::oci::{annotation, is_attestation_descriptor, media, DescriptorSummary};
use crate::oci::{ManifestSummary, Sha256Digest};
use crate::registry::{
    BlobRef, BlobStream, Manifest, RegistryError, Repository, Result, MAX_MANIFEST_SIZE,
};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The ECR calls one wrapper (or a whole registry survey) made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EcrCalls {
    /// DescribeRepositories pages (a registry survey's; 0 for one repository).
    pub describe_repositories: usize,
    /// DescribeImages pages.
    pub describe_images: usize,
    /// BatchGetImage calls.
    pub batch_get_image: usize,
    /// The survey's reads the wrapper answered (tag listings, manifests by tag or
    /// digest, resolves, referrers): through the distribution API each one is at least
    /// one request, so this is what the ECR calls above replace.
    pub reads: usize,
}

impl std::ops::AddAssign for EcrCalls {
    fn add_assign(&mut self, other: Self) {
        self.describe_repositories += other.describe_repositories;
        self.describe_images += other.describe_images;
        self.batch_get_image += other.batch_get_image;
        self.reads += other.reads;
    }
}

/// One image of the DescribeImages listing, as the wrapper needs it.
#[derive(Debug, Clone)]
struct Listed {
    /// `artifactMediaType`, when ECR reported it.
    artifact_media_type: Option<String>,
    /// `subjectManifestDigest`, when ECR reported it.
    subject: Option<Sha256Digest>,
}

/// The DescribeImages listing of the repository.
#[derive(Debug, Default)]
struct Listing {
    /// Each tag and the image it names.
    tags: BTreeMap<String, Sha256Digest>,
    /// Every image of the repository, tagged or not.
    images: HashMap<Sha256Digest, Listed>,
    /// Whether any image carries a `subjectManifestDigest`.
    reports_subjects: bool,
}

#[derive(Debug, Default)]
struct State {
    listing: Option<Arc<Listing>>,
    /// Manifests read, by digest.
    manifests: HashMap<Sha256Digest, Manifest>,
    /// Digests BatchGetImage reported as `ImageNotFound`.
    gone: HashSet<Sha256Digest>,
    /// Digests the survey will read and that are not fetched yet, in reading order
    /// (may hold digests since fetched: they are skipped when a batch is made).
    pending: VecDeque<Sha256Digest>,
    /// What was ever put in `pending`.
    queued: HashSet<Sha256Digest>,
}

/// Why a listing or batch call failed (the paging helper's errors included).
enum CallError {
    Api(EcrApiError),
    Paging(PagingError),
}

impl From<PagingError> for CallError {
    fn from(e: PagingError) -> Self {
        CallError::Paging(e)
    }
}

/// A [`Repository`] over one ECR repository: the survey's reads through ECR's API,
/// blobs and writes through `inner` (see the module documentation).
pub struct EcrApiRepository<A: EcrApi + ?Sized> {
    api: Arc<A>,
    repository: String,
    inner: Arc<dyn Repository>,
    paging: Paging,
    state: tokio::sync::Mutex<State>,
    describe_images: AtomicUsize,
    batch_get_image: AtomicUsize,
    reads: AtomicUsize,
}

impl<A: EcrApi + ?Sized> std::fmt::Debug for EcrApiRepository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrApiRepository")
            .field("repository", &self.repository)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<A: EcrApi + ?Sized> EcrApiRepository<A> {
    /// ECR repository `repository` through `api`, its blobs and writes through `inner`
    /// (the distribution client of the same repository).
    pub fn new(api: Arc<A>, repository: &str, inner: Arc<dyn Repository>) -> Self {
        Self {
            api,
            repository: repository.to_string(),
            inner,
            paging: Paging::default(),
            state: tokio::sync::Mutex::default(),
            describe_images: AtomicUsize::new(0),
            batch_get_image: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
        }
    }

    /// The same, its calls under `paging` (page cap, invocation deadline).
    pub fn with_paging(mut self, paging: Paging) -> Self {
        self.paging = paging;
        self
    }

    /// The ECR calls made so far.
    pub fn calls(&self) -> EcrCalls {
        EcrCalls {
            describe_repositories: 0,
            describe_images: self.describe_images.load(Ordering::Relaxed),
            batch_get_image: self.batch_get_image.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
        }
    }

    fn what(&self) -> String {
        format!("ECR repository {}", self.repository)
    }

    /// An ECR failure as a registry error of the same kind, naming the call.
    fn call_error(&self, operation: &str, e: CallError) -> RegistryError {
        let url = format!("ECR {operation} {}", self.repository);
        match e {
            CallError::Paging(e) => RegistryError::Transport {
                url,
                retryable: e.is_retryable(),
                message: e.to_string(),
            },
            CallError::Api(e) => match e.kind {
                ApiErrorKind::NotFound => RegistryError::NotFound {
                    what: format!("{operation}: {}", e.message),
                    location: self.what(),
                },
                ApiErrorKind::AccessDenied => RegistryError::Auth {
                    registry: format!("ECR ({operation} {})", self.repository),
                    message: e.message,
                },
                kind => RegistryError::Transport {
                    url,
                    message: e.message,
                    retryable: kind.is_retryable(),
                },
            },
        }
    }

    /// The listing, read on first use.
    async fn listing(&self, state: &mut State) -> Result<Arc<Listing>> {
        if let Some(l) = &state.listing {
            return Ok(l.clone());
        }
        let details: Vec<ImageDetail> = self
            .paging
            .all("ECR", "DescribeImages", |token| async {
                self.describe_images.fetch_add(1, Ordering::Relaxed);
                self.api
                    .describe_images(&self.repository, token)
                    .await
                    .map_err(CallError::Api)
            })
            .await
            .map_err(|e| self.call_error("DescribeImages", e))?;
        let mut listing = Listing::default();
        for d in details {
            let digest = self.parse_digest("imageDigest", &d.digest)?;
            let subject = match d.subject.as_deref() {
                Some(s) => Some(self.parse_digest("subjectManifestDigest", s)?),
                None => None,
            };
            listing.reports_subjects |= subject.is_some();
            for tag in d.tags {
                listing.tags.insert(tag, digest.clone());
            }
            listing.images.insert(
                digest,
                Listed {
                    artifact_media_type: d.artifact_media_type,
                    subject,
                },
            );
        }
        // The survey reads every tag, in tag order: the first batches follow it.
        for digest in listing.tags.values() {
            if state.queued.insert(digest.clone()) {
                state.pending.push_back(digest.clone());
            }
        }
        let listing = Arc::new(listing);
        state.listing = Some(listing.clone());
        Ok(listing)
    }

    fn parse_digest(&self, field: &str, s: &str) -> Result<Sha256Digest> {
        s.parse().map_err(|e| RegistryError::Invalid {
            location: self.what(),
            message: format!("DescribeImages {field} {s:?}: {e}"),
        })
    }

    /// The manifest `digest`, from what was read or with one BatchGetImage that also
    /// fetches up to 99 pending digests.
    async fn manifest(&self, state: &mut State, digest: &Sha256Digest) -> Result<Manifest> {
        if let Some(m) = state.manifests.get(digest) {
            return Ok(m.clone());
        }
        let not_found = || RegistryError::NotFound {
            what: format!("manifest {digest}"),
            location: self.what(),
        };
        if state.gone.contains(digest) {
            return Err(not_found());
        }
        let listing = self.listing(state).await?;
        let mut batch = vec![digest.clone()];
        while batch.len() < GET_BATCH {
            let Some(next) = state.pending.pop_front() else {
                break;
            };
            if !state.manifests.contains_key(&next)
                && !state.gone.contains(&next)
                && next != *digest
            {
                batch.push(next);
            }
        }
        let ids: Vec<String> = batch.iter().map(ToString::to_string).collect();
        let (found, failed) = self
            .paging
            .call("ECR", "BatchGetImage", 0, async {
                self.batch_get_image.fetch_add(1, Ordering::Relaxed);
                self.api
                    .batch_get_image(&self.repository, &ids)
                    .await
                    .map_err(CallError::Api)
            })
            .await
            .map_err(|e| self.call_error("BatchGetImage", e))?;
        let mut failure_of_wanted = None;
        for f in failed {
            let Ok(d) = f.digest.parse::<Sha256Digest>() else {
                continue;
            };
            if f.code == "ImageNotFound" {
                state.gone.insert(d.clone());
            } else if d == *digest {
                failure_of_wanted = Some(format!("{}: {}", f.code, f.message));
            }
            // Another failed prefetch is asked for again when the survey reads it.
        }
        for fetched in found {
            let manifest = self.checked(fetched)?;
            self.queue_named_by(state, &listing, &manifest);
            state.manifests.insert(manifest.digest.clone(), manifest);
        }
        if let Some(m) = state.manifests.get(digest) {
            return Ok(m.clone());
        }
        if state.gone.contains(digest) {
            return Err(not_found());
        }
        Err(RegistryError::Invalid {
            location: self.what(),
            message: match failure_of_wanted {
                Some(why) => format!("BatchGetImage of {digest}: {why}"),
                None => format!(
                    "BatchGetImage returned neither the manifest {digest} nor a failure for it"
                ),
            },
        })
    }

    /// A fetched manifest with its digest verified, its size checked and its media type
    /// as the other repositories report it.
    fn checked(&self, fetched: FetchedManifest) -> Result<Manifest> {
        let what = format!("manifest {} in {}", fetched.digest, self.what());
        let digest: Sha256Digest = fetched.digest.parse().map_err(RegistryError::Oci)?;
        if fetched.bytes.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::ManifestTooLarge {
                what,
                size: fetched.bytes.len(),
            });
        }
        digest.verify(&what, &fetched.bytes)?;
        let summary = ManifestSummary::parse(&what, &fetched.bytes)?;
        let media_type = summary
            .effective_media_type(fetched.media_type.as_deref())
            .to_string();
        Ok(Manifest {
            media_type,
            digest,
            bytes: fetched.bytes.into(),
        })
    }

    /// Queues what the survey reads after `manifest`: an index's platform manifests and
    /// the SOCI index manifests its entries name (present in the repository only).
    fn queue_named_by(&self, state: &mut State, listing: &Listing, manifest: &Manifest) {
        if !media::is_index(&manifest.media_type) {
            return;
        }
        let Ok(summary) = ManifestSummary::parse("", &manifest.bytes) else {
            return;
        };
        for entry in &summary.manifests {
            if is_attestation_descriptor(entry) {
                continue;
            }
            let mut named = vec![];
            if media::is_image_manifest(&entry.media_type) {
                named.push(entry.digest.as_str());
            }
            if let Some(soci) = entry.annotations.get(annotation::SOCI_INDEX_DIGEST) {
                named.push(soci.as_str());
            }
            for d in named {
                let Ok(d) = d.parse::<Sha256Digest>() else {
                    continue;
                };
                if listing.images.contains_key(&d) && state.queued.insert(d.clone()) {
                    state.pending.push_back(d);
                }
            }
        }
    }

    /// The digest `reference` (a tag or a digest) names.
    async fn digest_of(&self, state: &mut State, reference: &str) -> Result<Sha256Digest> {
        if reference.starts_with("sha256:") {
            return Ok(reference.parse()?);
        }
        let listing = self.listing(state).await?;
        listing
            .tags
            .get(reference)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound {
                what: format!("tag {reference}"),
                location: self.what(),
            })
    }

    /// A write changes what the listing says: the next read lists again.
    async fn forget_listing(&self) {
        let mut state = self.state.lock().await;
        state.listing = None;
        state.pending.clear();
        state.queued.clear();
        state.gone.clear();
    }
}

#[async_trait]
impl<A: EcrApi + ?Sized + 'static> Repository for EcrApiRepository<A> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn resolve(&self, reference: &str) -> Result<BlobRef> {
        // Counted as the read of the manifest it is answered with.
        Ok(self.get_manifest(reference).await?.descriptor())
    }

    async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().await;
        let digest = self.digest_of(&mut state, reference).await?;
        self.manifest(&mut state, &digest).await
    }

    async fn put_manifest(&self, manifest: &Manifest, tag: Option<&str>) -> Result<()> {
        self.forget_listing().await;
        self.inner.put_manifest(manifest, tag).await
    }

    async fn delete_manifest(&self, digest: &Sha256Digest) -> Result<()> {
        self.forget_listing().await;
        self.inner.delete_manifest(digest).await
    }

    async fn blob_size(&self, digest: &Sha256Digest) -> Result<Option<u64>> {
        self.inner.blob_size(digest).await
    }

    async fn get_blob(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream> {
        self.inner.get_blob(digest, range).await
    }

    async fn push_blob(&self, digest: &Sha256Digest, size: u64, data: BlobStream) -> Result<()> {
        self.inner.push_blob(digest, size, data).await
    }

    async fn mount_blob(&self, digest: &Sha256Digest, from_repository: &str) -> Result<bool> {
        self.inner.mount_blob(digest, from_repository).await
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().await;
        Ok(self
            .listing(&mut state)
            .await?
            .tags
            .keys()
            .cloned()
            .collect())
    }

    async fn referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<DescriptorSummary>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().await;
        let listing = self.listing(&mut state).await?;
        if !listing.reports_subjects {
            // No image carries a subject: either the repository has no referrer, or
            // the API does not report subjects (moto does not; ECR before its OCI 1.1
            // support did not). ECR reports `artifactMediaType` for every image, so
            // when every image has one and none is the type asked for, there is no
            // such referrer; otherwise only the registry can tell.
            let every_type_known = listing
                .images
                .values()
                .all(|i| i.artifact_media_type.is_some());
            let none_of_that_type = artifact_type.is_some_and(|t| {
                !listing
                    .images
                    .values()
                    .any(|i| i.artifact_media_type.as_deref() == Some(t))
            });
            if every_type_known && none_of_that_type {
                return Ok(vec![]);
            }
            drop(state);
            return self.inner.referrers(digest, artifact_type).await;
        }
        let mut referrers: Vec<Sha256Digest> = listing
            .images
            .iter()
            .filter(|(_, i)| i.subject.as_ref() == Some(digest))
            .map(|(d, _)| d.clone())
            .collect();
        referrers.sort();
        // Fetched together: the first call takes the others along.
        for d in &referrers {
            if state.queued.insert(d.clone()) {
                state.pending.push_front(d.clone());
            }
        }
        let mut out = vec![];
        for d in referrers {
            let manifest = match self.manifest(&mut state, &d).await {
                Ok(m) => m,
                // Deleted since the listing: not a referrer any more.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            let summary = ManifestSummary::parse(&d.to_string(), &manifest.bytes)?;
            let found = summary.artifact_type().map(str::to_string);
            if artifact_type.is_some_and(|t| found.as_deref() != Some(t)) {
                continue;
            }
            out.push(DescriptorSummary {
                media_type: manifest.media_type.clone(),
                digest: d.to_string(),
                size: manifest.bytes.len() as u64,
                artifact_type: found,
                annotations: summary.annotations.clone(),
                platform: None,
            });
        }
        Ok(out)
    }

    async fn push_referrer(&self, manifest: &Manifest) -> Result<()> {
        self.forget_listing().await;
        self.inner.push_referrer(manifest).await
    }

    async fn discard(&self) -> Result<()> {
        self.forget_listing().await;
        self.inner.discard().await
    }

    async fn commit(&self) -> Result<()> {
        self.inner.commit().await
    }
}

#[cfg(test)]
mod tests;
