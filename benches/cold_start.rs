//! Cold start of the Lambda bootstraps: for each function, the size of its binary and the
//! time from exec to its first Runtime API `GET /2018-06-01/runtime/invocation/next`
//! (everything the function does before it can take an event: tracing, settings, AWS SDK
//! config and clients), median of `--runs` (20) runs, for two builds measured in the same
//! run: `before` and `after`, each a directory holding the three release binaries.
//!
//! `scripts/cold-start-bench` builds both (the profile and features the bootstraps had
//! before, and the current ones) and runs this with `AFTERPUSH_COLD_START_BEFORE` and
//! `AFTERPUSH_COLD_START_AFTER` set to their directories.
//!
//! Each run starts the binary against the local Runtime API of
//! `tests/support/runtime_api.rs` with the environment Lambda gives a function (the
//! template's settings are the code's defaults, but for the janitor's policy) and kills it at its
//! first `next`. Before and after runs alternate, so load from other processes falls on
//! both alike; one unmeasured run per binary first puts it in the page cache.

#[path = "../tests/support/runtime_api.rs"]
mod runtime_api;

use runtime_api::{Function, RuntimeApi, HANG_GUARD};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FUNCTIONS: [&str; 3] = ["soci-indexer", "manifest-stitcher", "cache-janitor"];

/// What Lambda adds to `runtime_api::Function`'s environment: the execution role's
/// credentials. The AWS endpoint is `aws_endpoint`, a local listener nobody answers: the
/// bench fails if any function connects to it before `next`, and no call leaves the
/// machine.
fn lambda_env(aws_endpoint: &str) -> [(&'static str, String); 6] {
    [
        ("AWS_ACCESS_KEY_ID", "AKIACOLDSTARTBENCH00".into()),
        ("AWS_SECRET_ACCESS_KEY", "cold-start-bench-secret".into()),
        ("AWS_SESSION_TOKEN", "cold-start-bench-token".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL", aws_endpoint.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// The janitor's one setting without a code default: template.yaml's `CleanupPolicy`
/// default (the other settings' template defaults are the code's).
const TEMPLATE_CLEANUP_POLICY: &str = r#"{"repositories": ["*"], "grace_period": "1h", "max_deletions": 500, "rules": [
{"name": "keep-main-cache", "select": {"tags": ["cache-main"]}, "action": "keep"},
{"name": "stale-cache", "select": {"kind": "buildkit-cache", "untagged": true}, "action": "expire"},
{"name": "branch-caches", "select": {"kind": "buildkit-cache", "tags": ["cache-*"]}, "action": "expire", "when": {"unused_for": "14d"}}]}"#;

/// Exec to first `next` of one run of `binary`.
fn time_to_next(binary: &Path, name: &str, env: &[(&str, String)]) -> Duration {
    let api = RuntimeApi::without_events();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if name == "cache-janitor" {
        env.push(("CLEANUP_POLICY", TEMPLATE_CLEANUP_POLICY));
    }
    let mut function = Function::start(binary, name, &api, &env);
    let polled = api.next_polls.recv_timeout(HANG_GUARD).unwrap_or_else(|_| {
        let status = function.child.try_wait().ok().flatten();
        panic!(
            "{} never polled for an event (exit: {status:?}); its log:\n{}",
            binary.display(),
            function.log()
        )
    });
    if let Ok(posted) = api.posted.try_recv() {
        panic!(
            "{} posted {} before its first event; its log:\n{}",
            binary.display(),
            posted.kind,
            function.log()
        );
    }
    polled.duration_since(function.spawned)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    }
}

/// Fastest and slowest run, in ms.
fn range_ms(samples: &[Duration]) -> (f64, f64) {
    let min = samples.iter().min().copied().unwrap_or_default();
    let max = samples.iter().max().copied().unwrap_or_default();
    (ms(min), ms(max))
}

fn build_dir(var: &str) -> PathBuf {
    let dir = std::env::var_os(var).unwrap_or_else(|| {
        eprintln!("{var} is not set: run scripts/cold-start-bench, which builds both sets");
        std::process::exit(2)
    });
    PathBuf::from(dir)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a benchmark has no place in the test suite's time.
    if !args.iter().any(|a| a == "--bench") {
        println!("benchmark: run scripts/cold-start-bench");
        return;
    }
    let runs: usize = match args.iter().position(|a| a == "--runs") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("--runs takes a positive number")),
        None => 20,
    };
    let builds = [
        ("before", build_dir("AFTERPUSH_COLD_START_BEFORE")),
        ("after", build_dir("AFTERPUSH_COLD_START_AFTER")),
    ];
    let binary = |build: usize, name: &str| {
        let path = builds[build].1.join(name);
        assert!(
            path.is_file(),
            "{} is missing ({} build)",
            path.display(),
            builds[build].0
        );
        path
    };

    let aws = TcpListener::bind("127.0.0.1:0").unwrap();
    aws.set_nonblocking(true).unwrap();
    let env = lambda_env(&format!("http://{}", aws.local_addr().unwrap()));

    for name in FUNCTIONS {
        for build in 0..2 {
            time_to_next(&binary(build, name), name, &env);
        }
    }
    // samples[function][build]
    let mut samples = vec![[Vec::new(), Vec::new()]; FUNCTIONS.len()];
    for run in 0..runs {
        for (f, name) in FUNCTIONS.iter().enumerate() {
            let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
            for build in order {
                samples[f][build].push(time_to_next(&binary(build, name), name, &env));
            }
        }
    }

    if let Ok((_, from)) = aws.accept() {
        panic!("a function connected to the AWS endpoint during its cold start (from {from})");
    }

    println!(
        "cold start on {} ({} CPUs): exec to first Runtime API `next`, median of {runs} runs",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "{:<18} {:>12} {:>12} {:>7}   {:>11} {:>11} {:>7}",
        "function", "size before", "size after", "ratio", "ms before", "ms after", "ratio"
    );
    for (f, name) in FUNCTIONS.iter().enumerate() {
        let size = |build| std::fs::metadata(binary(build, name)).unwrap().len();
        let (size_before, size_after) = (size(0), size(1));
        let [before, after] = samples[f].clone();
        let (range_before, range_after) = (range_ms(&before), range_ms(&after));
        let (t_before, t_after) = (median(before), median(after));
        println!(
            "{:<18} {:>8.2} MiB {:>8.2} MiB {:>7.2}   {:>8.2} ms {:>8.2} ms {:>7.2}   (ranges {:.1}-{:.1} / {:.1}-{:.1} ms)",
            name,
            mib(size_before),
            mib(size_after),
            size_after as f64 / size_before as f64,
            ms(t_before),
            ms(t_after),
            ms(t_after) / ms(t_before),
            range_before.0,
            range_before.1,
            range_after.0,
            range_after.1,
        );
    }
}
