//! An S3 BuildKit cache (`--cache-to type=s3,bucket=B,prefix=P`): cache manifests at
//! `P/manifests/<name>`, blobs at `P/blobs/sha256:<hex>`. Lists, reads and deletes
//! objects; the mark-and-sweep decisions live in `cleanup::s3gc`.

use super::aws_error::SdkFailure;
use super::paginate::Paging;
use super::{ApiErrorKind, CatalogError};
use chrono::{DateTime, Utc};

/// S3 DeleteObjects takes at most 1000 keys.
pub const DELETE_OBJECTS_BATCH: usize = 1000;

/// `s3://bucket/prefix/`, the prefix normalised to end with `/` (or be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3CacheUri {
    /// The bucket.
    pub bucket: String,
    /// The key prefix of the cache, ending with `/` (or empty for the whole bucket).
    pub prefix: String,
}

impl std::fmt::Display for S3CacheUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl std::str::FromStr for S3CacheUri {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{s:?} is not an s3:// URI"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{s:?} has no bucket name"));
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheObject {
    /// The key relative to the cache prefix (`manifests/main`, `blobs/sha256:...`).
    pub name: String,
    /// `LastModified`: when the object was last written.
    pub last_modified: DateTime<Utc>,
    /// The object's size in bytes.
    pub size: u64,
}

/// A key DeleteObjects could not delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectFailure {
    /// The key, relative to the cache prefix.
    pub key: String,
    /// S3's error code (`AccessDenied`...).
    pub code: String,
    /// S3's error message.
    pub message: String,
}

/// The objects of one S3 BuildKit cache.
pub struct S3Cache {
    client: aws_sdk_s3::Client,
    /// The cache this lists and deletes from.
    pub uri: S3CacheUri,
    paging: Paging,
}

impl S3Cache {
    /// The cache at `uri`, through `client`.
    pub fn new(client: aws_sdk_s3::Client, uri: S3CacheUri) -> Self {
        Self {
            client,
            uri,
            paging: Paging::default(),
        }
    }

    /// The same cache, its listings under `paging` (page cap, deadline).
    pub fn with_paging(mut self, paging: Paging) -> Self {
        self.paging = paging;
        self
    }

    fn error(&self, operation: &'static str, err: impl std::fmt::Display) -> CatalogError {
        self.error_of_kind(operation, ApiErrorKind::Other, err)
    }

    fn error_of_kind(
        &self,
        operation: &'static str,
        kind: ApiErrorKind,
        err: impl std::fmt::Display,
    ) -> CatalogError {
        CatalogError::S3 {
            operation,
            uri: self.uri.to_string(),
            message: err.to_string(),
            kind,
        }
    }

    /// A failed S3 call, with the kind the SDK error says.
    fn sdk_error<E>(
        &self,
        operation: &'static str,
        err: aws_sdk_s3::error::SdkError<E>,
    ) -> CatalogError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata
            + aws_config::retry::ProvideErrorKind
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let failure = SdkFailure::of(&err);
        self.error_of_kind(operation, failure.kind, failure.message)
    }

    /// Every object under `prefix` + `sub` (e.g. `manifests/`), following continuations.
    pub async fn list(&self, sub: &str) -> Result<Vec<CacheObject>, CatalogError> {
        let full = format!("{}{sub}", self.uri.prefix);
        let pages = self
            .paging
            .all("S3", "ListObjectsV2", |token| {
                let full = &full;
                async move {
                    let page = self
                        .client
                        .list_objects_v2()
                        .bucket(&self.uri.bucket)
                        .prefix(full)
                        .set_continuation_token(token)
                        .send()
                        .await
                        .map_err(|e| self.sdk_error("ListObjectsV2", e))?;
                    let next = match page.next_continuation_token() {
                        Some(t) if page.is_truncated() == Some(true) => Some(t.to_string()),
                        _ => None,
                    };
                    Ok::<_, CatalogError>((vec![page], next))
                }
            })
            .await
            .map_err(|e| e.in_repository(&self.uri.to_string()))?;
        let mut out = Vec::new();
        for page in pages {
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let modified = o
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                    .ok_or_else(|| CatalogError::BadCacheObject {
                        uri: self.uri.to_string(),
                        key: key.to_string(),
                        message: "listing has no LastModified".into(),
                    })?;
                out.push(CacheObject {
                    name: key[self.uri.prefix.len()..].to_string(),
                    last_modified: modified,
                    size: o.size().unwrap_or(0).max(0) as u64,
                });
            }
        }
        Ok(out)
    }

    /// The bytes of `prefix` + `name`, read within the deadline of [`Self::with_paging`].
    pub async fn get(&self, name: &str) -> Result<Vec<u8>, CatalogError> {
        let key = format!("{}{name}", self.uri.prefix);
        self.paging
            .call("S3", "GetObject", 0, async {
                let out = self
                    .client
                    .get_object()
                    .bucket(&self.uri.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("GetObject", e))?;
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| CatalogError::BadCacheObject {
                        uri: self.uri.to_string(),
                        key: key.clone(),
                        message: e.to_string(),
                    })?;
                Ok::<_, CatalogError>(body.into_bytes().to_vec())
            })
            .await
            .map_err(|e| e.in_repository(&self.uri.to_string()))
    }

    /// Deletes objects (names relative to the prefix) in DeleteObjects batches of 1000.
    /// Returns the names deleted and the per-key failures.
    pub async fn delete(
        &self,
        names: &[String],
    ) -> Result<(Vec<String>, Vec<ObjectFailure>), CatalogError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let mut deleted = Vec::new();
        let mut failed = Vec::new();
        for batch in names.chunks(DELETE_OBJECTS_BATCH) {
            let objects = batch
                .iter()
                .map(|n| {
                    ObjectIdentifier::builder()
                        .key(format!("{}{n}", self.uri.prefix))
                        .build()
                        .map_err(|e| self.error("DeleteObjects", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(false)
                .build()
                .map_err(|e| self.error("DeleteObjects", e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.uri.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.sdk_error("DeleteObjects", e))?;
            let strip = |k: &str| k.strip_prefix(&self.uri.prefix).unwrap_or(k).to_string();
            deleted.extend(out.deleted().iter().filter_map(|d| d.key().map(strip)));
            failed.extend(out.errors().iter().map(|e| ObjectFailure {
                key: e.key().map(strip).unwrap_or_default(),
                code: e.code().unwrap_or_default().to_string(),
                message: e.message().unwrap_or_default().to_string(),
            }));
        }
        Ok((deleted, failed))
    }
}
