//! Where a sweep that fans out keeps its parts: the run's manifest, each repository's
//! result and the gathered report, as objects under the report prefix
//! ([`super::fan_out`] names the keys). In the Lambda that is the report bucket
//! ([`S3RunStore`]); the tests also use `MemoryRunStore` (test-util).

use crate::catalog::ApiErrorKind;
use aws_sdk_s3::error::DisplayErrorContext;

/// A failed store call, naming the object or prefix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} {location}: {message}")]
pub struct StoreError {
    /// `GetObject`, `PutObject`, `ListObjectsV2`.
    pub operation: &'static str,
    /// `s3://bucket/key` (or the prefix listed).
    pub location: String,
    /// What the call failed with.
    pub message: String,
    /// Its kind: throttling and 5xx heal, the rest does not.
    pub kind: ApiErrorKind,
}

impl StoreError {
    /// True when another try may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// Objects by key.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync {
    /// Where `key` is, for messages (`s3://bucket/key`).
    fn location(&self, key: &str) -> String;
    /// The object at `key`; `None` when there is none.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes (or replaces) the object at `key`.
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError>;
    /// Every key that starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// A listing that runs past this many pages stops with an error, as every listing does.
const MAX_LIST_PAGES: usize = 10_000;

/// The report bucket.
#[derive(Debug, Clone)]
pub struct S3RunStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3RunStore {
    /// Objects in `bucket`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// The error of a failed call, with the kind the SDK error gave.
    fn error(
        &self,
        operation: &'static str,
        key: &str,
        kind: ApiErrorKind,
        error: impl std::fmt::Display,
    ) -> StoreError {
        StoreError {
            operation,
            location: self.location(key),
            message: error.to_string(),
            kind,
        }
    }
}

#[async_trait::async_trait]
impl RunStore for S3RunStore {
    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let object = match answer {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => {
                let kind = ApiErrorKind::of_sdk_error(&e);
                return Err(self.error("GetObject", key, kind, DisplayErrorContext(e)));
            }
        };
        let body = object.body.collect().await.map_err(|e| StoreError {
            operation: "GetObject",
            location: self.location(key),
            message: format!("reading the body: {e}"),
            kind: ApiErrorKind::Transient,
        })?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map_err(|e| {
                let kind = ApiErrorKind::of_sdk_error(&e);
                self.error("PutObject", key, kind, DisplayErrorContext(e))
            })?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    let kind = ApiErrorKind::of_sdk_error(&e);
                    self.error("ListObjectsV2", prefix, kind, DisplayErrorContext(e))
                })?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(keys),
            }
        }
        Err(StoreError {
            operation: "ListObjectsV2",
            location: self.location(prefix),
            message: format!("the listing ran past {MAX_LIST_PAGES} pages"),
            kind: ApiErrorKind::Other,
        })
    }
}

/// Objects in memory, for tests.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Default)]
pub struct MemoryRunStore {
    objects: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
}

#[cfg(any(test, feature = "test-util"))]
impl MemoryRunStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }
}

#[cfg(any(test, feature = "test-util"))]
#[async_trait::async_trait]
impl RunStore for MemoryRunStore {
    fn location(&self, key: &str) -> String {
        format!("memory:{key}")
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.objects.lock().unwrap().get(key).cloned())
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.objects.lock().unwrap().insert(key.to_string(), body);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }
}
