//! Drives the real `soci-indexer` binary through the Lambda Runtime API (the local
//! endpoint of `tests/support/runtime_api.rs`), so the real `lambda_runtime` loop runs,
//! against an OCI image layout (`AFTERPUSH_LAYOUT`) seeded with a sample image: no
//! registry and no cloud needed. The package-local placement is explained in
//! `functions/cache-janitor/tests/lambda_runtime.rs`.

#[path = "../../../tests/support/runtime_api.rs"]
mod runtime_api;

use afterpush::oci::Sha256Digest;
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::Repository;
use afterpush::sample::{self, SampleSpec};
use runtime_api::{
    emf_documents, metric_sum, metric_values, sample as sample_event, Function, RuntimeApi,
};
use serde_json::Value;
use std::path::Path;

fn indexer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_soci-indexer"))
}

/// A layout holding one small single-platform image at `tag`; returns its digest.
fn seed_layout(dir: &Path, tag: &str) -> Sha256Digest {
    seed_layers(dir, tag, 1)
}

/// A layout holding a single-platform image of `layers` small layers at `tag`.
fn seed_layers(dir: &Path, tag: &str, layers: usize) -> Sha256Digest {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let repo = LayoutRepository::open_or_create(dir).unwrap();
        let spec = SampleSpec {
            layer_sizes: vec![48 * 1024; layers],
            attestations: false,
            ..SampleSpec::default()
        };
        let image = sample::write_image(&repo, &spec, &spec.platforms[0], Some(tag))
            .await
            .unwrap();
        repo.commit().await.unwrap();
        image.manifest.digest
    })
}

/// `infra/events/<name>` with its `image-digest` replaced.
fn event_for(name: &str, digest: &Sha256Digest) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&sample_event(name)).unwrap();
    event["detail"]["image-digest"] = digest.to_string().into();
    serde_json::to_vec(&event).unwrap()
}

#[test]
fn an_image_push_gets_a_soci_index_through_the_runtime_loop() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let source = seed_layers(&layout, "1.2.3", 3);
    let api = RuntimeApi::start(event_for("push-image-tag.json", &source));
    let mut function = Function::start(
        indexer(),
        "soci-indexer",
        &api,
        &[
            ("AFTERPUSH_LAYOUT", layout.to_str().unwrap()),
            ("MIN_LAYER_SIZE", "0"),
        ],
    );
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    assert_eq!(posted.request_id, api.request_id);
    let body = posted.json();
    assert_eq!(body["function"], "soci-indexer", "{body}");
    assert_eq!(body["decision"]["decision"], "work", "{body}");
    let outcome = &body["outcome"];
    assert_eq!(outcome["source"], source.to_string(), "{body}");
    assert_eq!(outcome["tag"], "1.2.3-soci", "{body}");
    assert_eq!(outcome["platforms"][0]["ztocs"], 3, "{body}");
    let log = function.log();
    drop(function);
    // The function committed the layout: the output is there for any later reader.
    let repo = LayoutRepository::open(&layout).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = rt.block_on(repo.get_manifest("1.2.3-soci")).unwrap();
    assert_eq!(outcome["output"], stored.digest.to_string(), "{body}");
    let index: Value = serde_json::from_slice(&stored.bytes).unwrap();
    let soci_index = outcome["platforms"][0]["soci_index"].as_str().unwrap();
    assert!(index.to_string().contains(soci_index), "{index}");
    assert_eq!(rt.block_on(repo.resolve("1.2.3")).unwrap().digest, source);

    // Its metrics, as EMF lines: per image, with the repository of the event (`app`).
    let docs = emf_documents(&log);
    let app = [("Repository", "app")];
    let sum = |name| metric_sum(&docs, "soci-indexer", name, &app);
    assert_eq!(sum("ImagesIndexed"), 1.0, "{log}");
    assert_eq!(sum("LayersIndexed"), 3.0, "{log}");
    assert_eq!(sum("LayersFromCache"), 0.0, "{log}");
    // zTOC bytes: the sizes of the zTOC layers of the SOCI index that was pushed.
    let soci_manifest = rt.block_on(repo.get_manifest(soci_index)).unwrap();
    let soci_manifest: Value = serde_json::from_slice(&soci_manifest.bytes).unwrap();
    let ztoc_sizes: Vec<u64> = soci_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .collect();
    assert_eq!(ztoc_sizes.len(), 3, "{soci_manifest}");
    assert_eq!(
        sum("ZtocBytes"),
        ztoc_sizes.iter().sum::<u64>() as f64,
        "{log}"
    );
    // Bytes read: every byte of the three compressed layers, as the outcome says.
    let image = rt.block_on(repo.get_manifest(&source.to_string())).unwrap();
    let image: Value = serde_json::from_slice(&image.bytes).unwrap();
    let layer_bytes: u64 = image["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(sum("BytesRead"), layer_bytes as f64, "{log}");
    assert_eq!(outcome["bytes_read"], layer_bytes, "{body}");
    let seconds = metric_values(&docs, "soci-indexer", "SecondsPerImage", &app);
    assert_eq!(seconds.len(), 1, "{log}");
    assert!(seconds[0] > 0.0, "{log}");
    let units: Vec<(&str, &str)> = docs
        .iter()
        .flat_map(|d| {
            d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
        })
        .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
        .collect();
    for (name, unit) in [
        ("ImagesIndexed", "Count"),
        ("ZtocBytes", "Bytes"),
        ("BytesRead", "Bytes"),
        ("SecondsPerImage", "Seconds"),
    ] {
        assert!(units.contains(&(name, unit)), "{name} in {units:?}");
    }
    // Nothing was skipped or failed.
    assert!(
        docs.iter()
            .all(|d| d.get("ImagesSkipped").is_none() && d.get("ImagesFailed").is_none()),
        "{log}"
    );

    // The same event again (an async retry): the index is there, a skip by its code.
    let api = RuntimeApi::start(event_for("push-image-tag.json", &source));
    let mut function = Function::start(
        indexer(),
        "soci-indexer",
        &api,
        &[("AFTERPUSH_LAYOUT", layout.to_str().unwrap())],
    );
    let body = function.posted(&api).json();
    assert_eq!(body["outcome"]["skip_code"], "already-indexed", "{body}");
    let docs = emf_documents(&function.log());
    let skipped = [("Reason", "already-indexed")];
    assert_eq!(
        metric_sum(&docs, "soci-indexer", "ImagesSkipped", &skipped),
        1.0
    );
    assert_eq!(
        metric_sum(&docs, "soci-indexer", "ImagesIndexed", &app),
        0.0
    );
}

#[test]
fn our_own_output_is_skipped_and_the_loop_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    seed_layout(&layout, "1.2.3");
    let api = RuntimeApi::start(sample_event("push-soci-suffix-tag.json"));
    let mut function = Function::start(
        indexer(),
        "soci-indexer",
        &api,
        &[("AFTERPUSH_LAYOUT", layout.to_str().unwrap())],
    );
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    let body = posted.json();
    assert_eq!(body["decision"]["code"], "own-output", "{body}");
    // The skip is counted by its code, never with the repository's name.
    let docs = emf_documents(&function.log());
    let skipped = [("Reason", "own-output")];
    assert_eq!(
        metric_sum(&docs, "soci-indexer", "ImagesSkipped", &skipped),
        1.0,
        "{}",
        function.log()
    );
    assert!(
        docs.iter().all(|d| d.get("Repository").is_none()),
        "{docs:?}"
    );
    // After answering, the runtime polls for the next event instead of exiting.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        function.child.try_wait().unwrap().is_none(),
        "the function exited:\n{}",
        function.log()
    );
}

#[test]
fn a_missing_image_is_an_error_naming_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    seed_layout(&layout, "1.2.3");
    let absent = Sha256Digest::of(b"never pushed");
    let api = RuntimeApi::start(event_for("push-image-tag.json", &absent));
    let mut function = Function::start(
        indexer(),
        "soci-indexer",
        &api,
        &[("AFTERPUSH_LAYOUT", layout.to_str().unwrap())],
    );
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "error", "{posted:?}\n{}", function.log());
    assert_eq!(posted.request_id, api.request_id);
    let body = posted.json();
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains(&absent.hex()),
        "{body}"
    );
    assert!(
        ["Retryable", "NonRetryable"].contains(&body["errorType"].as_str().unwrap()),
        "{body}"
    );
    let docs = emf_documents(&function.log());
    let app = [("Repository", "app")];
    assert_eq!(
        metric_sum(&docs, "soci-indexer", "ImagesFailed", &app),
        1.0,
        "{}",
        function.log()
    );
    assert_eq!(
        metric_sum(&docs, "soci-indexer", "ImagesIndexed", &app),
        0.0
    );
}

#[test]
fn skip_arch_tags_leaves_per_arch_tags_to_the_stitched_index() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let per_arch = seed_layout(&layout, "1.2.3-arm64");
    let env = [
        ("AFTERPUSH_LAYOUT", layout.to_str().unwrap()),
        ("MIN_LAYER_SIZE", "0"),
        ("SOCI_SKIP_ARCH_TAGS", "true"),
    ];
    let api = RuntimeApi::start(event_for("push-arch-arm64.json", &per_arch));
    let mut function = Function::start(indexer(), "soci-indexer", &api, &env);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    let body = posted.json();
    assert_eq!(body["decision"]["code"], "per-arch-tag", "{body}");
    let docs = emf_documents(&function.log());
    let skipped = [("Reason", "per-arch-tag")];
    assert_eq!(
        metric_sum(&docs, "soci-indexer", "ImagesSkipped", &skipped),
        1.0
    );
    assert!(
        body["decision"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ARCH_TAG_TEMPLATE {tag}-{arch}")),
        "{body}"
    );
    drop(function);
    let repo = LayoutRepository::open(&layout).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(repo.resolve("1.2.3-arm64-soci")).is_err());

    // The same setting still indexes a tag the template does not match.
    let plain = seed_layout(&layout, "1.2.3");
    let api = RuntimeApi::start(event_for("push-image-tag.json", &plain));
    let mut function = Function::start(indexer(), "soci-indexer", &api, &env);
    let body = function.posted(&api).json();
    assert_eq!(body["decision"]["decision"], "work", "{body}");
    assert_eq!(body["outcome"]["tag"], "1.2.3-soci", "{body}");
}
