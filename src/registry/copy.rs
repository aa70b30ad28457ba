//! Copying an image (all platforms, attestations, optionally referrers) between repositories.
//!
//! Manifests are copied as their exact bytes, so digests are preserved. Everything a
//! manifest names is copied before the manifest itself (blobs, then children, then the
//! parent), so a registry never sees a manifest whose content is missing. Blobs already
//! present in the destination are skipped; between two repositories of one registry a
//! cross-repository mount is tried first.
//!
//! Referrers are stored untagged; making them discoverable is the destination's job (a
//! layout gives them an `index.json` entry; a registry without the referrers API needs
//! the `sha256-<hex>` tag schema maintained by its `put_manifest`).

use crate::oci::{media, ManifestSummary, Sha256Digest};
use crate::registry::{BlobRef, BlobStream, Manifest, RegistryError, Repository};
use futures::{StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::sync::Arc;

/// What can go wrong copying.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading from the source or writing to the destination failed.
    #[error("copying {what}: {source}")]
    Registry {
        /// What was being copied (manifest, blob or referrer, and where to).
        what: String,
        /// The repository's error.
        #[source]
        source: RegistryError,
    },
    /// A child manifest of an index has another size than the index's descriptor for it gives.
    #[error(
        "{what}: the source says {expected} is {expected_size} bytes, but it is {actual_size}"
    )]
    SizeMismatch {
        /// Which child (`child of <parent>`).
        what: String,
        /// The child's digest.
        expected: Sha256Digest,
        /// The size the descriptor gives, in bytes.
        expected_size: u64,
        /// The size the source stored, in bytes.
        actual_size: u64,
    },
}

/// A result whose error defaults to [`CopyError`].
pub type Result<T, E = CopyError> = std::result::Result<T, E>;

fn ctx(what: impl Into<String>) -> impl FnOnce(RegistryError) -> CopyError {
    let what = what.into();
    move |source| CopyError::Registry { what, source }
}

/// Progress reports, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyEvent {
    /// A blob transfer starts.
    BlobStarted {
        /// The blob's digest.
        digest: Sha256Digest,
        /// Its size in bytes.
        size: u64,
    },
    /// Bytes of a blob were transferred.
    BlobBytes {
        /// The blob's digest.
        digest: Sha256Digest,
        /// The size of this chunk (not a running total).
        bytes: u64,
    },
    /// A blob is done (`skipped`: it was already there or was mounted).
    BlobDone {
        /// The blob's digest.
        digest: Sha256Digest,
        /// Its size in bytes.
        size: u64,
        /// True when nothing was uploaded (already present, or mounted).
        skipped: bool,
    },
    /// A manifest was stored.
    ManifestPushed {
        /// The manifest's media type, digest and size.
        blob: BlobRef,
    },
}

/// Receives [`CopyEvent`]s (from several tasks at once).
pub type Progress = Arc<dyn Fn(CopyEvent) + Send + Sync>;

/// How to copy.
#[derive(Clone, Default)]
pub struct CopyOptions {
    /// Copy the referrers (signatures, SOCI indexes, attestations attached by subject)
    /// of every manifest copied, recursively.
    pub referrers: bool,
    /// The source's repository name when both are repositories of the same registry:
    /// blobs are then mounted rather than uploaded when the registry allows it.
    pub mount_from: Option<String>,
    /// Blobs transferred at once.
    pub concurrency: usize,
    /// Receives progress events; `None` for none.
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("referrers", &self.referrers)
            .field("mount_from", &self.mount_from)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// The root manifest copied.
    pub root: Option<BlobRef>,
    /// Manifests stored that the destination did not have yet.
    pub manifests: usize,
    /// Blobs uploaded.
    pub blobs_copied: usize,
    /// Blobs already in the destination, or mounted from the source repository.
    pub blobs_skipped: usize,
    /// Bytes uploaded (skipped blobs not counted).
    pub bytes_copied: u64,
    /// Referrers found and copied (with `referrers` set).
    pub referrers: usize,
}

struct Copier<'a> {
    src: &'a dyn Repository,
    dst: &'a dyn Repository,
    options: &'a CopyOptions,
    manifests_done: HashSet<Sha256Digest>,
    blobs_done: HashSet<Sha256Digest>,
    report: CopyReport,
}

/// Copies the manifest `reference` (tag or digest) of `src` with everything it names to
/// `dst`, tagging it `dst_tag` there (untagged when `None`). Nothing is committed: the
/// caller calls [`Repository::commit`] on `dst` once satisfied.
pub async fn copy_image(
    src: &dyn Repository,
    dst: &dyn Repository,
    reference: &str,
    dst_tag: Option<&str>,
    options: &CopyOptions,
) -> Result<CopyReport> {
    let mut copier = Copier {
        src,
        dst,
        options,
        manifests_done: HashSet::new(),
        blobs_done: HashSet::new(),
        report: CopyReport::default(),
    };
    let root = src
        .get_manifest(reference)
        .await
        .map_err(ctx(format!("{reference} from {}", src.location())))?;
    copier.report.root = Some(root.descriptor());
    copier.copy_manifest(root, dst_tag).await?;
    Ok(copier.report)
}

impl Copier<'_> {
    fn emit(&self, event: CopyEvent) {
        if let Some(p) = &self.options.progress {
            p(event);
        }
    }

    /// Copies a manifest after everything it names; then its referrers when asked.
    ///
    /// The walk keeps its own stack of [`Step`]s instead of recursing, so that an index
    /// nested thousands deep (or a long referrer chain) cannot overflow the thread's
    /// stack. Steps run in the order a depth-first recursion would run them.
    async fn copy_manifest(&mut self, root: Manifest, root_tag: Option<&str>) -> Result<()> {
        let mut stack = vec![Step::Manifest {
            manifest: root,
            tagged: root_tag.is_some(),
        }];
        while let Some(step) = stack.pop() {
            match step {
                Step::Manifest { manifest, tagged } => {
                    let what = format!("manifest {} of {}", manifest.digest, self.src.location());
                    let already = self.manifests_done.contains(&manifest.digest);
                    let mut blobs = Vec::new();
                    let mut children = Vec::new();
                    if !already {
                        let summary = ManifestSummary::parse(&what, &manifest.bytes)
                            .map_err(|e| ctx(what.clone())(e.into()))?;
                        // Children first (every platform and attestation manifest of an
                        // index), then the blobs: config and layers, a few at a time.
                        for child in summary.manifests {
                            children.push(if is_manifest_type(&child.media_type) {
                                Step::Child {
                                    digest: child.digest,
                                    size: child.size,
                                    parent: what.clone(),
                                }
                            } else {
                                // A legacy BuildKit cache index lists layer blobs, not
                                // manifests.
                                Step::Blobs {
                                    blobs: vec![(child.digest, child.size)],
                                    what: what.clone(),
                                }
                            });
                        }
                        blobs = summary
                            .config
                            .iter()
                            .chain(&summary.layers)
                            .filter(|d| {
                                !(d.media_type.contains("nondistributable")
                                    || d.media_type.contains("foreign"))
                            })
                            .map(|d| (d.digest.clone(), d.size))
                            .collect();
                    }
                    stack.push(Step::Store {
                        manifest,
                        tagged,
                        already,
                        what: what.clone(),
                    });
                    if !blobs.is_empty() {
                        stack.push(Step::Blobs { blobs, what });
                    }
                    stack.extend(children.into_iter().rev());
                }
                Step::Child {
                    digest,
                    size,
                    parent,
                } => {
                    let digest: Sha256Digest = digest
                        .parse()
                        .map_err(|e: crate::oci::OciError| ctx(parent.clone())(e.into()))?;
                    let child = self
                        .src
                        .get_manifest(&digest.to_string())
                        .await
                        .map_err(ctx(format!("child {digest} of {parent}")))?;
                    if child.bytes.len() as u64 != size {
                        return Err(CopyError::SizeMismatch {
                            what: format!("child of {parent}"),
                            expected: digest,
                            expected_size: size,
                            actual_size: child.bytes.len() as u64,
                        });
                    }
                    stack.push(Step::Manifest {
                        manifest: child,
                        tagged: false,
                    });
                }
                Step::Blobs { blobs, what } => self.copy_blobs(blobs, &what).await?,
                Step::Store {
                    manifest,
                    tagged,
                    already,
                    what,
                } => {
                    let tag = if tagged { root_tag } else { None };
                    if !already || tag.is_some() {
                        self.dst
                            .put_manifest(&manifest, tag)
                            .await
                            .map_err(ctx(format!("{what} to {}", self.dst.location())))?;
                        if !already {
                            self.report.manifests += 1;
                            self.emit(CopyEvent::ManifestPushed {
                                blob: manifest.descriptor(),
                            });
                        }
                    }
                    self.manifests_done.insert(manifest.digest.clone());
                    if self.options.referrers && !already {
                        let referrers = self
                            .src
                            .referrers(&manifest.digest, None)
                            .await
                            .map_err(ctx(format!("referrers of {what}")))?;
                        stack.extend(referrers.into_iter().rev().map(|r| Step::Referrer {
                            digest: r.digest,
                            subject: what.clone(),
                        }));
                    }
                }
                Step::Referrer { digest, subject } => {
                    let digest: Sha256Digest = digest
                        .parse()
                        .map_err(|e: crate::oci::OciError| ctx(subject.clone())(e.into()))?;
                    if self.manifests_done.contains(&digest) {
                        continue;
                    }
                    let m = self
                        .src
                        .get_manifest(&digest.to_string())
                        .await
                        .map_err(ctx(format!("referrer {digest} of {subject}")))?;
                    self.report.referrers += 1;
                    stack.push(Step::Manifest {
                        manifest: m,
                        tagged: false,
                    });
                }
            }
        }
        Ok(())
    }

    async fn copy_blobs(&mut self, blobs: Vec<(String, u64)>, what: &str) -> Result<()> {
        let mut todo = Vec::new();
        for (digest, size) in blobs {
            let digest: Sha256Digest = digest
                .parse()
                .map_err(|e: crate::oci::OciError| ctx(what.to_string())(e.into()))?;
            if self.blobs_done.insert(digest.clone()) {
                todo.push((digest, size));
            }
        }
        let concurrency = self.options.concurrency.max(1);
        let (src, dst, options) = (self.src, self.dst, self.options);
        let results: Vec<(u64, bool)> = futures::stream::iter(todo)
            .map(|(digest, size)| transfer_blob(src, dst, options, digest, size, what))
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        for (bytes, skipped) in results {
            if skipped {
                self.report.blobs_skipped += 1;
            } else {
                self.report.blobs_copied += 1;
                self.report.bytes_copied += bytes;
            }
        }
        Ok(())
    }
}

/// One piece of work of [`Copier::copy_manifest`]'s walk.
enum Step {
    /// Copy this manifest: queue what it names, then [`Step::Store`] it. Only the root
    /// is `tagged` (with the caller's tag).
    Manifest { manifest: Manifest, tagged: bool },
    /// Read the child manifest `digest` of `parent` (checking its size) and copy it.
    Child {
        digest: String,
        size: u64,
        parent: String,
    },
    /// Transfer these blobs (digest, size) that `what` names.
    Blobs {
        blobs: Vec<(String, u64)>,
        what: String,
    },
    /// Everything the manifest names is in place: store it, then queue its referrers.
    Store {
        manifest: Manifest,
        tagged: bool,
        already: bool,
        what: String,
    },
    /// Read the referrer `digest` of `subject` and copy it, unless already copied.
    Referrer { digest: String, subject: String },
}

/// True for descriptors in an index that point at manifests (an empty media type is
/// taken as one); a legacy BuildKit cache index also lists layer and config blobs.
fn is_manifest_type(mt: &str) -> bool {
    mt.is_empty()
        || media::is_image_manifest(mt)
        || media::is_index(mt)
        || mt == "application/vnd.oci.artifact.manifest.v1+json"
}

/// Transfers one blob; returns (bytes transferred, skipped).
async fn transfer_blob(
    src: &dyn Repository,
    dst: &dyn Repository,
    options: &CopyOptions,
    digest: Sha256Digest,
    size: u64,
    what: &str,
) -> Result<(u64, bool)> {
    let emit = |e: CopyEvent| {
        if let Some(p) = &options.progress {
            p(e);
        }
    };
    let blob_what = format!("blob {digest} of {what}");
    match dst
        .blob_size(&digest)
        .await
        .map_err(ctx(format!("{blob_what} (checking {})", dst.location())))?
    {
        Some(existing) if existing == size => {
            emit(CopyEvent::BlobDone {
                digest,
                size,
                skipped: true,
            });
            return Ok((0, true));
        }
        _ => {}
    }
    if let Some(from) = &options.mount_from {
        if dst
            .mount_blob(&digest, from)
            .await
            .map_err(ctx(format!("{blob_what} (mount from {from})")))?
        {
            emit(CopyEvent::BlobDone {
                digest,
                size,
                skipped: true,
            });
            return Ok((0, true));
        }
    }
    emit(CopyEvent::BlobStarted {
        digest: digest.clone(),
        size,
    });
    let stream = crate::registry::open_blob(src, &digest, size)
        .await
        .map_err(ctx(format!("{blob_what} (reading)")))?;
    let stream: BlobStream = match options.progress.clone() {
        Some(p) => {
            let d = digest.clone();
            stream
                .inspect_ok(move |chunk| {
                    p(CopyEvent::BlobBytes {
                        digest: d.clone(),
                        bytes: chunk.len() as u64,
                    })
                })
                .boxed()
        }
        None => stream,
    };
    dst.push_blob(&digest, size, stream)
        .await
        .map_err(ctx(format!("{blob_what} (writing to {})", dst.location())))?;
    emit(CopyEvent::BlobDone {
        digest,
        size,
        skipped: false,
    });
    Ok((size, false))
}
