//! Every sample event in `infra/events/` through the real `afterpush invoke` binary, for
//! each of the three functions, against the real local registry (Debian's
//! docker-registry, reached through `AFTERPUSH_REGISTRY_ENDPOINT` exactly as the Lambda
//! reaches ECR) and moto (ECR for the janitor's catalog, S3 for its report bucket).
//!
//! Each event is copied to a temp file with its repository renamed to `app-<event>` (so
//! cases do not see each other's images) and its `image-digest` set to the image seeded
//! for it. Every case seeds what the event describes, runs all three functions and
//! asserts the outcome each must reach, and that skips and dry runs changed nothing.
//! An event file without a case fails the test.

mod support;

use afterpush::lambda::{IndexerOutput, JanitorOutput};
use afterpush::oci::Sha256Digest;
use afterpush::registry::Repository;
use afterpush::sample::{self, ManifestFormat, SampleSpec};
use afterpush::soci::{self, NoZtocCache, SociSettings};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use support::invoke_stack::*;

/// Seeds what `file` describes, runs every function on it and checks the outcomes.
async fn run_case(stack: &Stack, file: &str) {
    let stem = file.trim_end_matches(".json");
    let repository = format!("app-{stem}");
    let original = read_event(file);
    let tag = original["detail"]["image-tag"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    match file {
        "delete-image.json" => {
            // The image is gone already: nothing seeded, nothing may appear.
            assert_skipped_by_all(stack, file, &repository, None, ["not-a-push"; 3]).await
        }
        "push-failure.json" => assert_skipped_by_all(stack, file, &repository, None, ["not-successful"; 3]).await,
        "push-untagged-child.json" => {
            let digest = seed_image(stack, &repository, &original, None, 21).await;
            assert_skipped_by_all(stack, file, &repository, Some(&digest), ["untagged"; 3]).await
        }
        "push-cosign-signature.json" => {
            let digest = seed_image(stack, &repository, &original, tag.as_deref(), 22).await;
            assert_skipped_by_all(stack, file, &repository, Some(&digest), ["referrer-tag"; 3]).await
        }
        "push-soci-index-manifest.json" | "push-soci-suffix-tag.json" => {
            // Our own output, made by the library on a seeded image: the untagged SOCI
            // index manifest, and the `-soci` tag holding the SOCI-enabled index.
            let source = seed_image(stack, &repository, &original, Some("1.2.3"), 23).await;
            let settings = SociSettings::from_lookup(|k| (k == "MIN_LAYER_SIZE").then(|| "0".to_string())).unwrap();
            let made = soci::create_soci(&stack.repo(&repository), &source.to_string(), Some("1.2.3"), &settings, &NoZtocCache, None).await.unwrap();
            let digest: Sha256Digest = if file == "push-soci-suffix-tag.json" {
                assert_eq!(tag.as_deref(), made.tag.as_deref());
                made.output.as_deref().unwrap().parse().unwrap()
            } else {
                made.platforms[0].soci_index.as_deref().unwrap().parse().unwrap()
            };
            assert_skipped_by_all(stack, file, &repository, Some(&digest), ["own-output"; 3]).await
        }
        "push-cache-main.json" | "push-cache-feature-x.json" => {
            let tag = tag.unwrap();
            let (current, superseded) = seed_caches(stack, &repository, &tag).await;
            let event = stack.event_copy(file, &repository, Some(&current));
            let tags_before = stack.tags(&repository).await;
            for function in ["soci-indexer", "manifest-stitcher"] {
                stack.invoke(function, &event, &[]).assert_skip(function, "not-an-image");
            }
            assert_eq!(stack.tags(&repository).await, tags_before);
            let ecr_before = stack.ecr_images().await;
            let run = stack.invoke("cache-janitor", &event, &[]);
            assert_dry_run_report(stack, &run, &format!("push {repository}:{tag}"), &repository, &[&superseded], &ecr_before).await;
        }
        "scheduled-sweep.json" => {
            let (_, superseded) = seed_caches(stack, &repository, "cache-main").await;
            let event = stack.event_copy(file, &repository, None);
            for function in ["soci-indexer", "manifest-stitcher"] {
                stack.invoke(function, &event, &[]).assert_error(&[function, "ECR Image Action", "NonRetryable"]);
            }
            let ecr_before = stack.ecr_images().await;
            let run = stack.invoke("cache-janitor", &event, &[]);
            assert_dry_run_report(stack, &run, "sweep", &repository, &[&superseded], &ecr_before).await;
        }
        "push-image-tag.json" | "push-index.json" | "push-arch-amd64.json" | "push-arch-arm64.json" => {
            let tag = tag.unwrap();
            let (source, platforms) = match file {
                "push-index.json" => {
                    let spec = SampleSpec { attestations: true, ..spec(24, ManifestFormat::Oci) };
                    (sample::write_multi_arch(&stack.repo(&repository), &spec, Some(&tag)).await.unwrap().index.digest, 2)
                }
                "push-arch-arm64.json" => {
                    // amd64 was pushed before (as in push-arch-amd64.json: Docker media types).
                    seed_image(stack, &repository, &read_event("push-arch-amd64.json"), Some("1.2.3-amd64"), 25).await;
                    (seed_image(stack, &repository, &original, Some(&tag), 26).await, 1)
                }
                _ => (seed_image(stack, &repository, &original, Some(&tag), 27).await, 1),
            };
            let event = stack.event_copy(file, &repository, Some(&source));

            let ecr_before = stack.ecr_images().await;
            let run = stack.invoke("cache-janitor", &event, &[]);
            let out = run.json();
            // No expire rule of POLICY acts on an image push: the janitor ignores it.
            assert!(
                out["report"]["ignored"].as_str().is_some_and(|s| s.starts_with(
                    "not a BuildKit cache push, and no expire rule selects tag"
                )),
                "{out}"
            );
            assert_eq!(out["report"]["planned_deletions"], 0, "{out}");
            assert_eq!(stack.ecr_images().await, ecr_before);

            let before = stack.tags(&repository).await;
            let stitched = stack.invoke("manifest-stitcher", &event, &[]).json();
            assert_eq!(stitched["function"], "manifest-stitcher", "{stitched}");
            let outcome = &stitched["outcome"];
            match file {
                "push-arch-amd64.json" => {
                    assert_eq!(outcome["outcome"], "incomplete", "{stitched}");
                    assert_eq!(outcome["target"], "1.2.3", "{stitched}");
                    assert!(outcome["missing"].to_string().contains("1.2.3-arm64"), "{stitched}");
                    assert_eq!(stack.tags(&repository).await, before, "an incomplete stitch wrote something");
                }
                "push-arch-arm64.json" => {
                    assert_eq!(outcome["outcome"], "written", "{stitched}");
                    assert_eq!(outcome["target"], "1.2.3", "{stitched}");
                    let repo = stack.repo(&repository);
                    let index: Value = serde_json::from_slice(&repo.get_manifest("1.2.3").await.unwrap().bytes).unwrap();
                    let listed: BTreeSet<String> = index["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect();
                    let expected: BTreeSet<String> = [repo.resolve("1.2.3-amd64").await.unwrap().digest.to_string(), source.to_string()].into();
                    assert_eq!(listed, expected, "{index}");
                }
                _ => {
                    assert_eq!(outcome["outcome"], "ignored", "{stitched}");
                    assert_eq!(stack.tags(&repository).await, before, "an ignored push wrote something");
                }
            }

            let run = stack.invoke("soci-indexer", &event, &[]);
            assert_soci_output(stack, &run, &repository, &tag, &source, platforms).await;
            // A second delivery of the same event (EventBridge retries) changes nothing.
            let again = stack.invoke("soci-indexer", &event, &[]).json();
            assert_eq!(again["outcome"]["output"], run.json()["outcome"]["output"], "{again}");
            assert!(again["outcome"]["skipped"].as_str().is_some_and(|s| s.contains("already holds")), "{again}");
        }
        other => panic!("infra/events/{other} has no case in tests/invoke.rs: add one with its expected outcome"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_event_runs_through_afterpush_invoke() {
    let stack = Stack::start().await;
    let files = sample_event_files();
    assert!(files.len() >= 7, "{files:?}");
    for file in &files {
        eprintln!("case {file}");
        run_case(&stack, file).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_fail_with_a_clear_message() {
    let stack = Stack::start().await;
    let write = |name: &str, text: &str| {
        let path = stack.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let not_json = write("not-json.json", "{\"detail-type\": ");
    let wrong_field = write(
        "bad-field.json",
        r#"{"version":"0","id":"1","detail-type":"ECR Image Action","source":"aws.ecr","account":"123456789012","region":"us-east-1","time":"2026-11-22T10:00:00Z","resources":[],"detail":{"result":"SUCCESS","repository-name":42,"action-type":"PUSH","image-tag":"1.2.3"}}"#,
    );
    let mut bad_digest = read_event("push-image-tag.json");
    bad_digest["detail"]["image-digest"] = "sha256:not-hex".into();
    let bad_digest = write("bad-digest.json", &bad_digest.to_string());
    let foreign = write(
        "foreign.json",
        r#"{"version":"0","id":"x","detail-type":"Object Created","source":"aws.s3","detail":{}}"#,
    );
    for function in ["soci-indexer", "manifest-stitcher", "cache-janitor"] {
        stack
            .invoke(function, &not_json, &[])
            .assert_error(&["not-json.json", "is not JSON"]);
        stack
            .invoke(function, &wrong_field, &[])
            .assert_error(&["repository-name", "NonRetryable"]);
        stack.invoke(function, &foreign, &[]).assert_error(&[
            "aws.s3",
            "Object Created",
            "NonRetryable",
        ]);
    }
    for function in ["soci-indexer", "manifest-stitcher"] {
        stack.invoke(function, &bad_digest, &[]).assert_error(&[
            "image-digest",
            "not-hex",
            "NonRetryable",
        ]);
    }
    let missing = stack.dir.path().join("missing.json");
    stack
        .invoke("soci-indexer", &missing, &[])
        .assert_error(&["missing.json"]);
    // Nothing was written anywhere.
    assert!(stack.tags("app").await.is_empty());
    assert!(stack.ecr_images().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_fail_naming_the_variable() {
    let stack = Stack::start().await;
    let event = stack.event_copy("push-image-tag.json", "app", None);
    stack
        .invoke(
            "cache-janitor",
            &event,
            &[("CLEANUP_POLICY", "rules: [{action: explode}]")],
        )
        .assert_error(&["CLEANUP_POLICY"]);
    stack
        .invoke("soci-indexer", &event, &[("SPAN_SIZE", "huge")])
        .assert_error(&["SPAN_SIZE", "huge"]);
    stack
        .invoke("manifest-stitcher", &event, &[("STITCH_MODE", "sometimes")])
        .assert_error(&["STITCH_MODE", "sometimes"]);
}

/// Runs `afterpush invoke FUNCTION --layout LAYOUT --event EVENT` with no registry or
/// AWS endpoint in the environment at all.
fn invoke_on_layout(function: &str, layout: &Path, event: &Path) -> Invocation {
    let out = Command::new(env!("CARGO_BIN_EXE_afterpush"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MIN_LAYER_SIZE", "0")
        .env("CLEANUP_POLICY", POLICY.replace("app-*", "*"))
        .args(["invoke", function, "--layout"])
        .arg(layout)
        .arg("--event")
        .arg(event)
        .output()
        .expect("run afterpush");
    Invocation {
        what: format!("afterpush invoke {function} --layout {}", layout.display()),
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn an_event_larger_than_a_lambda_payload_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("huge.json");
    // Sparse: 100 MB that take no disk.
    std::fs::File::create(&event)
        .unwrap()
        .set_len(100 * 1024 * 1024)
        .unwrap();
    let out = invoke_on_layout("soci-indexer", dir.path(), &event);
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stderr.contains("larger than 6291456 bytes"),
        "{}",
        out.stderr
    );
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("own-output.json");
    let mut payload = read_event("push-image-tag.json");
    payload["detail"]["image-tag"] = "1.2.3-soci".into();
    std::fs::write(&event, payload.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_afterpush"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .args(["invoke", "soci-indexer", "--layout"])
        .arg(dir.path())
        .arg("--event")
        .arg(&event)
        .output()
        .expect("run afterpush");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[tokio::test]
async fn the_layout_flag_stands_for_every_repository_the_event_names() {
    use afterpush::registry::layout::LayoutRepository;
    let dir = tempfile::tempdir().unwrap();
    // Deliberately not called `app`: the events name `app`.
    let layout = dir.path().join("local-images");
    let repo = LayoutRepository::open_or_create(&layout).unwrap();
    let image = sample::write_image(
        &repo,
        &spec(31, ManifestFormat::Oci),
        &"linux/amd64".parse().unwrap(),
        Some("1.2.3"),
    )
    .await
    .unwrap();
    let cache =
        sample::write_buildkit_cache(&repo, &spec(32, ManifestFormat::Oci), Some("cache-main"))
            .await
            .unwrap();
    repo.commit().await.unwrap();
    let rewrite = |file: &str, digest: &Sha256Digest| {
        let mut event = read_event(file);
        event["detail"]["image-digest"] = digest.to_string().into();
        let path = dir.path().join(file);
        std::fs::write(&path, event.to_string()).unwrap();
        path
    };

    let out: IndexerOutput = invoke_on_layout(
        "soci-indexer",
        &layout,
        &rewrite("push-image-tag.json", &image.manifest.digest),
    )
    .output();
    let outcome = out.outcome.expect("the indexer worked on the push");
    assert_eq!(outcome.tag.as_deref(), Some("1.2.3-soci"), "{outcome:?}");
    let repo = LayoutRepository::open(&layout).unwrap();
    assert_eq!(
        outcome.output,
        Some(repo.resolve("1.2.3-soci").await.unwrap().digest.to_string()),
    );

    // The janitor sees the layout's images under the event's repository name.
    let out: JanitorOutput = invoke_on_layout(
        "cache-janitor",
        &layout,
        &rewrite("push-cache-main.json", &cache.manifest.digest),
    )
    .output();
    let report = out.report.expect("the janitor ran on the push");
    assert_eq!(
        report.trigger,
        "push app:cache-main",
        "{}",
        report.to_json()
    );
    assert_eq!(report.repositories[0].repository, "app");
    let images = report.repositories[0].images;
    // At least the image, the SOCI-enabled index and the cache: the layout answers for
    // the event's repository `app`, whatever its directory is called.
    assert!(
        images >= 3,
        "the janitor saw {images} images in the layout: {}",
        report.to_json()
    );
    let mut tags = repo.list_tags().await.unwrap();
    tags.sort();
    assert_eq!(
        tags,
        ["1.2.3", "1.2.3-soci", "cache-main"],
        "a dry run changed the layout"
    );
}
