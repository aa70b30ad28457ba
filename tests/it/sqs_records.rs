//! Lambda's SQS event, whose records each carry an EventBridge event, through the real
//! `afterpush invoke` binary (the entry the Lambda runtime loop uses too) on an OCI
//! image layout: the good record's image gets its SOCI index, our own `-soci` output is
//! skipped, and the records whose bodies are malformed are named in `batchItemFailures`
//! (and only they).

use crate::support;

use afterpush::lambda::{BatchOutput, IndexerOutput, RecordOutcome};
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::Repository;
use afterpush::sample::{self, ManifestFormat};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use support::invoke_stack::{read_event, spec, Invocation};

/// A record of a standard queue, as Lambda's SQS event source delivers it.
fn sqs_record(message_id: &str, body: &str) -> Value {
    json!({
        "messageId": message_id,
        "receiptHandle": format!("AQEB-{message_id}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1800000000000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1800000000001"
        },
        "messageAttributes": {
            "afterpush-target": {"stringValue": "indexer", "stringListValues": [],
                "binaryListValues": [], "dataType": "String"}
        },
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:afterpush-indexer",
        "awsRegion": "us-east-1"
    })
}

/// `afterpush invoke FUNCTION --layout LAYOUT --event EVENT`, with nothing of the
/// developer's environment but `PATH`, and info logs on stderr.
fn invoke_on_layout(function: &str, layout: &Path, event: &Value) -> Invocation {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec_pretty(event).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_afterpush"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MIN_LAYER_SIZE", "0")
        .env("RUST_LOG", "info")
        .args(["invoke", function, "--layout"])
        .arg(layout)
        .arg("--event")
        .arg(file.path())
        .output()
        .expect("run afterpush");
    Invocation {
        what: format!("afterpush invoke {function} --layout {}", layout.display()),
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn the_indexer_indexes_the_good_record_skips_its_own_output_and_names_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let repo = LayoutRepository::open_or_create(&layout).unwrap();
    let image = sample::write_image(
        &repo,
        &spec(41, ManifestFormat::Oci),
        &"linux/amd64".parse().unwrap(),
        Some("1.2.3"),
    )
    .await
    .unwrap();
    repo.commit().await.unwrap();

    let mut push = read_event("push-image-tag.json");
    push["detail"]["image-digest"] = image.manifest.digest.to_string().into();
    assert_eq!(push["detail"]["image-tag"], "1.2.3");
    let push_text = push.to_string();
    // The same push with `repository-name` twice: refused, though serde_json alone
    // would read it (as the second name).
    let twice = push_text.replacen(
        r#""repository-name":"app""#,
        r#""repository-name":"app","repository-name":"other""#,
        1,
    );
    assert_ne!(twice, push_text);
    let truncated = &push_text[..push_text.len() / 2];
    let own_output = read_event("push-soci-suffix-tag.json").to_string();
    let event = json!({"Records": [
        sqs_record("9a1f0c7e-good", &push_text),
        sqs_record("5b7d2e11-duplicate-key", &twice),
        sqs_record("c3e4a2f0-own-output", &own_output),
        sqs_record("0d9b8c6a-truncated", truncated),
    ]});

    let run = invoke_on_layout("soci-indexer", &layout, &event);
    // The invocation succeeds, as it does in Lambda: the failures are in the answer.
    let out: BatchOutput<IndexerOutput> = run.output();
    let failed: Vec<&str> = out
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        ["5b7d2e11-duplicate-key", "0d9b8c6a-truncated"],
        "{}",
        run.stdout
    );
    assert_eq!(out.records.len(), 4, "{}", run.stdout);

    // (a) the push: indexed, and the index is in the layout.
    let RecordOutcome::Handled { message_id, output } = &out.records[0] else {
        panic!("the push was not handled: {}", run.stdout);
    };
    assert_eq!(message_id, "9a1f0c7e-good");
    let outcome = output
        .outcome
        .as_ref()
        .expect("the indexer worked on the push");
    assert_eq!(outcome.tag.as_deref(), Some("1.2.3-soci"), "{}", run.stdout);
    let repo = LayoutRepository::open(&layout).unwrap();
    let stored = repo.resolve("1.2.3-soci").await.unwrap();
    assert_eq!(outcome.output, Some(stored.digest.to_string()));
    assert_eq!(
        repo.resolve("1.2.3").await.unwrap().digest,
        image.manifest.digest
    );

    // (b) and (d): failed for good, with what is wrong with them.
    for (index, needle) in [
        (1, "duplicate key \"repository-name\""),
        (3, "not valid JSON"),
    ] {
        let RecordOutcome::Failed {
            error_type, error, ..
        } = &out.records[index]
        else {
            panic!("record {index} did not fail: {}", run.stdout);
        };
        assert_eq!(error_type, "NonRetryable", "{}", run.stdout);
        assert!(error.contains(needle), "{needle:?} in {error}");
    }

    // (c) our own output: skipped by the same rule as a direct event.
    let RecordOutcome::Handled { output, .. } = &out.records[2] else {
        panic!("the -soci push was not handled: {}", run.stdout);
    };
    assert_eq!(
        output.decision.skip().map(|(code, _)| code),
        Some("own-output"),
        "{}",
        run.stdout
    );
    assert!(output.outcome.is_none());

    // The logs name each failed record by its messageId.
    for id in ["5b7d2e11-duplicate-key", "0d9b8c6a-truncated"] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(id) && l.contains("SQS record failed")),
            "{id} in:\n{}",
            run.stderr
        );
    }
}

#[test]
fn a_malformed_sqs_envelope_fails_the_invocation_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = sqs_record("m1", &read_event("push-soci-suffix-tag.json").to_string());
    let mut no_id = good.clone();
    no_id.as_object_mut().unwrap().remove("messageId");
    for (event, field) in [
        (
            json!({"Records": {"messageId": "m1"}}),
            "field Records is not an array",
        ),
        (json!({"Records": []}), "field Records is empty"),
        (json!({"Records": [good, no_id]}), "Records[1].messageId"),
    ] {
        invoke_on_layout("soci-indexer", dir.path(), &event).assert_error(&[field, "NonRetryable"]);
    }
}
