//! Drives the real `cache-janitor` binary through the Lambda Runtime API (a local
//! endpoint, see `tests/support/runtime_api.rs`), so the real `lambda_runtime` loop runs:
//! polling, context headers, JSON logs, response and error posting. The janitor does real
//! work, on an OCI image layout (`AFTERPUSH_LAYOUT`) seeded with BuildKit cache manifests,
//! under a cleanup policy given in `CLEANUP_POLICY`; `DRY_RUN` is left at its default.
//!
//! The test lives in the function's package because only there does cargo build the
//! binary for the test run and hand over its path (`CARGO_BIN_EXE_cache-janitor`): the
//! binary under test is always the one built from the code under test, with the same
//! dependencies and features as the test itself.

#[path = "../../../tests/support/runtime_api.rs"]
mod runtime_api;

use afterpush::oci::Sha256Digest;
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::Repository;
use afterpush::sample::{self, SampleSpec};
use runtime_api::{
    emf_documents, exits_with_failure, metric_sum, sample as sample_event, Function, RuntimeApi,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Keep the main cache, expire every other cache tag; no grace period (the seeded caches
/// are seconds old).
const POLICY: &str = r#"
repositories: ["*"]
grace_period: 0s
rules:
  - {name: keep-main-cache, select: {tags: ["cache-main"]}, action: keep}
  - {name: branch-caches, select: {kind: buildkit-cache, tags: ["cache-*"]}, action: expire}
"#;

fn janitor() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cache-janitor"))
}

/// A layout (in `dir`/caches) with BuildKit caches at `cache-main` and `cache-feature-x`.
struct Caches {
    layout: PathBuf,
    main: Sha256Digest,
    feature: Sha256Digest,
}

fn seed(dir: &Path) -> Caches {
    let layout = dir.join("caches");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let repo = LayoutRepository::open_or_create(&layout).unwrap();
        let spec = |seed| SampleSpec {
            seed,
            layer_sizes: vec![4096],
            ..SampleSpec::default()
        };
        let main = sample::write_buildkit_cache(&repo, &spec(1), Some("cache-main"))
            .await
            .unwrap();
        let feature = sample::write_buildkit_cache(&repo, &spec(2), Some("cache-feature-x"))
            .await
            .unwrap();
        repo.commit().await.unwrap();
        Caches {
            layout: layout.clone(),
            main: main.manifest.digest,
            feature: feature.manifest.digest,
        }
    })
}

fn tags(layout: &Path) -> Vec<String> {
    let repo = LayoutRepository::open(layout).unwrap();
    let mut tags = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(repo.list_tags())
        .unwrap();
    tags.sort();
    tags
}

fn start(api: &RuntimeApi, caches: &Caches, extra: &[(&str, &str)]) -> Function {
    let mut env = vec![
        ("AFTERPUSH_LAYOUT", caches.layout.to_str().unwrap()),
        ("CLEANUP_POLICY", POLICY),
    ];
    env.extend_from_slice(extra);
    Function::start(janitor(), "cache-janitor", api, &env)
}

fn event_for(name: &str, digest: &Sha256Digest) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&sample_event(name)).unwrap();
    event["detail"]["image-digest"] = digest.to_string().into();
    serde_json::to_vec(&event).unwrap()
}

fn planned(report: &Value) -> Vec<String> {
    report["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["planned"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["digest"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn a_cache_push_goes_through_the_runtime_loop() {
    let dir = tempfile::tempdir().unwrap();
    let caches = seed(dir.path());
    let api = RuntimeApi::start(event_for("push-cache-main.json", &caches.main));
    let mut function = start(&api, &caches, &[]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    assert_eq!(posted.request_id, api.request_id);
    let body = posted.json();
    assert_eq!(body["function"], "cache-janitor", "{body}");
    let report = &body["report"];
    assert_eq!(report["trigger"], "push app:cache-main", "{body}");
    assert_eq!(report["dry_run"], true, "{body}");
    // The push of `cache-main` prunes only untagged caches it superseded: none here. The
    // layout stands for the event's repository `app`, and both caches were looked at.
    let repos = report["repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 1, "{body}");
    assert_eq!(repos[0]["repository"], "app", "{body}");
    assert_eq!(repos[0]["images"], 2, "{body}");
    assert!(planned(report).is_empty(), "{body}");
    assert!(posted
        .headers
        .get("user-agent")
        .is_some_and(|u| u.starts_with("aws-lambda-rust/")));
    drop(function);
    assert_eq!(tags(&caches.layout), ["cache-feature-x", "cache-main"]);
}

#[test]
fn the_schedule_is_a_dry_run_sweep_and_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let caches = seed(dir.path());
    let api = RuntimeApi::start(sample_event("scheduled-sweep.json"));
    let mut function = start(&api, &caches, &[]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    let body = posted.json();
    assert_eq!(body["trigger"], "scheduled", "{body}");
    let report = &body["report"];
    assert_eq!(report["trigger"], "sweep", "{body}");
    assert_eq!(report["dry_run"], true, "{body}");
    // The policy expires the branch cache and keeps main; a dry run deletes nothing.
    assert_eq!(planned(report), [caches.feature.to_string()], "{body}");
    assert_eq!(report["deleted"], 0, "{body}");
    // In Lambda the logs are JSON lines: the request id on the event line, then the report.
    let log = function.log();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let received = lines
        .iter()
        .find(|l| l["fields"]["message"] == "event received")
        .unwrap_or_else(|| panic!("no JSON event line in:\n{log}"));
    assert_eq!(received["fields"]["request_id"], api.request_id.as_str());
    let logged = lines
        .iter()
        .find(|l| l["fields"]["message"] == "cache-janitor report")
        .unwrap_or_else(|| panic!("no JSON report line in:\n{log}"));
    // The report's summary, logged as a JSON string field.
    let summary = &logged["fields"]["summary"];
    let summary: Value =
        serde_json::from_str(summary.as_str().unwrap_or_else(|| panic!("{logged}"))).unwrap();
    assert_eq!(summary["run_id"], report["run_id"]);
    assert_eq!(summary["planned_deletions"], 1, "{summary}");
    // Metrics: one image planned in the swept repository (a layout's is named after its
    // directory); a dry run deletes and reclaims nothing.
    let sum = |name| swept_repository_metric(&log, report, name);
    assert_eq!(sum("ImagesPlanned"), 1.0, "{log}");
    assert_eq!(sum("ImagesDeleted"), 0.0, "{log}");
    assert_eq!(sum("BytesReclaimed"), 0.0, "{log}");
    drop(function);
    assert_eq!(tags(&caches.layout), ["cache-feature-x", "cache-main"]);
}

#[test]
fn dry_run_false_deletes_what_the_sweep_planned() {
    let dir = tempfile::tempdir().unwrap();
    let caches = seed(dir.path());
    let api = RuntimeApi::start(sample_event("scheduled-sweep.json"));
    let mut function = start(&api, &caches, &[("DRY_RUN", "false")]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    let report = &posted.json()["report"];
    assert_eq!(report["dry_run"], false, "{report}");
    assert_eq!(
        report["repositories"][0]["deleted"],
        serde_json::json!([caches.feature.to_string()]),
        "{report}"
    );
    // Metrics: the deleted count and the bytes the report says were reclaimed.
    let log = function.log();
    let sum = |name| swept_repository_metric(&log, report, name);
    assert_eq!(sum("ImagesPlanned"), 1.0, "{log}");
    assert_eq!(sum("ImagesDeleted"), 1.0, "{log}");
    assert_eq!(sum("DeletesFailed"), 0.0, "{log}");
    let reclaimed = report["bytes_reclaimed"].as_u64().unwrap();
    assert!(reclaimed > 0, "{report}");
    assert_eq!(sum("BytesReclaimed"), reclaimed as f64, "{log}");
    drop(function);
    assert_eq!(tags(&caches.layout), ["cache-main"]);
}

#[test]
fn settings_reach_the_function() {
    // A filter that excludes the pushed repository turns the same event into a skip.
    let dir = tempfile::tempdir().unwrap();
    let caches = seed(dir.path());
    let api = RuntimeApi::start(event_for("push-cache-feature-x.json", &caches.feature));
    let mut function = start(&api, &caches, &[("REPOSITORY_TAG_FILTERS", "other:*")]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    let body = posted.json();
    assert_eq!(body["decision"]["code"], "filtered-out", "{body}");
    assert!(body.get("report").is_none(), "{body}");
    // A push outside the filters is counted by reason, and no series names its repository.
    let docs = emf_documents(&function.log());
    let skipped = [("Reason", "filtered-out")];
    assert_eq!(
        metric_sum(&docs, "cache-janitor", "ImagesSkipped", &skipped),
        1.0
    );
    assert!(
        docs.iter().all(|d| d.get("Repository").is_none()),
        "{docs:?}"
    );
}

#[test]
fn a_foreign_event_is_a_non_retryable_error() {
    let dir = tempfile::tempdir().unwrap();
    let caches = seed(dir.path());
    let event =
        br#"{"version":"0","id":"x","detail-type":"Object Created","source":"aws.s3","detail":{}}"#;
    let api = RuntimeApi::start(event.to_vec());
    let mut function = start(&api, &caches, &[]);
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
    let docs = emf_documents(&function.log());
    assert_eq!(
        metric_sum(&docs, "cache-janitor", "EventsRejected", &[]),
        1.0,
        "{}",
        function.log()
    );
    assert_eq!(metric_sum(&docs, "cache-janitor", "RunsFailed", &[]), 0.0);
}

/// The janitor's metric `name` for the first repository of its `report`, from its `log`.
fn swept_repository_metric(log: &str, report: &Value, name: &str) -> f64 {
    let repository = report["repositories"][0]["repository"].as_str().unwrap();
    let docs = emf_documents(log);
    metric_sum(&docs, "cache-janitor", name, &[("Repository", repository)])
}

#[test]
fn bad_settings_fail_the_cold_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let caches = seed(dir.path());
    let api = RuntimeApi::start(sample_event("push-cache-main.json"));
    let mut function = start(&api, &caches, &[("REPOSITORY_TAG_FILTERS", "app")]);
    let log = exits_with_failure(&mut function);
    assert!(
        log.contains("REPOSITORY_TAG_FILTERS")
            && (log.contains("\\\"app\\\"") || log.contains("\"app\"")),
        "{log}"
    );
    // It never polled for (and so never consumed) an event.
    assert!(api.posted.try_recv().is_err());

    // A consumer account that is not one: named with its variable, before any event.
    let api = RuntimeApi::start(sample_event("push-cache-main.json"));
    let mut function = start(&api, &caches, &[("CONSUMER_ACCOUNTS", "2222:eu-west-1")]);
    let log = exits_with_failure(&mut function);
    assert!(
        log.contains("CONSUMER_ACCOUNTS") && log.contains("12-digit account id"),
        "{log}"
    );
    assert!(api.posted.try_recv().is_err());

    // No cleanup policy at all: the janitor refuses to start rather than guess one.
    let api = RuntimeApi::start(sample_event("push-cache-main.json"));
    let mut function = Function::start(
        janitor(),
        "cache-janitor",
        &api,
        &[("AFTERPUSH_LAYOUT", caches.layout.to_str().unwrap())],
    );
    let log = exits_with_failure(&mut function);
    assert!(log.contains("CLEANUP_POLICY"), "{log}");
    assert!(api.posted.try_recv().is_err());
}
