//! Every sample event in `infra/events/` (the ones `sam local invoke -e` and
//! `afterpush invoke` use) parses, survives a parse → serialise → reparse round trip, and
//! leads each function to the expected decision.

use afterpush::events::{
    janitor_decision, soci_push_decision, stitch_push_decision, JanitorDecision, PushDecision,
    Trigger,
};
use afterpush::filters::RepositoryTagFilters;
use afterpush::settings::DEFAULT_SOCI_TAG_SUFFIX;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/events")
}

fn load(name: &str) -> (serde_json::Value, Trigger) {
    let path = events_dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let trigger = Trigger::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    (value, trigger)
}

fn code(d: &PushDecision) -> &'static str {
    d.skip_reason().map_or("work", |r| r.code())
}

fn janitor_code(d: &JanitorDecision) -> &'static str {
    match d {
        JanitorDecision::Sweep { .. } => "sweep",
        JanitorDecision::RepositorySweep { .. } => "repository-sweep",
        JanitorDecision::AfterPush(d) => code(d),
    }
}

/// (file, SOCI indexer, stitcher, janitor) with the default settings (`*:*`, `-soci`).
const EXPECTED: &[(&str, &str, &str, &str)] = &[
    ("push-image-tag.json", "work", "work", "work"),
    ("push-index.json", "work", "work", "work"),
    ("push-arch-amd64.json", "work", "work", "work"),
    ("push-arch-arm64.json", "work", "work", "work"),
    (
        "push-cache-main.json",
        "not-an-image",
        "not-an-image",
        "work",
    ),
    (
        "push-cache-feature-x.json",
        "not-an-image",
        "not-an-image",
        "work",
    ),
    (
        "push-untagged-child.json",
        "untagged",
        "untagged",
        "untagged",
    ),
    (
        "push-soci-suffix-tag.json",
        "own-output",
        "own-output",
        "own-output",
    ),
    (
        "push-soci-index-manifest.json",
        "own-output",
        "own-output",
        "own-output",
    ),
    (
        "push-cosign-signature.json",
        "referrer-tag",
        "referrer-tag",
        "referrer-tag",
    ),
    (
        "delete-image.json",
        "not-a-push",
        "not-a-push",
        "not-a-push",
    ),
    (
        "push-failure.json",
        "not-successful",
        "not-successful",
        "not-successful",
    ),
    ("scheduled-sweep.json", "-", "-", "sweep"),
];

#[test]
fn every_sample_event_is_covered() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(events_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    let listed: BTreeSet<String> = EXPECTED.iter().map(|e| e.0.to_string()).collect();
    assert_eq!(on_disk, listed, "infra/events and this test's table differ");
}

#[test]
fn every_sample_event_round_trips() {
    for (name, ..) in EXPECTED {
        let (original, trigger) = load(name);
        let serialised = serde_json::to_value(&trigger).unwrap();
        let reparsed = Trigger::from_value(serialised.clone()).unwrap();
        assert_eq!(trigger, reparsed, "{name}");
        // Nothing ECR sends is lost or invented on the way through our types.
        assert_eq!(serialised, original, "{name}");
    }
}

#[test]
fn each_function_decides_as_expected() {
    let filters = RepositoryTagFilters::default();
    for (name, soci, stitch, janitor) in EXPECTED {
        let (_, trigger) = load(name);
        match trigger.ecr_detail() {
            Some(detail) => {
                let s = soci_push_decision(detail, &filters, DEFAULT_SOCI_TAG_SUFFIX);
                assert_eq!(code(&s), *soci, "SOCI indexer on {name}: {s:?}");
                let m = stitch_push_decision(detail, &filters, DEFAULT_SOCI_TAG_SUFFIX);
                assert_eq!(code(&m), *stitch, "stitcher on {name}: {m:?}");
                if let PushDecision::Work {
                    repository,
                    tag,
                    digest,
                } = &s
                {
                    assert_eq!(repository, &detail.repository_name);
                    assert_eq!(Some(tag.as_str()), detail.tag());
                    assert_eq!(Some(digest.to_string()), detail.image_digest.clone());
                }
            }
            None => assert_eq!((*soci, *stitch), ("-", "-"), "{name} is not an ECR event"),
        }
        let j = janitor_decision(&trigger, &filters, DEFAULT_SOCI_TAG_SUFFIX);
        assert_eq!(janitor_code(&j), *janitor, "janitor on {name}: {j:?}");
    }
}

#[test]
fn filters_narrow_the_decisions() {
    // The janitor deployed for cache tags only, the indexer for release tags of app.
    let cache_only = RepositoryTagFilters::parse("*:cache-*").unwrap();
    let (_, cache) = load("push-cache-feature-x.json");
    let (_, image) = load("push-image-tag.json");
    let (_, schedule) = load("scheduled-sweep.json");
    assert_eq!(
        janitor_code(&janitor_decision(&cache, &cache_only, "-soci")),
        "work"
    );
    assert_eq!(
        janitor_code(&janitor_decision(&image, &cache_only, "-soci")),
        "filtered-out"
    );
    assert_eq!(
        janitor_code(&janitor_decision(&schedule, &cache_only, "-soci")),
        "sweep"
    );

    let releases = RepositoryTagFilters::parse("app:{1,2}.*").unwrap();
    let image = image.ecr_detail().unwrap();
    assert_eq!(code(&soci_push_decision(image, &releases, "-soci")), "work");
    let other = RepositoryTagFilters::parse("other:*").unwrap();
    let d = soci_push_decision(image, &other, "-soci");
    assert_eq!(code(&d), "filtered-out");
    assert!(d.skip_reason().unwrap().to_string().contains("app:1.2.3"));
}

#[test]
fn the_schedule_event_keeps_its_time() {
    let (original, trigger) = load("scheduled-sweep.json");
    let JanitorDecision::Sweep { scheduled_at } =
        janitor_decision(&trigger, &RepositoryTagFilters::default(), "-soci")
    else {
        panic!("a schedule is a sweep");
    };
    assert_eq!(
        scheduled_at
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        original["time"].as_str().unwrap()
    );
}

#[test]
fn foreign_events_are_rejected_naming_source_and_detail_type() {
    // A different ECR detail-type, an S3 event, and a non-EventBridge (SQS) payload.
    let scan = br#"{"version":"0","id":"1","detail-type":"ECR Image Scan","source":"aws.ecr","detail":{}}"#;
    let err = Trigger::from_slice(scan).unwrap_err().to_string();
    assert!(
        err.contains("ECR Image Scan") && err.contains("aws.ecr"),
        "{err}"
    );
    let s3 =
        br#"{"detail-type":"Object Created","source":"aws.s3","detail":{"bucket":{"name":"b"}}}"#;
    let err = Trigger::from_slice(s3).unwrap_err().to_string();
    assert!(
        err.contains("Object Created") && err.contains("aws.s3"),
        "{err}"
    );
    let sqs = br#"{"Records":[{"eventSource":"aws:sqs","body":"{}"}]}"#;
    let err = Trigger::from_slice(sqs).unwrap_err().to_string();
    assert!(err.contains("not an EventBridge event"), "{err}");
}
