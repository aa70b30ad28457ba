//! The one place that turns a registry's HTTP status and body into a typed error.
//!
//! The OCI distribution spec's error envelope is `{"errors":[{"code","message","detail"}]}`;
//! registries also answer with plain text or HTML pages (proxies, load balancers), which
//! are quoted (shortened) instead.

use crate::registry::RegistryError;
use reqwest::StatusCode;
use serde::Deserialize;

/// The spec's error body.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct OciEnvelope {
    /// The errors the body lists.
    #[serde(default)]
    pub errors: Vec<OciErrorEntry>,
}

/// One entry of [`OciEnvelope`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct OciErrorEntry {
    /// The error code (`MANIFEST_UNKNOWN`, `DENIED`...).
    #[serde(default)]
    pub code: String,
    /// The message for people.
    #[serde(default)]
    pub message: String,
    /// Extra detail, any JSON.
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
}

/// Codes that mean "the thing asked for does not exist".
const NOT_FOUND_CODES: [&str; 4] = [
    "MANIFEST_UNKNOWN",
    "BLOB_UNKNOWN",
    "NAME_UNKNOWN",
    "BLOB_UPLOAD_UNKNOWN",
];

/// What a failed request was about, so that the error can name it.
#[derive(Debug, Clone)]
pub struct Subject {
    /// `manifest v1`, `blob sha256:…`, `tag list`: the thing asked for.
    pub what: String,
    /// `127.0.0.1:5000/app`: where it was asked for.
    pub location: String,
}

/// Turns a non-success response into an error naming the URL, status, spec code and the
/// subject. A 404 (or a spec "unknown" code) becomes [`RegistryError::NotFound`]; 401 and
/// 403 become [`RegistryError::Auth`]; everything else [`RegistryError::Http`] (whose
/// `is_retryable` covers 429 and 5xx).
pub fn interpret_failure(
    subject: &Subject,
    url: &str,
    status: StatusCode,
    body: &[u8],
) -> RegistryError {
    let envelope: Option<OciEnvelope> = serde_json::from_slice(body).ok();
    let first = envelope.as_ref().and_then(|e| e.errors.first().cloned());
    let code = first
        .as_ref()
        .map(|e| e.code.clone())
        .filter(|c| !c.is_empty());
    let message = match &first {
        Some(e) if !e.message.is_empty() => match &e.detail {
            Some(d) if !d.is_null() => format!("{} ({d})", e.message),
            _ => e.message.clone(),
        },
        _ => quote_body(body, status),
    };
    let unknown = code
        .as_deref()
        .is_some_and(|c| NOT_FOUND_CODES.contains(&c));
    if status == StatusCode::NOT_FOUND && (unknown || code.is_none()) {
        return RegistryError::NotFound {
            what: subject.what.clone(),
            location: subject.location.clone(),
        };
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return RegistryError::Auth {
            registry: subject.location.clone(),
            message: format!(
                "{url}: HTTP {}{} for {}: {message}",
                status.as_u16(),
                code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(),
                subject.what
            ),
        };
    }
    RegistryError::Http {
        url: url.to_string(),
        status: status.as_u16(),
        code,
        message: format!("{}: {message}", subject.what),
    }
}

/// A short, printable excerpt of a non-envelope body.
fn quote_body(body: &[u8], status: StatusCode) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string();
    }
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Maps a reqwest transport error (no HTTP status) to [`RegistryError::Transport`],
/// retryable when the connection broke or timed out rather than being misconfigured.
pub fn interpret_transport(url: &str, err: &reqwest::Error) -> RegistryError {
    let retryable = err.is_timeout()
        || err.is_connect()
        || err.is_request()
        || err.is_body()
        || err.is_decode();
    // The full source chain: "error sending request" alone says nothing.
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    RegistryError::Transport {
        url: url.to_string(),
        message,
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn subject() -> Subject {
        Subject {
            what: "manifest v1".into(),
            location: "127.0.0.1:5000/app".into(),
        }
    }

    #[rstest]
    #[case(
        404,
        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":"v1"}]}"#,
        "not-found"
    )]
    #[case(404, "404 page not found", "not-found")]
    #[case(404, r#"{"errors":[{"code":"UNSUPPORTED","message":"nope"}]}"#, "http")]
    #[case(
        401,
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        "auth"
    )]
    #[case(403, "", "auth")]
    #[case(500, "<html>boom</html>", "http")]
    #[case(
        429,
        r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        "http"
    )]
    fn classifies_statuses(#[case] status: u16, #[case] body: &str, #[case] kind: &str) {
        let url = "http://127.0.0.1:5000/v2/app/manifests/v1";
        let err = interpret_failure(
            &subject(),
            url,
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
        );
        let text = err.to_string();
        match kind {
            "not-found" => {
                assert!(err.is_not_found(), "{err:?}");
                assert!(
                    text.contains("manifest v1") && text.contains("127.0.0.1:5000/app"),
                    "{text}"
                );
            }
            "auth" => {
                assert!(matches!(err, RegistryError::Auth { .. }), "{err:?}");
                assert!(text.contains(url), "{text}");
            }
            _ => {
                assert!(matches!(err, RegistryError::Http { .. }), "{err:?}");
                assert!(
                    text.contains(url) && text.contains(&status.to_string()),
                    "{text}"
                );
                assert_eq!(err.is_retryable(), status == 429 || status >= 500);
            }
        }
    }

    #[test]
    fn envelope_code_and_detail_are_kept() {
        let body = br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:abc"}]}"#;
        let err = interpret_failure(&subject(), "u", StatusCode::BAD_REQUEST, body);
        match err {
            RegistryError::Http {
                code,
                message,
                status,
                ..
            } => {
                assert_eq!(code.as_deref(), Some("MANIFEST_BLOB_UNKNOWN"));
                assert_eq!(status, 400);
                assert!(
                    message.contains("sha256:abc") && message.contains("manifest v1"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_bodies_are_shortened() {
        let body = "x".repeat(10_000);
        let err = interpret_failure(&subject(), "u", StatusCode::BAD_GATEWAY, body.as_bytes());
        assert!(err.to_string().len() < 400);
    }
}
