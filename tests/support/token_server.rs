//! A tiny Bearer-token server on 127.0.0.1 (the distribution token spec's `GET /token`).
//!
//! Why a fake one: Debian's docker-registry supports token auth only with a token
//! service signing JWTs and TLS certificates, which a test cannot set up cheaply. This
//! server hands out one opaque token and records what it was asked (query and
//! `Authorization`); the fault proxy in front of the real registry demands that token.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Serves `{"token": TOKEN, "expires_in": 300}`; when `require_basic` is set, only
    /// to requests carrying exactly that `Authorization` value (else 401).
    pub fn start(token: &str, require_basic: Option<String>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind token server");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<TokenRequest>>> = Default::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let recorded = requests.clone();
        let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((mut conn, _)) = listener.accept().await else {
                            continue;
                        };
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                            match conn.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let text = String::from_utf8_lossy(&head).to_string();
                        let target = text
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or("")
                            .to_string();
                        let authorization = text.split("\r\n").find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case("authorization")
                                .then(|| v.trim().to_string())
                        });
                        let allowed = require_basic
                            .as_ref()
                            .is_none_or(|want| authorization.as_deref() == Some(want.as_str()));
                        recorded.lock().unwrap().push(TokenRequest {
                            target,
                            authorization,
                        });
                        let (status, payload) = if allowed {
                            ("200 OK", body.clone())
                        } else {
                            ("401 Unauthorized", r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string())
                        };
                        let response = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
                            payload.len()
                        );
                        let _ = conn.write_all(response.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Self {
            port,
            token: token.to_string(),
            requests,
            shutdown: Some(tx),
            thread: Some(thread),
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

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
