//! Registry authentication: anonymous, Basic, the Bearer-token challenge of the
//! distribution token spec, and any [`CredentialSource`] (ECR's authorization token).
//!
//! Tokens are cached per scope set until shortly before they expire. Secrets never show
//! up in `Debug` output or logs.
//!
//! A challenge names its token realm, and any registry (or anyone between us and a
//! registry reached over plain HTTP) can name any realm. So the realm must be http(s),
//! plain HTTP only where registries may use it, and credentials go to a realm on another
//! host only when the challenge came over HTTPS, or to loopback under the insecure
//! setting (see [`check_realm`]). The token answer is read with a size cap and a deadline.

use super::plain_http::ENV_INSECURE;
use super::plain_http::{is_loopback, plain_http_allowed};
use crate::registry::{RegistryError, Result};
use async_trait::async_trait;
use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A string that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`; it prints as `<redacted>` from then on.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name and password (for ECR: `AWS` and the decoded authorization token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (sent in clear in the Basic header).
    pub username: String,
    /// The password, never printed.
    pub password: Secret,
}

impl Credentials {
    /// Credentials of `username` and `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: Secret::new(password),
        }
    }
    /// The `Authorization` header value: `Basic base64(user:password)`.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where Basic credentials come from: fixed ones, or a provider that refreshes them
/// (ECR's `GetAuthorizationToken`).
#[async_trait]
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// The credentials to send now (a provider fetches or refreshes them as needed).
    async fn credentials(&self) -> Result<Credentials>;
    /// Forgets cached credentials the registry refused (an ECR token revoked early).
    /// `true` when the next [`Self::credentials`] may give different ones.
    async fn invalidate(&self) -> bool {
        false
    }
}

#[async_trait]
impl CredentialSource for Credentials {
    async fn credentials(&self) -> Result<Credentials> {
        Ok(self.clone())
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer`: get a token from `realm` and send it.
    Bearer {
        /// The token endpoint's URL.
        realm: String,
        /// The `service` parameter to pass to the token endpoint.
        service: Option<String>,
        /// The `scope` the challenge asks for (`repository:app:pull`), asked for with the request's own scopes.
        scope: Option<String>,
    },
    /// `Basic`: send the user name and password.
    Basic {
        /// The realm, when the challenge names one.
        realm: Option<String>,
    },
}

/// Parses `Bearer realm="…",service="…",scope="…"` (or `Basic realm="…"`). Quoted values
/// may contain commas (`repository:app:pull,push`) and backslash escapes.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    };
    let params = parse_params(rest)?;
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic {
            realm: get("realm"),
        })
    } else {
        None
    }
}

fn parse_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

/// The token endpoint's answer (both field names occur in the wild).
#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Token answers are read up to this size. Tokens are JWTs of a few KiB; this leaves
/// room for the largest seen in the wild while keeping a hostile realm that streams
/// without end from exhausting memory.
pub const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;

/// Whether a token may be requested from `realm`, in answer to a challenge received
/// from `challenge_url`, and whether credentials may go with the request.
///
/// The realm must be an http(s) URL, plain HTTP only to loopback unless
/// `allow_insecure_http` (as for registries). Credentials go to the registry's own
/// origin; to another origin only when the challenge came over HTTPS (the registry we
/// chose to trust named it, and no one in between could have) and the realm is HTTPS
/// too, or, with `allow_insecure_http`, when the realm is on loopback.
pub fn check_realm(
    realm: &url::Url,
    challenge_url: &url::Url,
    allow_insecure_http: bool,
    with_credentials: bool,
) -> std::result::Result<(), String> {
    if !matches!(realm.scheme(), "http" | "https") || realm.host_str().is_none() {
        return Err(format!(
            "token realm {realm} is not an http:// or https:// URL with a host"
        ));
    }
    if !plain_http_allowed(realm, allow_insecure_http) {
        return Err(format!(
            "token realm {realm} is plain HTTP to a host other than loopback (allowed only with {ENV_INSECURE}=true)"
        ));
    }
    if !with_credentials || realm.origin() == challenge_url.origin() {
        return Ok(());
    }
    let over_https = challenge_url.scheme() == "https" && realm.scheme() == "https";
    let local = allow_insecure_http && realm.host_str().is_some_and(is_loopback);
    if over_https || local {
        Ok(())
    } else {
        Err(format!(
            "token realm {realm} is on another host than {}, and the challenge came over plain HTTP: credentials are not sent there (a loopback realm is allowed with {ENV_INSECURE}=true)",
            challenge_url.origin().ascii_serialization()
        ))
    }
}

/// The token spec's default lifetime when `expires_in` is absent.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are dropped this long before they expire, so that none expires in flight.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);

struct CachedToken {
    token: Secret,
    valid_until: Instant,
}

/// Authentication state of one registry client.
pub struct Authenticator {
    registry: String,
    basic: Option<Arc<dyn CredentialSource>>,
    /// Send Basic credentials with every request instead of waiting for a challenge
    /// (ECR, whose registry expects them; or after a Basic challenge was seen).
    basic_upfront: AtomicBool,
    tokens: tokio::sync::Mutex<HashMap<String, CachedToken>>,
    /// Plain HTTP beyond loopback is allowed (for realms, as for registries).
    allow_insecure_http: bool,
    /// The longest a token request may take, answer included.
    token_timeout: Duration,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("registry", &self.registry)
            .field("basic", &self.basic)
            .field("basic_upfront", &self.basic_upfront)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `allow_insecure_http` and `token_timeout` come from the registry settings
    /// (`allow_insecure_http`, `small_response_timeout`).
    pub fn new(
        registry: impl Into<String>,
        basic: Option<Arc<dyn CredentialSource>>,
        basic_upfront: bool,
        allow_insecure_http: bool,
        token_timeout: Duration,
    ) -> Self {
        Self {
            registry: registry.into(),
            basic,
            basic_upfront: AtomicBool::new(basic_upfront),
            tokens: Default::default(),
            allow_insecure_http,
            token_timeout,
        }
    }

    /// The `Authorization` value to send with a request needing `scopes`, if any.
    pub async fn header_for(&self, scopes: &[String]) -> Result<Option<String>> {
        let key = scopes.join(" ");
        {
            let tokens = self.tokens.lock().await;
            if let Some(t) = tokens.get(&key) {
                if t.valid_until > Instant::now() {
                    return Ok(Some(format!("Bearer {}", t.token.expose())));
                }
            }
        }
        if self.basic_upfront.load(Ordering::Relaxed) {
            if let Some(src) = &self.basic {
                return Ok(Some(src.credentials().await?.basic_header()));
            }
        }
        Ok(None)
    }

    /// Reacts to a 401's `WWW-Authenticate`, received in answer to a request to
    /// `challenge_url` that carried Basic credentials or not (`sent_basic`). `Ok(true)`
    /// when the request should be sent again (a token was obtained, or Basic
    /// credentials are now sent).
    pub async fn answer_challenge(
        &self,
        http: &reqwest::Client,
        challenge_url: &url::Url,
        header: &str,
        scopes: &[String],
        sent_basic: bool,
    ) -> Result<bool> {
        match parse_challenge(header) {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut wanted: Vec<String> = scope
                    .iter()
                    .flat_map(|s| s.split(' '))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                for s in scopes {
                    if !wanted.contains(s) {
                        wanted.push(s.clone());
                    }
                }
                let token = self
                    .fetch_token(http, challenge_url, &realm, service.as_deref(), &wanted)
                    .await?;
                self.tokens.lock().await.insert(scopes.join(" "), token);
                Ok(true)
            }
            Some(Challenge::Basic { .. }) => match &self.basic {
                Some(source) => {
                    self.basic_upfront.store(true, Ordering::Relaxed);
                    // Refused without the credentials (a request sent before the first
                    // challenge was answered, maybe concurrently): send them. Refused
                    // with them: fixed credentials are wrong (do not loop); a
                    // refreshable source (ECR) gets one fresh try.
                    Ok(!sent_basic || source.invalidate().await)
                }
                None => Ok(false),
            },
            _ => Ok(false),
        }
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        challenge_url: &url::Url,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken> {
        let auth_err = |message: String| RegistryError::Auth {
            registry: self.registry.clone(),
            message,
        };
        let mut url = url::Url::parse(realm)
            .map_err(|e| auth_err(format!("token realm {realm:?} is not a URL: {e}")))?;
        check_realm(
            &url,
            challenge_url,
            self.allow_insecure_http,
            self.basic.is_some(),
        )
        .map_err(auth_err)?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = service {
                q.append_pair("service", service);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        // The deadline covers connecting, sending and reading the whole answer.
        let mut request = http.get(url.clone()).timeout(self.token_timeout);
        if let Some(src) = &self.basic {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                src.credentials().await?.basic_header(),
            );
        }
        let transport_err = |e: reqwest::Error| {
            if e.is_timeout() {
                auth_err(format!(
                    "token server {realm} sent no complete answer within {:?}",
                    self.token_timeout
                ))
            } else {
                auth_err(format!("token request to {realm}: {e}"))
            }
        };
        let started = Instant::now();
        let mut response = request.send().await.map_err(transport_err)?;
        let status = response.status();
        let too_large = |size: u64| {
            auth_err(format!(
                "token server {realm} sent {size} bytes or more, over the {MAX_TOKEN_RESPONSE}-byte limit"
            ))
        };
        if let Some(len) = response.content_length() {
            if len > MAX_TOKEN_RESPONSE as u64 {
                return Err(too_large(len));
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_err)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_TOKEN_RESPONSE {
                return Err(too_large(body.len() as u64));
            }
        }
        if !status.is_success() {
            return Err(auth_err(format!(
                "token server {realm} answered HTTP {} for scope {:?}: {}",
                status.as_u16(),
                scopes.join(" "),
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| auth_err(format!("token server {realm} sent unreadable JSON: {e}")))?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| auth_err(format!("token server {realm} sent no token")))?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok(CachedToken {
            token: Secret::new(token),
            valid_until: started + lifetime.saturating_sub(TOKEN_EXPIRY_MARGIN),
        })
    }
}

/// The scope a request needs on `repository`: pull for reads, pull+push for writes.
pub fn repository_scope(repository: &str, push: bool) -> String {
    if push {
        format!("repository:{repository}:pull,push")
    } else {
        format!("repository:{repository}:pull")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_docker_hub_style_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(
            parse_challenge(r#"Bearer service="x""#),
            None,
            "realm is required"
        );
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn debug_never_prints_secrets() {
        let c = Credentials::new("AWS", "hunter2-very-secret");
        let printed = format!("{c:?} {:?}", c.password);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>") && printed.contains("AWS"));
        assert_eq!(c.basic_header(), "Basic QVdTOmh1bnRlcjItdmVyeS1zZWNyZXQ=");
    }

    #[rstest::rstest]
    // The registry's own origin: always, even over plain HTTP on loopback.
    #[case(
        "http://127.0.0.1:5000/token",
        "http://127.0.0.1:5000/v2/",
        false,
        true,
        true
    )]
    // Another host named over HTTPS, itself HTTPS: trusted as the registry is.
    #[case(
        "https://auth.example.com/token",
        "https://registry.example.com/v2/",
        false,
        true,
        true
    )]
    // Named over plain HTTP: no credentials elsewhere, not even another loopback port...
    #[case(
        "http://127.0.0.1:5001/token",
        "http://127.0.0.1:5000/v2/",
        false,
        true,
        false
    )]
    #[case(
        "https://auth.example.com/token",
        "http://registry.example.com/v2/",
        true,
        true,
        false
    )]
    // ...unless loopback under the insecure setting.
    #[case(
        "http://127.0.0.1:5001/token",
        "http://127.0.0.1:5000/v2/",
        true,
        true,
        true
    )]
    #[case(
        "http://localhost:5001/token",
        "http://127.0.0.1:5000/v2/",
        true,
        true,
        true
    )]
    // An HTTPS registry cannot downgrade credentials to a plain-HTTP realm elsewhere.
    #[case(
        "http://auth.example.com/token",
        "https://registry.example.com/v2/",
        false,
        true,
        false
    )]
    #[case(
        "http://127.0.0.1:5001/token",
        "https://registry.example.com/v2/",
        false,
        true,
        false
    )]
    // Without credentials any http(s) realm will do, plain HTTP only where allowed.
    #[case(
        "http://127.0.0.1:5001/token",
        "http://127.0.0.1:5000/v2/",
        false,
        false,
        true
    )]
    #[case(
        "http://auth.example.com/token",
        "https://registry.example.com/v2/",
        false,
        false,
        false
    )]
    #[case(
        "http://auth.example.com/token",
        "https://registry.example.com/v2/",
        true,
        false,
        true
    )]
    // Never anything but http(s).
    #[case(
        "ftp://127.0.0.1/token",
        "http://127.0.0.1:5000/v2/",
        true,
        false,
        false
    )]
    #[case("file:///etc/passwd", "http://127.0.0.1:5000/v2/", true, true, false)]
    fn realms_and_where_credentials_may_go(
        #[case] realm: &str,
        #[case] challenge: &str,
        #[case] insecure: bool,
        #[case] credentials: bool,
        #[case] allowed: bool,
    ) {
        let result = check_realm(
            &realm.parse().unwrap(),
            &challenge.parse().unwrap(),
            insecure,
            credentials,
        );
        assert_eq!(result.is_ok(), allowed, "{result:?}");
        if let Err(message) = result {
            assert!(message.contains(realm), "{message}");
        }
    }

    proptest! {
        #[test]
        fn challenge_round_trips(
            realm in "[a-z:/.0-9?=&]{1,40}",
            service in proptest::option::of("[ -~]{0,30}"),
            scope in proptest::option::of("[a-z/:,.* ]{0,40}"),
        ) {
            let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
            let mut h = format!("Bearer realm={}", quote(&realm));
            if let Some(s) = &service { h.push_str(&format!(",service={}", quote(s))); }
            if let Some(s) = &scope { h.push_str(&format!(", scope={}", quote(s))); }
            prop_assert_eq!(
                parse_challenge(&h),
                Some(Challenge::Bearer { realm, service, scope })
            );
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,80}") {
            let _ = parse_challenge(&s);
        }
    }
}
