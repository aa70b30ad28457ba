//! Reading and writing images: one [`Repository`] trait, with an OCI distribution (HTTP)
//! implementation for ECR and every other registry, and an OCI image layout one (a
//! directory or an `oci-archive` tarball) for local runs and tests.
//!
//! Every implementation returns the exact bytes it stored and verifies the digest of
//! what it reads: a manifest always, a blob on full reads.

pub mod copy;
pub mod distribution;
pub mod ecr;
pub mod layout;
pub mod open;
pub mod reference;
pub mod verified_stream;

use crate::oci::{OciError, Sha256Digest};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::ops::Range;

pub use reference::{ImageRef, Location, RefError};

/// Registries refuse manifests over 4 MiB (ECR's PutImage limit, and distribution's).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// A manifest exactly as stored, with its media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its media type: the manifest's own `mediaType`, else what it was stored or pushed under.
    pub media_type: String,
    /// The sha256 of [`bytes`](Self::bytes).
    pub digest: Sha256Digest,
    /// The exact bytes.
    pub bytes: Bytes,
}

impl Manifest {
    /// Wraps bytes we are about to push, computing their digest.
    pub fn new(media_type: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            media_type: media_type.into(),
            digest: Sha256Digest::of(&bytes),
            bytes,
        }
    }
    /// A descriptor summary of this manifest (media type, digest, size).
    pub fn descriptor(&self) -> BlobRef {
        BlobRef {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
        }
    }
}

/// Media type, digest and size: the minimum to address content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobRef {
    /// The content's media type.
    pub media_type: String,
    /// The content's digest.
    pub digest: Sha256Digest,
    /// The content's size in bytes.
    pub size: u64,
}

/// A stream of blob bytes. Errors mid-stream (a dropped connection, a digest mismatch at
/// the end of a full read) arrive as items.
pub type BlobStream = BoxStream<'static, Result<Bytes, RegistryError>>;

/// What can go wrong talking to a registry or a layout. Every variant names the thing
/// (reference, URL, path, digest) it is about.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A reference (`docker://`, `oci:`, `oci-archive:`, tag or digest) does not parse.
    #[error(transparent)]
    Reference(#[from] RefError),
    /// A tag, manifest or blob does not exist (a registry's 404, a layout without it).
    #[error("{what} not found in {location}")]
    NotFound {
        /// What was asked for (tag, digest, blob).
        what: String,
        /// The repository (see [`Repository::location`]).
        location: String,
    },
    /// The registry answered with an HTTP error status.
    #[error("{url}: HTTP {status}{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Http {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The OCI error code from the body (`MANIFEST_UNKNOWN`, `TAG_INVALID`...), when it sent one.
        code: Option<String>,
        /// The error message from the body (or the status text).
        message: String,
    },
    /// The request got no HTTP answer: connection refused or reset, timeout, a body cut off.
    #[error("{url}: {message}")]
    Transport {
        /// The request's URL.
        url: String,
        /// What went wrong.
        message: String,
        /// Whether a later attempt may succeed (see [`RegistryError::is_retryable`]).
        retryable: bool,
    },
    /// Getting credentials or a token failed (ECR's GetAuthorizationToken, a token realm), or the registry answered 401 or 403.
    #[error("authentication to {registry} failed: {message}")]
    Auth {
        /// The registry host.
        registry: String,
        /// Why it failed.
        message: String,
    },
    /// A digest does not parse or does not match, or a manifest is not valid JSON.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// A manifest is over [`MAX_MANIFEST_SIZE`].
    #[error("{what} is {size} bytes, over the {MAX_MANIFEST_SIZE}-byte limit")]
    ManifestTooLarge {
        /// Which manifest.
        what: String,
        /// Its size in bytes.
        size: usize,
    },
    /// A blob to be read into memory declares more bytes than its reader allows.
    #[error("{what} declares {size} bytes, over the {limit}-byte limit")]
    BlobTooLarge {
        /// Which blob (a config, a zTOC).
        what: String,
        /// Its declared size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// Reading or writing a layout's files failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A layout or registry holds something malformed or ambiguous (a bad `index.json` or `oci-layout`, no single image to use).
    #[error("{location}: {message}")]
    Invalid {
        /// Where (a layout path or a URL).
        location: String,
        /// What is wrong.
        message: String,
    },
    /// An operation (first field) that this kind of repository (second field) cannot do.
    #[error("{0} is not supported by {1}")]
    Unsupported(String, String),
}

impl RegistryError {
    /// True for failures that a later attempt may not see (429, 5xx, resets, timeouts).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Http { status, .. } => *status == 429 || *status >= 500,
            RegistryError::Transport { retryable, .. } => *retryable,
            _ => false,
        }
    }
    /// True when the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
            || matches!(self, RegistryError::Http { status: 404, .. })
    }
}

/// A result whose error defaults to [`RegistryError`].
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// One repository of a registry (or one OCI image layout, which holds one repository).
///
/// References are tags or `sha256:` digests. Implementations must verify the digest of
/// every manifest they return and of every blob read in full.
#[async_trait]
pub trait Repository: Send + Sync + std::fmt::Debug {
    /// Where this is, for messages: `127.0.0.1:5000/app`, `oci:/tmp/layout`.
    fn location(&self) -> String;

    /// Resolves a tag or digest to the manifest's media type, digest and size.
    async fn resolve(&self, reference: &str) -> Result<BlobRef>;

    /// The manifest's exact bytes (digest verified), by tag or digest.
    async fn get_manifest(&self, reference: &str) -> Result<Manifest>;

    /// Stores a manifest. With `tag`, the tag points at it afterwards; without, it is
    /// stored by digest only. Every blob and child it names must already be present.
    async fn put_manifest(&self, manifest: &Manifest, tag: Option<&str>) -> Result<()>;

    /// Deletes a manifest by digest (tags pointing at it go with it).
    async fn delete_manifest(&self, digest: &Sha256Digest) -> Result<()>;

    /// The blob's size when present, `None` when absent.
    async fn blob_size(&self, digest: &Sha256Digest) -> Result<Option<u64>>;

    /// Streams a blob, or the byte range of it. Full reads are digest-verified: a
    /// mismatch arrives as the stream's last item.
    async fn get_blob(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream>;

    /// Uploads a blob of known digest and size from a stream. Skips the upload when the
    /// blob already exists. The digest of what was streamed is checked before commit.
    async fn push_blob(&self, digest: &Sha256Digest, size: u64, data: BlobStream) -> Result<()>;

    /// Tries a cross-repository mount of a blob from `from_repository` of the same
    /// registry. `Ok(false)` when the registry declined (the caller then uploads).
    async fn mount_blob(&self, _digest: &Sha256Digest, _from_repository: &str) -> Result<bool> {
        Ok(false)
    }

    /// The repository's tags, sorted.
    async fn list_tags(&self) -> Result<Vec<String>>;

    /// Manifests whose `subject` is `digest` (OCI 1.1 referrers), optionally filtered by
    /// artifact type. Registries without the referrers API answer through the
    /// `sha256-<hex>` tag schema.
    async fn referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<crate::oci::DescriptorSummary>>;

    /// [`referrers`](Self::referrers) of each of `digests`, in their order, for callers
    /// that ask about many manifests at once. One request per digest unless the
    /// repository can do better (a layout answers from one scan of its `index.json`).
    async fn referrers_of_each(
        &self,
        digests: &[Sha256Digest],
        artifact_type: Option<&str>,
    ) -> Result<Vec<Vec<crate::oci::DescriptorSummary>>> {
        let mut all = Vec::with_capacity(digests.len());
        for digest in digests {
            all.push(self.referrers(digest, artifact_type).await?);
        }
        Ok(all)
    }

    /// Stores a manifest that has a `subject` so that [`referrers`](Self::referrers)
    /// finds it: registries without the referrers API get the `sha256-<hex>` fallback
    /// tag index updated. Layouts find referrers by scanning, so storing is enough.
    async fn push_referrer(&self, manifest: &Manifest) -> Result<()> {
        self.put_manifest(manifest, None).await
    }

    /// Undoes what a failed run wrote where that is safe. A layout removes the blobs it
    /// wrote that nothing reaches, and itself when it was created by this run and holds
    /// no entry. Archives need nothing (nothing is written before
    /// [`commit`](Self::commit)); registries keep what they got (blobs are shared).
    async fn discard(&self) -> Result<()> {
        Ok(())
    }

    /// Makes the writes done so far visible as a whole. An `oci-archive` writes its new
    /// tarball here (atomically; nothing changes without it); directories and registries
    /// store every write immediately and do nothing.
    async fn commit(&self) -> Result<()> {
        Ok(())
    }
}

/// Pushes small in-memory content as a blob.
pub async fn push_bytes(repo: &dyn Repository, bytes: Bytes) -> Result<Sha256Digest> {
    let digest = Sha256Digest::of(&bytes);
    let size = bytes.len() as u64;
    let stream: BlobStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
    repo.push_blob(&digest, size, stream).await?;
    Ok(digest)
}

/// Config blobs are read whole into memory, so at most this many bytes. Image configs
/// are a few KiB; long histories make some a few hundred KiB.
pub const MAX_CONFIG_SIZE: u64 = 8 * 1024 * 1024;

/// Streams a whole blob checked against its descriptor: `size` is the size it declares
/// (a byte more is an error at once, fewer at the end) and the digest is verified at
/// the end. The way to read a whole blob: a bare [`Repository::get_blob`] reads as much
/// as the source sends.
pub async fn open_blob(
    repo: &dyn Repository,
    digest: &Sha256Digest,
    size: u64,
) -> Result<BlobStream> {
    let what = format!("blob {digest} in {}", repo.location());
    let stream = repo.get_blob(digest, None).await?;
    // The backends verify the digest of full reads themselves; the size is the
    // descriptor's, which only the caller knows.
    Ok(verified_stream::VerifiedStream::new(stream, what)
        .sized(size)
        .boxed())
}

/// Reads a whole blob of declared `size` into memory (configs, zTOCs; never layers),
/// digest-verified. A blob declared over `limit` bytes is refused before reading, and
/// one that turns out longer than declared is cut off at the first byte too many.
pub async fn read_blob(
    repo: &dyn Repository,
    digest: &Sha256Digest,
    size: u64,
    limit: u64,
) -> Result<Bytes> {
    use futures::TryStreamExt;
    if size > limit {
        return Err(RegistryError::BlobTooLarge {
            what: format!("blob {digest} in {}", repo.location()),
            size,
            limit,
        });
    }
    let chunks: Vec<Bytes> = open_blob(repo, digest, size).await?.try_collect().await?;
    Ok(Bytes::from(chunks.concat()))
}

/// Reads a config blob of declared `size`: [`read_blob`] capped at [`MAX_CONFIG_SIZE`].
pub async fn read_config(repo: &dyn Repository, digest: &Sha256Digest, size: u64) -> Result<Bytes> {
    read_blob(repo, digest, size, MAX_CONFIG_SIZE)
        .await
        .map_err(|e| match e {
            RegistryError::BlobTooLarge { size, limit, .. } => RegistryError::BlobTooLarge {
                what: format!("config {digest} in {}", repo.location()),
                size,
                limit,
            },
            other => other,
        })
}

/// Reads a whole blob at the size the repository reports for it (tests, which know
/// what they stored; `test-util` feature: not in the product).
#[cfg(any(test, feature = "test-util"))]
pub async fn read_blob_as_stored(repo: &dyn Repository, digest: &Sha256Digest) -> Result<Bytes> {
    let size = repo
        .blob_size(digest)
        .await?
        .ok_or_else(|| RegistryError::NotFound {
            what: format!("blob {digest}"),
            location: repo.location(),
        })?;
    read_blob(repo, digest, size, u64::MAX).await
}
