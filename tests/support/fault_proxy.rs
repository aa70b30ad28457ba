//! A small HTTP/1.1 proxy on 127.0.0.1 in front of the real registry that misbehaves on
//! purpose: answers 500s or resets connections for chosen requests, flips a byte of a
//! response body, demands an `Authorization` header (answering 401 with a challenge
//! otherwise), and records every request it sees. In front of moto, with no fault set,
//! it counts AWS API calls by their `X-Amz-Target` (moto keeps no call log).
//!
//! Why a proxy and not the registry itself: docker-registry cannot be told to fail, and
//! its token auth needs TLS certificates. Everything the proxy forwards is served by the
//! real registry. It handles one request per connection (it answers `Connection: close`),
//! which keeps it simple and bounded.
#![allow(dead_code)]

use super::http_server::{head_lines, header, read_head, request_line, respond_json, ServerThread};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to do to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and an OCI error body, without forwarding.
    Status(u16),
    /// Reset the connection (RST) without answering or forwarding.
    Reset,
    /// Forward, then reset the connection after `after` bytes of the response body.
    ResetMidBody { after: u64 },
    /// Forward, flipping the response body's byte at `offset`.
    FlipByte { offset: u64 },
    /// Forward (the registry acts on the request), then reset instead of answering: the
    /// client cannot know whether its request took effect.
    DropResponse,
    /// Answer with a canned response instead of forwarding (for what the real registry
    /// refuses to store, e.g. a non-JSON or oversized manifest).
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Like `Respond`, but the body goes one byte every `interval`: each read arrives in
    /// time, the answer never does (a hostile or broken server).
    Drip {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        interval: Duration,
    },
    /// Answer without forwarding: `size` bytes of `x` with no Content-Length (the body
    /// ends when the connection closes), so that only a cap while reading stops it. Ends
    /// early when the client hangs up.
    Flood {
        status: u16,
        headers: Vec<(String, String)>,
        size: u64,
    },
}

/// A fault for the next `times` requests whose method matches (None = any) and whose
/// path contains `path_contains`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<String>,
    pub path_contains: String,
    pub fault: Fault,
    pub times: usize,
}

/// A request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// The `X-Amz-Target` header (`Service.Operation` of AWS JSON APIs), if any.
    pub amz_target: Option<String>,
    /// The fault applied, if any.
    pub fault: Option<String>,
}

#[derive(Debug, Clone)]
struct AuthRequirement {
    expected: String,
    challenge: String,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    auth: Mutex<Option<AuthRequirement>>,
}

pub struct FaultProxy {
    pub port: u16,
    state: Arc<State>,
    _server: ServerThread,
}

impl FaultProxy {
    /// Proxies 127.0.0.1:<new port> to 127.0.0.1:`upstream_port`.
    pub fn start(upstream_port: u16) -> Self {
        let state = Arc::new(State::default());
        let thread_state = state.clone();
        let server = ServerThread::start(move |conn| {
            let st = thread_state.clone();
            async move {
                let _ = handle(conn, upstream_port, st).await;
            }
        });
        Self {
            port: server.port,
            state,
            _server: server,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn add_rule(&self, method: Option<&str>, path_contains: &str, fault: Fault, times: usize) {
        self.state.rules.lock().unwrap().push(Rule {
            method: method.map(str::to_string),
            path_contains: path_contains.to_string(),
            fault,
            times,
        });
    }

    pub fn clear_rules(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Requests without exactly `expected` as `Authorization` get 401 + `challenge`.
    pub fn require_authorization(&self, expected: &str, challenge: &str) {
        *self.state.auth.lock().unwrap() = Some(AuthRequirement {
            expected: expected.to_string(),
            challenge: challenge.to_string(),
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many requests called `operation` (the end of their `X-Amz-Target`, e.g.
    /// `GetAuthorizationToken`).
    pub fn calls_to(&self, operation: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| {
                s.amz_target.as_deref().and_then(|t| t.rsplit('.').next()) == Some(operation)
            })
            .count()
    }

    /// How many requests got a fault.
    pub fn faults_applied(&self) -> usize {
        self.seen().iter().filter(|s| s.fault.is_some()).count()
    }
}

/// The head with `Connection: close` instead of any connection header.
fn rewrite_head(lines: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            let name = l.split(':').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

async fn reset(conn: TcpStream) {
    // SO_LINGER 0 makes close send RST (a "connection reset" for the client). The
    // deprecation is about linger > 0 blocking on drop; zero never blocks.
    #[allow(deprecated)]
    let _ = conn.set_linger(Some(Duration::ZERO));
    drop(conn);
}

async fn respond(
    conn: &mut TcpStream,
    status: u16,
    extra: &str,
    body: &str,
) -> std::io::Result<()> {
    respond_json(conn, &format!("{status} Injected"), extra, body).await
}

async fn handle(mut conn: TcpStream, upstream_port: u16, state: Arc<State>) -> std::io::Result<()> {
    let (head, mut body_start) = read_head(&mut conn).await?;
    let lines = head_lines(&head);
    let (method, path) = request_line(&lines);
    if header(&lines, "transfer-encoding").is_some() {
        return respond(&mut conn, 501, "", r#"{"errors":[{"code":"UNSUPPORTED","message":"fault proxy: chunked request bodies unsupported"}]}"#).await;
    }
    let content_length: u64 = header(&lines, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let authorization = header(&lines, "authorization").map(str::to_string);

    let fault = {
        let mut rules = state.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| {
                r.times > 0
                    && r.method.as_deref().is_none_or(|m| m == method)
                    && path.contains(&r.path_contains)
            })
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
    };
    let auth = state.auth.lock().unwrap().clone();
    let refused = auth
        .as_ref()
        .filter(|a| authorization.as_deref() != Some(a.expected.as_str()));
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        amz_target: header(&lines, "x-amz-target").map(str::to_string),
        fault: fault.as_ref().map(|f| format!("{f:?}")),
    });

    match &fault {
        Some(Fault::Reset) => {
            reset(conn).await;
            return Ok(());
        }
        Some(Fault::Status(code)) => {
            // Read the body first so the client sees the answer, not a broken pipe.
            drain(&mut conn, content_length, body_start.len() as u64).await?;
            let body = format!(
                r#"{{"errors":[{{"code":"INJECTED","message":"fault proxy injected HTTP {code}"}}]}}"#
            );
            return respond(&mut conn, *code, "", &body).await;
        }
        Some(Fault::Respond {
            status,
            headers,
            body,
        }) => {
            drain(&mut conn, content_length, body_start.len() as u64).await?;
            conn.write_all(&canned_head(*status, headers, Some(body.len())))
                .await?;
            conn.write_all(body).await?;
            return conn.shutdown().await;
        }
        Some(Fault::Drip {
            status,
            headers,
            body,
            interval,
        }) => {
            drain(&mut conn, content_length, body_start.len() as u64).await?;
            conn.write_all(&canned_head(*status, headers, Some(body.len())))
                .await?;
            for byte in body {
                conn.write_all(&[*byte]).await?;
                conn.flush().await?;
                tokio::time::sleep(*interval).await;
            }
            return conn.shutdown().await;
        }
        Some(Fault::Flood {
            status,
            headers,
            size,
        }) => {
            drain(&mut conn, content_length, body_start.len() as u64).await?;
            conn.write_all(&canned_head(*status, headers, None)).await?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = *size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                // An error here is the client hanging up: the flood is over.
                conn.write_all(&chunk[..n]).await?;
                left -= n as u64;
            }
            return conn.shutdown().await;
        }
        _ => {}
    }
    if let Some(a) = refused {
        drain(&mut conn, content_length, body_start.len() as u64).await?;
        let extra = format!("WWW-Authenticate: {}\r\n", a.challenge);
        return respond(
            &mut conn,
            401,
            &extra,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
        .await;
    }

    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
    upstream.write_all(&rewrite_head(&lines)).await?;
    // Request body: what came with the head, then the rest (streamed, not buffered).
    body_start.truncate(content_length as usize);
    upstream.write_all(&body_start).await?;
    let mut left = content_length - body_start.len() as u64;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = conn.read(&mut buf[..left.min(64 * 1024) as usize]).await?;
        if n == 0 {
            return Ok(());
        }
        upstream.write_all(&buf[..n]).await?;
        left -= n as u64;
    }

    // Response: head rewritten to close, body streamed with the fault applied.
    let (rhead, rest) = read_head(&mut upstream).await?;
    if matches!(fault, Some(Fault::DropResponse)) {
        reset(conn).await;
        return Ok(());
    }
    conn.write_all(&rewrite_head(&head_lines(&rhead))).await?;
    let mut offset: u64 = 0;
    let mut pending = rest;
    loop {
        if pending.is_empty() {
            let n = upstream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
        }
        let len = pending.len() as u64;
        match &fault {
            Some(Fault::FlipByte { offset: at }) if *at >= offset && *at < offset + len => {
                pending[(*at - offset) as usize] ^= 0x01;
            }
            Some(Fault::ResetMidBody { after }) if offset + len > *after => {
                let keep = (*after - offset.min(*after)) as usize;
                conn.write_all(&pending[..keep]).await?;
                conn.flush().await?;
                reset(conn).await;
                return Ok(());
            }
            _ => {}
        }
        conn.write_all(&pending).await?;
        offset += len;
        pending.clear();
    }
    conn.shutdown().await
}

/// The head of a canned answer, with `Content-Length` when given.
fn canned_head(status: u16, headers: &[(String, String)], length: Option<usize>) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} Canned\r\n");
    if let Some(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    head.into_bytes()
}

async fn drain(conn: &mut TcpStream, content_length: u64, already: u64) -> std::io::Result<()> {
    let mut left = content_length.saturating_sub(already);
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = conn.read(&mut buf[..left.min(64 * 1024) as usize]).await?;
        if n == 0 {
            break;
        }
        left -= n as u64;
    }
    Ok(())
}
