//! A proxy in front of moto that makes chosen AWS operations misbehave the way a real
//! service or network can and moto cannot: hand back a page token it already gave
//! (a listing that would never end), never answer, leave manifests out of a
//! BatchGetImage answer, fail one call of several. Everything else is moto's answer.
//!
//! Operations are matched by `X-Amz-Target` (ECR and ECS, awsJson1.1) or, for Lambda's
//! REST API, by method and path. Requests and answers are small JSON documents: the
//! proxy reads each whole (one request per connection, `Connection: close`).
#![allow(dead_code)]

use super::http_server::{head_lines, header, read_head, request_line, ServerThread};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The token the proxy hands out again and again.
pub const REPEATED_TOKEN: &str = "afterpush-test-repeated-token";

/// Which requests a fault applies to.
#[derive(Debug, Clone)]
pub enum Operation {
    /// An awsJson operation by name (`ListClusters`, `DescribeImages`...).
    Target(&'static str),
    /// A REST operation: method and a path predicate (Lambda).
    Rest {
        method: &'static str,
        path: fn(&str) -> bool,
    },
}

impl Operation {
    /// Lambda ListFunctions.
    pub fn list_functions() -> Self {
        Operation::Rest {
            method: "GET",
            path: |p| {
                p.split('?')
                    .next()
                    .is_some_and(|p| p.trim_end_matches('/') == "/2015-03-31/functions")
            },
        }
    }
    /// Lambda ListVersionsByFunction.
    pub fn list_versions() -> Self {
        Operation::Rest {
            method: "GET",
            path: |p| {
                p.split('?')
                    .next()
                    .is_some_and(|p| p.ends_with("/versions"))
            },
        }
    }
    /// Lambda ListAliases.
    pub fn list_aliases() -> Self {
        Operation::Rest {
            method: "GET",
            path: |p| p.split('?').next().is_some_and(|p| p.ends_with("/aliases")),
        }
    }

    fn matches(&self, method: &str, path: &str, target: Option<&str>) -> bool {
        match self {
            Operation::Target(name) => target.and_then(|t| t.rsplit('.').next()) == Some(*name),
            Operation::Rest { method: m, path: p } => *m == method && p(path),
        }
    }
}

/// What to do to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward (without the repeated token, so moto answers its first page), then set
    /// the answer's `field` (`nextToken`, `NextMarker`) to [`REPEATED_TOKEN`].
    RepeatToken { field: &'static str },
    /// Read the request and never answer.
    NeverAnswer,
    /// Forward, then empty the answer's `images` array (BatchGetImage) without adding
    /// a failure.
    DropImages,
    /// Answer this HTTP status with an awsJson error of `code`, without forwarding.
    Error { status: u16, code: &'static str },
}

struct Rule {
    operation: Operation,
    fault: Fault,
    /// Matching requests let through before the fault applies.
    skip: usize,
    /// Requests left to apply it to.
    times: usize,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    /// (operation label, fault applied) of every request seen.
    seen: Mutex<Vec<(String, bool)>>,
}

/// The proxy: point an SDK config at [`MotoFaultProxy::endpoint`].
pub struct MotoFaultProxy {
    pub port: u16,
    state: Arc<State>,
    _server: ServerThread,
}

impl MotoFaultProxy {
    /// Proxies 127.0.0.1:<new port> to moto on `moto_port`.
    pub fn start(moto_port: u16) -> Self {
        let state = Arc::new(State::default());
        let st = state.clone();
        let server = ServerThread::start(move |conn| {
            let st = st.clone();
            async move {
                let _ = handle(conn, moto_port, st).await;
            }
        });
        Self {
            port: server.port,
            state,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Applies `fault` to every request of `operation`.
    pub fn always(&self, operation: Operation, fault: Fault) {
        self.after(operation, fault, 0, usize::MAX);
    }

    /// Applies `fault` to `times` requests of `operation`, after letting `skip` through.
    pub fn after(&self, operation: Operation, fault: Fault, skip: usize, times: usize) {
        self.state.rules.lock().unwrap().push(Rule {
            operation,
            fault,
            skip,
            times,
        });
    }

    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Requests seen whose label (target or `METHOD path`) contains `what`.
    pub fn calls_to(&self, what: &str) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l.contains(what))
            .count()
    }
}

/// Reads a body of `content_length` bytes, `start` of it already read.
async fn read_body(
    conn: &mut TcpStream,
    mut start: Vec<u8>,
    length: usize,
) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    while start.len() < length {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        start.extend_from_slice(&buf[..n]);
    }
    start.truncate(length);
    Ok(start)
}

fn decode_chunked(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[at..at + eol]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        at += eol + 2;
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[at..(at + size).min(raw.len())]);
        at += size + 2;
    }
    out
}

fn without_token(body: &[u8], path: &str) -> (Vec<u8>, String) {
    let path = path
        .replace(&format!("Marker={REPEATED_TOKEN}"), "")
        .replace("?&", "?");
    let body = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut o)) => {
            o.retain(|_, v| v.as_str() != Some(REPEATED_TOKEN));
            serde_json::to_vec(&Value::Object(o)).unwrap()
        }
        _ => body.to_vec(),
    };
    (body, path)
}

async fn handle(mut conn: TcpStream, moto_port: u16, state: Arc<State>) -> std::io::Result<()> {
    let (head, start) = read_head(&mut conn).await?;
    let lines = head_lines(&head);
    let (method, path) = request_line(&lines);
    let target = header(&lines, "x-amz-target").map(str::to_string);
    let length: usize = header(&lines, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body = read_body(&mut conn, start, length).await?;
    let fault = {
        let mut rules = state.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && r.operation.matches(&method, &path, target.as_deref()))
            .and_then(|r| {
                if r.skip > 0 {
                    r.skip -= 1;
                    return None;
                }
                r.times -= 1;
                Some(r.fault.clone())
            })
    };
    state.seen.lock().unwrap().push((
        target.clone().unwrap_or_else(|| format!("{method} {path}")),
        fault.is_some(),
    ));
    let (body, path) = match &fault {
        Some(Fault::RepeatToken { .. }) => without_token(&body, &path),
        _ => (body, path),
    };
    match &fault {
        Some(Fault::NeverAnswer) => {
            // Hold the connection open until the client gives up.
            let mut buf = [0u8; 1024];
            while conn.read(&mut buf).await? > 0 {}
            return Ok(());
        }
        Some(Fault::Error { status, code }) => {
            let body = format!(r#"{{"__type":"{code}","message":"injected by the test"}}"#);
            let head = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(body.as_bytes()).await?;
            return conn.shutdown().await;
        }
        _ => {}
    }
    // Forward with the (maybe rewritten) path and body.
    let mut upstream = TcpStream::connect(("127.0.0.1", moto_port)).await?;
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for l in lines.iter().skip(1) {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "content-length"
        ) {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    upstream.write_all(out.as_bytes()).await?;
    upstream.write_all(&body).await?;
    let (rhead, rest) = read_head(&mut upstream).await?;
    let rlines = head_lines(&rhead);
    let mut raw = rest;
    upstream.read_to_end(&mut raw).await?;
    let mut rbody = if header(&rlines, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        decode_chunked(&raw)
    } else {
        match header(&rlines, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            Some(n) => raw[..n.min(raw.len())].to_vec(),
            None => raw,
        }
    };
    match &fault {
        Some(Fault::RepeatToken { field }) => {
            if let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(&rbody) {
                o.insert(field.to_string(), Value::String(REPEATED_TOKEN.into()));
                rbody = serde_json::to_vec(&Value::Object(o)).unwrap();
            }
        }
        Some(Fault::DropImages) => {
            if let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(&rbody) {
                o.insert("images".into(), Value::Array(Vec::new()));
                rbody = serde_json::to_vec(&Value::Object(o)).unwrap();
            }
        }
        _ => {}
    }
    let mut head = String::new();
    for (i, l) in rlines.iter().enumerate() {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if i > 0
            && matches!(
                name.as_str(),
                "connection" | "keep-alive" | "content-length" | "transfer-encoding"
            )
        {
            continue;
        }
        head.push_str(l);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        rbody.len()
    ));
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(&rbody).await?;
    conn.shutdown().await
}
