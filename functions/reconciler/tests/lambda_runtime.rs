//! Drives the real `reconciler` binary through the Lambda Runtime API (the local
//! endpoint of `tests/support/runtime_api.rs`), so the real `lambda_runtime` loop runs:
//! bad settings end the cold start naming the variable, and with `RECONCILE_MODE=off` a
//! scheduled event is answered without any call. The survey itself, against moto's ECR
//! and the real registry, is tested through `afterpush invoke reconciler` in
//! `tests/it/reconcile_e2e.rs` (the package-local placement is explained in
//! `functions/cache-janitor/tests/lambda_runtime.rs`).

#[path = "../../../tests/support/runtime_api.rs"]
mod runtime_api;

use runtime_api::{
    emf_documents, exits_with_failure, metric_sum, sample as sample_event, Function, RuntimeApi,
};
use std::path::Path;

fn reconciler() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_reconciler"))
}

/// No AWS endpoint is reachable: a call would fail the test.
const OFFLINE: &[(&str, &str)] = &[
    ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
];

fn start(api: &RuntimeApi, env: &[(&str, &str)]) -> Function {
    let all: Vec<(&str, &str)> = OFFLINE.iter().chain(env).copied().collect();
    Function::start(reconciler(), "reconciler", api, &all)
}

#[test]
fn bad_settings_fail_the_cold_start_naming_the_variable() {
    let api = RuntimeApi::start(sample_event("scheduled-sweep.json"));
    let mut function = start(&api, &[("RECONCILE_MODE", "apply")]);
    let log = exits_with_failure(&mut function);
    assert!(
        log.contains("RECONCILE_MODE") && log.contains("off, dry, enqueue"),
        "{log}"
    );
    assert!(api.posted.try_recv().is_err());

    // enqueue needs the queues it sends to.
    let api = RuntimeApi::start(sample_event("scheduled-sweep.json"));
    let mut function = start(&api, &[("RECONCILE_MODE", "enqueue")]);
    let log = exits_with_failure(&mut function);
    assert!(log.contains("INDEXER_QUEUE_URL"), "{log}");
    assert!(api.posted.try_recv().is_err());

    // A layout is reconciled by the CLI, not by the function.
    let dir = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start(sample_event("scheduled-sweep.json"));
    let mut function = start(&api, &[("AFTERPUSH_LAYOUT", dir.path().to_str().unwrap())]);
    let log = exits_with_failure(&mut function);
    assert!(
        log.contains("AFTERPUSH_LAYOUT") && log.contains("afterpush reconcile oci:"),
        "{log}"
    );
}

#[test]
fn off_answers_the_schedule_without_surveying() {
    let api = RuntimeApi::start(sample_event("scheduled-sweep.json"));
    let mut function = start(&api, &[("RECONCILE_MODE", "off")]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    let body: serde_json::Value = posted.output();
    assert_eq!(body["function"], "reconciler", "{body}");
    assert_eq!(body["mode"], "off", "{body}");
    assert!(body.get("report").is_none(), "{body}");
    let docs = emf_documents(&function.log());
    assert_eq!(
        metric_sum(&docs, "reconciler", "ReconcileWorkFound", &[]),
        0.0
    );
}

#[test]
fn a_push_event_is_refused_by_name() {
    let api = RuntimeApi::start(sample_event("push-image-tag.json"));
    let mut function = start(&api, &[("RECONCILE_MODE", "dry")]);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "error", "{posted:?}\n{}", function.log());
    let log = function.log();
    assert!(log.contains("runs on its schedule"), "{log}");
}
