//! `sam local invoke` of the three functions, each in a container SAM starts from the
//! built template, compared with `afterpush invoke` on the same event and environment:
//! both must say the same.
//!
//! Needs what `scripts/sam-local` sets up: a private dockerd, the local base image, the
//! bootstraps (arm64 under qemu-user, or x86_64 where binfmt_misc is unavailable; the
//! script says which) and a template declaring the local-only variables. The script runs
//! these tests with AFTERPUSH_SAM_LOCAL=1; without it each test prints why it is skipped
//! (plain `cargo test` has no Docker daemon).
//!
//! Each comparison runs on two identical stacks (registry + moto, seeded the same way):
//! one for `sam local invoke`, one for `afterpush invoke`, so neither sees the other's
//! output. Both reach their servers the same way, through relays on the Docker bridge
//! (see tests/support/bridge_relay.rs).

use crate::support;

use afterpush::oci::Sha256Digest;
use afterpush::registry::Repository;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::bridge_relay::BridgeRelay;
use support::invoke_stack::*;

/// What scripts/sam-local provides.
struct SamLocal {
    sam: PathBuf,
    template: PathBuf,
    bridge_ip: String,
}

fn sam_local(test: &str) -> Option<SamLocal> {
    if std::env::var("AFTERPUSH_SAM_LOCAL").as_deref() != Ok("1") {
        eprintln!(
            "{test}: skipped: needs the Docker daemon and base image scripts/sam-local sets up \
             (run scripts/sam-local, which sets AFTERPUSH_SAM_LOCAL=1)"
        );
        return None;
    }
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("scripts/sam-local sets {k}"));
    Some(SamLocal {
        sam: var("AFTERPUSH_SAM").into(),
        template: var("AFTERPUSH_SAM_LOCAL_TEMPLATE").into(),
        bridge_ip: var("AFTERPUSH_SAM_LOCAL_BRIDGE_IP"),
    })
}

/// Seconds after which a `sam local invoke` counts as hung.
const HANG_GUARD_SECONDS: u64 = 180;
/// What SAM logs when the emulator in the container did not answer.
const NO_RESPONSE: &str = "No response from invoke container";

/// The template's logical id of each function.
fn logical_id(function: &str) -> &'static str {
    match function {
        "soci-indexer" => "SociIndexerFunction",
        "manifest-stitcher" => "ManifestStitcherFunction",
        "cache-janitor" => "CacheJanitorFunction",
        other => panic!("no function {other}"),
    }
}

/// A stack whose servers the containers reach through relays on the bridge.
struct Relayed {
    stack: Stack,
    _relays: [BridgeRelay; 2],
}

async fn relayed_stack(sam: &SamLocal) -> Relayed {
    let mut stack = Stack::start().await;
    let registry = BridgeRelay::start(&sam.bridge_ip, stack.registry.port);
    let moto = BridgeRelay::start(&sam.bridge_ip, stack.moto.port);
    stack.registry_endpoint = registry.endpoint();
    stack.aws_endpoint = moto.endpoint();
    // The relay's address is not a loopback one: plain HTTP to it must be allowed.
    stack
        .extra_env
        .push(("AFTERPUSH_REGISTRY_INSECURE", "true".into()));
    Relayed {
        stack,
        _relays: [registry, moto],
    }
}

/// Runs `sam local invoke` of `function` on `event` with the stack's function
/// environment (template variables through --env-vars, credentials and region through
/// SAM's own AWS_* variables). The answer becomes an [`Invocation`] shaped like
/// `afterpush invoke`'s: the response on stdout, or the Lambda error as "message (type)".
fn sam_invoke(sam: &SamLocal, stack: &Stack, function: &str, event: &Path) -> Invocation {
    let env = stack.function_env();
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1.clone();
    let parameters: serde_json::Map<String, Value> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_") || *k == "AWS_ENDPOINT_URL")
        .map(|(k, v)| (k.to_string(), Value::from(v.as_str())))
        .collect();
    let env_file = stack.dir.path().join(format!("sam-env-{function}.json"));
    std::fs::write(&env_file, json!({ "Parameters": parameters }).to_string()).unwrap();
    let what = format!(
        "sam local invoke {} -e {}",
        logical_id(function),
        event.display()
    );
    let mut attempt = 1;
    let out = loop {
        // `timeout`: a guard against a hung sam, not a performance assertion.
        let out = Command::new("timeout")
            .arg(HANG_GUARD_SECONDS.to_string())
            .arg(&sam.sam)
            .args(["local", "invoke", "--skip-pull-image", "--region"])
            .arg(get("AWS_REGION"))
            .arg("-t")
            .arg(&sam.template)
            .arg("--env-vars")
            .arg(&env_file)
            .arg("-e")
            .arg(event)
            .arg(logical_id(function))
            .env("AWS_ACCESS_KEY_ID", get("AWS_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", get("AWS_SECRET_ACCESS_KEY"))
            .env("AWS_REGION", get("AWS_REGION"))
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("SAM_CLI_TELEMETRY", "0")
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", sam.sam.display()));
        // SAM gives the emulator ~0.4 s once the container's port accepts; should an
        // emulator under qemu-user miss that (scripts/sam-local routes the port so it
        // accepts only once the emulator listens), the event never reached the
        // function, so sending it again is safe.
        let missed = out.stdout.trim_ascii().is_empty()
            && (String::from_utf8_lossy(&out.stderr).contains(NO_RESPONSE)
                || out.status.code() == Some(124));
        if !missed || attempt == 3 {
            break out;
        }
        eprintln!("{what}: the emulator was not listening yet (attempt {attempt}); again");
        attempt += 1;
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what}: sam failed ({}):\n{stderr}",
        out.status
    );
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{what}: the response is not JSON ({e}):\n{stdout}\nsam's log:\n{stderr}")
    });
    match (answer.get("errorType"), answer.get("errorMessage")) {
        (Some(Value::String(t)), Some(Value::String(m))) => Invocation {
            what,
            success: false,
            stdout: String::new(),
            stderr: format!("{m} ({t})\n{stderr}"),
        },
        _ => Invocation {
            what,
            success: true,
            stdout,
            stderr,
        },
    }
}

/// Runs `function` on `event` (a sample event file name, given this repository and
/// digest) through `sam local invoke` on `sam_stack` and through `afterpush invoke` on
/// `cli_stack`; asserts both say the same and returns (sam's, afterpush's) invocation.
fn invoke_both(
    sam: &SamLocal,
    stacks: (&Stack, &Stack),
    function: &str,
    event: &str,
    repository: &str,
    digest: Option<&Sha256Digest>,
) -> (Invocation, Invocation) {
    let (sam_stack, cli_stack) = stacks;
    let by_sam = sam_invoke(
        sam,
        sam_stack,
        function,
        &sam_stack.event_copy(event, repository, digest),
    );
    let by_cli = cli_stack.invoke(
        function,
        &cli_stack.event_copy(event, repository, digest),
        &[],
    );
    assert_same_answer(&by_sam, &by_cli);
    (by_sam, by_cli)
}

/// Both succeeded with the same JSON (up to run ids and clock times), or both failed with
/// the same error type and message.
fn assert_same_answer(by_sam: &Invocation, by_cli: &Invocation) {
    assert_eq!(
        by_sam.success, by_cli.success,
        "{} and {} disagree:\nsam: {}{}\ncli: {}{}",
        by_sam.what, by_cli.what, by_sam.stdout, by_sam.stderr, by_cli.stdout, by_cli.stderr
    );
    if by_sam.success {
        assert_eq!(
            without_clock(by_sam.json()),
            without_clock(by_cli.json()),
            "{} and {} answered differently",
            by_sam.what,
            by_cli.what
        );
    } else {
        // sam: "message (Type)" first; afterpush invoke: "Error: message (Type)".
        let sam_error = by_sam.stderr.lines().next().unwrap();
        assert!(
            by_cli.stderr.contains(sam_error),
            "{} failed with {sam_error:?}, {} with:\n{}",
            by_sam.what,
            by_cli.what,
            by_cli.stderr
        );
    }
}

/// The answer with what differs between any two runs replaced: the janitor's run id, the
/// indexer's measured duration (`seconds`), and clock readings (the times of a run, and of
/// pushes as each moto recorded them).
fn without_clock(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match k.as_str() {
                    "run_id" => (k, Value::from("<run id>")),
                    "seconds" => (k, Value::from("<duration>")),
                    _ => (k, without_clock(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_clock).collect()),
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(&s).is_ok() => {
            Value::from("<time>")
        }
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_builds_a_soci_index_for_an_image_pushed_to_the_registry() {
    let Some(sam) = sam_local("soci-indexer") else {
        return;
    };
    let (a, b) = (relayed_stack(&sam).await, relayed_stack(&sam).await);
    let repository = "app-push-image-tag";
    let event = read_event("push-image-tag.json");
    let tag = event["detail"]["image-tag"].as_str().unwrap();
    let source = seed_image(&a.stack, repository, &event, Some(tag), 27).await;
    assert_eq!(
        seed_image(&b.stack, repository, &event, Some(tag), 27).await,
        source
    );
    let (by_sam, by_cli) = invoke_both(
        &sam,
        (&a.stack, &b.stack),
        "soci-indexer",
        "push-image-tag.json",
        repository,
        Some(&source),
    );
    assert_soci_output(&a.stack, &by_sam, repository, tag, &source, 1).await;
    assert_soci_output(&b.stack, &by_cli, repository, tag, &source, 1).await;
    // A second delivery: both see their own output and skip.
    let (again, _) = invoke_both(
        &sam,
        (&a.stack, &b.stack),
        "soci-indexer",
        "push-image-tag.json",
        repository,
        Some(&source),
    );
    let again = again.json();
    assert_eq!(
        again["outcome"]["output"],
        by_sam.json()["outcome"]["output"]
    );
    assert!(
        again["outcome"]["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("already holds")),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stitcher_stitches_the_arch_tags_into_an_index() {
    let Some(sam) = sam_local("manifest-stitcher") else {
        return;
    };
    let (a, b) = (relayed_stack(&sam).await, relayed_stack(&sam).await);
    let repository = "app-push-arch-arm64";
    let amd64 = read_event("push-arch-amd64.json");
    let arm64 = read_event("push-arch-arm64.json");
    let mut source = None;
    for stack in [&a.stack, &b.stack] {
        seed_image(stack, repository, &amd64, Some("1.2.3-amd64"), 25).await;
        let pushed = seed_image(stack, repository, &arm64, Some("1.2.3-arm64"), 26).await;
        assert!(source.is_none_or(|s| s == pushed));
        source = Some(pushed);
    }
    let source = source.unwrap();
    let (by_sam, _) = invoke_both(
        &sam,
        (&a.stack, &b.stack),
        "manifest-stitcher",
        "push-arch-arm64.json",
        repository,
        Some(&source),
    );
    let out = by_sam.json();
    assert_eq!(out["outcome"]["outcome"], "written", "{out}");
    assert_eq!(out["outcome"]["target"], "1.2.3", "{out}");
    for stack in [&a.stack, &b.stack] {
        let repo = stack.repo(repository);
        let index: Value =
            serde_json::from_slice(&repo.get_manifest("1.2.3").await.unwrap().bytes).unwrap();
        let listed: BTreeSet<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect();
        let expected: BTreeSet<String> = [
            repo.resolve("1.2.3-amd64")
                .await
                .unwrap()
                .digest
                .to_string(),
            source.to_string(),
        ]
        .into();
        assert_eq!(listed, expected, "{index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_plans_against_moto() {
    let Some(sam) = sam_local("cache-janitor") else {
        return;
    };
    let (a, b) = (relayed_stack(&sam).await, relayed_stack(&sam).await);
    let repository = "app-push-cache-main";
    let (current, superseded) = seed_caches(&a.stack, repository, "cache-main").await;
    assert_eq!(
        seed_caches(&b.stack, repository, "cache-main").await,
        (current.clone(), superseded.clone())
    );
    let ecr_before = a.stack.ecr_images().await;
    let (by_sam, _) = invoke_both(
        &sam,
        (&a.stack, &b.stack),
        "cache-janitor",
        "push-cache-main.json",
        repository,
        Some(&current),
    );
    assert_dry_run_report(
        &a.stack,
        &by_sam,
        &format!("push {repository}:cache-main"),
        repository,
        &[&superseded],
        &ecr_before,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_event_yields_the_non_retryable_error() {
    let Some(sam) = sam_local("malformed event") else {
        return;
    };
    let (a, b) = (relayed_stack(&sam).await, relayed_stack(&sam).await);
    let mut event = read_event("push-image-tag.json");
    event["detail"]["repository-name"] = 42.into();
    for stack in [&a.stack, &b.stack] {
        std::fs::write(stack.dir.path().join("bad-field.json"), event.to_string()).unwrap();
    }
    for function in ["soci-indexer", "manifest-stitcher", "cache-janitor"] {
        let by_sam = sam_invoke(
            &sam,
            &a.stack,
            function,
            &a.stack.dir.path().join("bad-field.json"),
        );
        let by_cli = b
            .stack
            .invoke(function, &b.stack.dir.path().join("bad-field.json"), &[]);
        by_sam.assert_error(&["repository-name", "(NonRetryable)"]);
        assert_same_answer(&by_sam, &by_cli);
    }
    assert!(a.stack.tags("app").await.is_empty());
    assert!(a.stack.ecr_images().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_event_parses_in_the_container() {
    let Some(sam) = sam_local("sample events") else {
        return;
    };
    let (a, b) = (relayed_stack(&sam).await, relayed_stack(&sam).await);
    let files = sample_event_files();
    assert!(files.len() >= 7, "{files:?}");
    // The janitor reads every kind of event the template routes (pushes, deletes,
    // failures, the schedule) and needs nothing seeded to answer: each event, as SAM
    // hands it over, must reach a decision (no repository exists, so a cache push plans
    // nothing) and the decision must be afterpush invoke's.
    for file in &files {
        eprintln!("case {file}");
        let (by_sam, _) = invoke_both(
            &sam,
            (&a.stack, &b.stack),
            "cache-janitor",
            file,
            "app",
            None,
        );
        let out = by_sam.json();
        assert_eq!(out["function"], "cache-janitor", "{file}: {out}");
        assert!(
            out.get("decision").is_some() || out.get("report").is_some(),
            "{file}: {out}"
        );
    }
}
