//! Surveys a synthetic ECR registry of 1,000 repositories × 100 images (100,000
//! images) through ECR's API, and prints the ECR calls made, the work found and the
//! wall time, against a registry ten times smaller measured in the same run.
//!
//! The survey code is the product's (`survey_ecr_registry`, `EcrApiRepository`, the
//! survey and the handlers' decisions); only ECR's API is in memory (`MemoryEcr`:
//! DescribeImages pages of 1000, BatchGetImage ≤ 100 ids, `artifactMediaType` and
//! `subjectManifestDigest` reported as ECR does), and the blob store is an OCI layout
//! holding the two image configs every image names, behind a wrapper that counts the
//! blob reads (through a registry, one request each).
//!
//! Each repository holds 90 single-platform images (`v0`..`v89`; one in nine, ten in
//! all, with a current SOCI v2 index `v<n>-soci`) and five per-arch groups
//! (`g<n>-amd64`, `g<n>-arm64`, not stitched): 100 images, 110 tags, 120 manifests.
//!
//! Peak RSS: run the bench binary under `/usr/bin/time -v` (docs/benchmarks.md).
//!
//! Run: `cargo bench --bench reconcile_survey`.

use afterpush::catalog::ecr::{CountingEcr, MemoryEcr};
use afterpush::filters::RepositoryTagFilters;
use afterpush::oci::Sha256Digest;
use afterpush::queue::MemoryQueue;
use afterpush::reconcile::ecr_fixtures::{
    detail_of, image_manifest, push_configs, soci_v2_output, Reports,
};
use afterpush::reconcile::registry_survey::{RegistrySurveyOptions, DEFAULT_CONCURRENCY};
use afterpush::reconcile::{
    fan_out, survey_ecr_registry, EcrCalls, EventOrigin, ReconcileSettings, WorkKind,
};
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::{BlobRef, BlobStream, Manifest, Repository};
use afterpush::soci::SociSettings;
use afterpush::stitch::StitchSettings;
use async_trait::async_trait;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const IMAGES_PER_REPOSITORY: usize = 100;
const SINGLE_IMAGES: usize = 90;
const GROUPS: usize = 5;
/// ECR's documented default rate quota for BatchGetImage, per second and Region.
const BATCH_GET_IMAGE_PER_SECOND: f64 = 2_000.0;
/// A 15-minute invocation less the default deadline margin of 30 s.
const INVOCATION_SECONDS: f64 = 870.0;

/// The blob store of every repository, counting blob reads.
#[derive(Debug)]
struct CountingBlobs {
    inner: LayoutRepository,
    blob_reads: AtomicUsize,
}

#[async_trait]
impl Repository for CountingBlobs {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn resolve(&self, reference: &str) -> afterpush::registry::Result<BlobRef> {
        self.inner.resolve(reference).await
    }
    async fn get_manifest(&self, reference: &str) -> afterpush::registry::Result<Manifest> {
        self.inner.get_manifest(reference).await
    }
    async fn put_manifest(
        &self,
        manifest: &Manifest,
        tag: Option<&str>,
    ) -> afterpush::registry::Result<()> {
        self.inner.put_manifest(manifest, tag).await
    }
    async fn delete_manifest(&self, digest: &Sha256Digest) -> afterpush::registry::Result<()> {
        self.inner.delete_manifest(digest).await
    }
    async fn blob_size(&self, digest: &Sha256Digest) -> afterpush::registry::Result<Option<u64>> {
        self.inner.blob_size(digest).await
    }
    async fn get_blob(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> afterpush::registry::Result<BlobStream> {
        self.blob_reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get_blob(digest, range).await
    }
    async fn push_blob(
        &self,
        digest: &Sha256Digest,
        size: u64,
        data: BlobStream,
    ) -> afterpush::registry::Result<()> {
        self.inner.push_blob(digest, size, data).await
    }
    async fn list_tags(&self) -> afterpush::registry::Result<Vec<String>> {
        self.inner.list_tags().await
    }
    async fn referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> afterpush::registry::Result<Vec<afterpush::oci::DescriptorSummary>> {
        self.inner.referrers(digest, artifact_type).await
    }
}

struct Run {
    repositories: usize,
    images: usize,
    calls: EcrCalls,
    counted: (usize, usize, usize),
    blob_reads: usize,
    index_work: usize,
    stitch_work: usize,
    indexed: usize,
    failures: usize,
    seconds: f64,
    /// Messages the work makes, SendMessageBatch calls to send them, and the time taken,
    /// into the in-memory queue (the calls, not SQS's latency).
    messages: usize,
    send_batch_calls: u64,
    send_seconds: f64,
}

async fn run(repositories: usize, settings: &ReconcileSettings) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let layout = LayoutRepository::open_or_create(dir.path().join("blobs")).unwrap();
    let (amd64, arm64) = push_configs(&layout).await;
    let soci = &settings.soci;
    let layers = [1000, soci.min_layer_size];
    let ecr = MemoryEcr::new();
    let mut images = 0;
    for r in 0..repositories {
        let name = format!("team{}/app{r:04}", r % 10);
        let put = |tags: Vec<String>, m: &Manifest| {
            ecr.put(
                &name,
                detail_of(&tags, &m.bytes, Reports::Ecr),
                m.bytes.to_vec(),
            );
        };
        for i in 0..SINGLE_IMAGES {
            let image = image_manifest(&format!("{name} {i}"), &amd64, &layers);
            put(vec![format!("v{i}")], &image);
            if i % 9 == 0 {
                let (index, output) =
                    soci_v2_output(&image, "amd64", soci.span_size, soci.min_layer_size);
                put(vec![], &index);
                put(vec![format!("v{i}{}", soci.tag_suffix)], &output);
            }
            images += 1;
        }
        for g in 0..GROUPS {
            for (arch, config) in [("amd64", &amd64), ("arm64", &arm64)] {
                let image = image_manifest(&format!("{name} g{g} {arch}"), config, &layers);
                put(vec![format!("g{g}-{arch}")], &image);
                images += 1;
            }
        }
    }
    assert_eq!(images, repositories * IMAGES_PER_REPOSITORY);
    let api = Arc::new(CountingEcr::new(ecr));
    let blobs = Arc::new(CountingBlobs {
        inner: layout,
        blob_reads: AtomicUsize::new(0),
    });
    let store = blobs.clone();
    let open = move |_: &str| Ok(store.clone() as Arc<dyn Repository>);
    let origin = EventOrigin {
        account: Some("123456789012".into()),
        region: Some("us-east-1".into()),
    };
    let started = Instant::now();
    let out = survey_ecr_registry(
        api.clone(),
        &open,
        &origin,
        settings,
        &RegistrySurveyOptions::default(),
    )
    .await
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(out.complete);
    let queue = MemoryQueue::new();
    let sending = Instant::now();
    let sent = fan_out::enqueue(&queue, &out.surveys, settings)
        .await
        .unwrap();
    let send_seconds = sending.elapsed().as_secs_f64();
    assert_eq!(sent.batch_calls, queue.send_batch_calls());
    let work = out.surveys.iter().flat_map(|s| &s.work);
    let count = |kind| work.clone().filter(|w| w.kind == kind).count();
    let counts = &api.counts;
    Run {
        repositories,
        images,
        calls: out.calls,
        counted: (
            counts.describe_repositories.load(Ordering::Relaxed),
            counts.describe_images.load(Ordering::Relaxed),
            counts.batch_get_image.load(Ordering::Relaxed),
        ),
        blob_reads: blobs.blob_reads.load(Ordering::Relaxed),
        index_work: count(WorkKind::Index),
        stitch_work: count(WorkKind::Stitch),
        indexed: out.surveys.iter().map(|s| s.indexed).sum(),
        failures: out.failures.len(),
        seconds,
        messages: sent.total_sent(),
        send_batch_calls: sent.batch_calls,
        send_seconds,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a benchmark has no place in the test suite's time.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run with `cargo bench --bench reconcile_survey`");
        return;
    }
    let settings = ReconcileSettings::new(
        SociSettings::default(),
        StitchSettings::default(),
        RepositoryTagFilters::default(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = rt.block_on(run(100, &settings));
    let big = rt.block_on(run(1_000, &settings));
    for r in [&base, &big] {
        let c = &r.calls;
        assert_eq!(
            (
                c.describe_repositories,
                c.describe_images,
                c.batch_get_image
            ),
            r.counted,
            "the survey's own counts are the calls that reached ECR"
        );
        println!(
            "{:>5} repositories, {:>6} images: DescribeRepositories {}, DescribeImages {}, BatchGetImage {} ({:.1} images per call) | survey reads answered {} (distribution API: >= 1 request each, x{:.1} the ECR calls) | config blob reads {} | work: {} index, {} stitch; {} already indexed; {} failed repositories | {:.2} s",
            r.repositories,
            r.images,
            c.describe_repositories,
            c.describe_images,
            c.batch_get_image,
            r.images as f64 / c.batch_get_image as f64,
            c.reads,
            c.reads as f64 / (c.describe_images + c.batch_get_image) as f64,
            r.blob_reads,
            r.index_work,
            r.stitch_work,
            r.indexed,
            r.failures,
            r.seconds,
        );
        println!(
            "{:>5} repositories: {} messages in {} SendMessageBatch calls ({:.1} per call), {:.2} s into the in-memory queue",
            r.repositories,
            r.messages,
            r.send_batch_calls,
            r.messages as f64 / r.send_batch_calls.max(1) as f64,
            r.send_seconds,
        );
    }
    println!(
        "1,000 vs 100 repositories: wall time x{:.1}, BatchGetImage x{:.1}, DescribeImages x{:.1} (linear would be x10)",
        big.seconds / base.seconds,
        big.calls.batch_get_image as f64 / base.calls.batch_get_image as f64,
        big.calls.describe_images as f64 / base.calls.describe_images as f64,
    );
    let quota_seconds = big.calls.batch_get_image as f64 / BATCH_GET_IMAGE_PER_SECOND;
    let sequential = (big.calls.describe_images + big.calls.batch_get_image + big.blob_reads)
        .div_ceil(DEFAULT_CONCURRENCY);
    println!(
        "100,000 images: {:.2} s in process + {quota_seconds:.2} s of BatchGetImage at ECR's 2,000/s quota = {} invocation(s) of {INVOCATION_SECONDS} s; \
         requests in sequence at concurrency {DEFAULT_CONCURRENCY}: {sequential} (ECR calls + blob reads), so one invocation holds them up to {:.1} ms of latency each",
        big.seconds,
        ((big.seconds + quota_seconds) / INVOCATION_SECONDS).ceil(),
        INVOCATION_SECONDS * 1000.0 / sequential as f64,
    );
}
