//! Drives the real `soci-indexer` binary through the Lambda Runtime API (the local
//! endpoint of `tests/support/runtime_api.rs`), so the real `lambda_runtime` loop runs,
//! against an OCI image layout (`AFTERPUSH_LAYOUT`) seeded with a sample image, and, for
//! a warm function's many events, against the real registry and moto. The package-local
//! placement is explained in `functions/cache-janitor/tests/lambda_runtime.rs`.

#[path = "../../../tests/support/bridge_relay.rs"]
mod bridge_relay;
#[path = "../../../tests/support/fault_proxy.rs"]
mod fault_proxy;
#[path = "../../../tests/support/http_server.rs"]
mod http_server;
#[path = "../../../tests/support/runtime_api.rs"]
mod runtime_api;
#[path = "../../../tests/support/servers.rs"]
mod servers;

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

/// The indexer polling `api`, working on the OCI image layout at `layout`.
fn start_on_layout(api: &RuntimeApi, layout: &Path) -> Function {
    Function::start(
        indexer(),
        "soci-indexer",
        api,
        &[("AFTERPUSH_LAYOUT", layout.to_str().unwrap())],
    )
}

/// [`start_on_layout`] with `MIN_LAYER_SIZE=0`, so the sample's small layers are indexed.
fn start_indexing_every_layer(api: &RuntimeApi, layout: &Path) -> Function {
    Function::start(
        indexer(),
        "soci-indexer",
        api,
        &[
            ("AFTERPUSH_LAYOUT", layout.to_str().unwrap()),
            ("MIN_LAYER_SIZE", "0"),
        ],
    )
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

/// The sum of the indexer's metric `name` with exactly `dims` in `function`'s output.
fn indexer_metric(function: &Function, name: &str, dims: &[(&str, &str)]) -> f64 {
    metric_sum(&emf_documents(&function.log()), "soci-indexer", name, dims)
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
    let mut function = start_indexing_every_layer(&api, &layout);
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

    // The same event again (an async retry, so the same settings): the index is there,
    // a skip by its code. Under other settings the index would be rebuilt.
    let api = RuntimeApi::start(event_for("push-image-tag.json", &source));
    let mut function = start_indexing_every_layer(&api, &layout);
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
    let mut function = start_on_layout(&api, &layout);
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
    let mut function = start_on_layout(&api, &layout);
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
    let app = [("Repository", "app")];
    let failed = indexer_metric(&function, "ImagesFailed", &app);
    assert_eq!(failed, 1.0, "{}", function.log());
    assert_eq!(indexer_metric(&function, "ImagesIndexed", &app), 0.0);
}

/// An event that is no trigger the indexer knows is rejected before any repository is
/// touched: counted as `EventsRejected`, with no repository dimension.
#[test]
fn a_malformed_event_is_rejected_and_counted() {
    let mut event: Value = serde_json::from_slice(&sample_event("push-image-tag.json")).unwrap();
    event["detail"]
        .as_object_mut()
        .unwrap()
        .remove("repository-name");
    let dir = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start(serde_json::to_vec(&event).unwrap());
    let mut function = start_on_layout(&api, dir.path());
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "error", "{posted:?}\n{}", function.log());
    let body = posted.json();
    assert_eq!(body["errorType"], "NonRetryable", "{body}");
    let rejected = indexer_metric(&function, "EventsRejected", &[]);
    assert_eq!(rejected, 1.0, "{}", function.log());
    let docs = emf_documents(&function.log());
    assert!(
        docs.iter().all(|d| d.get("Repository").is_none()),
        "{docs:?}"
    );
}

/// A repository that cannot be opened fails the image of the repository the event
/// names, and is counted as such.
#[test]
fn a_repository_that_cannot_be_opened_is_a_failed_image() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("no-such-layout");
    let digest = Sha256Digest::of(b"some image");
    let api = RuntimeApi::start(event_for("push-image-tag.json", &digest));
    let mut function = start_on_layout(&api, &absent);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "error", "{posted:?}\n{}", function.log());
    let app = [("Repository", "app")];
    let failed = indexer_metric(&function, "ImagesFailed", &app);
    assert_eq!(failed, 1.0, "{}", function.log());
    assert_eq!(indexer_metric(&function, "EventsRejected", &[]), 0.0);
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

/// One warm function, 50 pushes of 50 images: the registry client, its connections and
/// the ECR authorization token outlive each event. `GetAuthorizationToken` calls are
/// counted at a proxy in front of moto (whose launcher gives tokens ECR's 12-hour
/// lifetime), connections at a relay in front of the real registry.
#[test]
fn fifty_events_to_a_warm_function_fetch_one_ecr_token_and_reuse_connections() {
    const EVENTS: usize = 50;
    let registry = servers::TestRegistry::start();
    let moto = servers::TestMoto::start();
    let aws = fault_proxy::FaultProxy::start(moto.port);
    let relay = bridge_relay::BridgeRelay::start("127.0.0.1", registry.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let digests: Vec<Sha256Digest> = rt.block_on(async {
        let repo = afterpush::registry::distribution::DistributionRepository::connect(
            &Default::default(),
            &registry.host(),
            "app",
        )
        .unwrap();
        let mut digests = vec![];
        for i in 0..EVENTS {
            let spec = SampleSpec {
                seed: i as u64,
                layer_sizes: vec![16 * 1024],
                attestations: false,
                ..SampleSpec::default()
            };
            let tag = format!("1.0.{i}");
            let image = sample::write_image(&repo, &spec, &spec.platforms[0], Some(&tag))
                .await
                .unwrap();
            digests.push(image.manifest.digest);
        }
        digests
    });
    let events = digests
        .iter()
        .enumerate()
        .map(|(i, digest)| {
            let mut event: Value =
                serde_json::from_slice(&sample_event("push-image-tag.json")).unwrap();
            event["detail"]["image-digest"] = digest.to_string().into();
            event["detail"]["image-tag"] = format!("1.0.{i}").into();
            serde_json::to_vec(&event).unwrap()
        })
        .collect();
    let api = RuntimeApi::start_many(events, runtime_api::DEFAULT_TIMEOUT);
    let (registry_endpoint, aws_endpoint) = (relay.endpoint(), format!("http://{}", aws.host()));
    let mut function = Function::start(
        indexer(),
        "soci-indexer",
        &api,
        &[
            // The events name account 123456789012 in us-east-1: an ECR host, so the
            // function authenticates with ECR tokens (from moto) as in production.
            ("AFTERPUSH_REGISTRY_ENDPOINT", &registry_endpoint),
            ("AWS_ENDPOINT_URL", &aws_endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("MIN_LAYER_SIZE", "0"),
        ],
    );
    for (i, digest) in digests.iter().enumerate() {
        let posted = function.posted(&api);
        assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
        assert_eq!(posted.request_id, api.request_ids[i]);
        let body = posted.json();
        assert_eq!(body["outcome"]["source"], digest.to_string(), "{body}");
        assert_eq!(body["outcome"]["tag"], format!("1.0.{i}-soci"), "{body}");
        assert_eq!(body["outcome"]["platforms"][0]["ztocs"], 1, "{body}");
    }
    let tokens = aws.calls_to("GetAuthorizationToken");
    let connections = relay.connections();
    println!("{EVENTS} events: {tokens} GetAuthorizationToken call(s), {connections} registry connection(s)");
    assert_eq!(tokens, 1, "{:#?}", aws.seen());
    // Each event sends several registry requests; one connection per event or more
    // would mean the pool is rebuilt per event.
    assert!(
        connections < EVENTS / 5,
        "{connections} connections for {EVENTS} events"
    );
}

/// The deadline the Runtime API hands out reaches the indexer: with none left, no layer
/// is started, and the error is retryable and names the image and the layer left.
#[test]
fn an_event_with_no_time_left_leaves_every_layer_for_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let source = seed_layout(&layout, "1.2.3");
    let api = RuntimeApi::start_many(
        vec![event_for("push-image-tag.json", &source)],
        std::time::Duration::ZERO,
    );
    let mut function = start_indexing_every_layer(&api, &layout);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "error", "{posted:?}\n{}", function.log());
    let body = posted.json();
    assert_eq!(body["errorType"], "Retryable", "{body}");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(message.contains("invocation deadline"), "{body}");
    assert!(message.contains(&source.to_string()), "{body}");
    drop(function);
    // Nothing was published.
    let repo = LayoutRepository::open(&layout).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(repo.resolve("1.2.3-soci")).is_err());
}

/// A standard-queue record of Lambda's SQS event, carrying `body`.
fn sqs_record(message_id: &str, body: &[u8]) -> Value {
    serde_json::json!({
        "messageId": message_id,
        "receiptHandle": format!("AQEB-{message_id}"),
        "body": String::from_utf8(body.to_vec()).unwrap(),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1800000000000"},
        "messageAttributes": {},
        "md5OfBody": "0",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:afterpush-indexer",
        "awsRegion": "us-east-1"
    })
}

/// Lambda's SQS event with `records`.
fn sqs_event(records: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "Records": records })).unwrap()
}

/// SQS records carrying EventBridge events, through the real runtime loop: each is
/// handled as the event itself would be, and the answer is a partial batch response
/// naming only the record that failed.
#[test]
fn an_sqs_batch_is_answered_with_its_failed_records_through_the_runtime_loop() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let source = seed_layers(&layout, "1.2.3", 2);
    let push = event_for("push-image-tag.json", &source);
    let event = sqs_event(vec![
        sqs_record("rec-push", &push),
        sqs_record("rec-not-json", b"{\"source\": \"aws.ecr\""),
        sqs_record("rec-own-output", &sample_event("push-soci-suffix-tag.json")),
    ]);
    let api = RuntimeApi::start(event);
    let mut function = start_indexing_every_layer(&api, &layout);
    let posted = function.posted(&api);
    // A batch with failed records is still a successful invocation.
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    assert_eq!(posted.request_id, api.request_id);
    let body = posted.json();
    assert_eq!(
        body["batchItemFailures"],
        serde_json::json!([{"itemIdentifier": "rec-not-json"}]),
        "{body}"
    );
    let records = &body["records"];
    assert_eq!(records[0]["status"], "handled", "{body}");
    assert_eq!(
        records[0]["output"]["outcome"]["tag"], "1.2.3-soci",
        "{body}"
    );
    assert_eq!(records[0]["output"]["outcome"]["platforms"][0]["ztocs"], 2);
    assert_eq!(records[1]["status"], "failed", "{body}");
    assert_eq!(records[1]["errorType"], "NonRetryable", "{body}");
    assert_eq!(
        records[2]["output"]["decision"]["code"], "own-output",
        "{body}"
    );
    let log = function.log();
    drop(function);
    let repo = LayoutRepository::open(&layout).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = rt.block_on(repo.get_manifest("1.2.3-soci")).unwrap();
    assert_eq!(
        records[0]["output"]["outcome"]["output"],
        stored.digest.to_string()
    );
    // Counted per record, as for direct events, and flushed once for the invocation.
    let docs = emf_documents(&log);
    let app = [("Repository", "app")];
    assert_eq!(
        metric_sum(&docs, "soci-indexer", "ImagesIndexed", &app),
        1.0,
        "{log}"
    );
    assert_eq!(
        metric_sum(&docs, "soci-indexer", "EventsRejected", &[]),
        1.0,
        "{log}"
    );
    let own = [("Reason", "own-output")];
    assert_eq!(
        metric_sum(&docs, "soci-indexer", "ImagesSkipped", &own),
        1.0,
        "{log}"
    );
    // The JSON log lines of each record carry its messageId.
    let failed_line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l.to_string().contains("SQS record failed"))
        .unwrap_or_else(|| panic!("no failure logged:\n{log}"));
    assert_eq!(
        failed_line["span"]["message_id"], "rec-not-json",
        "{failed_line}"
    );
}

/// With no time left, no record is started and every one is named for delivery again:
/// the invocation itself succeeds.
#[test]
fn an_sqs_batch_with_no_time_left_starts_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let source = seed_layout(&layout, "1.2.3");
    let push = event_for("push-image-tag.json", &source);
    let event = sqs_event(vec![sqs_record("r1", &push), sqs_record("r2", &push)]);
    let api = RuntimeApi::start_many(vec![event], std::time::Duration::ZERO);
    let mut function = start_indexing_every_layer(&api, &layout);
    let posted = function.posted(&api);
    assert_eq!(posted.kind, "response", "{posted:?}\n{}", function.log());
    let body = posted.json();
    assert_eq!(
        body["batchItemFailures"],
        serde_json::json!([{"itemIdentifier": "r1"}, {"itemIdentifier": "r2"}]),
        "{body}"
    );
    assert_eq!(body["records"][0]["status"], "not-started", "{body}");
    drop(function);
    let repo = LayoutRepository::open(&layout).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(repo.resolve("1.2.3-soci")).is_err());
}
