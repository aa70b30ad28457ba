//! One registry host: the HTTP client, base URL, authentication and the retry loop that
//! every request goes through.

use super::auth::{Authenticator, CredentialSource};
use super::response::{interpret_failure, interpret_transport, Subject};
use super::retry::RetryPolicy;
use super::settings::{AuthMode, RegistrySettings};
use crate::registry::distribution::auth::Credentials;
use crate::registry::ecr::{parse_registry_host, EcrRegistry, EcrTokenProvider};
use crate::registry::{RegistryError, Result};
use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Error bodies are read up to this size (they are only quoted in messages).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A client for one registry host, shared by all its repositories.
#[derive(Debug)]
pub struct RegistryClient {
    pub(super) http: reqwest::Client,
    /// Base URL ending in `/`; `v2/…` paths are joined onto it.
    pub(super) base: Url,
    /// The registry host as references name it (for messages and auth decisions).
    pub(super) host: String,
    pub(super) auth: Authenticator,
    pub(super) retry: RetryPolicy,
    pub(super) monolithic_max: u64,
    pub(super) chunk_size: usize,
    /// See [`RegistrySettings::small_response_timeout`].
    pub(super) small_response_timeout: Duration,
    /// See [`RegistrySettings::blob_stall_timeout`].
    pub(super) blob_stall_timeout: Duration,
    /// See [`RegistrySettings::allow_insecure_http`] (upload locations are checked with it).
    pub(super) allow_insecure_http: bool,
}

/// One request, kept re-sendable: bodies are in memory (uploads send chunks).
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Token scopes the request needs (`repository:NAME:pull[,push]`).
    pub scopes: Vec<String>,
    pub subject: Subject,
    /// A blob transfer (a blob read, an upload's chunk): only the read timeout applies,
    /// not the total deadline of every other request.
    pub streaming: bool,
}

impl Req {
    pub fn new(method: Method, url: Url, scopes: Vec<String>, subject: Subject) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            scopes,
            subject,
            streaming: false,
        }
    }
    /// Marks a blob transfer (see [`Req::streaming`](Self::streaming)).
    pub fn streaming(mut self) -> Self {
        self.streaming = true;
        self
    }
    pub fn header(mut self, name: HeaderName, value: &str) -> Result<Self> {
        let v = HeaderValue::from_str(value).map_err(|_| RegistryError::Invalid {
            location: self.url.to_string(),
            message: format!("header {name} value {value:?} is not valid"),
        })?;
        self.headers.insert(name, v);
        Ok(self)
    }
    pub fn body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }
}

/// Credentials for ECR hosts, created on first use (loading the AWS config is async and
/// needs no network until a token is requested).
#[derive(Debug)]
struct LazyEcr {
    registry: Option<EcrRegistry>,
    provider: tokio::sync::OnceCell<EcrTokenProvider>,
}

#[async_trait]
impl CredentialSource for LazyEcr {
    async fn credentials(&self) -> Result<Credentials> {
        let provider = self
            .provider
            .get_or_try_init(|| async {
                match &self.registry {
                    Some(r) => EcrTokenProvider::for_registry(r).await,
                    None => EcrTokenProvider::from_env().await,
                }
            })
            .await?;
        provider.credentials().await
    }

    async fn invalidate(&self) -> bool {
        match self.provider.get() {
            Some(p) => p.invalidate().await,
            None => false,
        }
    }
}

/// The HTTP client (connection pool) registry clients send through: one per process is
/// enough, whatever the number of hosts (its settings do not depend on the host).
/// Redirects are followed only where [`super::redirect::check_redirect`] allows.
pub(super) fn http_client(
    allow_insecure_http: bool,
) -> std::result::Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("afterpush/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        // Between two reads of a response; a stalled transfer is retried or fails.
        .read_timeout(Duration::from_secs(120))
        .redirect(super::redirect::policy(allow_insecure_http))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Where `host`'s Basic credentials come from under `settings.auth`, and whether they
/// are sent up front.
fn credential_source(
    settings: &RegistrySettings,
    host: &str,
) -> (Option<Arc<dyn CredentialSource>>, bool) {
    let ecr = parse_registry_host(host);
    match &settings.auth {
        AuthMode::Anonymous => (None, false),
        AuthMode::Basic(c) => (Some(Arc::new(c.clone())), false),
        AuthMode::Ecr => (
            Some(Arc::new(LazyEcr {
                registry: ecr,
                provider: Default::default(),
            })),
            true,
        ),
        AuthMode::Auto => match ecr {
            Some(r) => (
                Some(Arc::new(LazyEcr {
                    registry: Some(r),
                    provider: Default::default(),
                })),
                true,
            ),
            None => (None, false),
        },
    }
}

impl RegistryClient {
    /// A client for `host` (as references name it) under `settings`. Credentials follow
    /// `settings.auth`; see [`Self::with_credentials`] to supply a source directly.
    pub fn new(settings: &RegistrySettings, host: &str) -> Result<Self> {
        let (source, upfront) = credential_source(settings, host);
        Self::build(settings, host, source, upfront)
    }

    /// A client that takes Basic credentials from `source` and sends them with every
    /// request (how ECR is used: its token is Basic auth, expected up front).
    pub fn with_credentials(
        settings: &RegistrySettings,
        host: &str,
        source: Arc<dyn CredentialSource>,
    ) -> Result<Self> {
        Self::build(settings, host, Some(source), true)
    }

    fn build(
        settings: &RegistrySettings,
        host: &str,
        source: Option<Arc<dyn CredentialSource>>,
        upfront: bool,
    ) -> Result<Self> {
        let http = http_client(settings.allow_insecure_http).map_err(|message| {
            RegistryError::Invalid {
                location: host.to_string(),
                message,
            }
        })?;
        Self::build_sharing(settings, host, source, upfront, http)
    }

    /// Like [`Self::new`], sending through `http` (a pool shared with other hosts'
    /// clients; see [`http_client`]).
    pub(super) fn new_sharing(
        settings: &RegistrySettings,
        host: &str,
        http: reqwest::Client,
    ) -> Result<Self> {
        let (source, upfront) = credential_source(settings, host);
        Self::build_sharing(settings, host, source, upfront, http)
    }

    fn build_sharing(
        settings: &RegistrySettings,
        host: &str,
        source: Option<Arc<dyn CredentialSource>>,
        upfront: bool,
        http: reqwest::Client,
    ) -> Result<Self> {
        let base = settings.base_url(host)?;
        Ok(Self {
            http,
            base,
            host: host.to_string(),
            auth: Authenticator::new(
                host,
                source,
                upfront,
                settings.allow_insecure_http,
                settings.small_response_timeout,
            ),
            retry: settings.retry.clone(),
            monolithic_max: settings.monolithic_max,
            chunk_size: settings.chunk_size.max(1),
            small_response_timeout: settings.small_response_timeout,
            blob_stall_timeout: settings.blob_stall_timeout,
            allow_insecure_http: settings.allow_insecure_http,
        })
    }

    /// The registry host as references name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `BASE/v2/<path>`.
    pub(super) fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(&format!("v2/{path}"))
            .map_err(|e| RegistryError::Invalid {
                location: self.host.clone(),
                message: format!("cannot build a URL for {path:?}: {e}"),
            })
    }

    /// Sends `req` until it succeeds (2xx) or fails for good. 429, 5xx and broken
    /// connections are retried with backoff; a 401 with a challenge is answered once.
    /// Every failure goes through [`interpret_failure`] / [`interpret_transport`].
    pub(crate) async fn execute(&self, req: &Req) -> Result<Response> {
        self.run(req, |response| async move { Ok(response) }).await
    }

    /// Like [`Self::execute`], then reads the whole body (at most `limit` bytes, else
    /// `too_large(size)`). A connection broken while reading counts as a failed attempt
    /// of the same retry loop: one budget of attempts per request, not one per layer.
    pub(crate) async fn execute_small(
        &self,
        req: &Req,
        limit: usize,
        too_large: impl Fn(usize) -> RegistryError,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let too_large = &too_large;
        self.run(req, |mut response| async move {
            let status = response.status();
            let headers = response.headers().clone();
            if let Some(len) = response.content_length() {
                if len > limit as u64 {
                    return Err(too_large(len as usize));
                }
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.transport_error(req, &e))?
            {
                body.extend_from_slice(&chunk);
                if body.len() > limit {
                    return Err(too_large(body.len()));
                }
            }
            Ok((status, headers, Bytes::from(body)))
        })
        .await
    }

    /// Sends `req` only once (no retry): for callers that are themselves the retry loop
    /// of what they do (a blob download resuming after a break).
    pub(crate) async fn execute_once(&self, req: &Req) -> Result<Response> {
        self.attempts(req, 1, |response| async move { Ok(response) })
            .await
    }

    async fn run<T, F, Fut>(&self, req: &Req, finish: F) -> Result<T>
    where
        F: FnMut(Response) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.attempts(req, self.retry.max_attempts, finish).await
    }

    /// The one retry loop: at most `max_attempts` sends of `req`, each answered 2xx
    /// response handed to `finish` (which may read the body; its retryable failures are
    /// retried like the send's).
    async fn attempts<T, F, Fut>(&self, req: &Req, max_attempts: u32, mut finish: F) -> Result<T>
    where
        F: FnMut(Response) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let policy = RetryPolicy {
            max_attempts,
            ..self.retry.clone()
        };
        let mut attempt: u32 = 0;
        let mut challenge_answered = false;
        loop {
            attempt += 1;
            let mut builder = self
                .http
                .request(req.method.clone(), req.url.clone())
                .headers(req.headers.clone());
            let authorization = self.auth.header_for(&req.scopes).await?;
            let sent_basic = authorization
                .as_deref()
                .is_some_and(|v| v.starts_with("Basic "));
            if let Some(value) = authorization {
                if same_origin(&req.url, &self.base) {
                    builder = builder.header(AUTHORIZATION, value);
                }
            }
            if let Some(body) = &req.body {
                builder = builder.body(body.clone());
            }
            if !req.streaming {
                // From connecting to the answer's last byte, read here or by the caller.
                builder = builder.timeout(self.small_response_timeout);
            }
            let mut retry_after_header = None;
            let err = match builder.send().await {
                Err(e) => self.transport_error(req, &e),
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        match finish(response).await {
                            Ok(done) => return Ok(done),
                            Err(e) => e,
                        }
                    } else {
                        if status == StatusCode::UNAUTHORIZED
                            && !challenge_answered
                            && same_origin(response.url(), &self.base)
                        {
                            let challenge = response
                                .headers()
                                .get(WWW_AUTHENTICATE)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            if let Some(challenge) = challenge {
                                if self
                                    .auth
                                    .answer_challenge(
                                        &self.http,
                                        &req.url,
                                        &challenge,
                                        &req.scopes,
                                        sent_basic,
                                    )
                                    .await?
                                {
                                    challenge_answered = true;
                                    attempt -= 1;
                                    continue;
                                }
                            }
                        }
                        retry_after_header = retry_after(response.headers());
                        self.failure(req, response).await
                    }
                }
            };
            let delay = retry_after_header
                .map(|d| d.min(self.retry.max_delay))
                .unwrap_or_else(|| self.retry.delay_after(attempt));
            if err.is_retryable()
                && policy.allows_another(attempt)
                && super::retry::deadline_allows(delay)
            {
                tracing::warn!(method = %req.method, url = %req.url, attempt, ?delay, error = %err, "retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(err);
        }
    }

    /// The error of a non-2xx answer. An answer that came from a redirect target is
    /// not the registry's: its body is neither read nor quoted (it may be anything, a
    /// metadata service's credentials included), only its status and origin are named.
    async fn failure(&self, req: &Req, response: Response) -> RegistryError {
        let status = response.status();
        if response.url() != &req.url {
            let target = response.url().origin().ascii_serialization();
            drop(response);
            let mut err = interpret_failure(&req.subject, req.url.as_str(), status, b"");
            let note = format!(" (answered by redirect target {target}; body not shown)");
            match &mut err {
                RegistryError::Http { message, .. } | RegistryError::Auth { message, .. } => {
                    message.push_str(&note)
                }
                _ => {}
            }
            return err;
        }
        let body = read_error_body(response, self.small_response_timeout).await;
        interpret_failure(&req.subject, req.url.as_str(), status, &body)
    }
}

impl RegistryClient {
    /// A transport error of `req`, saying so when the total deadline ran out.
    fn transport_error(&self, req: &Req, e: &reqwest::Error) -> RegistryError {
        let err = interpret_transport(req.url.as_str(), e);
        match err {
            RegistryError::Transport { url, retryable, .. } if e.is_timeout() && !req.streaming => {
                RegistryError::Transport {
                    url,
                    message: format!(
                        "{}: no complete answer within {:?}",
                        req.subject.what, self.small_response_timeout
                    ),
                    retryable,
                }
            }
            other => other,
        }
    }
}

/// Same scheme, host and port: credentials go only to the registry's own origin.
pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads an error body, up to [`MAX_ERROR_BODY`] and for at most `deadline` (it is only
/// quoted: what arrived in time is enough).
async fn read_error_body(mut response: Response, deadline: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(deadline, read).await;
    body.truncate(MAX_ERROR_BODY);
    body
}
