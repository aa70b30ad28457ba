//! Plans (and applies, in memory) a synthetic 10,000-image ECR repository and prints the
//! ECR calls made and the wall time, against a 1,000-image baseline measured in the
//! same run. The in-memory ECR behaves like the real one where it counts here (pages of
//! 1000, ≤ 100 ids per batch call, `artifactMediaType` and `subjectManifestDigest`
//! returned), which moto does not.
//!
//! The in-use listing runs first, as in every janitor run, against in-memory ECS and
//! Lambda with their real page and batch limits (ListClusters/ListServices/ListTasks/
//! ListTaskDefinitions 100, DescribeServices 10, DescribeTasks 100, Lambda lists 50) and
//! a busy account's workloads; its calls are counted against the fewest those limits allow.
//!
//! Run: `cargo bench --bench cleanup_plan` (or `cargo test --bench cleanup_plan` for a
//! quick debug run).

use afterpush::catalog::ecr::seeded_manifest as manifest;
use afterpush::catalog::ecr::{CountingEcr, EcrCatalog, ImageDetail, MemoryEcr};
use afterpush::catalog::ecs::{EcsContainer, EcsService, EcsTask, EcsTaskDefinition};
use afterpush::catalog::lambda::{LambdaAlias, LambdaFunction};
use afterpush::catalog::memory_workloads::{MemoryWorkloads, SharedWorkloads};
use afterpush::catalog::Catalog;
use afterpush::cleanup::executor::execute;
use afterpush::cleanup::in_use::{InUse, Workloads};
use afterpush::cleanup::planner::{plan_in_use, Snapshot};
use afterpush::cleanup::policy::Policy;
use afterpush::oci::{media, Sha256Digest};
use chrono::{Duration, Utc};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const ARN: &str = "arn:aws:ecs:us-east-1:123456789012";
const CLUSTERS: usize = 3;
const SERVICES_PER_CLUSTER: usize = 25;
const TASKS_PER_SERVICE: usize = 4;
const FAMILIES: usize = 40;
const REVISIONS_PER_FAMILY: usize = 25;
const FUNCTIONS: usize = 60;
const VERSIONS_PER_FUNCTION: usize = 6;
/// The rollback window the policy keeps (the default).
const KEPT_REVISIONS: usize = 5;

/// The workloads of a busy account.
trait BusyAccount {
    fn busy_account(tagged: &[String], pinned: &[Sha256Digest]) -> Self;
    fn fewest_calls(&self) -> usize;
}

impl BusyAccount for MemoryWorkloads {
    /// The workloads, referring to `tagged` images by tag and `pinned` ones by digest.
    fn busy_account(tagged: &[String], pinned: &[Sha256Digest]) -> Self {
        let mut w = MemoryWorkloads::default();
        let image = |i: usize| format!("{HOST}/app:{}", tagged[i % tagged.len()]);
        for f in 0..FAMILIES {
            for r in 1..=REVISIONS_PER_FAMILY {
                let arn = format!("{ARN}:task-definition/fam{f}:{r}");
                w.task_definitions.insert(
                    arn.clone(),
                    EcsTaskDefinition {
                        arn,
                        containers: vec![
                            ("app".into(), image(f * REVISIONS_PER_FAMILY + r)),
                            ("proxy".into(), "public.ecr.aws/nginx/nginx:1".into()),
                        ],
                    },
                );
            }
        }
        let mut pinned_at = 0;
        for c in 0..CLUSTERS {
            let cluster = format!("{ARN}:cluster/c{c}");
            for s in 0..SERVICES_PER_CLUSTER {
                // Services run their family's latest revision (inside the window).
                let family = (c * SERVICES_PER_CLUSTER + s) % FAMILIES;
                let td = format!("{ARN}:task-definition/fam{family}:{REVISIONS_PER_FAMILY}");
                w.services
                    .entry(cluster.clone())
                    .or_default()
                    .push(EcsService {
                        name: format!("svc{s}"),
                        task_definitions: vec![td.clone()],
                    });
                for t in 0..TASKS_PER_SERVICE {
                    let digest = pinned[pinned_at % pinned.len()].to_string();
                    pinned_at += 1;
                    w.tasks.entry(cluster.clone()).or_default().push(EcsTask {
                        arn: format!("{ARN}:task/c{c}/s{s}t{t}"),
                        task_definition: td.clone(),
                        containers: vec![
                            EcsContainer {
                                name: "app".into(),
                                image: Some(format!("{HOST}/app:gone-tag")),
                                image_digest: Some(digest),
                            },
                            EcsContainer {
                                name: "proxy".into(),
                                image: Some("public.ecr.aws/nginx/nginx:1".into()),
                                image_digest: None,
                            },
                        ],
                    });
                }
            }
            w.clusters.push(cluster);
        }
        for f in 0..FUNCTIONS {
            let name = format!("fn{f}");
            w.functions.push(LambdaFunction {
                name: name.clone(),
                arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
                package_type: Some(if f % 4 == 3 { "Zip" } else { "Image" }.into()),
            });
            let mut versions = vec![("$LATEST".to_string(), image(f))];
            for v in 1..=VERSIONS_PER_FUNCTION {
                let digest = &pinned[(f * VERSIONS_PER_FUNCTION + v) % pinned.len()];
                versions.push((v.to_string(), format!("{HOST}/app@{digest}")));
            }
            w.versions.insert(name.clone(), versions);
            w.aliases.insert(
                name,
                vec![
                    LambdaAlias {
                        name: "live".into(),
                        version: VERSIONS_PER_FUNCTION.to_string(),
                    },
                    LambdaAlias {
                        name: "previous".into(),
                        version: (VERSIONS_PER_FUNCTION - 1).to_string(),
                    },
                ],
            );
        }
        w
    }

    /// The fewest calls ECS's and Lambda's page and batch limits allow for this account:
    /// every list page, every describe batch, one DescribeTaskDefinition per definition
    /// a service runs or the rollback window keeps, one GetFunction per image version.
    fn fewest_calls(&self) -> usize {
        let pages = |n: usize, size: usize| n.div_ceil(size).max(1);
        let mut calls = pages(self.clusters.len(), 100);
        for c in &self.clusters {
            let services = self.services.get(c).map_or(0, Vec::len);
            let tasks = self.tasks.get(c).map_or(0, Vec::len);
            calls += pages(services, 100) + services.div_ceil(10);
            calls += pages(tasks, 100) + tasks.div_ceil(100);
        }
        calls += pages(self.task_definitions.len(), 100);
        let mut described: BTreeSet<&str> = self
            .services
            .values()
            .flatten()
            .flat_map(|s| s.task_definitions.iter().map(String::as_str))
            .collect();
        for f in 0..FAMILIES {
            for r in (REVISIONS_PER_FAMILY + 1 - KEPT_REVISIONS)..=REVISIONS_PER_FAMILY {
                described.insert(
                    self.task_definitions
                        .get_key_value(&format!("{ARN}:task-definition/fam{f}:{r}"))
                        .unwrap()
                        .0
                        .as_str(),
                );
            }
        }
        calls += described.len();
        calls += pages(self.functions.len(), 50);
        for f in self
            .functions
            .iter()
            .filter(|f| f.package_type.as_deref() == Some("Image"))
        {
            let versions = self.versions[&f.name].len();
            calls += pages(versions, 50) + pages(self.aliases[&f.name].len(), 50) + versions;
        }
        calls
    }
}

/// The policy of issue 7 as shipped; the bench lifts its deletion cap (see `policy()`).
const POLICY: &str = include_str!("../infra/policies/ci-caches.yaml");

/// The shipped policy without its cap of 500 deletions: the bench measures a whole
/// clean-up of the repository, as many deletions as the rules ask for.
fn policy() -> Policy {
    Policy {
        max_deletions: None,
        ..Policy::parse(POLICY).unwrap()
    }
}

/// A repository of `n` images with the mix of a busy CI repository (scaled from 10,000):
/// 60 % superseded cache exports, branch caches, tagged images with SOCI v1 indexes and
/// signatures, multi-arch indexes with platform images and attestations.
fn populate(ecr: &MemoryEcr, repo: &str, n: usize) {
    let scale = |k: usize| (k * n / 10_000).max(1);
    let now = Utc::now();
    let push = |detail: ImageDetail, bytes: Vec<u8>| ecr.put(repo, detail, bytes);
    let detail =
        |days: i64, tags: Vec<String>, mt: &str, artifact: &str, subject: Option<String>| {
            ImageDetail {
                digest: String::new(),
                tags,
                pushed_at: Some(now - Duration::days(days)),
                last_pulled_at: None,
                manifest_media_type: Some(mt.to_string()),
                artifact_media_type: Some(artifact.to_string()),
                subject,
                size_bytes: 50_000_000,
            }
        };
    for i in 0..scale(6_000) {
        push(
            detail(
                10 + (i % 50) as i64,
                vec![],
                media::OCI_MANIFEST,
                media::BUILDKIT_CACHE_CONFIG,
                None,
            ),
            manifest(&format!("c{i}"), media::BUILDKIT_CACHE_CONFIG, ""),
        );
    }
    for i in 0..scale(40) {
        let tag = if i == 0 {
            "cache-main".to_string()
        } else {
            format!("cache-branch-{i}")
        };
        push(
            detail(
                (i % 30) as i64,
                vec![tag],
                media::OCI_MANIFEST,
                media::BUILDKIT_CACHE_CONFIG,
                None,
            ),
            manifest(&format!("b{i}"), media::BUILDKIT_CACHE_CONFIG, ""),
        );
    }
    for i in 0..scale(100) {
        // Two platform images and two attestations per index; half the indexes are
        // superseded (untagged).
        let mut entries = Vec::new();
        for k in 0..4 {
            let bytes = manifest(&format!("x{i}-{k}"), media::OCI_CONFIG, "");
            let d = Sha256Digest::of(&bytes);
            entries.push(format!(
                r#"{{"mediaType":"{}","digest":"{d}","size":{}}}"#,
                media::OCI_MANIFEST,
                bytes.len()
            ));
            push(
                detail(20, vec![], media::OCI_MANIFEST, media::OCI_CONFIG, None),
                bytes,
            );
        }
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
            media::OCI_INDEX,
            entries.join(",")
        )
        .into_bytes();
        let tags = if i % 2 == 0 {
            vec![format!("v{i}")]
        } else {
            vec![]
        };
        push(
            detail(20, tags, media::OCI_INDEX, media::OCI_CONFIG, None),
            index,
        );
    }
    let mut i = 0;
    while ecr.len(repo) < n {
        let bytes = manifest(&format!("img{i}"), media::OCI_CONFIG, "");
        let d = Sha256Digest::of(&bytes).to_string();
        push(
            detail(
                30,
                vec![format!("build-{i}")],
                media::OCI_MANIFEST,
                media::OCI_CONFIG,
                None,
            ),
            bytes,
        );
        if i % 5 == 0 && ecr.len(repo) + 2 <= n {
            push(
                detail(
                    30,
                    vec![],
                    media::OCI_MANIFEST,
                    media::SOCI_INDEX_V1,
                    Some(d.clone()),
                ),
                manifest(&format!("soci{i}"), media::SOCI_INDEX_V1, ""),
            );
            push(
                detail(
                    30,
                    vec![],
                    media::OCI_MANIFEST,
                    media::COSIGN_ARTIFACT_SIG,
                    Some(d),
                ),
                manifest(&format!("sig{i}"), media::COSIGN_ARTIFACT_SIG, ""),
            );
        }
        i += 1;
    }
}

struct Run {
    images: usize,
    deleted: usize,
    kept_in_use: usize,
    in_use_calls: usize,
    in_use_fewest: usize,
    in_use_ms: f64,
    listing_calls: usize,
    get_calls: usize,
    delete_calls: usize,
    list_ms: f64,
    plan_ms: f64,
    apply_ms: f64,
}

async fn run(n: usize) -> Run {
    let memory = MemoryEcr::new();
    populate(&memory, "app", n);
    // Running tasks and function versions pin superseded caches (which the policy would
    // delete) by digest; task definitions and $LATEST name tagged builds.
    let pinned: Vec<Sha256Digest> = (0..(n * 6 / 10).clamp(1, 300))
        .map(|i| {
            Sha256Digest::of(&manifest(
                &format!("c{i}"),
                media::BUILDKIT_CACHE_CONFIG,
                "",
            ))
        })
        .collect();
    let tagged: Vec<String> = (0..(n / 100).max(1))
        .map(|i| format!("build-{i}"))
        .collect();
    let workloads = Arc::new(MemoryWorkloads::busy_account(&tagged, &pinned));
    let catalog = EcrCatalog::new(CountingEcr::new(memory)).with_in_use(Workloads::new(
        SharedWorkloads(workloads.clone()),
        SharedWorkloads(workloads.clone()),
    ));
    let policy = policy();
    let t = Instant::now();
    let refs = catalog
        .in_use()
        .unwrap()
        .collect(&policy.protect)
        .await
        .unwrap();
    let in_use = InUse { refs };
    let in_use_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let images = catalog.list_images("app").await.unwrap();
    let list_ms = t.elapsed().as_secs_f64() * 1e3;
    let snapshot = Snapshot {
        repository: "app".into(),
        images,
    };
    let t = Instant::now();
    let protected = in_use.protected("app", &snapshot.images);
    let p = plan_in_use(
        &snapshot,
        &policy,
        Utc::now(),
        policy.max_deletions,
        &protected,
    );
    let plan_ms = t.elapsed().as_secs_f64() * 1e3;
    let kept_in_use = p.kept().filter(|d| !d.in_use.is_empty()).count();
    assert!(
        p.deleted().all(|d| !protected.contains_key(&d.digest)),
        "an image in use is planned for deletion"
    );
    let t = Instant::now();
    let report = execute(&catalog, &p, false, None).await;
    let apply_ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(report.failed.is_empty(), "{:?}", report.failed.first());
    let counts = &catalog.api().counts;
    Run {
        images: snapshot.images.len(),
        deleted: report.deleted.len(),
        kept_in_use,
        in_use_calls: workloads.total_calls(),
        in_use_fewest: workloads.fewest_calls(),
        in_use_ms,
        listing_calls: counts.listing(),
        get_calls: counts.batch_get_image.load(Ordering::Relaxed),
        delete_calls: counts.deletes(),
        list_ms,
        plan_ms,
        apply_ms,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a benchmark has no place in the test suite's time (criterion's convention).
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run with `cargo bench --bench cleanup_plan`");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = rt.block_on(run(1_000));
    let big = rt.block_on(run(10_000));
    for r in [&base, &big] {
        println!(
            "{:>6} images: {:>5} deleted, {} kept in use | listing calls {:>3} (BatchGetImage {}) | delete calls {:>3} (ceil(deleted/100) = {}) | in-use {:.1} ms, list {:.1} ms, plan {:.1} ms, apply {:.1} ms",
            r.images, r.deleted, r.kept_in_use, r.listing_calls, r.get_calls, r.delete_calls, r.deleted.div_ceil(100), r.in_use_ms, r.list_ms, r.plan_ms, r.apply_ms
        );
    }
    println!(
        "in-use listing: {} ECS + Lambda calls (fewest the APIs allow: {}) for {CLUSTERS} clusters, {} services, {} tasks, {} task definitions ({FAMILIES} families), {FUNCTIONS} functions x {} versions",
        big.in_use_calls,
        big.in_use_fewest,
        CLUSTERS * SERVICES_PER_CLUSTER,
        CLUSTERS * SERVICES_PER_CLUSTER * TASKS_PER_SERVICE,
        FAMILIES * REVISIONS_PER_FAMILY,
        VERSIONS_PER_FUNCTION + 1
    );
    println!(
        "10,000 vs 1,000 images: plan time x{:.1}, list time x{:.1} (linear would be x10)",
        big.plan_ms / base.plan_ms,
        big.list_ms / base.list_ms
    );
    println!(
        "target: listing calls <= 11: {}; in-use calls = fewest: {}; delete calls = ceil(deleted/100): {} ({} vs {})",
        if big.listing_calls <= 11 {
            "met"
        } else {
            "MISSED"
        },
        if big.in_use_calls <= big.in_use_fewest {
            "met"
        } else {
            "MISSED"
        },
        if big.delete_calls == big.deleted.div_ceil(100) {
            "met"
        } else {
            "MISSED (waves: indexes before their entries)"
        },
        big.delete_calls,
        big.deleted.div_ceil(100)
    );
}
