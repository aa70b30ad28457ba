//! Drives the real `cache-janitor` binary through the Lambda Runtime API, so the real
//! `lambda_runtime` loop (polling, context headers, response and error posting) runs.
//!
//! The Runtime API endpoint here is a small local server: no local server of AWS's
//! implements it without Docker (cargo-lambda's emulator would need `cargo lambda watch`
//! to compile the function itself, which is slow on 2 cores). It speaks exactly the
//! documented protocol: `GET /2018-06-01/runtime/invocation/next` hands out one event
//! with the `Lambda-Runtime-*` headers, `POST .../{id}/response` and `.../{id}/error`
//! are recorded and answered `202`.
//!
//! The binary: integration tests of the root package only get `CARGO_BIN_EXE_*` for the
//! root package's own binaries, so the test runs `cargo build -p cache-janitor` into the
//! same target directory (a no-op after `cargo test --workspace`, which has built it) and
//! runs `<target>/debug/cache-janitor`. Building it, rather than only looking for it,
//! means a stale binary can never be tested.

use afterpush::events::{janitor_decision, RepositoryTagFilters, Trigger};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Guard against a hung binary; not a performance assertion.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn janitor_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // <target>/<profile>/afterpush -> <target>/<profile>
        let profile_dir = Path::new(env!("CARGO_BIN_EXE_afterpush"))
            .parent()
            .unwrap()
            .to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "cache-janitor", "--target-dir"])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p cache-janitor");
        assert!(status.success(), "cargo build -p cache-janitor failed");
        let binary = profile_dir.join("cache-janitor");
        assert!(binary.exists(), "{} was not built", binary.display());
        binary
    })
}

/// A request the function posted back.
#[derive(Debug)]
struct Posted {
    /// `response` or `error`.
    kind: String,
    request_id: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Posted {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {}",
                self.kind,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The local Runtime API: serves `event` once, then holds further `next` polls open.
struct RuntimeApi {
    addr: String,
    posted: mpsc::Receiver<Posted>,
    request_id: String,
}

impl RuntimeApi {
    fn start(event: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let request_id = format!("req-{}", std::process::id());
        let (tx, rx) = mpsc::channel();
        let pending = Arc::new(Mutex::new(Some(event)));
        let id = request_id.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (tx, pending, id) = (tx.clone(), pending.clone(), id.clone());
                std::thread::spawn(move || serve(stream, &pending, &id, &tx));
            }
        });
        Self {
            addr,
            posted: rx,
            request_id,
        }
    }
}

struct Request {
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
    pending: &Mutex<Option<Vec<u8>>>,
    request_id: &str,
    tx: &mpsc::Sender<Posted>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader) {
        let invocation = "/2018-06-01/runtime/invocation/";
        if req.method == "GET" && req.path == "/2018-06-01/runtime/invocation/next" {
            let Some(event) = pending.lock().unwrap().take() else {
                // One event per test: later polls wait until the test kills the process.
                std::thread::sleep(HANG_GUARD * 2);
                return;
            };
            let deadline =
                SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(900);
            respond(
                &mut writer,
                "200 OK",
                &[
                    ("Content-Type", "application/json".into()),
                    ("Lambda-Runtime-Aws-Request-Id", request_id.into()),
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
                &event,
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
struct Function {
    child: Child,
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
    fn start(api: &RuntimeApi, extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("function.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(janitor_binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", "cache-janitor")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/23/[$LATEST]test")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/cache-janitor")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            .env("AWS_REGION", "us-east-1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("start cache-janitor"),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next thing the function posted, or a failure with its log.
    fn posted(&mut self, api: &RuntimeApi) -> Posted {
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

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("infra/events")
            .join(name),
    )
    .unwrap()
}

/// What the library decides for `event`, computed in this process for comparison.
fn expected_decision(event: &[u8], filters: &str) -> serde_json::Value {
    let trigger = Trigger::from_slice(event).unwrap();
    let filters = RepositoryTagFilters::parse(filters).unwrap();
    serde_json::to_value(janitor_decision(&trigger, &filters, "-soci")).unwrap()
}

#[test]
fn a_cache_push_goes_through_the_runtime_loop() {
    let event = sample("push-cache-main.json");
    let api = RuntimeApi::start(event.clone());
    let mut function = Function::start(&api, &[]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    assert_eq!(posted.request_id, api.request_id);
    let body = posted.json();
    assert_eq!(body, expected_decision(&event, "*:*"));
    assert_eq!(body["action"], "after-push");
    assert_eq!(body["decision"], "work");
    assert_eq!(body["tag"], "cache-main");
    assert!(posted
        .headers
        .get("user-agent")
        .is_some_and(|u| u.starts_with("aws-lambda-rust/")));
    drop(function);
}

#[test]
fn the_schedule_is_a_sweep_and_logs_are_json() {
    let event = sample("scheduled-sweep.json");
    let api = RuntimeApi::start(event.clone());
    let mut function = Function::start(&api, &[]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    assert_eq!(posted.json(), expected_decision(&event, "*:*"));
    assert_eq!(posted.json()["action"], "sweep");
    // In Lambda the logs are JSON lines; the decision line carries the request id.
    let log = function.log();
    let decision_line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "cache-janitor decision")
        .unwrap_or_else(|| panic!("no JSON decision line in:\n{log}"));
    assert_eq!(
        decision_line["fields"]["request_id"],
        api.request_id.as_str()
    );
    assert_eq!(decision_line["fields"]["trigger"], "scheduled");
}

#[test]
fn settings_reach_the_function() {
    // A filter that excludes the pushed repository turns the same event into a skip.
    let event = sample("push-cache-feature-x.json");
    let api = RuntimeApi::start(event.clone());
    let mut function = Function::start(&api, &[("REPOSITORY_TAG_FILTERS", "other:*")]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    assert_eq!(posted.json(), expected_decision(&event, "other:*"));
    assert_eq!(posted.json()["code"], "filtered-out");
}

#[test]
fn a_foreign_event_is_a_non_retryable_error() {
    let event =
        br#"{"version":"0","id":"x","detail-type":"Object Created","source":"aws.s3","detail":{}}"#;
    let api = RuntimeApi::start(event.to_vec());
    let mut function = Function::start(&api, &[]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "error", "{posted:?}\n{}", function.log());
    assert_eq!(posted.request_id, api.request_id);
    let body = posted.json();
    assert_eq!(body["errorType"], "NonRetryable", "{body}");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("aws.s3") && message.contains("Object Created"),
        "{message}"
    );
}

#[test]
fn bad_settings_fail_the_cold_start_naming_the_variable() {
    let api = RuntimeApi::start(sample("push-cache-main.json"));
    let mut function = Function::start(&api, &[("REPOSITORY_TAG_FILTERS", "app")]);
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
    let log = function.log();
    assert!(
        log.contains("REPOSITORY_TAG_FILTERS") && log.contains("\\\"app\\\"")
            || log.contains("\"app\""),
        "{log}"
    );
    // It never polled for (and so never consumed) an event.
    assert!(api.posted.try_recv().is_err());
}
