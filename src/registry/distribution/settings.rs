//! How afterpush reaches registries: the endpoint override, plain-HTTP policy, auth mode
//! and retry policy, read from the environment by [`RegistrySettings::from_env`].

use super::auth::Credentials;
use super::plain_http::{is_loopback, plain_http_allowed};
use super::retry::RetryPolicy;
use crate::registry::{RegistryError, Result};
use url::Url;

/// Sends all registry HTTP to this base URL (e.g. `http://127.0.0.1:5000`), whatever host
/// a reference names. This is how tests and local runs use a local registry.
pub const ENV_ENDPOINT: &str = "AFTERPUSH_REGISTRY_ENDPOINT";
pub use super::plain_http::ENV_INSECURE;
/// `auto` (default), `anonymous`, `basic` or `ecr`.
pub const ENV_AUTH: &str = "AFTERPUSH_REGISTRY_AUTH";
/// User name for Basic auth (set together with [`ENV_PASSWORD`]; with `auto`, setting both selects `basic`).
pub const ENV_USERNAME: &str = "AFTERPUSH_REGISTRY_USERNAME";
/// Password for Basic auth (set together with [`ENV_USERNAME`]).
pub const ENV_PASSWORD: &str = "AFTERPUSH_REGISTRY_PASSWORD";
/// Total attempts per request (default 5).
pub const ENV_MAX_ATTEMPTS: &str = "AFTERPUSH_REGISTRY_MAX_ATTEMPTS";
/// A blob body must bring 64 KiB per this long spent waiting on it (a duration, `60s`;
/// default [`DEFAULT_BLOB_STALL_TIMEOUT`]), or it is broken off and resumed.
pub const ENV_BLOB_STALL_TIMEOUT: &str = "AFTERPUSH_REGISTRY_BLOB_STALL_TIMEOUT";

/// Which credentials to present.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// ECR hosts (`<account>.dkr.ecr.<region>.amazonaws.com`): an ECR authorization
    /// token. Other hosts: anonymous, following Bearer challenges.
    #[default]
    Auto,
    /// No credentials; Bearer challenges are still followed (anonymous tokens).
    Anonymous,
    /// These credentials for Basic challenges and for token requests.
    Basic(Credentials),
    /// An ECR authorization token whatever the host (for a registry reached through the
    /// endpoint override but backed by ECR).
    Ecr,
}

/// Blobs up to this size are uploaded in one PUT (buffered in memory).
pub const DEFAULT_MONOLITHIC_MAX: u64 = 8 * 1024 * 1024;
/// Chunk size of chunked uploads (the memory bound of an upload).
pub const DEFAULT_CHUNK_SIZE: usize = 8 * 1024 * 1024;
/// See [`RegistrySettings::small_response_timeout`].
pub const DEFAULT_SMALL_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// See [`RegistrySettings::blob_stall_timeout`].
pub const DEFAULT_BLOB_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Settings of the registry client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// See [`ENV_ENDPOINT`].
    pub endpoint: Option<Url>,
    /// Plain HTTP to hosts other than loopback.
    pub allow_insecure_http: bool,
    /// Which credentials to present (`AFTERPUSH_REGISTRY_AUTH`, with the user name and password).
    pub auth: AuthMode,
    /// How requests are retried (`AFTERPUSH_REGISTRY_MAX_ATTEMPTS` total attempts).
    pub retry: RetryPolicy,
    /// Blobs up to this many bytes are uploaded in one PUT (default [`DEFAULT_MONOLITHIC_MAX`]).
    pub monolithic_max: u64,
    /// Chunk size of chunked uploads, in bytes (default [`DEFAULT_CHUNK_SIZE`]).
    pub chunk_size: usize,
    /// The longest one attempt of a request that is not a blob transfer may take, from
    /// connecting to the last byte of the answer: manifests, tag lists, referrers, token
    /// requests, error bodies. The read timeout alone lets a server that drips a byte
    /// now and then hold a request forever.
    pub small_response_timeout: std::time::Duration,
    /// A blob download must bring at least 64 KiB for every this long spent waiting on
    /// it, else the body is broken off and resumed: a server dripping bytes cannot hold
    /// a transfer forever ([`ENV_BLOB_STALL_TIMEOUT`]).
    pub blob_stall_timeout: std::time::Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            allow_insecure_http: false,
            auth: AuthMode::Auto,
            retry: RetryPolicy::default(),
            monolithic_max: DEFAULT_MONOLITHIC_MAX,
            chunk_size: DEFAULT_CHUNK_SIZE,
            small_response_timeout: DEFAULT_SMALL_RESPONSE_TIMEOUT,
            blob_stall_timeout: DEFAULT_BLOB_STALL_TIMEOUT,
        }
    }
}

fn invalid(field: &str, message: String) -> RegistryError {
    RegistryError::Invalid {
        location: field.to_string(),
        message,
    }
}

impl RegistrySettings {
    /// Reads the `AFTERPUSH_REGISTRY_*` variables (see the constants in this module).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`Self::from_env`], from any lookup (tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut s = Self::default();
        if let Some(e) = get(ENV_ENDPOINT) {
            s.endpoint = Some(parse_base_url(&e, ENV_ENDPOINT)?);
        }
        if let Some(v) = get(ENV_INSECURE) {
            s.allow_insecure_http = crate::settings::parse_bool(ENV_INSECURE, &v)
                .map_err(|e| invalid(ENV_INSECURE, e.to_string()))?;
        }
        let credentials = match (get(ENV_USERNAME), get(ENV_PASSWORD)) {
            (Some(u), Some(p)) => Some(Credentials::new(u, p)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    ENV_USERNAME,
                    format!("{ENV_USERNAME} and {ENV_PASSWORD} must be set together"),
                ))
            }
        };
        s.auth = match get(ENV_AUTH).as_deref().map(str::trim) {
            None | Some("auto") => match credentials {
                Some(c) => AuthMode::Basic(c),
                None => AuthMode::Auto,
            },
            Some("anonymous") => AuthMode::Anonymous,
            Some("ecr") => AuthMode::Ecr,
            Some("basic") => AuthMode::Basic(credentials.ok_or_else(|| {
                invalid(
                    ENV_AUTH,
                    format!("basic auth needs {ENV_USERNAME} and {ENV_PASSWORD}"),
                )
            })?),
            Some(other) => {
                return Err(invalid(
                    ENV_AUTH,
                    format!("{other:?} is not one of auto, anonymous, basic, ecr"),
                ))
            }
        };
        if let Some(v) = get(ENV_MAX_ATTEMPTS) {
            s.retry.max_attempts = crate::settings::parse_positive(ENV_MAX_ATTEMPTS, &v)
                .map_err(|e| invalid(ENV_MAX_ATTEMPTS, e.to_string()))?
                .try_into()
                .map_err(|_| invalid(ENV_MAX_ATTEMPTS, format!("{v:?} is too large")))?;
        }
        if let Some(v) = get(ENV_BLOB_STALL_TIMEOUT) {
            s.blob_stall_timeout = crate::settings::parse_duration(ENV_BLOB_STALL_TIMEOUT, &v)
                .map_err(|e| invalid(ENV_BLOB_STALL_TIMEOUT, e.to_string()))
                .and_then(|d| {
                    (!d.is_zero()).then_some(d).ok_or_else(|| {
                        invalid(
                            ENV_BLOB_STALL_TIMEOUT,
                            format!("{v:?} is not a positive duration, e.g. 60s"),
                        )
                    })
                })?;
        }
        Ok(s)
    }

    /// The base URL (ending in `/`) for a registry host: the endpoint override when set,
    /// else `https://HOST/`, or `http://HOST/` for loopback hosts. Plain HTTP to any other
    /// host needs `allow_insecure_http`.
    pub fn base_url(&self, host: &str) -> Result<Url> {
        let url = match &self.endpoint {
            Some(e) => e.clone(),
            None => {
                let scheme = if is_loopback(host) || self.allow_insecure_http {
                    "http"
                } else {
                    "https"
                };
                // The host comes from a reference, not from ENV_ENDPOINT: errors name it.
                parse_base_url(&format!("{scheme}://{host}"), host)?
            }
        };
        if !plain_http_allowed(&url, self.allow_insecure_http) {
            return Err(invalid(
                ENV_ENDPOINT,
                format!(
                    "plain HTTP to {url} is refused: only loopback hosts may use http:// unless {ENV_INSECURE}=true"
                ),
            ));
        }
        Ok(url)
    }
}

/// Parses a base URL (the endpoint setting, or one made from a reference's host): http
/// or https, no query, path ending in `/`. Errors are located at `what`.
fn parse_base_url(s: &str, what: &str) -> Result<Url> {
    let mut url =
        Url::parse(s.trim()).map_err(|e| invalid(what, format!("{s:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            what,
            format!("{s:?} must be an http:// or https:// URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            what,
            format!("{s:?} must not have a query or fragment"),
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_without_environment() {
        let s = RegistrySettings::from_lookup(lookup(&[])).unwrap();
        assert_eq!(s, RegistrySettings::default());
        assert_eq!(
            s.base_url("123456789012.dkr.ecr.us-east-1.amazonaws.com")
                .unwrap()
                .as_str(),
            "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/"
        );
        assert_eq!(
            s.base_url("127.0.0.1:5000").unwrap().as_str(),
            "http://127.0.0.1:5000/"
        );
    }

    #[test]
    fn a_bad_host_is_blamed_on_the_host_not_the_endpoint_setting() {
        let err = RegistrySettings::default()
            .base_url("127.0.0.1:99999")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("127.0.0.1:99999") && err.contains("port") && !err.contains(ENV_ENDPOINT),
            "{err}"
        );
    }

    #[test]
    fn endpoint_override_wins_for_every_host() {
        let s = RegistrySettings::from_lookup(lookup(&[(ENV_ENDPOINT, "http://127.0.0.1:5000")]))
            .unwrap();
        for host in ["ghcr.io", "123456789012.dkr.ecr.eu-west-1.amazonaws.com"] {
            assert_eq!(s.base_url(host).unwrap().as_str(), "http://127.0.0.1:5000/");
        }
    }

    #[test]
    fn plain_http_needs_loopback_or_permission() {
        let s = RegistrySettings::from_lookup(lookup(&[(
            ENV_ENDPOINT,
            "http://registry.internal:5000",
        )]))
        .unwrap();
        let err = s.base_url("x").unwrap_err().to_string();
        assert!(
            err.contains("registry.internal") && err.contains(ENV_INSECURE),
            "{err}"
        );
        let s = RegistrySettings::from_lookup(lookup(&[
            (ENV_ENDPOINT, "http://registry.internal:5000/prefix"),
            (ENV_INSECURE, "true"),
        ]))
        .unwrap();
        assert_eq!(
            s.base_url("x").unwrap().as_str(),
            "http://registry.internal:5000/prefix/"
        );
    }

    #[test]
    fn auth_mode_from_environment() {
        let s = RegistrySettings::from_lookup(lookup(&[(ENV_USERNAME, "u"), (ENV_PASSWORD, "p")]))
            .unwrap();
        assert_eq!(s.auth, AuthMode::Basic(Credentials::new("u", "p")));
        assert!(!format!("{s:?}").contains("\"p\""));
        let s = RegistrySettings::from_lookup(lookup(&[(ENV_AUTH, "ecr")])).unwrap();
        assert_eq!(s.auth, AuthMode::Ecr);
        for bad in [
            vec![(ENV_AUTH, "kerberos")],
            vec![(ENV_AUTH, "basic")],
            vec![(ENV_USERNAME, "u")],
            vec![(ENV_INSECURE, "maybe")],
            vec![(ENV_MAX_ATTEMPTS, "0")],
            vec![(ENV_BLOB_STALL_TIMEOUT, "0s")],
            vec![(ENV_BLOB_STALL_TIMEOUT, "soon")],
            vec![(ENV_ENDPOINT, "ftp://x")],
            vec![(ENV_ENDPOINT, "not a url")],
        ] {
            let err = RegistrySettings::from_lookup(lookup(&bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad[0].0), "{err}");
        }
    }
}
