//! Plans (and applies, in memory) a synthetic 10,000-image ECR repository and prints the
//! ECR calls made and the wall time, against a 1,000-image baseline measured in the
//! same run. The in-memory ECR behaves like the real one where it counts here (pages of
//! 1000, ≤ 100 ids per batch call, `artifactMediaType` and `subjectManifestDigest`
//! returned), which moto does not.
//!
//! Run: `cargo bench --bench cleanup_plan` (or `cargo test --bench cleanup_plan` for a
//! quick debug run).

use afterpush::catalog::ecr::{CountingEcr, EcrCatalog, ImageDetail, MemoryEcr};
use afterpush::catalog::Catalog;
use afterpush::cleanup::executor::execute;
use afterpush::cleanup::planner::{plan, Snapshot};
use afterpush::cleanup::policy::Policy;
use afterpush::oci::{media, Sha256Digest};
use chrono::{Duration, Utc};
use std::sync::atomic::Ordering;
use std::time::Instant;

const POLICY: &str = r#"
repositories: ["*"]
grace_period: 1h
rules:
  - {name: keep-main-cache, select: {tags: ["cache-main"]}, action: keep}
  - {name: stale-cache, select: {kind: buildkit-cache, untagged: true}, action: expire}
  - {name: branch-caches, select: {kind: buildkit-cache, tags: ["cache-*"]}, action: expire, when: {unused_for: 14d}}
  - {name: old-untagged, select: {untagged: true}, action: expire, when: {older_than: 7d}}
"#;

fn manifest(seed: &str, config: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{config}","digest":"{}","size":2}},"layers":[]{extra}}}"#,
        media::OCI_MANIFEST,
        Sha256Digest::of(seed.as_bytes())
    )
    .into_bytes()
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
    let catalog = EcrCatalog::new(CountingEcr::new(memory));
    let policy = Policy::parse(POLICY).unwrap();
    let t = Instant::now();
    let images = catalog.list_images("app").await.unwrap();
    let list_ms = t.elapsed().as_secs_f64() * 1e3;
    let snapshot = Snapshot {
        repository: "app".into(),
        images,
    };
    let t = Instant::now();
    let p = plan(&snapshot, &policy, Utc::now());
    let plan_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let report = execute(&catalog, &p, false).await;
    let apply_ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(report.failed.is_empty(), "{:?}", report.failed.first());
    let counts = &catalog.api().counts;
    Run {
        images: snapshot.images.len(),
        deleted: report.deleted.len(),
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
            "{:>6} images: {:>5} deleted | listing calls {:>3} (BatchGetImage {}) | delete calls {:>3} (ceil(deleted/100) = {}) | list {:.1} ms, plan {:.1} ms, apply {:.1} ms",
            r.images, r.deleted, r.listing_calls, r.get_calls, r.delete_calls, r.deleted.div_ceil(100), r.list_ms, r.plan_ms, r.apply_ms
        );
    }
    println!(
        "10,000 vs 1,000 images: plan time x{:.1}, list time x{:.1} (linear would be x10)",
        big.plan_ms / base.plan_ms,
        big.list_ms / base.list_ms
    );
    println!(
        "target: listing calls <= 11: {}; delete calls = ceil(deleted/100): {} ({} vs {})",
        if big.listing_calls <= 11 {
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
