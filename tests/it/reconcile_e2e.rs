//! Issue 22 end to end: the scheduled reconciler, the work queues and the functions that
//! drain them, through the product's own entry points (`afterpush invoke reconciler`,
//! `afterpush invoke soci-indexer|manifest-stitcher` on Lambda's SQS event, `afterpush
//! reconcile --redrive`), against moto's ECR, S3 and SQS and the real registry.
//!
//! Three repositories (`alpha`, `beta`, `gamma`, 56 tags) hold images already indexed
//! with the current span size, images not indexed, one indexed with a stale span size,
//! one with only layers under the minimum size, a multi-arch index, an unstitched
//! per-arch group (`x-amd64`, `x-arm64`) and tags the filters leave out.
//!
//! Where things live: the registry holds every blob and takes every write (the functions
//! reach it through `AFTERPUSH_REGISTRY_ENDPOINT`, via a fault proxy that also counts
//! the writes). moto's ECR holds no blobs: it answers ECR's API, through which the
//! reconciler lists repositories, tags and manifests. The indexer and stitcher write to
//! the real registry only, so the test mirrors the registry into moto's ECR
//! (`support::ecr_mirror`) after each drive, as ECR itself would show the pushes, and
//! the next survey sees them.
//!
//! moto's ECR differs from ECR in what DescribeImages reports: no `artifactMediaType`
//! and no `subjectManifestDigest`. No moto correction is needed for this test: with SOCI
//! v2 (the default) the survey finds indexes by their `-soci` tags and never asks for
//! referrers, and where a survey does (v1), the ECR listing falls back to the registry
//! when no image reports a subject (src/reconcile/ecr_listing.rs). PutImage without a
//! tag (index children, SOCI index manifests) moto accepts as ECR does, and the image
//! digests are sha256 of the bytes (moto correction 1).
//!
//! The run: a dry run reports the work and sends nothing; an enqueue run reports it and
//! sends exactly it (indexer: the missing and stale images; stitcher: the group); the
//! queues are driven as Lambda's event source mapping does (receive, hand the records
//! over as Lambda's SQS event, delete what `batchItemFailures` does not name), the first
//! drive with `alpha`'s blob uploads refused, so its records stay in the queue and the
//! next drive finishes them; every index is written once; the next reconcile finds
//! nothing and sends nothing. Then an image whose layer is corrupt: its message fails on
//! every receive, lands in the dead-letter queue after maxReceiveCount (2) receives, and
//! `afterpush reconcile --redrive` lists it and moves it back.

use crate::reconcile::{index, platform, spec, SPAN, STALE_SPAN};
use crate::support;

use afterpush::oci::{media, Sha256Digest};
use afterpush::registry::{push_bytes, Manifest, Repository};
use afterpush::sample;
use serde_json::{json, Value};
use support::ecr_mirror::mirror_repository;
use support::fault_proxy::Fault;
use support::work_stack::{connect, label, WorkStack};
use support::{TestMoto, TestRegistry};

const REPOSITORIES: [&str; 3] = ["alpha", "beta", "gamma"];
/// Version tags and the `x` group; `dev-*` is left out.
const FILTERS: &str = "*:[0-9]*,*:x*";
/// The functions' settings: SPAN, MIN_LAYER (those of tests/it/reconcile.rs, whose
/// helpers write and index the images here) and FILTERS.
const SETTINGS: [(&str, &str); 3] = [
    ("SPAN_SIZE", "64KiB"),
    ("MIN_LAYER_SIZE", "32KiB"),
    ("REPOSITORY_TAG_FILTERS", FILTERS),
];

/// Writes the scenario of one repository (`n` its position, for distinct seeds):
/// - every repository: `1.<i>` indexed, `2.<i>` not indexed, `dev-1` filtered out;
/// - `alpha`: `3.0` indexed with the stale span size, `4.0` with only a small layer;
/// - `beta`: `x-amd64`, `x-arm64`, a per-arch group neither stitched nor indexed;
/// - `gamma`: `5.0`, a multi-arch index with attestations, not indexed.
async fn write_repository(repo: &dyn Repository, n: u64) {
    let big = [3000, 400_000];
    let amd64 = platform("linux/amd64");
    let (indexed, unindexed) = [(8, 4), (6, 3), (5, 2)][n as usize];
    let seed = |i: u64| n * 1000 + i;
    for i in 0..indexed {
        let tag = format!("1.{i}");
        sample::write_image(repo, &spec(seed(i), &big), &amd64, Some(&tag))
            .await
            .unwrap();
        index(repo, &tag, SPAN).await;
    }
    for i in 0..unindexed {
        sample::write_image(
            repo,
            &spec(seed(100 + i), &big),
            &amd64,
            Some(&format!("2.{i}")),
        )
        .await
        .unwrap();
    }
    sample::write_image(repo, &spec(seed(200), &big), &amd64, Some("dev-1"))
        .await
        .unwrap();
    match n {
        0 => {
            sample::write_image(repo, &spec(seed(300), &big), &amd64, Some("3.0"))
                .await
                .unwrap();
            index(repo, "3.0", STALE_SPAN).await;
            sample::write_image(repo, &spec(seed(400), &[3000]), &amd64, Some("4.0"))
                .await
                .unwrap();
        }
        1 => {
            for p in ["linux/amd64", "linux/arm64"] {
                let p = platform(p);
                let tag = format!("x-{}", p.arch_suffix());
                sample::write_image(repo, &spec(seed(500), &big), &p, Some(&tag))
                    .await
                    .unwrap();
            }
        }
        _ => {
            sample::write_multi_arch(repo, &spec(seed(600), &big), Some("5.0"))
                .await
                .unwrap();
        }
    }
}

/// The index work the first survey finds, as `repository:tag`.
const INDEX_WORK: [&str; 13] = [
    "alpha:2.0",
    "alpha:2.1",
    "alpha:2.2",
    "alpha:2.3",
    "alpha:3.0",
    "beta:2.0",
    "beta:2.1",
    "beta:2.2",
    "beta:x-amd64",
    "beta:x-arm64",
    "gamma:2.0",
    "gamma:2.1",
    "gamma:5.0",
];

/// `(repository, images, stitches)` of each report line.
fn report_lines(report: &Value) -> Vec<(String, u64, u64)> {
    report["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["repository"].as_str().unwrap().to_string(),
                r["totals"]["images"].as_u64().unwrap(),
                r["totals"]["stitches"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn check_first_report(report: &Value) {
    assert_eq!(report["repositories-listed"], 3, "{report:#}");
    assert_eq!(report["repositories-surveyed"], 3, "{report:#}");
    assert_eq!(report["complete"], true, "{report:#}");
    // 13 images to index and one stitch (followed by the index of `x`).
    assert_eq!(report["work-found"], 14, "{report:#}");
    assert_eq!(report["totals"]["images"], 14, "{report:#}");
    assert_eq!(report["totals"]["stitches"], 1, "{report:#}");
    assert_eq!(
        report_lines(report),
        [
            ("alpha".to_string(), 5, 0),
            ("beta".to_string(), 6, 1),
            ("gamma".to_string(), 3, 0)
        ]
    );
    // alpha: 8 indexed + 4.0; beta: 6; gamma: 5.
    assert_eq!(report["already-done"], 20, "{report:#}");
    assert_eq!(
        report["failures"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    assert_eq!(
        report["problems"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
}

#[tokio::test]
async fn the_scheduled_reconciler_fans_out_and_the_functions_converge_the_registry() {
    let stack = WorkStack::start(&REPOSITORIES, &SETTINGS).await;
    for (n, name) in REPOSITORIES.iter().enumerate() {
        write_repository(&stack.repo(name), n as u64).await;
    }
    stack.mirror().await;
    let tags: usize = {
        let mut total = 0;
        for name in REPOSITORIES {
            total += stack.repo(name).list_tags().await.unwrap().len();
        }
        total
    };
    assert_eq!(tags, 56);

    // Dry: the work is reported, nothing is sent.
    let seen_before = stack.proxy.seen().len();
    let dry = stack.reconcile("dry", "run-dry");
    assert_eq!(dry["mode"], "dry", "{dry:#}");
    let report = &dry["report"];
    check_first_report(report);
    // Tags and manifests came from ECR's API (moto); of the registry the survey read
    // only blobs (the images' configs).
    let registry_reads: Vec<String> = stack.proxy.seen()[seen_before..]
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert!(!registry_reads.is_empty());
    assert!(
        registry_reads
            .iter()
            .all(|r| r.starts_with("GET ") && r.contains("/blobs/sha256:")),
        "{registry_reads:#?}"
    );
    assert_eq!(
        stack.cursor().await,
        json!({"start-after": null}),
        "a complete run: the next one starts from the first repository"
    );
    assert!(report.get("enqueued").is_none(), "{report:#}");
    assert_eq!(stack.stored_report(&dry).await, *report);
    assert_eq!(stack.counts(&stack.indexer_queue).await, (0, 0));
    assert_eq!(stack.counts(&stack.stitcher_queue).await, (0, 0));

    // Enqueue: the same work, sent.
    let first = stack.reconcile("enqueue", "run-1");
    let report = &first["report"];
    check_first_report(report);
    assert_eq!(stack.stored_report(&first).await, *report);
    let enqueued = &report["enqueued"];
    assert_eq!(enqueued["sent"]["indexer"], 13, "{enqueued:#}");
    assert_eq!(enqueued["sent"]["stitcher"], 1, "{enqueued:#}");
    // The index of `x` follows the stitch: no message of its own.
    assert_eq!(
        enqueued["repositories"][1]["repository"], "beta",
        "{enqueued:#}"
    );
    assert_eq!(
        enqueued["repositories"][1]["after_stitch"], 1,
        "{enqueued:#}"
    );
    assert_eq!(stack.counts(&stack.indexer_queue).await, (13, 0));
    assert_eq!(stack.counts(&stack.stitcher_queue).await, (1, 0));

    // The first drive, with every blob upload to `alpha` refused: beta's and gamma's
    // images are indexed, alpha's records fail (after the first, the rest of alpha's
    // group is not started, as FIFO order asks) and stay in the queue.
    stack.proxy.add_rule(
        Some("POST"),
        "/v2/alpha/blobs/uploads",
        Fault::Status(500),
        10_000,
    );
    let first_drive = stack
        .drive(&stack.indexer_queue, "soci-indexer", "IndexerWork.fifo")
        .await;
    assert_eq!(
        first_drive.handled,
        INDEX_WORK[5..],
        "{:#?}",
        first_drive.outcomes
    );
    // alpha's five messages come in one batch: the first fails, the rest of its group
    // is not started, as FIFO order asks.
    assert_eq!(first_drive.failed, INDEX_WORK[..5], "{first_drive:#?}");
    let status_of = |status: &str| -> Vec<&Value> {
        first_drive
            .outcomes
            .iter()
            .filter(|o| o["status"] == status)
            .collect()
    };
    let failed = status_of("failed");
    assert_eq!(failed.len(), 1, "{first_drive:#?}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("fault proxy injected HTTP 500"),
        "{first_drive:#?}"
    );
    for waiting in status_of("not-started") {
        assert!(
            waiting["reason"]
                .as_str()
                .unwrap()
                .contains("FIFO message group \"alpha\""),
            "{waiting:#}"
        );
    }
    assert_eq!(status_of("not-started").len(), 4, "{first_drive:#?}");
    let stitch = stack
        .drive(
            &stack.stitcher_queue,
            "manifest-stitcher",
            "StitcherWork.fifo",
        )
        .await;
    assert_eq!(stitch.handled, ["beta:x-amd64"], "{stitch:#?}");
    assert!(stitch.failed.is_empty(), "{stitch:#?}");
    // In AWS the stitched index's push raises ECR's push event, which reaches the
    // indexer directly; here the indexer is invoked with that event.
    let push = stack.push_event_of("beta", "x").await;
    let indexed_x = stack.invoke("soci-indexer", &push, &[]);
    assert_eq!(indexed_x["outcome"]["tag"], "x-soci", "{indexed_x:#}");
    stack.mirror().await;
    stack.proxy.clear_rules();
    assert_eq!(stack.counts(&stack.indexer_queue).await, (5, 0));

    // The next drive finishes alpha's images.
    let second_drive = stack
        .drive(&stack.indexer_queue, "soci-indexer", "IndexerWork.fifo")
        .await;
    assert_eq!(
        second_drive.handled,
        INDEX_WORK[..5],
        "{:#?}",
        second_drive.outcomes
    );
    assert!(second_drive.failed.is_empty(), "{second_drive:#?}");
    stack.mirror().await;
    assert_eq!(stack.counts(&stack.indexer_queue).await, (0, 0));
    assert_eq!(stack.counts(&stack.stitcher_queue).await, (0, 0));
    assert_eq!(stack.counts(&stack.dead_letters).await, (0, 0));

    // Every index written once, the current ones not rewritten.
    for work in INDEX_WORK.iter().copied().chain(["beta:x"]) {
        let (repository, tag) = work.split_once(':').unwrap();
        let path = format!("/{repository}/manifests/{tag}-soci");
        assert_eq!(
            stack.written(&path),
            1,
            "{path} written {} times",
            stack.written(&path)
        );
    }
    assert_eq!(stack.written("/beta/manifests/x"), 1);
    for (repository, indexed) in [("alpha", 8), ("beta", 6), ("gamma", 5)] {
        for i in 0..indexed {
            let path = format!("/{repository}/manifests/1.{i}-soci");
            assert_eq!(stack.written(&path), 0, "{path} rewritten");
        }
    }

    // The next reconcile finds nothing and sends nothing.
    let second = stack.reconcile("enqueue", "run-2");
    let report = &second["report"];
    assert_eq!(report["work-found"], 0, "{report:#}");
    assert_eq!(report["enqueued"]["messages"], 0, "{report:#}");
    // alpha 14 (13 indexed, 4.0 with nothing to index); beta 13 (x-amd64, x-arm64
    // and x among the 12 indexed, and the group stitched); gamma 8.
    assert_eq!(report["already-done"], 35, "{report:#}");
    assert_eq!(stack.stored_report(&second).await, *report);
    assert_eq!(stack.counts(&stack.indexer_queue).await, (0, 0));
    assert_eq!(stack.counts(&stack.stitcher_queue).await, (0, 0));

    poison_lands_in_the_dead_letter_queue_and_is_redriven(&stack).await;
}

/// An image whose large layer is not the gzip its media type says: the indexer fails on
/// it every time.
async fn write_corrupt_image(repo: &dyn Repository, tag: &str) -> Manifest {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
    let layer = support::pseudo_random(200_000, 77);
    let config_digest = push_bytes(repo, config.to_vec().into()).await.unwrap();
    let layer_digest = push_bytes(repo, layer.clone().into()).await.unwrap();
    let bytes = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": media::OCI_LAYER_GZIP, "digest": layer_digest.to_string(), "size": layer.len()}],
    })
    .to_string();
    let manifest = Manifest::new(media::OCI_MANIFEST, bytes.into_bytes());
    repo.put_manifest(&manifest, Some(tag)).await.unwrap();
    manifest
}

/// A message the indexer fails on every time (an image with a corrupt layer, enqueued by
/// the reconciler) ends in the dead-letter queue after maxReceiveCount receives, and
/// `afterpush reconcile --redrive` lists it and moves it back to the indexer's queue.
async fn poison_lands_in_the_dead_letter_queue_and_is_redriven(stack: &WorkStack) {
    let poison = write_corrupt_image(&stack.repo("gamma"), "6.0").await;
    stack.mirror().await;
    let run = stack.reconcile("enqueue", "run-3");
    assert_eq!(run["report"]["enqueued"]["sent"]["indexer"], 1, "{run:#}");
    assert_eq!(stack.counts(&stack.indexer_queue).await, (1, 0));

    // Fails on its first and second receive; the third finds it past maxReceiveCount
    // and the queue moves it to the dead-letter queue.
    for _ in 0..2 {
        let drive = stack
            .drive(&stack.indexer_queue, "soci-indexer", "IndexerWork.fifo")
            .await;
        assert!(drive.handled.is_empty(), "{drive:#?}");
        assert_eq!(drive.failed, ["gamma:6.0"], "{drive:#?}");
        let error = drive.outcomes[0]["error"].as_str().unwrap_or_default();
        assert!(error.contains("corrupt gzip data"), "{drive:#?}");
    }
    assert!(stack.receive(&stack.indexer_queue, 0).await.is_empty());
    assert_eq!(stack.counts(&stack.indexer_queue).await, (0, 0));
    assert_eq!(stack.counts(&stack.dead_letters).await, (1, 0));

    let (ok, stdout, stderr) = stack.cli(&["reconcile", "--redrive", "--json"], &[]);
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let messages = listed["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{listed:#}");
    assert_eq!(messages[0]["outcome"], "listed");
    assert_eq!(messages[0]["target"], "indexer");
    assert_eq!(messages[0]["group_id"], "gamma");
    assert!(
        messages[0]["receive_count"].as_u64().unwrap() >= 2,
        "{listed:#}"
    );
    assert_eq!(
        messages[0]["summary"],
        format!("gamma:6.0@{}", poison.digest)
    );

    let (ok, stdout, stderr) = stack.cli(&["reconcile", "--redrive", "--yes"], &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("moved 1 back, 0 left"), "{stdout}");
    assert_eq!(stack.counts(&stack.dead_letters).await, (0, 0));
    let back = stack.receive(&stack.indexer_queue, 300).await;
    assert_eq!(back.iter().map(label).collect::<Vec<_>>(), ["gamma:6.0"]);
}

/// `support::ecr_mirror`, which the test above depends on: every manifest the
/// registry's tags reach is in moto's ECR with its exact bytes, media type and tags
/// (index children and SOCI index manifests untagged); a second pass puts nothing; a
/// tag the registry moved moves in ECR too, its old image kept untagged.
#[tokio::test]
async fn the_mirror_puts_every_manifest_with_its_bytes_media_type_and_tags() {
    let registry = TestRegistry::shared();
    let moto = TestMoto::shared();
    let ecr = moto.ecr().await;
    let name = "e2e-mirror/app";
    let repo = connect(&registry.host(), name);
    let big = [3000, 400_000];
    let image = sample::write_image(&repo, &spec(1, &big), &platform("linux/amd64"), Some("1"))
        .await
        .unwrap();
    index(&repo, "1", SPAN).await;
    let multi = sample::write_multi_arch(&repo, &spec(2, &big), Some("2"))
        .await
        .unwrap();

    let first = mirror_repository(&repo, &ecr, name).await;
    // `1`, `1-soci`, `2`; untagged: the rewritten image and the SOCI index manifest
    // `1-soci` names, and the index's platform manifests and attestations.
    assert_eq!(first.tagged, 3, "{first:?}");
    let children: Vec<&Sha256Digest> = multi
        .images
        .iter()
        .map(|i| &i.manifest.digest)
        .chain(multi.attestations.iter().map(|a| &a.digest))
        .collect();
    assert_eq!(first.untagged, 2 + children.len(), "{first:?}");
    let in_ecr = support::ecr_image_digests(&ecr, name).await;
    assert_eq!(in_ecr.len(), 3 + 2 + children.len(), "{in_ecr:?}");
    for child in children {
        assert!(in_ecr.contains(&child.to_string()), "{child}");
    }
    for tag in ["1", "1-soci", "2"] {
        let held = repo.get_manifest(tag).await.unwrap();
        let got = ecr
            .batch_get_image()
            .repository_name(name)
            .image_ids(
                aws_sdk_ecr::types::ImageIdentifier::builder()
                    .image_tag(tag)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let got = &got.images()[0];
        assert_eq!(
            got.image_manifest().unwrap().as_bytes(),
            &held.bytes[..],
            "{tag}"
        );
        assert_eq!(
            got.image_manifest_media_type(),
            Some(held.media_type.as_str())
        );
        assert_eq!(
            got.image_id().unwrap().image_digest(),
            Some(held.digest.to_string().as_str())
        );
    }

    assert_eq!(
        mirror_repository(&repo, &ecr, name).await,
        Default::default(),
        "a second pass put something"
    );

    // `1` moves onto another image.
    let moved = sample::write_image(&repo, &spec(3, &big), &platform("linux/amd64"), Some("1"))
        .await
        .unwrap();
    let again = mirror_repository(&repo, &ecr, name).await;
    assert_eq!((again.tagged, again.untagged), (1, 0), "{again:?}");
    let details = ecr
        .describe_images()
        .repository_name(name)
        .send()
        .await
        .unwrap();
    let tags_of = |digest: &Sha256Digest| -> Vec<String> {
        details
            .image_details()
            .iter()
            .find(|d| d.image_digest() == Some(digest.to_string().as_str()))
            .unwrap_or_else(|| panic!("{digest} not in ECR"))
            .image_tags()
            .to_vec()
    };
    assert_eq!(tags_of(&moved.manifest.digest), ["1"]);
    assert!(tags_of(&image.manifest.digest).is_empty());
}
