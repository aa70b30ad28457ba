//! The OCI distribution API over HTTP(S): ECR's registry endpoint and every other
//! registry (tests: Debian's docker-registry).
//!
//! Split by concern: [`client`] sends requests (auth, retries), [`clients`] keeps one
//! client per host for the life of a process, [`response`] interprets failures, [`auth`]
//! holds credentials and tokens, [`retry`] the backoff, [`upload`] blob pushes,
//! [`referrers`] the referrers API and its tag-schema fallback.

pub mod auth;
pub mod client;
pub mod clients;
pub mod pages;
pub mod plain_http;
pub mod redirect;
pub mod referrers;
pub mod response;
pub mod retry;
pub mod settings;
mod stall;
pub mod upload;

pub use auth::{CredentialSource, Credentials, Secret};
pub use client::RegistryClient;
pub use clients::RegistryClients;
pub use response::OciEnvelope;
pub use retry::{with_deadline, RetryPolicy};
pub use settings::{AuthMode, RegistrySettings};

use crate::oci::{media, DescriptorSummary, ManifestSummary, OciError, Sha256Digest};
use crate::registry::reference::{is_valid_repository, is_valid_tag};
use crate::registry::verified_stream::VerifiedStream;
use crate::registry::{
    BlobRef, BlobStream, ImageRef, Location, Manifest, RefError, RegistryError, Repository, Result,
    MAX_MANIFEST_SIZE,
};
use async_trait::async_trait;
use client::Req;
use futures::{StreamExt, TryStreamExt};
use pages::Pages;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};
use response::Subject;
use std::ops::Range;
use std::sync::Arc;

/// The header registries put the digest of a manifest or blob in.
pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// One repository of a registry, over the OCI distribution API.
#[derive(Clone)]
pub struct DistributionRepository {
    client: Arc<RegistryClient>,
    name: String,
}

impl std::fmt::Debug for DistributionRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributionRepository")
            .field("location", &self.location())
            .field("base", &self.client.base.as_str())
            .finish()
    }
}

/// A reference inside a repository: a tag or a digest.
enum ManifestRef {
    Tag,
    Digest(Sha256Digest),
}

impl DistributionRepository {
    /// Repository `name` of the registry `client` talks to.
    pub fn new(client: Arc<RegistryClient>, name: &str) -> Result<Self> {
        if !is_valid_repository(name) {
            return Err(RefError::Invalid {
                reference: format!("{}/{name}", client.host()),
                reason: "invalid repository name (lowercase path components)".into(),
            }
            .into());
        }
        Ok(Self {
            client,
            name: name.to_string(),
        })
    }

    /// Repository `name` on `host` under `settings`.
    pub fn connect(settings: &RegistrySettings, host: &str, name: &str) -> Result<Self> {
        Self::new(Arc::new(RegistryClient::new(settings, host)?), name)
    }

    /// The repository a `docker://` reference names.
    pub fn from_image_ref(settings: &RegistrySettings, image: &ImageRef) -> Result<Self> {
        match &image.location {
            Location::Registry { host, repository } => Self::connect(settings, host, repository),
            other => Err(RegistryError::Unsupported(
                format!("{other:?}"),
                "the distribution (HTTP) client".into(),
            )),
        }
    }

    /// Another repository of the same registry, sharing client, auth and token cache.
    pub fn sibling(&self, name: &str) -> Result<Self> {
        Self::new(self.client.clone(), name)
    }

    /// The repository name (`team/app`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The HTTP client this repository shares with its siblings (auth, token cache, retry policy).
    pub fn client(&self) -> &Arc<RegistryClient> {
        &self.client
    }

    fn subject(&self, what: impl Into<String>) -> Subject {
        Subject {
            what: what.into(),
            location: self.location(),
        }
    }

    fn scopes(&self, push: bool) -> Vec<String> {
        vec![auth::repository_scope(&self.name, push)]
    }

    fn url(&self, tail: &str) -> Result<url::Url> {
        self.client.url(&format!("{}/{tail}", self.name))
    }

    fn parse_reference(&self, reference: &str) -> Result<ManifestRef> {
        if reference.starts_with("sha256:") || reference.contains(':') {
            return reference
                .parse::<Sha256Digest>()
                .map(ManifestRef::Digest)
                .map_err(|_| {
                    RefError::Invalid {
                        reference: format!("{}@{reference}", self.location()),
                        reason: "not a sha256:<64 hex> digest".into(),
                    }
                    .into()
                });
        }
        if !is_valid_tag(reference) {
            return Err(RefError::Invalid {
                reference: format!("{}:{reference}", self.location()),
                reason: "invalid tag".into(),
            }
            .into());
        }
        Ok(ManifestRef::Tag)
    }

    /// `app:v1` or `app@sha256:…`, for messages.
    fn display_ref(&self, reference: &str) -> String {
        if reference.starts_with("sha256:") {
            format!("{}@{reference}", self.location())
        } else {
            format!("{}:{reference}", self.location())
        }
    }

    fn manifest_req(&self, method: Method, reference: &str) -> Result<Req> {
        let push = method == Method::PUT || method == Method::DELETE;
        Req::new(
            method,
            self.url(&format!("manifests/{reference}"))?,
            self.scopes(push),
            self.subject(format!("manifest {}", self.display_ref(reference))),
        )
        .header(ACCEPT, &media::MANIFEST_TYPES.join(", "))
    }

    /// Stores `manifest` and reports whether the registry processed its `subject`
    /// (the `OCI-Subject` response header of registries with the referrers API).
    pub(crate) async fn put_manifest_reporting_subject(
        &self,
        manifest: &Manifest,
        tag: Option<&str>,
    ) -> Result<bool> {
        let reference = match tag {
            Some(t) => t.to_string(),
            None => manifest.digest.to_string(),
        };
        let shown = self.display_ref(&reference);
        self.parse_reference(&reference)?;
        if manifest.bytes.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::ManifestTooLarge {
                what: format!("manifest {shown}"),
                size: manifest.bytes.len(),
            });
        }
        manifest
            .digest
            .verify(&format!("manifest for {shown}"), &manifest.bytes)?;
        let req = self
            .manifest_req(Method::PUT, &reference)?
            .header(CONTENT_TYPE, &manifest.media_type)?
            .body(manifest.bytes.clone());
        let response = self.client.execute(&req).await?;
        if let Some(stored) = header_digest(response.headers()) {
            if stored != manifest.digest {
                return Err(OciError::DigestMismatch {
                    what: format!("manifest stored as {shown}"),
                    expected: manifest.digest.clone(),
                    actual: stored,
                }
                .into());
            }
        }
        Ok(response.headers().contains_key("oci-subject"))
    }

    /// Streams a blob or a range of it; see [`Repository::get_blob`]. A connection that
    /// breaks mid-body is resumed with a `Range` request from the first missing byte
    /// (bounded by the retry policy); the digest check still covers every byte.
    async fn fetch_blob(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream> {
        let what = format!("blob {digest} from {}", self.location());
        if let Some(r) = &range {
            if r.start > r.end {
                return Err(RegistryError::Invalid {
                    location: format!("{}@{digest}", self.location()),
                    message: format!("byte range {}..{} is backwards", r.start, r.end),
                });
            }
            if r.start == r.end {
                return Ok(futures::stream::empty().boxed());
            }
        }
        match range {
            None => {
                let req = self.blob_req(digest, None)?;
                let response = self.client.execute(&req).await?;
                let body = self.body_stream(&req, response);
                let resumable = resuming(self.clone(), digest.clone(), body, 0, None);
                Ok(VerifiedStream::new(resumable, what)
                    .digest(digest.clone())
                    .boxed())
            }
            Some(r) => {
                let req = self.blob_req(digest, Some((r.start, Some(r.end))))?;
                let response = self.client.execute(&req).await?;
                if response.status() == StatusCode::PARTIAL_CONTENT {
                    check_content_range(&response, r.start, &what)?;
                    let body = self.body_stream(&req, response);
                    let resumable =
                        resuming(self.clone(), digest.clone(), body, r.start, Some(r.end));
                    Ok(VerifiedStream::new(resumable, what)
                        .sized(r.end - r.start)
                        .boxed())
                } else {
                    // A registry that ignores Range sends the whole blob: cut it ourselves
                    // (not resumable: its offsets are not the range's).
                    let body = self.body_stream(&req, response);
                    Ok(limit_stream(body, r.start, r.end - r.start, what))
                }
            }
        }
    }

    /// `GET blobs/<digest>`, with `Range: bytes=START-[END-1]` when given.
    fn blob_req(&self, digest: &Sha256Digest, range: Option<(u64, Option<u64>)>) -> Result<Req> {
        let req = Req::new(
            Method::GET,
            self.url(&format!("blobs/{digest}"))?,
            self.scopes(false),
            self.subject(format!("blob {digest}")),
        )
        .streaming();
        match range {
            None => Ok(req),
            Some((start, Some(end))) => req.header(RANGE, &format!("bytes={start}-{}", end - 1)),
            Some((start, None)) => req.header(RANGE, &format!("bytes={start}-")),
        }
    }

    /// A blob body, failing (retryably) when it stops making progress.
    fn body_stream(&self, req: &Req, response: reqwest::Response) -> BlobStream {
        let url = req.url.to_string();
        let for_errors = url.clone();
        let body = response
            .bytes_stream()
            .map_err(move |e| response::interpret_transport(&for_errors, &e))
            .boxed();
        stall::MinProgress::new(body, url, self.client.blob_stall_timeout).boxed()
    }

    /// Re-opens a blob body at `from` (to `end`, or to the blob's end) after a break.
    async fn reopen_blob(
        &self,
        digest: &Sha256Digest,
        from: u64,
        end: Option<u64>,
    ) -> Result<BlobStream> {
        let what = format!("blob {digest} from {}", self.location());
        let req = self.blob_req(digest, Some((from, end)))?;
        // One attempt: the resuming stream is this request's retry loop.
        let response = self.client.execute_once(&req).await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Err(RegistryError::Invalid {
                location: what,
                message: format!(
                    "cannot resume at byte {from}: the registry answered {} to a range request",
                    response.status().as_u16()
                ),
            });
        }
        check_content_range(&response, from, &what)?;
        Ok(self.body_stream(&req, response))
    }
}

/// `Content-Range: bytes START-END/TOTAL` must start where we asked.
fn check_content_range(response: &reqwest::Response, start: u64, what: &str) -> Result<()> {
    let content_range = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok());
    let starts_right = content_range.is_some_and(|c| {
        c.trim()
            .trim_start_matches("bytes")
            .trim()
            .split('-')
            .next()
            == Some(&start.to_string())
    });
    if starts_right {
        Ok(())
    } else {
        Err(RegistryError::Invalid {
            location: what.to_string(),
            message: format!("asked for bytes from {start}, got Content-Range {content_range:?}"),
        })
    }
}

/// Passes a blob body on; when it breaks with a retryable error, re-requests the rest
/// (`pos..end`) and continues, at most as often as the retry policy allows.
fn resuming(
    repo: DistributionRepository,
    digest: Sha256Digest,
    first: BlobStream,
    pos: u64,
    end: Option<u64>,
) -> BlobStream {
    struct State {
        repo: DistributionRepository,
        digest: Sha256Digest,
        inner: Option<BlobStream>,
        pos: u64,
        end: Option<u64>,
        failures: u32,
    }
    futures::stream::unfold(
        State {
            repo,
            digest,
            inner: Some(first),
            pos,
            end,
            failures: 0,
        },
        |mut st| async move {
            loop {
                let inner = st.inner.as_mut()?;
                match inner.next().await {
                    Some(Ok(bytes)) => {
                        st.pos += bytes.len() as u64;
                        return Some((Ok(bytes), st));
                    }
                    None => return None,
                    Some(Err(e)) => {
                        // Each break and each failed re-request is one attempt of the
                        // retry policy: one budget for the whole download.
                        let mut error = e;
                        loop {
                            st.failures += 1;
                            let retry = &st.repo.client.retry;
                            let delay = retry.delay_after(st.failures);
                            if !(error.is_retryable()
                                && retry.allows_another(st.failures)
                                && retry::deadline_allows(delay))
                            {
                                st.inner = None;
                                return Some((Err(error), st));
                            }
                            tracing::warn!(digest = %st.digest, at = st.pos, error = %error, "blob download broke; resuming");
                            tokio::time::sleep(delay).await;
                            match st.repo.reopen_blob(&st.digest, st.pos, st.end).await {
                                Ok(next) => {
                                    st.inner = Some(next);
                                    break;
                                }
                                Err(e) => error = e,
                            }
                        }
                    }
                }
            }
        },
    )
    .boxed()
}

/// The `Docker-Content-Digest` header, when present and a sha256 digest.
fn header_digest(headers: &reqwest::header::HeaderMap) -> Option<Sha256Digest> {
    headers
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Skips `skip` bytes, then passes exactly `take` bytes; a body ending early is an error.
/// For a registry that ignores `Range` and sends the whole blob: the range is cut out of
/// it here (a 206 answer goes through [`VerifiedStream`] instead).
fn limit_stream(inner: BlobStream, skip: u64, take: u64, what: String) -> BlobStream {
    struct State {
        inner: BlobStream,
        skip: u64,
        left: u64,
        done: bool,
        what: String,
        wanted: u64,
    }
    futures::stream::unfold(
        State {
            inner,
            skip,
            left: take,
            done: false,
            what,
            wanted: take,
        },
        |mut st| async move {
            loop {
                if st.done || st.left == 0 {
                    return None;
                }
                match st.inner.next().await {
                    Some(Ok(mut chunk)) => {
                        if st.skip > 0 {
                            let n = st.skip.min(chunk.len() as u64) as usize;
                            st.skip -= n as u64;
                            chunk = chunk.slice(n..);
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        if chunk.len() as u64 > st.left {
                            chunk.truncate(st.left as usize);
                        }
                        st.left -= chunk.len() as u64;
                        return Some((Ok(chunk), st));
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    None => {
                        st.done = true;
                        let err = RegistryError::Invalid {
                            location: st.what.clone(),
                            message: format!(
                                "range response ended {} bytes short of the {} asked for",
                                st.left, st.wanted
                            ),
                        };
                        return Some((Err(err), st));
                    }
                }
            }
        },
    )
    .boxed()
}

#[async_trait]
impl Repository for DistributionRepository {
    async fn push_referrer(&self, manifest: &Manifest) -> Result<()> {
        // The inherent method: put, then maintain the fallback tag when needed.
        DistributionRepository::push_referrer(self, manifest).await
    }

    fn location(&self) -> String {
        format!("{}/{}", self.client.host(), self.name)
    }

    async fn resolve(&self, reference: &str) -> Result<BlobRef> {
        let parsed = self.parse_reference(reference)?;
        let req = self.manifest_req(Method::HEAD, reference)?;
        let response = self.client.execute(&req).await?;
        let headers = response.headers();
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        let size = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        let digest = match (&parsed, header_digest(headers)) {
            (ManifestRef::Digest(d), _) => Some(d.clone()),
            (_, d) => d,
        };
        match (media_type, size, digest) {
            (Some(media_type), Some(size), Some(digest))
                if media::MANIFEST_TYPES.contains(&media_type.as_str()) =>
            {
                Ok(BlobRef {
                    media_type,
                    digest,
                    size,
                })
            }
            // HEAD without enough headers (some registries): fetch the manifest itself.
            _ => Ok(self.get_manifest(reference).await?.descriptor()),
        }
    }

    async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        let parsed = self.parse_reference(reference)?;
        let shown = self.display_ref(reference);
        let req = self.manifest_req(Method::GET, reference)?;
        let (_, headers, bytes) = self
            .client
            .execute_small(&req, MAX_MANIFEST_SIZE, |size| {
                RegistryError::ManifestTooLarge {
                    what: format!("manifest {shown}"),
                    size,
                }
            })
            .await?;
        // The digest is checked before the JSON is even looked at: a tampered manifest
        // is reported as a digest mismatch naming the digest.
        let expected = match parsed {
            ManifestRef::Digest(d) => d,
            ManifestRef::Tag => header_digest(&headers).unwrap_or_else(|| Sha256Digest::of(&bytes)),
        };
        expected.verify(&format!("manifest {shown}"), &bytes)?;
        let summary = ManifestSummary::parse(&format!("manifest {shown}"), &bytes)?;
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
            .filter(|s| s != "application/json" && s != "application/octet-stream");
        let media_type = summary
            .effective_media_type(content_type.as_deref())
            .to_string();
        Ok(Manifest {
            media_type,
            digest: expected,
            bytes,
        })
    }

    async fn put_manifest(&self, manifest: &Manifest, tag: Option<&str>) -> Result<()> {
        self.put_manifest_reporting_subject(manifest, tag)
            .await
            .map(|_| ())
    }

    async fn delete_manifest(&self, digest: &Sha256Digest) -> Result<()> {
        let req = self.manifest_req(Method::DELETE, &digest.to_string())?;
        self.client.execute(&req).await?;
        Ok(())
    }

    async fn blob_size(&self, digest: &Sha256Digest) -> Result<Option<u64>> {
        let req = Req::new(
            Method::HEAD,
            self.url(&format!("blobs/{digest}"))?,
            self.scopes(false),
            self.subject(format!("blob {digest}")),
        );
        match self.client.execute(&req).await {
            Ok(response) => Ok(Some(
                response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| RegistryError::Invalid {
                        location: format!("{}@{digest}", self.location()),
                        message: "HEAD of the blob sent no Content-Length".into(),
                    })?,
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_blob(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobStream> {
        self.fetch_blob(digest, range).await
    }

    async fn push_blob(&self, digest: &Sha256Digest, size: u64, data: BlobStream) -> Result<()> {
        let mut once = Some(data);
        let mut source =
            move || -> futures::future::BoxFuture<'static, Result<Option<BlobStream>>> {
                let stream = once.take();
                Box::pin(async move { Ok(stream) })
            };
        self.upload_blob(digest, size, &mut source).await
    }

    async fn mount_blob(&self, digest: &Sha256Digest, from_repository: &str) -> Result<bool> {
        self.mount(digest, from_repository).await
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        self.list_tags_paged(1000).await
    }

    async fn referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<DescriptorSummary>> {
        self.list_referrers(digest, artifact_type).await
    }
}

impl DistributionRepository {
    /// The repository's tags (sorted), asking for `page_size` per request and following
    /// `Link` headers. A repository that does not exist yet has none.
    pub async fn list_tags_paged(&self, page_size: usize) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let first = self.url(&format!("tags/list?n={}", page_size.max(1)))?;
        let mut pages = Pages::new(format!("tag list of {}", self.location()), first);
        while let Some(url) = pages.next_url()? {
            let req = Req::new(
                Method::GET,
                url.clone(),
                self.scopes(false),
                self.subject("tag list"),
            );
            let result = self
                .client
                .execute_small(&req, pages.byte_budget(), |size| pages.too_many_bytes(size))
                .await;
            let (_, headers, body) = match result {
                Ok(r) => r,
                // A repository nothing was pushed to yet has no tags (NAME_UNKNOWN).
                Err(e) if e.is_not_found() && pages.on_first_page() => break,
                Err(e) => return Err(e),
            };
            let page: TagList =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
                    location: url.to_string(),
                    message: format!("tag list is not valid JSON: {e}"),
                })?;
            let page = page.tags.unwrap_or_default();
            pages.add_page(&url, &headers, body.len(), page.len())?;
            tags.extend(page);
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn limit_stream_cuts_and_reports_short_bodies() {
        let chunks: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let s = futures::stream::iter(chunks).boxed();
        let out: Vec<Bytes> = limit_stream(s, 3, 5, "b".into())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(out.concat(), b"lo wo");
        let chunks: Vec<Result<Bytes>> = vec![Ok(Bytes::from_static(b"abc"))];
        let s = futures::stream::iter(chunks).boxed();
        let err = limit_stream(s, 0, 5, "blob x".into())
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("2 bytes short"), "{err}");
    }

    fn split(data: &[u8], cuts: &[usize]) -> BlobStream {
        let data = Bytes::copy_from_slice(data);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort();
        let pieces: Vec<Result<Bytes>> = points
            .windows(2)
            .map(|w| Ok(data.slice(w[0]..w[1])))
            .collect();
        futures::stream::iter(pieces).boxed()
    }

    proptest::proptest! {
        #[test]
        fn limit_and_verify_hold_for_any_chunking(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(0usize..4000, 0..20),
            a in 0usize..2000,
            b in 0usize..2000,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let (start, end) = (a.min(b).min(data.len()), a.max(b).min(data.len()));
                let out: Vec<Bytes> = limit_stream(split(&data, &cuts), start as u64, (end - start) as u64, "b".into())
                    .try_collect()
                    .await
                    .unwrap();
                assert_eq!(out.concat(), &data[start..end]);
                let whole: Vec<Bytes> = VerifiedStream::new(split(&data, &cuts), "b")
                    .sized(data.len() as u64)
                    .digest(Sha256Digest::of(&data))
                    .try_collect()
                    .await
                    .unwrap();
                assert_eq!(whole.concat(), data);
            });
        }
    }
}
