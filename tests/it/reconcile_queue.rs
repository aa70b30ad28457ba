//! The SQS side of reconcile on moto: FIFO work queues with a FIFO dead-letter queue
//! (RedrivePolicy maxReceiveCount 2), as the template makes them. The work a survey of
//! the real registry finds is sent with its group, deduplication id and target
//! attribute, and its bodies parse as the push events the functions take; sending it
//! again is deduplicated by the queue while a settings change makes new work; a message
//! received past maxReceiveCount lands in the dead-letter queue, `reconcile --redrive`
//! lists it and with `--yes` moves it back under a new deduplication id. Also moto
//! correction 13 (tests/support/moto_launcher.py): a deduplication id outlives its message.

use crate::support;

use afterpush::events::Trigger;
use afterpush::filters::RepositoryTagFilters;
use afterpush::oci::media;
use afterpush::queue::{SqsQueues, Target};
use afterpush::reconcile::{
    self, fan_out, push_event, EventOrigin, ReconcileSettings, Survey, Work, WorkKind,
};
use afterpush::registry::{Manifest, Repository};
use afterpush::sample::{self, SampleSpec};
use afterpush::soci::SociSettings;
use afterpush::stitch::StitchSettings;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use std::collections::BTreeMap;
use support::sqs::{self, counts, receive, system_attribute, target_attribute};
use support::work_stack::connect;
use support::{TestMoto, TestRegistry};

/// The queues of one test, by URL.
struct Queues {
    indexer: String,
    stitcher: String,
    dead: String,
}

/// `<prefix>-indexer.fifo` and `<prefix>-stitcher.fifo`, each sending a message to
/// `<prefix>-dead.fifo` on its third receive.
async fn create_queues(client: &aws_sdk_sqs::Client, prefix: &str) -> Queues {
    let ([indexer, stitcher], dead) = sqs::create_fifo_with_dead_letters(
        client,
        [
            &format!("{prefix}-indexer.fifo"),
            &format!("{prefix}-stitcher.fifo"),
        ],
        &format!("{prefix}-dead.fifo"),
    )
    .await;
    Queues {
        indexer,
        stitcher,
        dead,
    }
}

fn work_queues(client: &aws_sdk_sqs::Client, q: &Queues) -> SqsQueues {
    SqsQueues::new(
        client.clone(),
        BTreeMap::from([
            (Target::Indexer, q.indexer.clone()),
            (Target::Stitcher, q.stitcher.clone()),
        ]),
    )
}

/// The push event a message body holds.
fn event_of(m: &aws_sdk_sqs::types::Message) -> afterpush::events::EcrImageActionEvent {
    match Trigger::from_slice(m.body().unwrap().as_bytes()).unwrap() {
        Trigger::EcrImageAction(event) => event,
        other => panic!("not a push event: {}", other.kind()),
    }
}

const SPAN: u64 = 64 * 1024;
const MIN_LAYER: u64 = 32 * 1024;

fn settings(span_size: u64) -> ReconcileSettings {
    ReconcileSettings::new(
        SociSettings {
            span_size,
            min_layer_size: MIN_LAYER,
            ..SociSettings::default()
        },
        StitchSettings::default(),
        RepositoryTagFilters::default(),
    )
    .unwrap()
}

/// `1` (one image) and `2-amd64`, `2-arm64` (a per-arch group, not stitched): the
/// survey finds three images to index and one stitch (followed by the index of `2`).
async fn write_images(repo: &dyn Repository) {
    let spec = |seed| SampleSpec {
        seed,
        layer_sizes: vec![3000, 400_000],
        ..SampleSpec::default()
    };
    let amd64 = "linux/amd64".parse().unwrap();
    let arm64 = "linux/arm64".parse().unwrap();
    sample::write_image(repo, &spec(1), &amd64, Some("1"))
        .await
        .unwrap();
    sample::write_image(repo, &spec(2), &amd64, Some("2-amd64"))
        .await
        .unwrap();
    sample::write_image(repo, &spec(2), &arm64, Some("2-arm64"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_surveys_work_reaches_the_queues_once_and_a_settings_change_makes_new_work() {
    let moto = TestMoto::shared();
    let registry = TestRegistry::shared();
    let client = sqs::client(&moto).await;
    let q = create_queues(&client, "rq-enqueue").await;
    let repository = "reconcile-queue/lib";
    let repo = connect(&registry.host(), repository);
    write_images(&repo).await;
    let origin = EventOrigin::default();
    let survey = reconcile::survey(&repo, repository, &origin, &settings(SPAN), None)
        .await
        .unwrap();
    let mut kinds: Vec<String> = survey
        .work
        .iter()
        .map(|w| format!("{:?} {}", w.kind, w.tag).to_lowercase())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "index 1",
            "index 2-amd64",
            "index 2-arm64",
            "stitch 2-amd64"
        ]
    );
    let surveys = [survey];
    let queues = work_queues(&client, &q);

    let report = reconcile::enqueue(&queues, &surveys, &settings(SPAN))
        .await
        .unwrap();
    assert_eq!(report.messages, 4);
    assert_eq!(report.sent.get(&Target::Indexer), Some(&3));
    assert_eq!(report.sent.get(&Target::Stitcher), Some(&1));
    assert_eq!(report.batch_calls, 2);
    assert!(report.failed.is_empty(), "{report:?}");

    // Every message as sent: left visible (visibility 0) for the counts below.
    let expected: BTreeMap<String, &Work> = surveys[0]
        .work
        .iter()
        .map(|w| (fan_out::dedup_id(w, &settings(SPAN)), w))
        .collect();
    let mut got = vec![];
    for (url, target) in [(&q.indexer, "indexer"), (&q.stitcher, "stitcher")] {
        for m in receive(&client, url, 0).await {
            let dedup = system_attribute(&m, MessageSystemAttributeName::MessageDeduplicationId);
            let work = expected
                .get(dedup)
                .unwrap_or_else(|| panic!("unexpected dedup id {dedup}"));
            assert_eq!(fan_out::target_of(work.kind).name(), target);
            assert_eq!(target_attribute(&m), Some(target));
            assert_eq!(sqs::group(&m), repository);
            let event = event_of(&m);
            assert_eq!(event.detail, work.event.detail);
            assert_eq!(event.detail.tag(), Some(work.tag.as_str()));
            got.push(dedup.to_string());
        }
    }
    got.sort();
    assert_eq!(got, expected.keys().cloned().collect::<Vec<_>>());

    // Again with the same settings: accepted, and dropped as duplicates by the queues.
    let again = reconcile::enqueue(&queues, &surveys, &settings(SPAN))
        .await
        .unwrap();
    assert_eq!(again.total_sent(), 4);
    assert_eq!(counts(&client, &q.indexer).await, (3, 0));
    assert_eq!(counts(&client, &q.stitcher).await, (1, 0));

    // Another span size: new index work; the stitch is the same work.
    reconcile::enqueue(&queues, &surveys, &settings(2 * SPAN))
        .await
        .unwrap();
    assert_eq!(counts(&client, &q.indexer).await, (6, 0));
    assert_eq!(counts(&client, &q.stitcher).await, (1, 0));
}

/// The `afterpush` CLI pointed at this moto, with `env`.
fn cli(moto: &TestMoto, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = moto.afterpush_command();
    command.args(args).env_remove("RUST_LOG");
    for name in [
        "INDEXER_QUEUE_URL",
        "STITCHER_QUEUE_URL",
        "JANITOR_QUEUE_URL",
        "DEAD_LETTER_QUEUE_URL",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn the_cli_enqueues_a_registry_repository_and_refuses_before_sending_without_a_queue() {
    let moto = TestMoto::shared();
    let registry = TestRegistry::shared();
    let client = sqs::client(&moto).await;
    let q = create_queues(&client, "rq-cli-enqueue").await;
    write_images(&connect(&registry.host(), "reconcile-queue/cli")).await;
    let reference = registry.reference("reconcile-queue/cli");
    let settings_env = [("SPAN_SIZE", "64KiB"), ("MIN_LAYER_SIZE", "32KiB")];

    let mut env = settings_env.to_vec();
    env.push(("INDEXER_QUEUE_URL", &q.indexer));
    let (ok, stdout, stderr) = cli(&moto, &["reconcile", &reference, "--enqueue"], &env);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("STITCHER_QUEUE_URL"), "{stderr}");
    assert_eq!(
        counts(&client, &q.indexer).await,
        (0, 0),
        "sent before finding a queue missing"
    );

    env.push(("STITCHER_QUEUE_URL", &q.stitcher));
    let (ok, stdout, stderr) = cli(
        &moto,
        &["reconcile", &reference, "--enqueue", "--json"],
        &env,
    );
    assert!(ok, "{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["enqueued"]["sent"]["indexer"], 3, "{out:#}");
    assert_eq!(out["enqueued"]["sent"]["stitcher"], 1, "{out:#}");
    assert_eq!(out["enqueued"]["repositories"][0]["after_stitch"], 1);
    // The plan counts the index after the stitch; the queues get it from the stitcher.
    assert_eq!(out["plan"]["total"]["images"], 4, "{out:#}");
    let (ok, stdout, stderr) = cli(&moto, &["reconcile", &reference, "--enqueue"], &env);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "enqueued: 3 to indexer ({}), 1 to stitcher",
            q.indexer
        )),
        "{stdout}"
    );
    assert_eq!(counts(&client, &q.indexer).await, (3, 0));
    assert_eq!(counts(&client, &q.stitcher).await, (1, 0));
}

/// One image's index work, for a repository that need not exist.
fn index_work(repository: &str, tag: &str) -> Work {
    let config = afterpush::oci::Sha256Digest::of(b"{}");
    let bytes = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config}","size":2}},"layers":[]}}"#,
        media::OCI_MANIFEST,
        media::OCI_CONFIG
    );
    let manifest = Manifest::new(media::OCI_MANIFEST, bytes.into_bytes());
    Work {
        kind: WorkKind::Index,
        repository: repository.into(),
        tag: tag.into(),
        digest: manifest.digest.clone(),
        reason: "poison".into(),
        layers: 1,
        bytes: 1,
        event: push_event(repository, tag, &manifest, &EventOrigin::default()).unwrap(),
        then: None,
    }
}

#[tokio::test]
async fn a_poison_message_lands_in_the_dead_letter_queue_and_redrive_moves_it_back() {
    let moto = TestMoto::shared();
    let client = sqs::client(&moto).await;
    let q = create_queues(&client, "rq-poison").await;
    let work = index_work("reconcile-queue/poison", "1.0");
    let survey = Survey {
        repository: work.repository.clone(),
        work: vec![work.clone()],
        ..Survey::default()
    };
    reconcile::enqueue(&work_queues(&client, &q), &[survey], &settings(SPAN))
        .await
        .unwrap();
    let original_dedup = fan_out::dedup_id(&work, &settings(SPAN));

    // The function fails on it twice (received, never deleted); the third receive finds
    // it past maxReceiveCount and the queue moves it to the dead-letter queue.
    for _ in 0..2 {
        assert_eq!(receive(&client, &q.indexer, 0).await.len(), 1);
    }
    assert!(receive(&client, &q.indexer, 0).await.is_empty());
    assert_eq!(counts(&client, &q.indexer).await, (0, 0));
    assert_eq!(counts(&client, &q.dead).await, (1, 0));

    let env = [
        ("DEAD_LETTER_QUEUE_URL", q.dead.as_str()),
        ("INDEXER_QUEUE_URL", q.indexer.as_str()),
        ("STITCHER_QUEUE_URL", q.stitcher.as_str()),
    ];
    let (ok, stdout, stderr) = cli(&moto, &["reconcile", "--redrive", "--json"], &env);
    assert!(ok, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let messages = listed["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{listed:#}");
    let m = &messages[0];
    assert_eq!(m["outcome"], "listed");
    assert_eq!(m["target"], "indexer");
    assert_eq!(m["group_id"], "reconcile-queue/poison");
    assert!(m["receive_count"].as_u64().unwrap() >= 2, "{m}");
    assert_eq!(
        m["summary"],
        format!("reconcile-queue/poison:1.0@{}", work.digest)
    );
    let message_id = m["message_id"].as_str().unwrap().to_string();
    assert_eq!(listed["applied"], false);
    // Listed, and visible again for the move.
    assert_eq!(counts(&client, &q.dead).await, (1, 0));

    let (ok, stdout, stderr) = cli(&moto, &["reconcile", "--redrive", "--yes"], &env);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("sent back to {}", q.indexer)),
        "{stdout}"
    );
    assert!(stdout.contains("moved 1 back, 0 left"), "{stdout}");
    assert_eq!(counts(&client, &q.dead).await, (0, 0));

    let back = receive(&client, &q.indexer, 30).await;
    assert_eq!(back.len(), 1);
    assert_eq!(
        system_attribute(&back[0], MessageSystemAttributeName::MessageDeduplicationId),
        format!("{original_dedup}-redrive-{message_id}")
    );
    assert_eq!(sqs::group(&back[0]), "reconcile-queue/poison");
    assert_eq!(target_attribute(&back[0]), Some("indexer"));
    assert_eq!(event_of(&back[0]).detail, work.event.detail);

    let (ok, stdout, stderr) = cli(&moto, &["reconcile", "--redrive"], &env);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("no messages in"), "{stdout}");
}

#[tokio::test]
async fn a_dead_letter_without_a_target_is_left_and_named() {
    let moto = TestMoto::shared();
    let client = sqs::client(&moto).await;
    let q = create_queues(&client, "rq-untargeted").await;
    let work = index_work("reconcile-queue/untargeted", "2.0");
    let body = serde_json::to_string(&work.event).unwrap();
    client
        .send_message()
        .queue_url(&q.dead)
        .message_body(&body)
        .message_group_id("somewhere")
        .message_deduplication_id("no-target")
        .send()
        .await
        .unwrap();
    let env = [
        ("DEAD_LETTER_QUEUE_URL", q.dead.as_str()),
        ("INDEXER_QUEUE_URL", q.indexer.as_str()),
        ("STITCHER_QUEUE_URL", q.stitcher.as_str()),
    ];
    let (ok, stdout, stderr) = cli(&moto, &["reconcile", "--redrive", "--yes"], &env);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("reconcile-queue/untargeted:2.0@")
            && stdout.contains("left: no afterpush-target attribute"),
        "{stdout}"
    );
    assert!(stderr.contains("1 message left in"), "{stderr}");
    // Still there, and visible for whoever looks next.
    assert_eq!(counts(&client, &q.dead).await, (1, 0));
    assert_eq!(counts(&client, &q.indexer).await, (0, 0));
}

/// Receives every message of `url` (ten at most) and deletes it, as a function that
/// finished its work does.
async fn consume(client: &aws_sdk_sqs::Client, url: &str) -> usize {
    let messages = receive(client, url, 30).await;
    for m in &messages {
        sqs::delete(client, url, m).await;
    }
    messages.len()
}

/// moto_launcher.py correction 13: a FIFO queue remembers a deduplication id for five
/// minutes after the message was deleted, as SQS does.
#[tokio::test]
async fn moto_correction_13_a_fifo_dedup_id_outlives_its_message() {
    let moto = TestMoto::shared();
    let client = sqs::client(&moto).await;
    let url = sqs::create_fifo(&client, "rq-correction-13.fifo", None).await;
    let send = |dedup: &'static str| {
        client
            .send_message()
            .queue_url(&url)
            .message_body("{}")
            .message_group_id("g")
            .message_deduplication_id(dedup)
            .send()
    };
    send("first").await.unwrap();
    assert_eq!(consume(&client, &url).await, 1);
    // Accepted, as SQS accepts a duplicate, and not delivered.
    send("first").await.unwrap();
    assert_eq!(counts(&client, &url).await, (0, 0));
    send("second").await.unwrap();
    assert_eq!(counts(&client, &url).await, (1, 0));
}

/// A reconcile run shortly after the functions took the work of the previous one sends
/// nothing they would do again.
#[tokio::test]
async fn work_the_functions_took_is_not_delivered_again_within_the_window() {
    let moto = TestMoto::shared();
    let client = sqs::client(&moto).await;
    let q = create_queues(&client, "rq-taken").await;
    let survey = Survey {
        repository: "reconcile-queue/taken".into(),
        work: vec![
            index_work("reconcile-queue/taken", "1"),
            index_work("reconcile-queue/taken", "2"),
        ],
        ..Survey::default()
    };
    let queues = work_queues(&client, &q);
    let surveys = [survey];
    reconcile::enqueue(&queues, &surveys, &settings(SPAN))
        .await
        .unwrap();
    assert_eq!(consume(&client, &q.indexer).await, 2);
    let again = reconcile::enqueue(&queues, &surveys, &settings(SPAN))
        .await
        .unwrap();
    assert_eq!(again.total_sent(), 2, "SQS accepts the copies");
    assert_eq!(counts(&client, &q.indexer).await, (0, 0));
}
