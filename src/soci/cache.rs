//! zTOC reuse across images: a base layer is indexed once per account.
//!
//! Entries are keyed by layer digest, span size and zTOC format version (the three
//! things a zTOC depends on). A cached zTOC is published into other images' indexes, so
//! it is not trusted as it is:
//! - each object carries, as object metadata, the digest and size of the layer it was
//!   built from and the sha256 of its body; a read checks all three (an entry that is
//!   truncated, corrupt, or filed under another layer's key is a miss);
//! - a read is capped at [`max_cached_ztoc_size`] of the layer, checked before the body
//!   is read and while it is read, so no object is loaded whole on trust;
//! - [`reusable_ztoc`] runs the FlatBuffers verifier and [`Ztoc::check_against`] the layer
//!   (size, compression, span size, span digests, checkpoints, entries within the
//!   archive) before the index builder reuses it.
//!
//! A rejected entry is a miss: the zTOC is rebuilt from the layer and the entry
//! overwritten; nothing rejected is published. What these checks cannot see is an entry
//! forged consistently by someone who can write to the bucket (a renamed file with its
//! metadata recomputed looks like any other zTOC of that layer): proving the entries
//! would mean reading the layer again, which is what the cache saves. The defence
//! against that is who may write: the bucket `template.yaml` creates refuses writes from
//! anyone but the indexer's role.

use crate::oci::Sha256Digest;
use crate::ztoc::{LayerFacts, Ztoc, ZtocError};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

/// The zTOC format version in cache keys (`Ztoc.version`).
pub const ZTOC_FORMAT_VERSION: &str = "0.9";

/// The layer a cached zTOC is looked up for, and must describe.
#[derive(Debug, Clone, Copy)]
pub struct CachedLayer<'a> {
    /// The layer blob's digest (the cache key).
    pub digest: &'a Sha256Digest,
    /// Size, compression and span size the zTOC must agree with.
    pub facts: LayerFacts,
}

/// A store of finished zTOCs. Failures are logged and treated as misses: the cache
/// only ever saves work, it never fails an index build.
#[async_trait]
pub trait ZtocCache: Send + Sync + std::fmt::Debug {
    /// The stored zTOC of `layer`, if any (not yet checked by [`reusable_ztoc`]).
    async fn get(&self, layer: &CachedLayer<'_>) -> Option<Bytes>;
    /// Stores the zTOC built for `layer`.
    async fn put(&self, layer: &CachedLayer<'_>, ztoc: Bytes);
}

/// zTOCs of real layers are a few percent of the layer; checkpoints every 64 KiB of
/// well-compressed data reach about twice the layer. A bigger one comes from a
/// pathological layer (millions of empty files, data compressed a hundredfold at a small
/// span size) or is forged: it is not read from the cache, nor stored (rebuilding it
/// costs time, not correctness).
const MAX_ZTOC_PER_LAYER_BYTE: u64 = 4;
/// Room for the fixed parts of a zTOC and small layers' checkpoints.
const MAX_ZTOC_BASE: u64 = 16 << 20;

/// The largest cached zTOC accepted for a layer of `layer_size` bytes.
pub fn max_cached_ztoc_size(layer_size: u64) -> u64 {
    layer_size
        .saturating_mul(MAX_ZTOC_PER_LAYER_BYTE)
        .saturating_add(MAX_ZTOC_BASE)
}

/// A cached zTOC, decoded once the checks that make it fit to publish for `layer` pass:
/// its size, the FlatBuffers verifier, and [`Ztoc::check_against`] the layer's facts.
///
/// # Errors
/// [`ZtocError::InvalidZtoc`] naming what does not hold.
pub fn reusable_ztoc(bytes: &[u8], layer: &CachedLayer<'_>) -> Result<Ztoc, ZtocError> {
    let cap = max_cached_ztoc_size(layer.facts.size);
    if bytes.len() as u64 > cap {
        return Err(ZtocError::InvalidZtoc(format!(
            "{} bytes, more than the {cap} bytes a zTOC of a {}-byte layer may have",
            bytes.len(),
            layer.facts.size
        )));
    }
    let ztoc = Ztoc::from_bytes(bytes)?;
    ztoc.check_against(&layer.facts)?;
    Ok(ztoc)
}

/// No cache: every zTOC is built.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoZtocCache;

#[async_trait]
impl ZtocCache for NoZtocCache {
    async fn get(&self, _: &CachedLayer<'_>) -> Option<Bytes> {
        None
    }
    async fn put(&self, _: &CachedLayer<'_>, _: Bytes) {}
}

/// zTOCs in an S3 bucket under `prefix/v0.9/span-<bytes>/sha256-<hex>`.
#[derive(Debug, Clone)]
pub struct S3ZtocCache {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// Object metadata (`x-amz-meta-*`) of a cache entry.
const BODY_DIGEST_METADATA: &str = "ztoc-sha256";
const LAYER_DIGEST_METADATA: &str = "layer-digest";
const LAYER_SIZE_METADATA: &str = "layer-size";

impl S3ZtocCache {
    /// A cache in `bucket`, keys under `prefix`.
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    /// The object key of a layer's zTOC.
    pub fn key(&self, layer: &Sha256Digest, span_size: u64) -> String {
        let prefix = if self.prefix.is_empty() || self.prefix.ends_with('/') {
            self.prefix.clone()
        } else {
            format!("{}/", self.prefix)
        };
        format!(
            "{prefix}v{ZTOC_FORMAT_VERSION}/span-{span_size}/sha256-{}",
            layer.hex()
        )
    }
}

/// Why a cache entry is not used (logged, then rebuilt).
fn rejected(bucket: &str, key: &str, why: &str) -> Option<Bytes> {
    tracing::warn!(%bucket, %key, reason = %why, "zTOC cache entry rejected; rebuilding it from the layer");
    None
}

#[async_trait]
impl ZtocCache for S3ZtocCache {
    async fn get(&self, layer: &CachedLayer<'_>) -> Option<Bytes> {
        let key = self.key(layer.digest, layer.facts.span_size);
        let mut out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) => {
                let service = err.as_service_error();
                if !service.is_some_and(|e| e.is_no_such_key()) {
                    tracing::warn!(bucket = %self.bucket, %key, error = %aws_sdk_s3::error::DisplayErrorContext(&err), "zTOC cache read failed; building instead");
                }
                return None;
            }
        };
        let cap = max_cached_ztoc_size(layer.facts.size);
        let announced = out.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(n) = announced.filter(|&n| n > cap) {
            // Dropping the response unread closes the connection.
            return rejected(
                &self.bucket,
                &key,
                &format!("{n} bytes, more than the {cap} bytes a zTOC of this layer may have"),
            );
        }
        let metadata = |name: &str| out.metadata().and_then(|m| m.get(name)).cloned();
        let expected_body = metadata(BODY_DIGEST_METADATA);
        let bound_to = (
            metadata(LAYER_DIGEST_METADATA),
            metadata(LAYER_SIZE_METADATA),
        );
        let this_layer = (
            Some(layer.digest.to_string()),
            Some(layer.facts.size.to_string()),
        );
        if bound_to != this_layer {
            return rejected(
                &self.bucket,
                &key,
                &format!(
                    "stored for layer {:?} of {:?} bytes, not for this one ({} of {} bytes)",
                    bound_to.0, bound_to.1, layer.digest, layer.facts.size
                ),
            );
        }
        let mut body = BytesMut::with_capacity(announced.unwrap_or(0) as usize);
        loop {
            match out.body.try_next().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > cap {
                        return rejected(
                            &self.bucket,
                            &key,
                            &format!(
                                "body longer than the {cap} bytes a zTOC of this layer may have"
                            ),
                        );
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(bucket = %self.bucket, %key, error = %err, "zTOC cache body read failed; building instead");
                    return None;
                }
            }
        }
        let body = body.freeze();
        let actual = Sha256Digest::of(&body).to_string();
        if expected_body.as_deref() != Some(actual.as_str()) {
            return rejected(
                &self.bucket,
                &key,
                &format!("body digest {actual}, its metadata says {expected_body:?}"),
            );
        }
        Some(body)
    }

    async fn put(&self, layer: &CachedLayer<'_>, ztoc: Bytes) {
        let key = self.key(layer.digest, layer.facts.span_size);
        let cap = max_cached_ztoc_size(layer.facts.size);
        if ztoc.len() as u64 > cap {
            tracing::info!(bucket = %self.bucket, %key, size = ztoc.len(), cap, "zTOC too large to be read back from the cache; not stored");
            return;
        }
        let digest = Sha256Digest::of(&ztoc).to_string();
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .metadata(BODY_DIGEST_METADATA, digest)
            .metadata(LAYER_DIGEST_METADATA, layer.digest.to_string())
            .metadata(LAYER_SIZE_METADATA, layer.facts.size.to_string())
            .content_type("application/octet-stream")
            .body(ztoc.into())
            .send()
            .await;
        if let Err(err) = result {
            tracing::warn!(bucket = %self.bucket, %key, error = %aws_sdk_s3::error::DisplayErrorContext(&err), "zTOC cache write failed");
        }
    }
}
