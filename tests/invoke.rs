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

use afterpush::oci::{media, Sha256Digest};
use afterpush::registry::distribution::{DistributionRepository, RegistrySettings};
use afterpush::registry::{Manifest, Repository};
use afterpush::sample::{self, ManifestFormat, SampleSpec};
use afterpush::soci::{self, NoZtocCache, SociSettings};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{TestMoto, TestRegistry};

const REPORT_BUCKET: &str = "janitor-reports";

/// The janitor's policy for these tests: every `app-*` repository, no grace period (the
/// seeded images are seconds old; with one they would all be protected and a dry run
/// could not show what it would delete), keep the main cache, expire superseded caches.
const POLICY: &str = r#"
repositories: ["app-*"]
grace_period: 0s
rules:
  - {name: keep-main-cache, select: {tags: ["cache-main"]}, action: keep}
  - {name: stale-cache, select: {kind: buildkit-cache, untagged: true}, action: expire}
"#;

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/events")
}

/// The registry, moto, and a scratch directory for event copies.
struct Stack {
    registry: TestRegistry,
    moto: TestMoto,
    dir: tempfile::TempDir,
}

/// What one `afterpush invoke` run printed.
struct Invocation {
    what: String,
    success: bool,
    stdout: String,
    stderr: String,
}

impl Invocation {
    fn json(&self) -> Value {
        assert!(self.success, "{} failed:\n{}", self.what, self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}):\n{}", self.what, self.stdout))
    }

    /// Asserts a skip with `code`, reported under `function`.
    fn assert_skip(&self, function: &str, code: &str) {
        let out = self.json();
        assert_eq!(out["function"], function, "{}: {out}", self.what);
        // The janitor's decision carries `action: after-push`; the others have none.
        assert_eq!(out["decision"]["decision"], "skip", "{}: {out}", self.what);
        assert_eq!(out["decision"]["code"], code, "{}: {out}", self.what);
        assert!(
            out.get("outcome").is_none() && out.get("report").is_none(),
            "{}: {out}",
            self.what
        );
    }

    fn assert_error(&self, needles: &[&str]) {
        assert!(
            !self.success,
            "{} succeeded but should fail:\n{}",
            self.what, self.stdout
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "{}: stderr lacks {needle:?}:\n{}",
                self.what,
                self.stderr
            );
        }
        assert!(
            !self.stderr.contains("panicked"),
            "{}: {}",
            self.what,
            self.stderr
        );
    }
}

impl Stack {
    async fn start() -> Self {
        let stack = Stack {
            registry: TestRegistry::start(),
            moto: TestMoto::start(),
            dir: tempfile::tempdir().unwrap(),
        };
        stack
            .moto
            .s3()
            .await
            .create_bucket()
            .bucket(REPORT_BUCKET)
            .send()
            .await
            .unwrap();
        stack
    }

    /// A client for `name` on the test registry (the handlers reach the same storage
    /// through the event's ECR host and `AFTERPUSH_REGISTRY_ENDPOINT`).
    fn repo(&self, name: &str) -> DistributionRepository {
        DistributionRepository::connect(&RegistrySettings::default(), &self.registry.host(), name)
            .unwrap()
    }

    /// Runs `afterpush invoke FUNCTION --event EVENT` with only the environment given
    /// here (nothing of the developer's AWS or registry settings leaks in).
    fn invoke(&self, function: &str, event: &Path, extra_env: &[(&str, &str)]) -> Invocation {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_afterpush"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "AFTERPUSH_REGISTRY_ENDPOINT",
                format!("http://{}", self.registry.host()),
            )
            .env("AFTERPUSH_REGISTRY_AUTH", "anonymous")
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // The sample layers are small; index them all.
            .env("MIN_LAYER_SIZE", "0")
            .env("CLEANUP_POLICY", POLICY)
            .env("REPORT_BUCKET", REPORT_BUCKET)
            .args(["invoke", function, "--event"])
            .arg(event);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run afterpush");
        Invocation {
            what: format!("afterpush invoke {function} --event {}", event.display()),
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A copy of sample event `file` about `repository`, with `image-digest` set to
    /// `digest` when given.
    fn event_copy(&self, file: &str, repository: &str, digest: Option<&Sha256Digest>) -> PathBuf {
        let mut event: Value =
            serde_json::from_slice(&std::fs::read(events_dir().join(file)).unwrap()).unwrap();
        if event["detail"].get("repository-name").is_some() {
            event["detail"]["repository-name"] = repository.into();
        }
        if let Some(d) = digest {
            event["detail"]["image-digest"] = d.to_string().into();
        }
        let path = self.dir.path().join(file);
        std::fs::write(&path, serde_json::to_vec_pretty(&event).unwrap()).unwrap();
        path
    }

    /// The repository's tags on the registry (none when it does not exist).
    async fn tags(&self, name: &str) -> BTreeSet<String> {
        match self.repo(name).list_tags().await {
            Ok(t) => t.into_iter().collect(),
            Err(e) if e.is_not_found() => BTreeSet::new(),
            Err(e) => panic!("list tags of {name}: {e}"),
        }
    }

    /// Copies manifests (in order: children first) into moto's ECR under `repository`.
    async fn mirror_to_ecr(&self, repository: &str, manifests: &[(Manifest, Option<String>)]) {
        let ecr = self.moto.ecr().await;
        let _ = ecr
            .create_repository()
            .repository_name(repository)
            .send()
            .await;
        for (m, tag) in manifests {
            ecr.put_image()
                .repository_name(repository)
                .image_manifest(String::from_utf8(m.bytes.to_vec()).unwrap())
                .image_manifest_media_type(&m.media_type)
                .image_digest(m.digest.to_string())
                .set_image_tag(tag.clone())
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "PutImage {repository}: {}",
                        aws_sdk_ecr::error::DisplayErrorContext(e)
                    )
                });
        }
    }

    /// Every (digest, tags) moto's ECR holds, over all repositories.
    async fn ecr_images(&self) -> BTreeSet<(String, String, Vec<String>)> {
        let ecr = self.moto.ecr().await;
        let mut all = BTreeSet::new();
        let repos = ecr.describe_repositories().send().await.unwrap();
        for r in repos.repositories() {
            let name = r.repository_name().unwrap().to_string();
            let images = ecr
                .describe_images()
                .repository_name(&name)
                .send()
                .await
                .unwrap();
            for i in images.image_details() {
                let mut tags = i.image_tags().to_vec();
                tags.sort();
                all.insert((name.clone(), i.image_digest().unwrap().to_string(), tags));
            }
        }
        all
    }
}

fn spec(seed: u64, format: ManifestFormat) -> SampleSpec {
    SampleSpec {
        seed,
        layer_sizes: vec![48 * 1024],
        format,
        attestations: false,
        ..SampleSpec::default()
    }
}

/// Seeds a single-platform image (platform from the tag's arch suffix) as the event
/// describes it; returns its digest.
async fn seed_image(
    stack: &Stack,
    repository: &str,
    event: &Value,
    tag: Option<&str>,
    seed: u64,
) -> Sha256Digest {
    let format = match event["detail"]["manifest-media-type"].as_str() {
        Some(media::DOCKER_MANIFEST) => ManifestFormat::Docker,
        _ => ManifestFormat::Oci,
    };
    let platform = if tag.is_some_and(|t| t.ends_with("-arm64")) {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    let image = sample::write_image(
        &stack.repo(repository),
        &spec(seed, format),
        &platform.parse().unwrap(),
        tag,
    )
    .await
    .unwrap();
    image.manifest.digest
}

/// A BuildKit cache at `tag` and the export it superseded (untagged, as ECR leaves it),
/// on the registry and in moto's ECR; returns (current, superseded).
async fn seed_caches(stack: &Stack, repository: &str, tag: &str) -> (Sha256Digest, Sha256Digest) {
    let repo = stack.repo(repository);
    let old = sample::write_buildkit_cache(&repo, &spec(11, ManifestFormat::Oci), None)
        .await
        .unwrap();
    let new = sample::write_buildkit_cache(&repo, &spec(12, ManifestFormat::Oci), Some(tag))
        .await
        .unwrap();
    let old_m = repo
        .get_manifest(&old.manifest.digest.to_string())
        .await
        .unwrap();
    let new_m = repo.get_manifest(tag).await.unwrap();
    stack
        .mirror_to_ecr(repository, &[(old_m, None), (new_m, Some(tag.to_string()))])
        .await;
    (new.manifest.digest, old.manifest.digest)
}

fn read_event(file: &str) -> Value {
    serde_json::from_slice(&std::fs::read(events_dir().join(file)).unwrap()).unwrap()
}

/// The report the janitor stored in the report bucket under its run id.
async fn stored_report(stack: &Stack, run_id: &str) -> Value {
    let s3 = stack.moto.s3().await;
    let listed = s3
        .list_objects_v2()
        .bucket(REPORT_BUCKET)
        .send()
        .await
        .unwrap();
    let key = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .find(|k| k.ends_with(&format!("{run_id}.json")))
        .unwrap_or_else(|| panic!("no report {run_id} in s3://{REPORT_BUCKET}"))
        .to_string();
    let body = s3
        .get_object()
        .bucket(REPORT_BUCKET)
        .key(&key)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&body.body.collect().await.unwrap().into_bytes()).unwrap()
}

/// Checks a janitor report of a dry run: `expected` planned for deletion in
/// `repository`, nothing deleted (in the report and in ECR), report stored in S3.
async fn assert_dry_run_report(
    stack: &Stack,
    run: &Invocation,
    trigger: &str,
    repository: &str,
    expected: &[&Sha256Digest],
    ecr_before: &BTreeSet<(String, String, Vec<String>)>,
) {
    let out = run.json();
    assert_eq!(out["function"], "cache-janitor", "{out}");
    let report = &out["report"];
    assert_eq!(report["trigger"], trigger, "{out}");
    assert_eq!(report["dry_run"], true, "DRY_RUN defaults to true: {out}");
    assert_eq!(report["deleted"], 0, "{out}");
    let repo_report = report["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repository"] == repository)
        .unwrap_or_else(|| panic!("no report for {repository}: {out}"));
    let planned: BTreeSet<String> = repo_report["planned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = expected.iter().map(|d| d.to_string()).collect();
    assert_eq!(planned, expected, "{out}");
    assert!(
        repo_report["deleted"].as_array().unwrap().is_empty(),
        "{out}"
    );
    assert_eq!(
        &stack.ecr_images().await,
        ecr_before,
        "a dry run deleted something"
    );
    let stored = stored_report(stack, report["run_id"].as_str().unwrap()).await;
    assert_eq!(stored["trigger"], trigger);
    assert_eq!(stored["planned_deletions"], report["planned_deletions"]);
}

/// The SOCI indexer's result for `tag`: `<tag>-soci` now holds the SOCI-enabled index of
/// `source`, with one SOCI index per platform.
async fn assert_soci_output(
    stack: &Stack,
    run: &Invocation,
    repository: &str,
    tag: &str,
    source: &Sha256Digest,
    platforms: usize,
) {
    let out = run.json();
    assert_eq!(out["function"], "soci-indexer", "{out}");
    assert_eq!(out["decision"]["decision"], "work", "{out}");
    let outcome = &out["outcome"];
    let soci_tag = format!("{tag}-soci");
    assert_eq!(outcome["tag"], soci_tag.as_str(), "{out}");
    assert_eq!(outcome["source"], source.to_string(), "{out}");
    let reported = outcome["platforms"].as_array().unwrap();
    assert_eq!(reported.len(), platforms, "{out}");
    assert!(
        reported
            .iter()
            .all(|p| p["soci_index"].is_string() && p["ztocs"].as_u64() >= Some(1)),
        "{out}"
    );
    let stored = stack
        .repo(repository)
        .get_manifest(&soci_tag)
        .await
        .unwrap();
    assert_eq!(outcome["output"], stored.digest.to_string(), "{out}");
    let index: Value = serde_json::from_slice(&stored.bytes).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert!(
        entries.iter().any(|d| d["artifactType"]
            .as_str()
            .is_some_and(|t| t.starts_with("application/vnd.amazon.soci.index."))),
        "{soci_tag} has no SOCI index: {index}"
    );
    // The source tag is left alone (tag mode `suffix`).
    assert_eq!(
        stack.repo(repository).resolve(tag).await.unwrap().digest,
        *source
    );
}

/// An event no function acts on: every function skips with `codes[i]`, and neither the
/// registry nor ECR changes.
async fn assert_skipped_by_all(
    stack: &Stack,
    file: &str,
    repository: &str,
    digest: Option<&Sha256Digest>,
    codes: [&str; 3],
) {
    let event = stack.event_copy(file, repository, digest);
    let tags_before = stack.tags(repository).await;
    let ecr_before = stack.ecr_images().await;
    for (function, code) in ["soci-indexer", "manifest-stitcher", "cache-janitor"]
        .into_iter()
        .zip(codes)
    {
        stack
            .invoke(function, &event, &[])
            .assert_skip(function, code);
    }
    assert_eq!(
        stack.tags(repository).await,
        tags_before,
        "{file}: a skip changed the registry"
    );
    assert_eq!(
        stack.ecr_images().await,
        ecr_before,
        "{file}: a skip changed ECR"
    );
}

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
    let mut files: Vec<String> = std::fs::read_dir(events_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
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

    let out = invoke_on_layout(
        "soci-indexer",
        &layout,
        &rewrite("push-image-tag.json", &image.manifest.digest),
    )
    .json();
    assert_eq!(out["outcome"]["tag"], "1.2.3-soci", "{out}");
    let repo = LayoutRepository::open(&layout).unwrap();
    assert_eq!(
        out["outcome"]["output"],
        repo.resolve("1.2.3-soci").await.unwrap().digest.to_string(),
        "{out}"
    );

    // The janitor sees the layout's images under the event's repository name.
    let out = invoke_on_layout(
        "cache-janitor",
        &layout,
        &rewrite("push-cache-main.json", &cache.manifest.digest),
    )
    .json();
    let report = &out["report"];
    assert_eq!(report["trigger"], "push app:cache-main", "{out}");
    assert_eq!(report["repositories"][0]["repository"], "app", "{out}");
    let images = report["repositories"][0]["images"].as_u64().unwrap();
    // At least the image, the SOCI-enabled index and the cache (it saw 0 when the layout
    // answered only to its directory name).
    assert!(
        images >= 3,
        "the janitor saw {images} images in the layout: {out}"
    );
    let mut tags = repo.list_tags().await.unwrap();
    tags.sort();
    assert_eq!(
        tags,
        ["1.2.3", "1.2.3-soci", "cache-main"],
        "a dry run changed the layout"
    );
}
