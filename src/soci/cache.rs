//! zTOC reuse across images: a base layer is indexed once per account.
//!
//! Entries are keyed by layer digest, span size and zTOC format version (the three
//! things a zTOC depends on) and carry the sha256 of their body as object metadata, so
//! a truncated or corrupt entry is detected on read; the caller also parses it and
//! checks it against the layer before use, and rebuilds on any doubt.

use crate::oci::Sha256Digest;
use async_trait::async_trait;
use bytes::Bytes;

/// The zTOC format version in cache keys (`Ztoc.version`).
pub const ZTOC_FORMAT_VERSION: &str = "0.9";

/// A store of finished zTOCs. Failures are logged and treated as misses: the cache
/// only ever saves work, it never fails an index build.
#[async_trait]
pub trait ZtocCache: Send + Sync + std::fmt::Debug {
    async fn get(&self, layer: &Sha256Digest, span_size: u64) -> Option<Bytes>;
    async fn put(&self, layer: &Sha256Digest, span_size: u64, ztoc: Bytes);
}

/// No cache: every zTOC is built.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoZtocCache;

#[async_trait]
impl ZtocCache for NoZtocCache {
    async fn get(&self, _: &Sha256Digest, _: u64) -> Option<Bytes> {
        None
    }
    async fn put(&self, _: &Sha256Digest, _: u64, _: Bytes) {}
}

/// zTOCs in an S3 bucket under `prefix/v0.9/span-<bytes>/sha256-<hex>`.
#[derive(Debug, Clone)]
pub struct S3ZtocCache {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

const BODY_DIGEST_METADATA: &str = "ztoc-sha256";

impl S3ZtocCache {
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

#[async_trait]
impl ZtocCache for S3ZtocCache {
    async fn get(&self, layer: &Sha256Digest, span_size: u64) -> Option<Bytes> {
        let key = self.key(layer, span_size);
        let out = match self
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
        let expected = out
            .metadata()
            .and_then(|m| m.get(BODY_DIGEST_METADATA))
            .cloned();
        let body = match out.body.collect().await {
            Ok(b) => b.into_bytes(),
            Err(err) => {
                tracing::warn!(bucket = %self.bucket, %key, error = %err, "zTOC cache body read failed; building instead");
                return None;
            }
        };
        let actual = Sha256Digest::of(&body).to_string();
        if expected.as_deref() != Some(actual.as_str()) {
            tracing::warn!(bucket = %self.bucket, %key, ?expected, %actual, "corrupt zTOC cache entry; rebuilding it");
            return None;
        }
        Some(body)
    }

    async fn put(&self, layer: &Sha256Digest, span_size: u64, ztoc: Bytes) {
        let key = self.key(layer, span_size);
        let digest = Sha256Digest::of(&ztoc).to_string();
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .metadata(BODY_DIGEST_METADATA, digest)
            .content_type("application/octet-stream")
            .body(ztoc.into())
            .send()
            .await;
        if let Err(err) = result {
            tracing::warn!(bucket = %self.bucket, %key, error = %aws_sdk_s3::error::DisplayErrorContext(&err), "zTOC cache write failed");
        }
    }
}
