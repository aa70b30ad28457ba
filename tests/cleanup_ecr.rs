//! The cache janitor against moto's ECR (digests corrected by the test launcher): a
//! scenario repository of a few hundred manifests of every kind cleanup meets, pushed
//! with PutImage, planned and applied per policy; the exact deleted and kept sets are
//! asserted against what DescribeImages lists afterwards.
//!
//! moto cannot set push times: ages are tested by planning at a later `now` (the CLI's
//! `--as-of`); `lastRecordedPullTime` rules are covered by the planner's unit tests.

mod support;

use afterpush::catalog::ecr::{EcrCatalog, SdkEcr};
use afterpush::catalog::{ApiErrorKind, Catalog, CatalogError};
use afterpush::cleanup::policy::Policy;
use afterpush::cleanup::{on_push, sweep, JanitorError, RunOptions};
use afterpush::events::Trigger;
use afterpush::filters::RepositoryTagFilters;
use afterpush::lambda::janitor::{handle, JanitorEvent, JanitorSettings};
use afterpush::oci::{media, Sha256Digest};
use chrono::{Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use support::fault_proxy::{Fault, FaultProxy};

const REPO: &str = "app";

/// A pushed manifest and the role the scenario gave it.
#[derive(Debug, Clone)]
struct Pushed {
    digest: Sha256Digest,
    role: &'static str,
}

struct Scenario {
    pushed: Vec<Pushed>,
}

impl Scenario {
    fn digests(&self, roles: &[&str]) -> BTreeSet<String> {
        self.pushed
            .iter()
            .filter(|p| roles.contains(&p.role))
            .map(|p| p.digest.to_string())
            .collect()
    }
    fn all(&self) -> BTreeSet<String> {
        self.pushed.iter().map(|p| p.digest.to_string()).collect()
    }
}

fn fake_digest(seed: &str) -> String {
    Sha256Digest::of(seed.as_bytes()).to_string()
}

fn image_manifest(seed: &str, config_type: &str, layer_type: &str, extra: &str) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{config_type}","digest":"{}","size":100}},"layers":[{{"mediaType":"{layer_type}","digest":"{}","size":1000}}]{extra}}}"#,
        media::OCI_MANIFEST,
        fake_digest(&format!("config {seed}")),
        fake_digest(&format!("layer {seed}")),
    )
}

fn descriptor(digest: &Sha256Digest, size: usize, extra: &str) -> String {
    format!(
        r#"{{"mediaType":"{}","digest":"{digest}","size":{size}{extra}}}"#,
        media::OCI_MANIFEST
    )
}

async fn put(
    ecr: &aws_sdk_ecr::Client,
    body: &str,
    media_type: &str,
    tag: Option<&str>,
) -> Sha256Digest {
    support::put_ecr_manifest(ecr, REPO, body, media_type, tag).await
}

/// Pushes the scenario. Roles say what each manifest is and what the issue's policy
/// must do with it at +30 days.
async fn push_scenario(ecr: &aws_sdk_ecr::Client) -> Scenario {
    support::create_ecr_repository(ecr, REPO).await;
    let mut pushed = Vec::new();
    // Registry caches: 30 exports of main and 20 of each of 5 branches; every export
    // but the last of a ref is superseded (pushed untagged: what ECR leaves behind).
    for (branch, exports) in [
        ("main", 30),
        ("feat-a", 20),
        ("feat-b", 20),
        ("feat-c", 20),
        ("fix-d", 20),
        ("fix-e", 20),
    ] {
        for i in 0..exports {
            let body = image_manifest(
                &format!("cache {branch} {i}"),
                media::BUILDKIT_CACHE_CONFIG,
                media::OCI_LAYER_GZIP,
                "",
            );
            let last = i == exports - 1;
            let tag = format!("cache-{branch}");
            let d = put(
                ecr,
                &body,
                media::OCI_MANIFEST,
                last.then_some(tag.as_str()),
            )
            .await;
            add(
                &mut pushed,
                d,
                match (last, branch) {
                    (true, "main") => "main-cache",
                    (true, _) => "branch-cache",
                    (false, _) => "superseded-cache",
                },
            );
        }
    }
    // Inline-cache runnable images, tagged by build; a few untagged leftovers.
    for i in 0..40 {
        let body = image_manifest(
            &format!("inline {i}"),
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP,
            "",
        );
        add(
            &mut pushed,
            put(ecr, &body, media::OCI_MANIFEST, Some(&format!("build-{i}"))).await,
            "tagged-image",
        );
    }
    for i in 0..10 {
        let body = image_manifest(
            &format!("loose {i}"),
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP,
            "",
        );
        add(
            &mut pushed,
            put(ecr, &body, media::OCI_MANIFEST, None).await,
            "untagged-image",
        );
    }
    // Multi-arch indexes with platform images and buildx attestations: 10 tagged
    // releases and 6 superseded (untagged) builds.
    for (i, tagged) in (0..16).map(|i| (i, i < 10)) {
        let mut entries = Vec::new();
        let (child_role, att_role, idx_role) = if tagged {
            ("kept-child", "kept-child", "tagged-index")
        } else {
            ("dead-child", "dead-child", "untagged-index")
        };
        for arch in ["amd64", "arm64"] {
            let body = image_manifest(
                &format!("idx {i} {arch}"),
                media::OCI_CONFIG,
                media::OCI_LAYER_GZIP,
                "",
            );
            let d = put(ecr, &body, media::OCI_MANIFEST, None).await;
            entries.push(descriptor(
                &d,
                body.len(),
                &format!(r#","platform":{{"architecture":"{arch}","os":"linux"}}"#),
            ));
            add(&mut pushed, d.clone(), child_role);
            let att = image_manifest(
                &format!("att {i} {arch}"),
                media::OCI_CONFIG,
                media::IN_TOTO,
                "",
            );
            let a = put(ecr, &att, media::OCI_MANIFEST, None).await;
            entries.push(descriptor(
                &a,
                att.len(),
                &format!(
                    r#","platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"vnd.docker.reference.digest":"{d}","vnd.docker.reference.type":"attestation-manifest"}}"#
                ),
            ));
            add(&mut pushed, a, att_role);
        }
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
            media::OCI_INDEX,
            entries.join(",")
        );
        let tag = format!("v1.{i}");
        add(
            &mut pushed,
            put(
                ecr,
                &index,
                media::OCI_INDEX,
                tagged.then_some(tag.as_str()),
            )
            .await,
            idx_role,
        );
    }
    // SOCI v1 indexes and cosign signatures (OCI 1.1 subject) on some tagged images, and
    // on some untagged leftovers (which go with their subject).
    let subjects: Vec<(Sha256Digest, &str)> = pushed
        .iter()
        .filter(|p| p.role == "tagged-image" || p.role == "untagged-image")
        .map(|p| (p.digest.clone(), p.role))
        .step_by(2)
        .collect();
    for (n, (subject, role)) in subjects.iter().enumerate() {
        let subject_field = format!(r#","subject":{}"#, descriptor(subject, 500, ""));
        let soci = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{}","size":9}}]{subject_field}}}"#,
            media::OCI_MANIFEST,
            media::SOCI_INDEX_V1,
            fake_digest("{}"),
            fake_digest(&format!("ztoc {n}")),
        );
        let referrer_role = if *role == "tagged-image" {
            "kept-referrer"
        } else {
            "dead-referrer"
        };
        add(
            &mut pushed,
            put(ecr, &soci, media::OCI_MANIFEST, None).await,
            referrer_role,
        );
        let sig = image_manifest(
            &format!("sig {n}"),
            media::OCI_CONFIG,
            media::COSIGN_SIGNATURE,
            &subject_field,
        );
        add(
            &mut pushed,
            put(ecr, &sig, media::OCI_MANIFEST, None).await,
            referrer_role,
        );
    }
    // A cosign tag-scheme signature of a tagged image.
    let target = subjects[0].0.clone();
    let sig = image_manifest(
        "tag-scheme sig",
        media::OCI_CONFIG,
        media::COSIGN_SIGNATURE,
        "",
    );
    let sig_tag = format!("sha256-{}.sig", target.hex());
    add(
        &mut pushed,
        put(ecr, &sig, media::OCI_MANIFEST, Some(&sig_tag)).await,
        "kept-referrer",
    );
    // SOCI v2: an index binding a rewritten image manifest to its SOCI index; one tagged
    // (kept), one untagged (goes, with both entries).
    for (i, tagged) in [(0, true), (1, false)] {
        let soci = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{}","size":9}}]}}"#,
            media::OCI_MANIFEST,
            media::SOCI_INDEX_V2,
            fake_digest("{}"),
            fake_digest(&format!("ztoc v2 {i}")),
        );
        let soci_d = put(ecr, &soci, media::OCI_MANIFEST, None).await;
        let ann = format!(r#","annotations":{{"com.amazon.soci.index-digest":"{soci_d}"}}"#);
        let img = image_manifest(
            &format!("v2 img {i}"),
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP,
            &ann,
        );
        let img_d = put(ecr, &img, media::OCI_MANIFEST, None).await;
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{},{}]}}"#,
            media::OCI_INDEX,
            descriptor(
                &img_d,
                img.len(),
                &format!(r#","platform":{{"architecture":"amd64","os":"linux"}}{ann}"#)
            ),
            descriptor(
                &soci_d,
                soci.len(),
                &format!(
                    r#","platform":{{"architecture":"amd64","os":"linux"}},"artifactType":"{}","annotations":{{"com.amazon.soci.image-manifest-digest":"{img_d}"}}"#,
                    media::SOCI_INDEX_V2
                )
            ),
        );
        let (entry_role, idx_role) = if tagged {
            ("kept-child", "tagged-index")
        } else {
            ("dead-child", "untagged-index")
        };
        add(&mut pushed, soci_d, entry_role);
        add(&mut pushed, img_d, entry_role);
        add(
            &mut pushed,
            put(ecr, &index, media::OCI_INDEX, tagged.then_some("v2.0-soci")).await,
            idx_role,
        );
    }
    Scenario { pushed }
}

fn add(pushed: &mut Vec<Pushed>, digest: Sha256Digest, role: &'static str) {
    pushed.push(Pushed { digest, role });
}

async fn remaining(ecr: &aws_sdk_ecr::Client) -> BTreeSet<String> {
    support::ecr_image_digests(ecr, REPO).await
}

/// Every index left lists only manifests that are still there; every referrer left
/// has its subject.
async fn assert_consistent(catalog: &dyn Catalog) {
    let images = catalog.list_images(REPO).await.unwrap();
    let present: BTreeSet<_> = images.iter().map(|i| i.digest.clone()).collect();
    for im in &images {
        for c in im.references() {
            assert!(
                present.contains(c),
                "{} lists {c}, which is gone",
                im.digest
            );
        }
        if let Some(s) = &im.subject {
            assert!(
                present.contains(s),
                "referrer {} lost its subject {s}",
                im.digest
            );
        }
    }
}

fn issue_policy() -> Policy {
    Policy::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/policies/ci-caches.yaml"),
    )
    .unwrap()
}

fn at(days: i64) -> RunOptions {
    RunOptions {
        now: Utc::now() + Duration::days(days),
        ..RunOptions::dry_run_now()
    }
}

const DEAD_AT_30_DAYS: [&str; 6] = [
    "superseded-cache",
    "branch-cache",
    "untagged-image",
    "untagged-index",
    "dead-child",
    "dead-referrer",
];

#[tokio::test]
async fn sweep_dry_run_then_apply_deletes_exactly_the_planned_set() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    let scenario = push_scenario(&ecr).await;
    assert!(
        scenario.pushed.len() >= 300,
        "{} images",
        scenario.pushed.len()
    );
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);

    // The catalog classifies what was pushed.
    let images = catalog.list_images(REPO).await.unwrap();
    let kinds: BTreeMap<String, String> = images
        .iter()
        .map(|i| (i.digest.to_string(), i.kind.to_string()))
        .collect();
    for p in &scenario.pushed {
        let expected = match p.role {
            "main-cache" | "branch-cache" | "superseded-cache" => "buildkit-cache",
            "tagged-image" | "untagged-image" => "image",
            "tagged-index" | "untagged-index" => "index",
            _ => continue,
        };
        assert_eq!(kinds[&p.digest.to_string()], expected, "{p:?}");
    }

    let mut policy = issue_policy();
    policy.max_deletions = None;
    let expected_dead = scenario.digests(&DEAD_AT_30_DAYS);
    let expected_kept: BTreeSet<String> =
        scenario.all().difference(&expected_dead).cloned().collect();

    // Today nothing is old enough but superseded caches (beyond the 1 h grace? no: all
    // were pushed seconds ago) — the grace period protects everything.
    let today = sweep(&catalog, None, &policy, &RunOptions::dry_run_now())
        .await
        .unwrap();
    assert_eq!(today.planned_deletions, 0, "{}", today.to_json());

    // At +30 days, dry run: the exact set is planned, nothing is deleted.
    let dry = sweep(&catalog, None, &policy, &at(30)).await.unwrap();
    let planned: BTreeSet<String> = dry.repositories[0]
        .planned
        .iter()
        .map(|d| d.digest.to_string())
        .collect();
    assert_eq!(planned, expected_dead);
    assert_eq!(
        remaining(&ecr).await,
        scenario.all(),
        "dry run deleted something"
    );
    assert_eq!(dry.deleted, 0);

    // Apply.
    let mut apply_opts = at(30);
    apply_opts.dry_run = false;
    let applied = sweep(&catalog, None, &policy, &apply_opts).await.unwrap();
    assert_eq!(applied.failed, 0, "{}", applied.to_json());
    assert_eq!(applied.deleted, expected_dead.len());
    assert_eq!(remaining(&ecr).await, expected_kept);
    let repo = &applied.repositories[0];
    // Waves: indexes and referrers, then their entries and subjects, in ≤ 100 batches.
    let waves = repo.planned.iter().map(|d| d.wave).max().unwrap() + 1;
    let mut per_wave = vec![0usize; waves];
    for d in &repo.planned {
        per_wave[d.wave] += 1;
    }
    assert_eq!(
        repo.delete_calls,
        per_wave.iter().map(|n| n.div_ceil(100)).sum::<usize>()
    );
    assert_consistent(&catalog).await;

    // A second run finds nothing more to do.
    let again = sweep(&catalog, None, &policy, &apply_opts).await.unwrap();
    assert_eq!(again.planned_deletions, 0, "{}", again.to_json());
}

#[tokio::test]
async fn max_deletions_stops_the_run_and_leaves_a_consistent_repository() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    let scenario = push_scenario(&ecr).await;
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);
    let mut policy = issue_policy();
    policy.max_deletions = Some(40);
    let mut opts = at(30);
    opts.dry_run = false;
    let report = sweep(&catalog, None, &policy, &opts).await.unwrap();
    assert!(report.stopped_by_max_deletions);
    assert!(
        report.deleted <= 40 && report.deleted > 0,
        "{}",
        report.deleted
    );
    let left = remaining(&ecr).await;
    assert_eq!(left.len(), scenario.pushed.len() - report.deleted);
    // Only planned-dead images went.
    let dead = scenario.digests(&DEAD_AT_30_DAYS);
    for gone in scenario.all().difference(&left) {
        assert!(dead.contains(gone), "{gone} should not have been deleted");
    }
    assert_consistent(&catalog).await;
}

#[tokio::test]
async fn on_push_prunes_superseded_caches_after_the_grace_period_only() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    let scenario = push_scenario(&ecr).await;
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);
    let settings = JanitorSettings::from_lookup(|k| match k {
        "AFTERPUSH_CLEANUP_POLICY_FILE" => Some(format!(
            "{}/infra/policies/ci-caches.yaml",
            env!("CARGO_MANIFEST_DIR")
        )),
        "DRY_RUN" => Some("false".into()),
        _ => None,
    })
    .unwrap();
    let event: serde_json::Value = serde_json::json!({
        "version": "0", "id": "1", "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": "123456789012", "time": "2026-11-22T10:00:00Z", "region": "us-east-1",
        "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": REPO,
                   "image-digest": scenario.digests(&["main-cache"]).into_iter().next().unwrap(),
                   "action-type": "PUSH", "image-tag": "cache-main",
                   "manifest-media-type": media::OCI_MANIFEST,
                   "artifact-media-type": media::BUILDKIT_CACHE_CONFIG}
    });
    // Seconds after the push: the grace period protects the superseded caches.
    let report = handle(
        &catalog,
        None,
        &settings,
        &RepositoryTagFilters::parse("").unwrap(),
        JanitorEvent::from_trigger(&Trigger::from_value(event.clone()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(report.planned_deletions, 0, "{}", report.to_json());
    assert_eq!(remaining(&ecr).await, scenario.all());

    // Two hours later (the Lambda would see this on a later push): exactly the
    // superseded cache manifests go; nothing else, whatever the other rules say.
    let JanitorEvent::Push(detail) =
        JanitorEvent::from_trigger(&Trigger::from_value(event).unwrap())
    else {
        panic!("not a push")
    };
    let mut opts = RunOptions {
        now: Utc::now() + Duration::hours(2),
        ..RunOptions::dry_run_now()
    };
    opts.dry_run = false;
    let report = on_push(&catalog, &settings.policy, &detail, &opts)
        .await
        .unwrap();
    let superseded = scenario.digests(&["superseded-cache"]);
    assert_eq!(report.deleted, superseded.len(), "{}", report.to_json());
    let expected: BTreeSet<String> = scenario.all().difference(&superseded).cloned().collect();
    assert_eq!(remaining(&ecr).await, expected);

    // A push that is not a cache can still set off a rule: `old-untagged` (the push may
    // have moved a tag off an older image). The repository is evaluated under the whole
    // policy at once; two hours on, nothing else is old enough to go.
    let mut other = detail.clone();
    other.tag = Some("build-1".into());
    other.artifact_media_type = Some(media::OCI_CONFIG.into());
    let report = on_push(&catalog, &settings.policy, &other, &opts)
        .await
        .unwrap();
    assert_eq!(report.ignored, None, "{}", report.to_json());
    assert_eq!(report.trigger, "push app:build-1");
    assert_eq!(report.planned_deletions, 0, "{}", report.to_json());
    assert_eq!(remaining(&ecr).await, expected);
}

#[tokio::test]
async fn scheduled_handle_writes_a_report_object() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    let scenario = push_scenario(&ecr).await;
    let s3 = moto.s3().await;
    support::create_s3_bucket(&s3, "reports").await;
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);
    let policy_text = std::fs::read_to_string(format!(
        "{}/infra/policies/ci-caches.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    // No S3 cache in this test.
    .split("s3_caches:")
    .next()
    .unwrap()
    .to_string();
    let settings = JanitorSettings::from_lookup(|k| match k {
        "CLEANUP_POLICY" => Some(policy_text.clone()),
        "REPORT_BUCKET" => Some("reports".into()),
        _ => None,
    })
    .unwrap();
    assert!(settings.dry_run, "DRY_RUN defaults to true");
    let event = serde_json::json!({"version": "0", "id": "2", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-22T10:00:00Z",
        "region": "us-east-1", "resources": [], "detail": {}});
    let report = handle(
        &catalog,
        Some(&s3),
        &settings,
        &RepositoryTagFilters::parse("").unwrap(),
        JanitorEvent::from_trigger(&Trigger::from_value(event).unwrap()),
    )
    .await
    .unwrap();
    assert!(report.dry_run);
    assert_eq!(remaining(&ecr).await, scenario.all());
    let listed = s3.list_objects_v2().bucket("reports").send().await.unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("cache-janitor/")
            && keys[0].ends_with(&format!("{}.json", report.run_id))
    );
    let body = s3
        .get_object()
        .bucket("reports")
        .key(keys[0])
        .send()
        .await
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&body.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(json["run_id"], report.run_id.as_str());
    assert_eq!(json["trigger"], "sweep");
    assert_eq!(json["repositories"][0]["repository"], REPO);
}

fn schedule_event() -> JanitorEvent {
    JanitorEvent::from_trigger(
        &Trigger::from_value(serde_json::json!({"version": "0", "id": "3",
        "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012",
        "time": "2026-11-23T10:00:00Z", "region": "us-east-1", "resources": [], "detail": {}}))
        .unwrap(),
    )
}

#[tokio::test]
async fn the_scheduled_sweep_stays_within_repository_tag_filters() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    for name in ["app", "svc-a", "svc-b", "unrelated"] {
        support::create_ecr_repository(&ecr, name).await;
    }
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);
    let settings = JanitorSettings::from_lookup(|k| {
        (k == "CLEANUP_POLICY").then(|| {
            r#"{"repositories": ["app", "svc-*"], "rules": [{"name": "untagged", "select": {"untagged": true}, "action": "expire"}]}"#
                .to_string()
        })
    })
    .unwrap();
    let swept = |filters: &'static str| {
        let (catalog, settings) = (&catalog, &settings);
        async move {
            let filters = RepositoryTagFilters::parse(filters).unwrap();
            let report = handle(catalog, None, settings, &filters, schedule_event())
                .await
                .unwrap();
            report
                .repositories
                .iter()
                .map(|r| r.repository.clone())
                .collect::<Vec<_>>()
        }
    };
    // The policy alone selects three of the four; the filters narrow that further, and
    // never widen it (`unrelated` stays out even when a filter names it).
    assert_eq!(swept("*:*").await, ["app", "svc-a", "svc-b"]);
    assert_eq!(swept("svc-a:*,unrelated:*").await, ["svc-a"]);
    assert_eq!(swept("svc-*:release-*").await, ["svc-a", "svc-b"]);
    assert!(swept("other:*").await.is_empty());
}

#[test]
fn sample_policies_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/policies");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        Policy::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 2);
}

/// moto's real answer for a repository that does not exist (RepositoryNotFoundException)
/// is a not-found error, which no later run can fix.
#[tokio::test]
async fn a_missing_repository_is_not_found_and_not_retryable() {
    let moto = support::TestMoto::start();
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);
    let err = catalog.list_images("no-such-repository").await.unwrap_err();
    assert!(
        matches!(
            &err,
            CatalogError::Api {
                operation: "DescribeImages",
                kind: ApiErrorKind::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("RepositoryNotFoundException"),
        "{err}"
    );
    assert!(!JanitorError::from(err).is_retryable());
}

/// One retry layer: a failing ECR call is retried by the SDK (its configured attempts)
/// and not again by the catalog, and the error keeps the kind the SDK gave it.
/// moto cannot throttle, fail with a 5xx or deny access, so a fault proxy in front of
/// it answers in its place; everything else is moto's.
#[tokio::test]
async fn ecr_errors_keep_their_kind_and_only_the_sdk_retries() {
    let moto = support::TestMoto::start();
    support::create_ecr_repository(&moto.ecr().await, REPO).await;
    let proxy = FaultProxy::start(moto.port);
    let config = support::TestMoto::sdk_config_at(&format!("http://{}", proxy.host())).await;
    let attempts = 3;
    let client = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(&config)
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(attempts)
                    .with_initial_backoff(std::time::Duration::from_millis(1)),
            )
            .build(),
    );
    let catalog = EcrCatalog::new(SdkEcr::new(client));
    // An awsJson1.1 error response, as ECR sends it.
    let ecr_error = |status: u16, code: &str| Fault::Respond {
        status,
        headers: vec![
            ("Content-Type".into(), "application/x-amz-json-1.1".into()),
            ("x-amzn-ErrorType".into(), code.into()),
        ],
        body: format!(r#"{{"__type":"{code}","message":"injected by the test"}}"#).into_bytes(),
    };
    for (fault, kind, requests) in [
        (
            ecr_error(400, "ThrottlingException"),
            ApiErrorKind::Throttled,
            attempts,
        ),
        (Fault::Status(503), ApiErrorKind::Transient, attempts),
        (
            ecr_error(400, "AccessDeniedException"),
            ApiErrorKind::AccessDenied,
            1,
        ),
    ] {
        proxy.clear_rules();
        let before = proxy.faults_applied();
        proxy.add_rule(Some("POST"), "/", fault, usize::MAX);
        let err = catalog.list_images(REPO).await.unwrap_err();
        assert!(
            matches!(&err, CatalogError::Api { operation: "DescribeImages", kind: k, .. } if *k == kind),
            "{kind}: {err:?}"
        );
        assert_eq!(
            JanitorError::from(err).is_retryable(),
            kind.is_retryable(),
            "{kind}"
        );
        assert_eq!(
            proxy.faults_applied() - before,
            requests as usize,
            "{kind}: requests that reached the proxy"
        );
    }
    proxy.clear_rules();
    assert!(catalog.list_images(REPO).await.unwrap().is_empty());
}
