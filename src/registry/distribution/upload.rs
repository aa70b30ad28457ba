//! Blob uploads: skip when present, cross-repository mount, monolithic POST+PUT for small
//! blobs, chunked PATCH uploads for big ones. Streamed: a chunked upload holds one chunk
//! in memory, never the whole blob. The digest and size of what was streamed are checked
//! before the final PUT, so a wrong stream never becomes a blob.
//!
//! Credentials: an upload `Location` on another origin than the registry's is followed
//! without them (and only where a redirect could go; see `redirect.rs`).
//!
//! Failures: each request is retried by the client (a chunk is in memory, so a PATCH can
//! be re-sent), and only there. When the session itself is lost (the registry saw part of a chunk and
//! invalidated it), the upload restarts from the beginning only if the source can be
//! opened again; otherwise it fails cleanly, cancelling the session so nothing is left.

use super::client::Req;
use super::response::Subject;
use super::{header_digest, DistributionRepository};
use crate::oci::{DigestWriter, OciError, Sha256Digest};
use crate::registry::{BlobStream, RegistryError, Repository, Result};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::StreamExt;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use url::Url;

/// Opens the blob's bytes for one attempt; `None` when the source cannot be read again.
pub type OpenSource<'a> = dyn FnMut() -> BoxFuture<'static, Result<Option<BlobStream>>> + Send + 'a;

/// Opens the blob's bytes asynchronously, as often as needed (a file, a regenerated
/// stream): lets an upload restart after its session was lost.
pub type Reopen = Box<dyn FnMut() -> BoxFuture<'static, Result<BlobStream>> + Send>;

/// A failed upload attempt: the error, and whether a fresh session from the start of the
/// source could succeed.
struct AttemptFailure {
    error: RegistryError,
    restartable: bool,
}

impl From<RegistryError> for AttemptFailure {
    /// Only a lost session calls for a new one: a retryable failure (429, 5xx, a
    /// reset) was already retried by the client, and retrying it again here would
    /// multiply the attempts.
    fn from(error: RegistryError) -> Self {
        let restartable = session_lost(&error);
        Self { error, restartable }
    }
}

/// The registry forgot or invalidated the upload session (after a partly received chunk).
fn session_lost(e: &RegistryError) -> bool {
    match e {
        RegistryError::Http { status, code, .. } => {
            *status == 416
                || matches!(
                    code.as_deref(),
                    Some("BLOB_UPLOAD_INVALID") | Some("BLOB_UPLOAD_UNKNOWN")
                )
        }
        // BLOB_UPLOAD_UNKNOWN is a 404, which the interpreter turns into NotFound.
        RegistryError::NotFound { what, .. } => what.starts_with("upload session"),
        _ => false,
    }
}

impl DistributionRepository {
    /// Pushes a blob whose bytes `open` can produce again, so that an upload whose session
    /// was lost restarts from the beginning instead of failing.
    pub async fn push_blob_reopenable(
        &self,
        digest: &Sha256Digest,
        size: u64,
        mut open: Reopen,
    ) -> Result<()> {
        let mut source = move || -> BoxFuture<'static, Result<Option<BlobStream>>> {
            let opening = open();
            Box::pin(async move { opening.await.map(Some) })
        };
        self.upload_blob(digest, size, &mut source).await
    }

    /// The upload: HEAD (skip when present), then attempts while the failure allows a
    /// restart and `open` yields the source again.
    pub(crate) async fn upload_blob(
        &self,
        digest: &Sha256Digest,
        size: u64,
        open: &mut OpenSource<'_>,
    ) -> Result<()> {
        match self.blob_size(digest).await? {
            Some(existing) if existing == size => {
                tracing::debug!(%digest, "blob already present");
                return Ok(());
            }
            Some(existing) => {
                return Err(RegistryError::Invalid {
                    location: format!("{}@{digest}", self.location()),
                    message: format!(
                        "blob {digest} exists with {existing} bytes, but {size} were declared"
                    ),
                })
            }
            None => {}
        }
        let mut attempt = 0u32;
        let mut last_failure: Option<RegistryError> = None;
        loop {
            attempt += 1;
            let Some(stream) = open().await? else {
                return Err(last_failure.unwrap_or_else(|| RegistryError::Invalid {
                    location: format!("{}@{digest}", self.location()),
                    message: format!("blob {digest}: no source stream to upload"),
                }));
            };
            let result = if size <= self.client.monolithic_max {
                self.upload_monolithic(digest, size, stream).await
            } else {
                self.upload_chunked(digest, size, stream).await
            };
            match result {
                Ok(()) => return Ok(()),
                Err(f)
                    if f.restartable
                        && self.client.retry.allows_another(attempt)
                        && super::retry::deadline_allows(std::time::Duration::ZERO) =>
                {
                    // A new session from the start, if `open` can give the bytes again.
                    tracing::warn!(%digest, attempt, error = %f.error, "blob upload failed; restarting if the source can be re-read");
                    last_failure = Some(f.error);
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    fn upload_subject(&self, digest: &Sha256Digest) -> Subject {
        Subject {
            what: format!("upload session for blob {digest}"),
            location: self.location(),
        }
    }

    fn push_scopes(&self) -> Vec<String> {
        vec![super::auth::repository_scope(self.name(), true)]
    }

    /// `POST /v2/<name>/blobs/uploads/` (with `query`): the response.
    async fn start_session(&self, digest: &Sha256Digest, query: &str) -> Result<Response> {
        let req = Req::new(
            Method::POST,
            self.url(&format!("blobs/uploads/{query}"))?,
            self.push_scopes(),
            self.upload_subject(digest),
        )
        .header(reqwest::header::CONTENT_LENGTH, "0")?;
        self.client.execute(&req).await
    }

    fn location_of(&self, response: &Response, digest: &Sha256Digest) -> Result<Url> {
        let loc = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Invalid {
                location: response.url().to_string(),
                message: format!("upload of blob {digest}: response has no Location header"),
            })?;
        let url = response
            .url()
            .join(loc)
            .map_err(|e| RegistryError::Invalid {
                location: response.url().to_string(),
                message: format!("upload of blob {digest}: bad Location {loc:?}: {e}"),
            })?;
        // A session on another origin (a storage front end) is followed, without
        // credentials (the client sends them to the registry's own origin only), and
        // only where a redirect could go.
        if !super::client::same_origin(&url, &self.client.base) {
            super::redirect::check_redirect(
                &url,
                &self.client.base,
                self.client.allow_insecure_http,
            )
            .map_err(|message| RegistryError::Invalid {
                location: response.url().to_string(),
                message: format!("upload of blob {digest}: Location: {message}"),
            })?;
        }
        Ok(url)
    }

    /// Best-effort `DELETE` of an upload session so no partial upload lingers.
    async fn cancel_session(&self, location: &Url, digest: &Sha256Digest) {
        let req = Req::new(
            Method::DELETE,
            location.clone(),
            self.push_scopes(),
            self.upload_subject(digest),
        );
        if let Err(e) = self.client.execute(&req).await {
            tracing::debug!(%digest, error = %e, "cancelling the upload session failed (it expires on its own)");
        }
    }

    /// The final `PUT <location>?digest=…` (with the last bytes, if any).
    async fn commit(&self, location: &Url, digest: &Sha256Digest, body: Bytes) -> Result<()> {
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let req = Req::new(
            Method::PUT,
            url,
            self.push_scopes(),
            self.upload_subject(digest),
        )
        .header(CONTENT_TYPE, "application/octet-stream")?
        .body(body)
        .streaming();
        let response = self.client.execute(&req).await?;
        if let Some(stored) = header_digest(response.headers()) {
            if &stored != digest {
                return Err(OciError::DigestMismatch {
                    what: format!("blob committed to {}", self.location()),
                    expected: digest.clone(),
                    actual: stored,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Small blobs: read fully (bounded by `monolithic_max`), check, then POST + PUT. The
    /// bytes are in memory, so a lost session is simply started again.
    async fn upload_monolithic(
        &self,
        digest: &Sha256Digest,
        size: u64,
        mut stream: BlobStream,
    ) -> Result<(), AttemptFailure> {
        let mut buffer = BytesMut::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| AttemptFailure {
                error,
                restartable: false,
            })?;
            if buffer.len() as u64 + chunk.len() as u64 > size {
                return Err(self.too_long(digest, size));
            }
            buffer.extend_from_slice(&chunk);
        }
        let bytes = buffer.freeze();
        check_content(digest, size, bytes.len() as u64, Sha256Digest::of(&bytes))?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result: Result<()> = async {
                let started = self.start_session(digest, "").await?;
                let location = self.location_of(&started, digest)?;
                if let Err(e) = self.commit(&location, digest, bytes.clone()).await {
                    self.cancel_session(&location, digest).await;
                    return Err(e);
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e)
                    if session_lost(&e)
                        && self.client.retry.allows_another(attempt)
                        && super::retry::deadline_allows(std::time::Duration::ZERO) =>
                {
                    tracing::warn!(%digest, error = %e, "upload session lost; starting a new one");
                }
                // This loop was the restart layer of a monolithic upload: no other.
                Err(error) => {
                    return Err(AttemptFailure {
                        error,
                        restartable: false,
                    })
                }
            }
        }
    }

    fn too_long(&self, digest: &Sha256Digest, size: u64) -> AttemptFailure {
        AttemptFailure {
            error: RegistryError::Invalid {
                location: format!("{}@{digest}", self.location()),
                message: format!(
                    "blob {digest}: the stream is longer than the declared {size} bytes"
                ),
            },
            restartable: false,
        }
    }

    /// Big blobs: PATCH chunks of `chunk_size` with `Content-Range`, hashing as they go;
    /// the final PUT only when size and digest match.
    async fn upload_chunked(
        &self,
        digest: &Sha256Digest,
        size: u64,
        stream: BlobStream,
    ) -> Result<(), AttemptFailure> {
        let started = self.start_session(digest, "").await?;
        let mut location = self.location_of(&started, digest)?;
        drop(started);
        match self.send_chunks(digest, size, stream, &mut location).await {
            Ok(()) => Ok(()),
            Err(f) => {
                self.cancel_session(&location, digest).await;
                Err(f)
            }
        }
    }

    async fn send_chunks(
        &self,
        digest: &Sha256Digest,
        size: u64,
        mut stream: BlobStream,
        location: &mut Url,
    ) -> Result<(), AttemptFailure> {
        let chunk_size = self.client.chunk_size;
        let mut hasher = DigestWriter::new();
        let mut pending = BytesMut::with_capacity(chunk_size);
        let mut sent: u64 = 0;
        let mut ended = false;
        while !ended {
            // Fill one chunk (or reach the end of the stream).
            while pending.len() < chunk_size {
                match stream.next().await {
                    Some(Ok(bytes)) => {
                        if sent + pending.len() as u64 + bytes.len() as u64 > size {
                            return Err(self.too_long(digest, size));
                        }
                        hasher.update(&bytes);
                        pending.extend_from_slice(&bytes);
                    }
                    Some(Err(error)) => {
                        return Err(AttemptFailure {
                            error,
                            restartable: false,
                        })
                    }
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            while pending.len() >= chunk_size || (ended && !pending.is_empty()) {
                let n = pending.len().min(chunk_size);
                let chunk = pending.split_to(n).freeze();
                *location = self.patch(digest, location, sent, chunk).await?;
                sent += n as u64;
            }
        }
        check_content(digest, size, sent, hasher.finish())?;
        self.commit(location, digest, Bytes::new()).await?;
        Ok(())
    }

    /// One PATCH; returns the session's next location.
    async fn patch(
        &self,
        digest: &Sha256Digest,
        location: &Url,
        offset: u64,
        chunk: Bytes,
    ) -> Result<Url> {
        let end = offset + chunk.len() as u64 - 1;
        let req = Req::new(
            Method::PATCH,
            location.clone(),
            self.push_scopes(),
            self.upload_subject(digest),
        )
        .header(CONTENT_TYPE, "application/octet-stream")?
        .header(CONTENT_RANGE, &format!("{offset}-{end}"))?
        .body(chunk)
        .streaming();
        let response = self.client.execute(&req).await?;
        self.location_of(&response, digest)
    }

    /// `POST …/blobs/uploads/?mount=<digest>&from=<repo>`: 201 mounted, 202 declined (the
    /// registry opened an upload session instead, which is cancelled).
    pub(crate) async fn mount(&self, digest: &Sha256Digest, from: &str) -> Result<bool> {
        if !crate::registry::reference::is_valid_repository(from) {
            return Err(crate::registry::RefError::Invalid {
                reference: format!("{}/{from}", self.client.host()),
                reason: "invalid repository name to mount from".into(),
            }
            .into());
        }
        let mut req = Req::new(
            Method::POST,
            self.url("blobs/uploads/")?,
            vec![
                super::auth::repository_scope(self.name(), true),
                super::auth::repository_scope(from, false),
            ],
            Subject {
                what: format!("mount of blob {digest} from {from}"),
                location: self.location(),
            },
        )
        .header(reqwest::header::CONTENT_LENGTH, "0")?;
        req.url
            .query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let response = self.client.execute(&req).await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            _ => {
                if let Ok(location) = self.location_of(&response, digest) {
                    self.cancel_session(&location, digest).await;
                }
                Ok(false)
            }
        }
    }
}

/// Size and digest of what was streamed must be what the caller declared.
fn check_content(
    digest: &Sha256Digest,
    size: u64,
    got_size: u64,
    got_digest: Sha256Digest,
) -> Result<(), AttemptFailure> {
    if got_size != size {
        return Err(AttemptFailure {
            error: RegistryError::Invalid {
                location: format!("blob {digest}"),
                message: format!("the stream had {got_size} bytes, {size} were declared"),
            },
            restartable: false,
        });
    }
    if &got_digest != digest {
        return Err(AttemptFailure {
            error: OciError::DigestMismatch {
                what: "blob stream to upload".into(),
                expected: digest.clone(),
                actual: got_digest,
            }
            .into(),
            restartable: false,
        });
    }
    Ok(())
}
