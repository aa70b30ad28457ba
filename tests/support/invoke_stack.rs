//! The stack `afterpush invoke` runs against in the tests (tests/invoke.rs,
//! tests/sam_local.rs): the real registry and moto, the functions' environment, seeding
//! of what the sample events in `infra/events/` describe, and the assertions on each
//! function's outcome.
#![allow(dead_code)]

use super::{TestMoto, TestRegistry};
use afterpush::oci::{media, Sha256Digest};
use afterpush::registry::distribution::{DistributionRepository, RegistrySettings};
use afterpush::registry::{Manifest, Repository};
use afterpush::sample::{self, ManifestFormat, SampleSpec};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const REPORT_BUCKET: &str = "janitor-reports";

/// The janitor's policy for these tests: every `app-*` repository, no grace period (the
/// seeded images are seconds old; with one they would all be protected and a dry run
/// could not show what it would delete), keep the main cache, expire superseded caches.
pub const POLICY: &str = r#"
repositories: ["app-*"]
grace_period: 0s
rules:
  - {name: keep-main-cache, select: {tags: ["cache-main"]}, action: keep}
  - {name: stale-cache, select: {kind: buildkit-cache, untagged: true}, action: expire}
"#;

pub fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/events")
}

/// The names of the sample events (`infra/events/*.json`), sorted.
pub fn sample_event_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(events_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    files
}

/// The registry, moto, and a scratch directory for event copies.
pub struct Stack {
    pub registry: TestRegistry,
    pub moto: TestMoto,
    pub dir: tempfile::TempDir,
    /// Where the functions reach the registry and AWS: the servers' own 127.0.0.1
    /// addresses, unless a test routes them elsewhere (e.g. through a relay).
    pub registry_endpoint: String,
    pub aws_endpoint: String,
    /// More variables for the functions (e.g. what a relayed endpoint needs).
    pub extra_env: Vec<(&'static str, String)>,
}

/// What one `afterpush invoke` run printed.
pub struct Invocation {
    pub what: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    pub fn json(&self) -> Value {
        assert!(self.success, "{} failed:\n{}", self.what, self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}):\n{}", self.what, self.stdout))
    }

    /// The function's output as its type (`afterpush::lambda::IndexerOutput`, ...).
    #[allow(dead_code)]
    pub fn output<T: serde::de::DeserializeOwned>(&self) -> T {
        assert!(self.success, "{} failed:\n{}", self.what, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not the function's output ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }

    /// Asserts a skip with `code`, reported under `function`.
    pub fn assert_skip(&self, function: &str, code: &str) {
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

    pub fn assert_error(&self, needles: &[&str]) {
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
    pub async fn start() -> Self {
        let registry = TestRegistry::start();
        let moto = TestMoto::start();
        let stack = Stack {
            registry_endpoint: format!("http://{}", registry.host()),
            aws_endpoint: moto.endpoint(),
            extra_env: Vec::new(),
            registry,
            moto,
            dir: tempfile::tempdir().unwrap(),
        };
        super::create_s3_bucket(&stack.moto.s3().await, REPORT_BUCKET).await;
        stack
    }

    /// A client for `name` on the test registry (the handlers reach the same storage
    /// through the event's ECR host and `AFTERPUSH_REGISTRY_ENDPOINT`).
    pub fn repo(&self, name: &str) -> DistributionRepository {
        DistributionRepository::connect(&RegistrySettings::default(), &self.registry.host(), name)
            .unwrap()
    }

    /// The functions' environment in these tests: the registry and AWS endpoints, test
    /// credentials, and the settings the cases rely on. `afterpush invoke` gets exactly
    /// this; `sam local invoke` gets it too (tests/sam_local.rs).
    pub fn function_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (
                "AFTERPUSH_REGISTRY_ENDPOINT",
                self.registry_endpoint.clone(),
            ),
            ("AFTERPUSH_REGISTRY_AUTH", "anonymous".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            // The sample layers are small; index them all.
            ("MIN_LAYER_SIZE", "0".into()),
            ("CLEANUP_POLICY", POLICY.into()),
            ("REPORT_BUCKET", REPORT_BUCKET.into()),
        ];
        env.extend(TestMoto::aws_env(&self.aws_endpoint));
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Runs `afterpush invoke FUNCTION --event EVENT` with only the environment given
    /// here (nothing of the developer's AWS or registry settings leaks in).
    pub fn invoke(&self, function: &str, event: &Path, extra_env: &[(&str, &str)]) -> Invocation {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_afterpush"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.function_env())
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
    pub fn event_copy(
        &self,
        file: &str,
        repository: &str,
        digest: Option<&Sha256Digest>,
    ) -> PathBuf {
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
    pub async fn tags(&self, name: &str) -> BTreeSet<String> {
        match self.repo(name).list_tags().await {
            Ok(t) => t.into_iter().collect(),
            Err(e) if e.is_not_found() => BTreeSet::new(),
            Err(e) => panic!("list tags of {name}: {e}"),
        }
    }

    /// Copies manifests (in order: children first) into moto's ECR under `repository`.
    pub async fn mirror_to_ecr(&self, repository: &str, manifests: &[(Manifest, Option<String>)]) {
        let ecr = self.moto.ecr().await;
        let _ = ecr
            .create_repository()
            .repository_name(repository)
            .send()
            .await;
        for (m, tag) in manifests {
            let body = std::str::from_utf8(&m.bytes).unwrap();
            super::put_ecr_manifest(&ecr, repository, body, &m.media_type, tag.as_deref()).await;
        }
    }

    /// Every (digest, tags) moto's ECR holds, over all repositories.
    pub async fn ecr_images(&self) -> BTreeSet<(String, String, Vec<String>)> {
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

pub fn spec(seed: u64, format: ManifestFormat) -> SampleSpec {
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
pub async fn seed_image(
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
pub async fn seed_caches(
    stack: &Stack,
    repository: &str,
    tag: &str,
) -> (Sha256Digest, Sha256Digest) {
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

pub fn read_event(file: &str) -> Value {
    serde_json::from_slice(&std::fs::read(events_dir().join(file)).unwrap()).unwrap()
}

/// The report the janitor stored in the report bucket under its run id.
pub async fn stored_report(stack: &Stack, run_id: &str) -> Value {
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
pub async fn assert_dry_run_report(
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
pub async fn assert_soci_output(
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
pub async fn assert_skipped_by_all(
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
