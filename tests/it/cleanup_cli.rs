//! `afterpush cleanup plan|apply` end to end against moto (AWS_ENDPOINT_URL), the way a
//! user runs it: a policy file, `--as-of` to see what a later run will delete.

use crate::support;

use afterpush::oci::{media, Sha256Digest};
use std::collections::BTreeSet;

fn cli(moto: &support::TestMoto, args: &[&str]) -> std::process::Output {
    moto.afterpush_command()
        .args(args)
        .output()
        .expect("run afterpush")
}

/// `cli`, failing the test with the CLI's stderr unless it succeeds; returns its stdout.
fn cli_ok(moto: &support::TestMoto, args: &[&str]) -> Vec<u8> {
    support::stdout_of(moto.afterpush_command().args(args))
}

async fn put(ecr: &aws_sdk_ecr::Client, seed: &str, config: &str, tag: Option<&str>) -> String {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{config}","digest":"{}","size":2}},"layers":[]}}"#,
        media::OCI_MANIFEST,
        Sha256Digest::of(seed.as_bytes())
    );
    support::put_ecr_manifest(ecr, "app", &body, media::OCI_MANIFEST, tag)
        .await
        .to_string()
}

#[tokio::test]
async fn plan_then_apply_as_of_next_month() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    // The policy's S3 cache exists and is empty.
    support::create_s3_bucket(&moto.s3().await, "buildkit-cache").await;
    let mut stale = BTreeSet::new();
    for i in 0..3 {
        stale.insert(
            put(
                &ecr,
                &format!("old cache {i}"),
                media::BUILDKIT_CACHE_CONFIG,
                None,
            )
            .await,
        );
    }
    let main = put(
        &ecr,
        "main cache",
        media::BUILDKIT_CACHE_CONFIG,
        Some("cache-main"),
    )
    .await;
    let image = put(&ecr, "image", media::OCI_CONFIG, Some("v1")).await;
    let policy = format!(
        "{}/infra/policies/ci-caches.yaml",
        env!("CARGO_MANIFEST_DIR")
    );

    // Plan now: the grace period protects everything.
    let stdout = cli_ok(
        &moto,
        &[
            "cleanup",
            "plan",
            "--policy",
            &policy,
            "--repository",
            "app",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(report["planned_deletions"], 0);

    // Plan as of next month: the three stale caches, nothing deleted.
    let stdout = cli_ok(
        &moto,
        &[
            "cleanup",
            "plan",
            "--policy",
            &policy,
            "--repository",
            "app",
            "--as-of",
            "+30d",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let planned: BTreeSet<String> = report["repositories"][0]["planned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(planned, stale);
    assert_eq!(report["deleted"], 0);
    assert_eq!(report["dry_run"], true);

    // The table with the kept images and why.
    let stdout = cli_ok(
        &moto,
        &[
            "cleanup",
            "plan",
            "--policy",
            &policy,
            "--repository",
            "app",
            "--as-of",
            "+30d",
            "--all",
        ],
    );
    let text = String::from_utf8(stdout).unwrap();
    assert!(
        text.contains("keep-main-cache") && text.contains("no rule matched"),
        "{text}"
    );
    assert!(text.contains("app: would delete 3 of 5 images"), "{text}");

    // Apply, with the table output.
    let stdout = cli_ok(
        &moto,
        &[
            "cleanup",
            "apply",
            "--policy",
            &policy,
            "--repository",
            "app",
            "--as-of",
            "+30d",
        ],
    );
    let text = String::from_utf8(stdout).unwrap();
    assert!(
        text.contains("stale-cache") && text.contains("app: deleted 3 of 5 images"),
        "{text}"
    );
    let left = support::ecr_image_digests(&ecr, "app").await;
    assert_eq!(left, BTreeSet::from([main, image]));
}

#[tokio::test]
async fn bad_input_is_named() {
    let moto = support::TestMoto::shared();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "repositories: [app]\nrules: [{name: x, action: expire, select: {kind: image}, when: {unused_for: 14x}}]").unwrap();
    let out = cli(
        &moto,
        &["cleanup", "plan", "--policy", bad.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"rules[0].when.unused_for: "14x" is not a duration"#),
        "{err}"
    );

    let policy = format!(
        "{}/infra/policies/ci-caches.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = cli(
        &moto,
        &[
            "cleanup",
            "plan",
            "--policy",
            &policy,
            "--as-of",
            "next week",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--as-of \"next week\""));

    let out = cli(
        &moto,
        &[
            "cleanup",
            "plan",
            "--policy",
            &policy,
            "--repository",
            "other",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"other\" is not selected"));
}

/// One anchored 1 MiB string aliased 3,000 times: a 1 MB file that serde_yaml_ng would
/// expand into 3 GB of strings (it bounds the number of alias replays, not their size).
/// The policy is refused before it is expanded, naming the cause.
#[tokio::test]
async fn a_policy_that_aliases_expand_to_gigabytes_is_refused() {
    let moto = support::TestMoto::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliases.yaml");
    let aliases = vec!["*big"; 3000].join(", ");
    let text = format!(
        "repositories: [&big {}, {aliases}]\nrules: []\n",
        "a".repeat(1 << 20)
    );
    std::fs::write(&path, &text).unwrap();
    let out = cli(
        &moto,
        &["cleanup", "plan", "--policy", path.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("through YAML aliases"), "{err}");
}

/// globset's `compile_matcher` panics on a glob whose regex is over the size limit: a
/// long pattern is an error naming the field, not a crash.
#[tokio::test]
async fn a_huge_glob_is_an_error_not_a_panic() {
    let moto = support::TestMoto::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    std::fs::write(
        &path,
        format!("repositories: [{}]\nrules: []\n", "a".repeat(1 << 20)),
    )
    .unwrap();
    let out = cli(
        &moto,
        &["cleanup", "plan", "--policy", path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("repositories[0]: "), "{err}");
    assert!(err.contains("1048576-byte glob is not usable"), "{err}");
    assert!(err.len() < 2000, "the message does not repeat the pattern");
}
