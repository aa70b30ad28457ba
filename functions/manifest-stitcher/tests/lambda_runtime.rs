//! Drives the real `manifest-stitcher` binary through the Lambda Runtime API (the local
//! endpoint of `tests/support/runtime_api.rs`), so the real `lambda_runtime` loop runs,
//! against an OCI image layout (`AFTERPUSH_LAYOUT`) seeded with per-arch sample images:
//! no registry and no cloud needed. The package-local placement is explained in
//! `functions/cache-janitor/tests/lambda_runtime.rs`.

#[path = "../../../tests/support/runtime_api.rs"]
mod runtime_api;

use afterpush::lambda::{FunctionName, StitcherOutput};
use afterpush::oci::Sha256Digest;
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::Repository;
use afterpush::sample::{self, SampleSpec};
use afterpush::stitch::StitchOutcome;
use runtime_api::{emf_documents, metric_sum, sample as sample_event, Function, RuntimeApi};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn stitcher() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_manifest-stitcher"))
}

/// A layout holding `1.2.3-<arch>` for each platform given; returns their digests.
fn seed_layout(dir: &Path, platforms: &[&str]) -> Vec<Sha256Digest> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let repo = LayoutRepository::open_or_create(dir).unwrap();
        let spec = SampleSpec {
            layer_sizes: vec![4096],
            attestations: false,
            ..SampleSpec::default()
        };
        let mut digests = vec![];
        for p in platforms {
            let platform: sample::SamplePlatform = p.parse().unwrap();
            let tag = format!("1.2.3-{}", platform.arch_suffix());
            digests.push(
                sample::write_image(&repo, &spec, &platform, Some(&tag))
                    .await
                    .unwrap()
                    .manifest
                    .digest,
            );
        }
        repo.commit().await.unwrap();
        digests
    })
}

fn event_for(name: &str, digest: &Sha256Digest) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&sample_event(name)).unwrap();
    event["detail"]["image-digest"] = digest.to_string().into();
    serde_json::to_vec(&event).unwrap()
}

#[test]
fn the_last_arch_push_stitches_the_index_through_the_runtime_loop() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let digests = seed_layout(&layout, &["linux/amd64", "linux/arm64"]);
    let api = RuntimeApi::start(event_for("push-arch-arm64.json", &digests[1]));
    let mut function = Function::start(
        stitcher(),
        "manifest-stitcher",
        &api,
        &[("AFTERPUSH_LAYOUT", layout.to_str().unwrap())],
    );
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    assert_eq!(posted.request_id, api.request_id);
    let body: StitcherOutput = posted.output();
    assert_eq!(body.function, FunctionName::ManifestStitcher, "{body:?}");
    assert!(
        matches!(&body.outcome, Some(StitchOutcome::Written { target, .. }) if target == "1.2.3"),
        "{body:?}"
    );
    let docs = emf_documents(&function.log());
    let app = [("Repository", "app")];
    let sum = |name| metric_sum(&docs, "manifest-stitcher", name, &app);
    assert_eq!(sum("IndexesStitched"), 1.0, "{}", function.log());
    assert_eq!(sum("StitchWaiting"), 0.0, "{}", function.log());
    drop(function);
    let repo = LayoutRepository::open(&layout).unwrap();
    let stored = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(repo.get_manifest("1.2.3"))
        .unwrap();
    let index: Value = serde_json::from_slice(&stored.bytes).unwrap();
    let listed: BTreeSet<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = digests.iter().map(|d| d.to_string()).collect();
    assert_eq!(listed, expected, "{index}");
}

#[test]
fn a_missing_platform_waits_and_settings_reach_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let digests = seed_layout(&layout, &["linux/amd64"]);
    // REQUIRED_PLATFORMS reaches the function: s390x is reported missing too.
    let api = RuntimeApi::start(event_for("push-arch-amd64.json", &digests[0]));
    let mut function = Function::start(
        stitcher(),
        "manifest-stitcher",
        &api,
        &[
            ("AFTERPUSH_LAYOUT", layout.to_str().unwrap()),
            ("REQUIRED_PLATFORMS", "linux/amd64,linux/arm64,linux/s390x"),
        ],
    );
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    let body = posted.json();
    assert_eq!(body["outcome"]["outcome"], "incomplete", "{body}");
    let missing = body["outcome"]["missing"].to_string();
    assert!(
        missing.contains("arm64") && missing.contains("s390x"),
        "{body}"
    );
    let docs = emf_documents(&function.log());
    let app = [("Repository", "app")];
    let sum = |name| metric_sum(&docs, "manifest-stitcher", name, &app);
    assert_eq!(sum("StitchWaiting"), 1.0, "{}", function.log());
    assert_eq!(sum("IndexesStitched"), 0.0, "{}", function.log());
    drop(function);
    let repo = LayoutRepository::open(&layout).unwrap();
    let tags = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(repo.list_tags())
        .unwrap();
    assert_eq!(tags, vec!["1.2.3-amd64".to_string()]);
}

#[test]
fn an_event_with_a_key_twice_is_refused_and_nothing_is_stitched() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let digests = seed_layout(&layout, &["linux/amd64", "linux/arm64"]);
    // serde_json keeps the last of duplicate keys; EventBridge's consumers must not
    // guess which one was meant.
    let event = String::from_utf8(event_for("push-arch-arm64.json", &digests[1])).unwrap();
    let event = event.replacen(
        "\"detail\":{",
        "\"detail\":{\"image-tag\":\"something-else\",",
        1,
    );
    assert!(event.contains("something-else"), "{event}");
    let api = RuntimeApi::start(event.into_bytes());
    let mut function = Function::start(
        stitcher(),
        "manifest-stitcher",
        &api,
        &[("AFTERPUSH_LAYOUT", layout.to_str().unwrap())],
    );
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "error", "{posted:?}\n{}", function.log());
    let body = posted.json();
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("duplicate key \"image-tag\"")),
        "{body}"
    );
    let docs = emf_documents(&function.log());
    assert_eq!(
        metric_sum(&docs, "manifest-stitcher", "EventsRejected", &[]),
        1.0,
        "{}",
        function.log()
    );
    drop(function);
    let repo = LayoutRepository::open(&layout).unwrap();
    let mut tags = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(repo.list_tags())
        .unwrap();
    tags.sort();
    assert_eq!(tags, ["1.2.3-amd64", "1.2.3-arm64"]);
}
