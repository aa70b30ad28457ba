//! A local Lambda Runtime API endpoint for driving a function binary through the real
//! `lambda_runtime` loop (polling, context headers, response and error posting).
//!
//! It is written here so that the tests run the very binary cargo built for them, with no
//! Docker and no second build of the function. It speaks the documented protocol:
//! `GET /2018-06-01/runtime/invocation/next` hands out the next event with the
//! `Lambda-Runtime-*` headers; `POST .../{id}/response` and `.../{id}/error` are recorded
//! and answered `202`; polls after the last event are held open until the test kills the
//! process. Used by `functions/*/tests/lambda_runtime.rs` and `benches/cold_start.rs`
//! through `#[path]`.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Guard against a hung binary; not a performance assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// A request the function posted back.
#[derive(Debug)]
pub struct Posted {
    /// `response` or `error`.
    pub kind: String,
    pub request_id: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Posted {
    /// The response as the function's output type (`afterpush::lambda::StitcherOutput`, ...).
    #[allow(dead_code)]
    pub fn output<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not the function's output ({e}): {}",
                self.kind,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {}",
                self.kind,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The deadline every event gets unless the test sets another: Lambda's longest timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

/// The local Runtime API: serves its events in order, then holds further `next` polls
/// open.
pub struct RuntimeApi {
    pub addr: String,
    pub posted: mpsc::Receiver<Posted>,
    /// When each `GET .../invocation/next` arrived (read as its request line came in).
    pub next_polls: mpsc::Receiver<Instant>,
    /// The request id of the first event (the only one for [`RuntimeApi::start`]).
    pub request_id: String,
    /// The request ids of all events, in order.
    pub request_ids: Vec<String>,
}

/// An event waiting for a `next` poll.
struct Pending {
    request_id: String,
    body: Vec<u8>,
    /// `Lambda-Runtime-Deadline-Ms` is this long after the poll.
    timeout: Duration,
}

impl RuntimeApi {
    /// Serves `event` once, with the default deadline.
    pub fn start(event: Vec<u8>) -> Self {
        Self::start_many(vec![event], DEFAULT_TIMEOUT)
    }

    /// An endpoint with no event: every `next` poll is held open (the cold-start bench
    /// only needs to see the first one).
    pub fn without_events() -> Self {
        Self::start_many(Vec::new(), DEFAULT_TIMEOUT)
    }

    /// Serves `events` in order, each with a deadline `timeout` after it is handed out
    /// (a zero or short one is how tests run out of time without waiting).
    pub fn start_many(events: Vec<Vec<u8>>, timeout: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let request_ids: Vec<String> = (0..events.len())
            .map(|n| format!("req-{}-{n}", std::process::id()))
            .collect();
        let (tx, rx) = mpsc::channel();
        let (polls_tx, polls_rx) = mpsc::channel();
        let pending: VecDeque<Pending> = events
            .into_iter()
            .zip(&request_ids)
            .map(|(body, id)| Pending {
                request_id: id.clone(),
                body,
                timeout,
            })
            .collect();
        let pending = Arc::new(Mutex::new(pending));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (tx, polls_tx, pending) = (tx.clone(), polls_tx.clone(), pending.clone());
                std::thread::spawn(move || serve(stream, &pending, &tx, &polls_tx));
            }
        });
        Self {
            addr,
            posted: rx,
            next_polls: polls_rx,
            request_id: request_ids.first().cloned().unwrap_or_default(),
            request_ids,
        }
    }
}

struct Request {
    /// When the request line was read.
    arrived: Instant,
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let arrived = Instant::now();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        body.resize(len.parse().ok()?, 0);
        reader.read_exact(&mut body).ok()?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2]; // data + CRLF
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break; // (trailers, if any, end with the CRLF just read)
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(Request {
        arrived,
        method,
        path,
        headers,
        body,
    })
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn serve(
    stream: TcpStream,
    pending: &Mutex<VecDeque<Pending>>,
    tx: &mpsc::Sender<Posted>,
    next_polls: &mpsc::Sender<Instant>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader) {
        let invocation = "/2018-06-01/runtime/invocation/";
        if req.method == "GET" && req.path == "/2018-06-01/runtime/invocation/next" {
            let _ = next_polls.send(req.arrived);
            let Some(event) = pending.lock().unwrap().pop_front() else {
                // Polls after the last event wait until the test kills the process.
                std::thread::sleep(HANG_GUARD * 2);
                return;
            };
            let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + event.timeout;
            respond(
                &mut writer,
                "200 OK",
                &[
                    ("Content-Type", "application/json".into()),
                    ("Lambda-Runtime-Aws-Request-Id", event.request_id.clone()),
                    (
                        "Lambda-Runtime-Deadline-Ms",
                        deadline.as_millis().to_string(),
                    ),
                    (
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:cache-janitor".into(),
                    ),
                    (
                        "Lambda-Runtime-Trace-Id",
                        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
                    ),
                ],
                &event.body,
            );
        } else if let Some(rest) = req
            .path
            .strip_prefix(invocation)
            .filter(|_| req.method == "POST")
        {
            let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
            respond(
                &mut writer,
                "202 Accepted",
                &[("Content-Type", "application/json".into())],
                br#"{"status":"OK"}"#,
            );
            let _ = tx.send(Posted {
                kind: kind.to_string(),
                request_id: id.to_string(),
                headers: req.headers,
                body: req.body,
            });
        } else {
            // init/error and anything unexpected: record it so the test shows it.
            respond(&mut writer, "202 Accepted", &[], b"{}");
            let _ = tx.send(Posted {
                kind: format!("{} {}", req.method, req.path),
                request_id: String::new(),
                headers: req.headers,
                body: req.body,
            });
        }
    }
}

/// The function process; killed on drop.
pub struct Function {
    pub child: Child,
    /// Taken just before the process was spawned.
    pub spawned: Instant,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Function {
    /// Starts `binary` as function `name` polling `api`, with extra environment.
    pub fn start(binary: &Path, name: &str, api: &RuntimeApi, extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("function.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = function_command(binary, name);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/23/[$LATEST]test")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            .env("AWS_REGION", "us-east-1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let program = format!("{:?}", cmd.get_program());
        let spawned = Instant::now();
        Self {
            child: cmd
                .spawn()
                .unwrap_or_else(|e| panic!("start {program} (for {}): {e}", binary.display())),
            spawned,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next thing the function posted, or a failure with its log.
    pub fn posted(&mut self, api: &RuntimeApi) -> Posted {
        match api.posted.recv_timeout(HANG_GUARD) {
            Ok(p) => p,
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "the function posted nothing (exit: {status:?}); its log:\n{}",
                    self.log()
                )
            }
        }
    }
}

/// The command that runs function `name`: the binary cargo built for this test, or, when
/// `AFTERPUSH_LAMBDA_BOOTSTRAPS` names a `sam build` output (`.aws-sam/build`), the
/// `bootstrap` that SAM built for it, run through `AFTERPUSH_LAMBDA_RUNNER` if set (the
/// emulator for another architecture, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`).
/// `scripts/sam-build` uses this to run these tests on the artifacts it will deploy.
fn function_command(binary: &Path, name: &str) -> Command {
    let Some(builds) = std::env::var_os("AFTERPUSH_LAMBDA_BOOTSTRAPS") else {
        return Command::new(binary);
    };
    // SAM's build directory is the template's logical id: cache-janitor → CacheJanitorFunction.
    let logical_id: String = name
        .split('-')
        .map(|w| w[..1].to_uppercase() + &w[1..])
        .chain(["Function".to_string()])
        .collect();
    let bootstrap = Path::new(&builds).join(logical_id).join("bootstrap");
    assert!(
        bootstrap.is_file(),
        "{} is missing: run `sam build` first",
        bootstrap.display()
    );
    let runner = std::env::var("AFTERPUSH_LAMBDA_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(bootstrap);
            cmd
        }
        None => Command::new(bootstrap),
    }
}

/// A sample event from the workspace's `infra/events/` (from a function package or the root).
pub fn sample(name: &str) -> Vec<u8> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = [
        manifest.join("../../infra/events"),
        manifest.join("infra/events"),
    ]
    .into_iter()
    .map(|d| d.join(name))
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("sample event {name} not found"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The CloudWatch Embedded Metric Format documents a function wrote (its JSON lines with
/// an `_aws` member), each checked against the format: one namespace `afterpush`, one
/// dimension set whose every name has a string value, and a number (or, for a histogram,
/// a list of numbers) for every metric it declares.
pub fn emf_documents(log: &str) -> Vec<serde_json::Value> {
    let docs: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|d| d.get("_aws").is_some())
        .collect();
    for doc in &docs {
        let directive = &doc["_aws"]["CloudWatchMetrics"];
        assert_eq!(directive.as_array().map(Vec::len), Some(1), "{doc}");
        assert_eq!(directive[0]["Namespace"], "afterpush", "{doc}");
        assert!(doc["_aws"]["Timestamp"].is_u64(), "{doc}");
        let sets = directive[0]["Dimensions"].as_array().unwrap();
        assert_eq!(sets.len(), 1, "{doc}");
        for name in sets[0].as_array().unwrap() {
            assert!(doc[name.as_str().unwrap()].is_string(), "{name} in {doc}");
        }
        for metric in directive[0]["Metrics"].as_array().unwrap() {
            let value = &doc[metric["Name"].as_str().unwrap()];
            let numbers = value.as_array().map_or(vec![value], |a| a.iter().collect());
            assert!(numbers.iter().all(|n| n.is_number()), "{metric} in {doc}");
        }
    }
    docs
}

/// The values of metric `name` in the documents whose dimensions are exactly
/// `FunctionName` = `function` plus `dims` (a histogram contributes each of its values).
pub fn metric_values(
    docs: &[serde_json::Value],
    function: &str,
    name: &str,
    dims: &[(&str, &str)],
) -> Vec<f64> {
    let mut wanted: Vec<(&str, &str)> = vec![("FunctionName", function)];
    wanted.extend_from_slice(dims);
    wanted.sort();
    docs.iter()
        .filter(|doc| {
            let directive = &doc["_aws"]["CloudWatchMetrics"][0];
            let mut have: Vec<(&str, &str)> = directive["Dimensions"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
                .map(|n| (n, doc[n].as_str().unwrap()))
                .collect();
            have.sort();
            have == wanted
                && directive["Metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["Name"] == name)
        })
        .flat_map(|doc| match &doc[name] {
            serde_json::Value::Array(values) => {
                values.iter().map(|v| v.as_f64().unwrap()).collect()
            }
            value => vec![value.as_f64().unwrap()],
        })
        .collect()
}

/// The sum of [`metric_values`], 0 when there is none.
pub fn metric_sum(
    docs: &[serde_json::Value],
    function: &str,
    name: &str,
    dims: &[(&str, &str)],
) -> f64 {
    metric_values(docs, function, name, dims).iter().sum()
}

/// Waits for the process to exit (bad settings end the cold start) and returns its log.
pub fn exits_with_failure(function: &mut Function) -> String {
    let status = (0..(HANG_GUARD.as_millis() / 50))
        .find_map(|_| {
            let s = function.child.try_wait().unwrap();
            if s.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            s
        })
        .unwrap_or_else(|| {
            panic!(
                "the function kept running with bad settings:\n{}",
                function.log()
            )
        });
    assert!(!status.success());
    function.log()
}
