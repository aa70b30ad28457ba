//! What the small HTTP/1.1 test servers (`fault_proxy.rs`, `token_server.rs`) share: a
//! server thread on 127.0.0.1 that stops when dropped, and reading a message head.
//!
//! The servers run on a thread of their own with their own tokio runtime, so that a
//! test may use them from a `#[tokio::test]` runtime or from none.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest message head a test server reads.
pub const MAX_HEAD: usize = 64 * 1024;

/// A server on 127.0.0.1 (a free port) running `serve` on each connection, each as a
/// task of its own; it stops accepting and its thread ends when this is dropped.
pub struct ServerThread {
    pub port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    pub fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((conn, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(serve(conn));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Self {
            port,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads up to the end of a message head; returns (head, bytes read past it).
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("head too large"));
        }
        let n = r.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof in head",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// The non-empty lines of a head: the request or status line, then the header lines.
pub fn head_lines(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The value of header `name` (case-insensitive) among a head's lines.
pub fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The method and target of a request head's first line (empty when missing).
pub fn request_line(lines: &[String]) -> (String, String) {
    let mut parts = lines
        .first()
        .map(String::as_str)
        .unwrap_or("")
        .split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    (method, target)
}

/// Answers with status line `status` (e.g. `401 Unauthorized`), `extra_headers` (each
/// line ending in CRLF), a JSON `body` and `Connection: close`; then closes the sending
/// side.
pub async fn respond_json(
    conn: &mut TcpStream,
    status: &str,
    extra_headers: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

/// A request a [`RecordingServer`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub authorization: Option<String>,
}

/// A server on 127.0.0.1 that records every request (method, target, `Authorization`)
/// and answers each with the same canned status, headers and body: a stand-in for a
/// host a registry sends us to (a storage front end, a redirect target).
pub struct RecordingServer {
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
    _server: ServerThread,
}

impl RecordingServer {
    /// Answers `status` (e.g. `201 Created`) with `extra_headers` (each line ending in
    /// CRLF) and `body`.
    pub fn start(status: &str, extra_headers: &str, body: &str) -> Self {
        let requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>> = Default::default();
        let recorded = requests.clone();
        let (status, extra, body) = (
            status.to_string(),
            extra_headers.to_string(),
            body.to_string(),
        );
        let server = ServerThread::start(move |mut conn| {
            let (recorded, status, extra, body) = (
                recorded.clone(),
                status.clone(),
                extra.clone(),
                body.clone(),
            );
            async move {
                let Ok((head, rest)) = read_head(&mut conn).await else {
                    return;
                };
                let lines = head_lines(&head);
                let (method, target) = request_line(&lines);
                recorded.lock().unwrap().push(Recorded {
                    method,
                    target,
                    authorization: header(&lines, "authorization").map(str::to_string),
                });
                // Read the request body so the client sees the answer, not a broken pipe.
                let length: usize = header(&lines, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut left = length.saturating_sub(rest.len());
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    match conn.read(&mut buf[..left.min(64 * 1024)]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left -= n,
                    }
                }
                let _ = respond_json(&mut conn, &status, &extra, &body).await;
            }
        });
        Self {
            port: server.port,
            requests,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}
