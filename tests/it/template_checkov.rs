//! `template.yaml` and `infra/in-use-reader.yaml` through checkov: every finding is fixed or
//! skipped in the template with a reason, and checkov does flag a broken resource.

use crate::template::{root, TEMPLATES};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// `checkov` from `$AFTERPUSH_CHECKOV`, else the repository's `.checkov-venv` (its own
/// venv: checkov pins an older boto3 than moto's venv has).
fn checkov() -> PathBuf {
    let bin = std::env::var_os("AFTERPUSH_CHECKOV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".checkov-venv/bin/checkov"));
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup-test-tools (or scripts/test), or set AFTERPUSH_CHECKOV",
        bin.display()
    );
    bin
}

/// checkov's JSON report on `templates`, offline (`--skip-download`: no Prisma Cloud
/// guidelines or policies fetched).
fn run_checkov(templates: &[PathBuf]) -> serde_json::Value {
    let mut cmd = Command::new(checkov());
    for template in templates {
        cmd.arg("-f").arg(template);
    }
    let home = tempfile::tempdir().unwrap();
    let out = cmd
        .args([
            "--framework",
            "cloudformation",
            "--skip-download",
            "-o",
            "json",
        ])
        .env("HOME", home.path())
        .output()
        .expect("run checkov");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn checks<'a>(report: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    report["results"][kind]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// No finding of checkov goes unexplained: every check passes, or the resource skips it
/// in the template (`Metadata: checkov: skip:`) with a comment saying why.
#[test]
fn checkov_is_clean_and_every_skip_says_why() {
    let templates: Vec<PathBuf> = TEMPLATES.iter().map(|t| root().join(t)).collect();
    let report = run_checkov(&templates);
    let summary = &report["summary"];
    assert_eq!(summary["parsing_errors"], 0, "{summary}");
    let failed: Vec<String> = checks(&report, "failed_checks")
        .iter()
        .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["check_name"]))
        .collect();
    assert!(
        failed.is_empty(),
        "checkov findings: fix them, or skip them in the template with a reason:\n{}",
        failed.join("\n")
    );
    // Both templates were scanned.
    let resources: BTreeSet<&str> = ["passed_checks", "skipped_checks"]
        .iter()
        .flat_map(|kind| checks(&report, kind))
        .filter_map(|c| c["resource"].as_str())
        .collect();
    for resource in [
        "AWS::IAM::Role.InUseReaderRole",
        "AWS::SQS::Queue.SociIndexerFailureQueue",
    ] {
        assert!(
            resources.contains(resource),
            "{resource} not scanned: {resources:?}"
        );
    }
    for skipped in checks(&report, "skipped_checks") {
        let comment = skipped["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(
            comment.len() > 20 && !comment.contains("No comment provided"),
            "{} skipped on {} without a reason: {comment:?}",
            skipped["check_id"],
            skipped["resource"]
        );
    }
}

#[test]
fn checkov_flags_an_unencrypted_queue() {
    // Proves the check above can fail: a queue with no encryption and no skip.
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue.yaml");
    std::fs::write(
        &queue,
        "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      MessageRetentionPeriod: 60\n",
    )
    .unwrap();
    let report = run_checkov(&[queue]);
    let failed: Vec<&str> = checks(&report, "failed_checks")
        .iter()
        .filter_map(|c| c["check_id"].as_str())
        .collect();
    assert!(failed.contains(&"CKV_AWS_27"), "{report}");
}
