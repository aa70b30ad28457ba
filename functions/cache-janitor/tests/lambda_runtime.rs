//! Drives the real `cache-janitor` binary through the Lambda Runtime API (a local
//! endpoint, see `tests/support/runtime_api.rs`), so the real `lambda_runtime` loop runs:
//! polling, context headers, JSON logs, response and error posting.
//!
//! Why this test lives in the function's package: only there does cargo build the binary
//! and hand its path over (`CARGO_BIN_EXE_cache-janitor`), with the same feature set as
//! the test. Running `cargo build -p cache-janitor` from a root-package test was tried:
//! the nested build sees a different environment and package selection and rebuilt the
//! AWS SDK crates in the shared target dir each time, so the outer and nested builds undid
//! each other (10+ minutes each on 2 cores). Looking for a prebuilt
//! `target/debug/cache-janitor` instead could test a stale binary.

#[path = "../../../tests/support/runtime_api.rs"]
mod runtime_api;

use afterpush::events::{janitor_decision, RepositoryTagFilters, Trigger};
use runtime_api::{sample, Function, RuntimeApi, HANG_GUARD};
use std::time::Duration;

fn janitor() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_cache-janitor"))
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
    let mut function = Function::start(janitor(), "cache-janitor", &api, &[]);
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
    let mut function = Function::start(janitor(), "cache-janitor", &api, &[]);
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
    let mut function = Function::start(
        janitor(),
        "cache-janitor",
        &api,
        &[("REPOSITORY_TAG_FILTERS", "other:*")],
    );
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
    let mut function = Function::start(janitor(), "cache-janitor", &api, &[]);
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
    let mut function = Function::start(
        janitor(),
        "cache-janitor",
        &api,
        &[("REPOSITORY_TAG_FILTERS", "app")],
    );
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
