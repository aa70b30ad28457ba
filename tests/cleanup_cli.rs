//! `afterpush cleanup plan|apply` end to end against moto (AWS_ENDPOINT_URL), the way a
//! user runs it: a policy file, `--as-of` to see what a later run will delete.

mod support;

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
    let moto = support::TestMoto::start();
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

/// One anchored 256 KiB string aliased 3,000 times: a file within the 1 MiB a policy
/// may have that serde_yaml_ng would expand into 800 MB of strings (it bounds the number of alias replays, not their size).
/// The policy is refused before it is expanded, naming the cause.
#[tokio::test]
async fn a_policy_that_aliases_expand_to_gigabytes_is_refused() {
    let moto = support::TestMoto::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliases.yaml");
    let aliases = vec!["*big"; 3000].join(", ");
    let text = format!(
        "repositories: [&big {}, {aliases}]\nrules: []\n",
        "a".repeat(1 << 18)
    );
    assert!(text.len() < afterpush::cleanup::policy::MAX_POLICY_BYTES);
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
    let moto = support::TestMoto::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    // Just within the size a policy may have: 1 MiB less 64 bytes of `a?a?...`.
    let glob = "a?".repeat((1 << 19) - 32);
    let text = format!("repositories: [{glob}]\nrules: []\n");
    assert!(text.len() <= afterpush::cleanup::policy::MAX_POLICY_BYTES);
    std::fs::write(&path, text).unwrap();
    let out = cli(
        &moto,
        &["cleanup", "plan", "--policy", path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("repositories[0]: "), "{err}");
    assert!(
        err.contains(&format!("{}-byte glob is not usable", glob.len())),
        "{err}"
    );
    assert!(err.len() < 2000, "the message does not repeat the pattern");
}

/// `--as-of +262000y` is past the last time chrono can hold: the CLI refuses it with a
/// message (exit 1) instead of panicking on `DateTime + TimeDelta` (exit 101).
#[tokio::test]
async fn an_as_of_past_the_end_of_time_is_refused() {
    let moto = support::TestMoto::start();
    let policy = format!(
        "{}/infra/policies/ci-caches.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    for far in ["+262000y", "+99999999999999d"] {
        let out = cli(
            &moto,
            &["cleanup", "plan", "--policy", &policy, "--as-of", far],
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("--as-of {far:?}")) && !err.contains("panicked"),
            "{err}"
        );
    }
}

/// A lifecycle policy stored on the repository is whatever someone put there: its rule
/// descriptions (ESC sequences, BEL, CR/LF) reach the plan escaped, as `ztoc list`
/// escapes names, and so do an afterpush policy's rule names.
#[tokio::test]
async fn control_characters_from_policies_are_escaped_in_the_plan() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    put(&ecr, "image", media::OCI_CONFIG, Some("v1")).await;
    let hostile = "\u{1b}[31mred\u{7}\r\nforged line";
    let document = serde_json::json!({"rules": [{"rulePriority": 1, "description": hostile,
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5},
        "action": {"type": "expire"}}]});
    ecr.put_lifecycle_policy()
        .repository_name("app")
        .lifecycle_policy_text(document.to_string())
        .send()
        .await
        .unwrap();
    let escaped = r"\u{1b}[31mred\u{7}\r\nforged line";
    let text = String::from_utf8(cli_ok(
        &moto,
        &[
            "cleanup",
            "plan",
            "--from-ecr",
            "--repository",
            "app",
            "--all",
        ],
    ))
    .unwrap();
    assert!(!text.contains(['\u{1b}', '\u{7}', '\r']), "{text:?}");
    assert!(
        text.contains(&format!("  rule ecr:1 ({escaped}): matched 1")),
        "{text:?}"
    );
    // One image: "1 image", not "1 images".
    assert!(
        text.contains("app: would delete 0 of 1 image ("),
        "{text:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        "repositories: [app]\nrules: [{name: \"keep\\e[2J\\a\\rall\", select: {kind: image}, action: keep}]\n",
    )
    .unwrap();
    let text = String::from_utf8(cli_ok(
        &moto,
        &[
            "cleanup",
            "plan",
            "--policy",
            path.to_str().unwrap(),
            "--all",
        ],
    ))
    .unwrap();
    assert!(!text.contains(['\u{1b}', '\u{7}', '\r']), "{text:?}");
    assert!(text.contains(r"keep\u{1b}[2J\u{7}\rall"), "{text:?}");
}

/// ECR refuses a lifecycle policy with a key twice; serde_json alone would keep the
/// last `countNumber` (1 instead of 1000) and plan deletions. moto stores the document
/// as given, as a repository's policy may have been written by anything.
#[tokio::test]
async fn a_stored_lifecycle_policy_with_a_duplicate_key_is_refused() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    put(&ecr, "one", media::OCI_CONFIG, Some("v1")).await;
    put(&ecr, "two", media::OCI_CONFIG, Some("v2")).await;
    let text = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1000,"countNumber":1},"action":{"type":"expire"}}]}"#;
    ecr.put_lifecycle_policy()
        .repository_name("app")
        .lifecycle_policy_text(text)
        .send()
        .await
        .unwrap();
    let out = cli(
        &moto,
        &["cleanup", "plan", "--from-ecr", "--repository", "app"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("duplicate key \"countNumber\""), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("would delete 1"));
}
