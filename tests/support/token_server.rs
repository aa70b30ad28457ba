//! A tiny Bearer-token server on 127.0.0.1 (the distribution token spec's `GET /token`).
//!
//! Why a fake one: Debian's docker-registry supports token auth only with a token
//! service signing JWTs and TLS certificates, which a test cannot set up cheaply. This
//! server hands out one opaque token and records what it was asked (query and
//! `Authorization`); the fault proxy in front of the real registry demands that token.
#![allow(dead_code)]

use super::http_server::{head_lines, header, read_head, request_line, respond_json, ServerThread};
use std::sync::{Arc, Mutex};

/// One token request as received.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The request target, e.g. `/token?service=x&scope=repository%3Aapp%3Apull`.
    pub target: String,
    pub authorization: Option<String>,
}

pub struct TokenServer {
    pub port: u16,
    pub token: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    _server: ServerThread,
}

impl TokenServer {
    /// Serves `{"token": TOKEN, "expires_in": 300}`; when `require_basic` is set, only
    /// to requests carrying exactly that `Authorization` value (else 401).
    pub fn start(token: &str, require_basic: Option<String>) -> Self {
        let requests: Arc<Mutex<Vec<TokenRequest>>> = Default::default();
        let recorded = requests.clone();
        let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
        let server = ServerThread::start(move |mut conn| {
            let (recorded, body, require_basic) =
                (recorded.clone(), body.clone(), require_basic.clone());
            async move {
                let Ok((head, _)) = read_head(&mut conn).await else {
                    return;
                };
                let lines = head_lines(&head);
                let (_, target) = request_line(&lines);
                let authorization = header(&lines, "authorization").map(str::to_string);
                let allowed = require_basic
                    .as_ref()
                    .is_none_or(|want| authorization.as_deref() == Some(want.as_str()));
                recorded.lock().unwrap().push(TokenRequest {
                    target,
                    authorization,
                });
                let (status, payload) = if allowed {
                    ("200 OK", body.as_str())
                } else {
                    (
                        "401 Unauthorized",
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
                    )
                };
                let _ = respond_json(&mut conn, status, "", payload).await;
            }
        });
        Self {
            port: server.port,
            token: token.to_string(),
            requests,
            _server: server,
        }
    }

    /// The realm URL to put in a challenge.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}
