//! The janitor's scheduled sweep fanned out per repository, against moto's ECR, ECS, S3
//! (the report bucket) and SQS (the janitor's FIFO queue with a dead-letter queue, as
//! the template makes them): the schedule enqueues one message per repository; each
//! message, received from the queue and handed to the janitor as Lambda's SQS event,
//! sweeps that repository alone (an image a running ECS task uses is kept); the
//! schedule's own invocation collects the S3 cache (its part); the last part gathers the
//! combined report. A repository whose listing moto's fault proxy refuses keeps every
//! image, is reported blocked and answered as a batch item failure; its message, received
//! again, succeeds and the report is gathered again.

use crate::support;

use afterpush::aws_clients::ClientSettings;
use afterpush::catalog::ecr::EcrCatalog;
use afterpush::cleanup::Report;
use afterpush::filters::RepositoryTagFilters;
use afterpush::lambda::sqs_batch::BatchOutput;
use afterpush::lambda::{
    handle_payload, CacheJanitor, Home, Invocation, JanitorOutput, JanitorSettings,
};
use afterpush::queue::{SqsQueues, Target};
use aws_sdk_sqs::types::Message;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use support::moto_fault_proxy::{Fault, MotoFaultProxy, Operation};
use support::sqs::{ACCOUNT, REGION};

const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const BUCKET: &str = "janitor-reports";
const REPOSITORIES: [&str; 3] = ["alpha", "beta", "team/gamma"];

const CACHE_BUCKET: &str = "buildkit-cache";

/// Every image expires at once: only the in-use protection (on, the default) keeps one.
/// The S3 cache loses the blob no manifest names.
const EXPIRE_ALL_IMAGES: &str = r#"
repositories: ["*"]
grace_period: 0s
rules:
  - {name: all-images, select: {kind: image}, action: expire}
s3_caches:
  - {uri: "s3://buildkit-cache/app/", keep: [main], blob_grace: 0s}
"#;

fn blob(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// A BuildKit S3 cache: manifest `main` names blob `a`; blob `b` is named by none.
async fn seed_cache(s3: &aws_sdk_s3::Client) -> [String; 2] {
    support::create_s3_bucket(s3, CACHE_BUCKET).await;
    let main = format!(
        r#"{{"layers":[{{"blob":"{}","parent":-1}}],"records":[{{"digest":"sha256:{}","results":[{{"layerIndex":0}}]}}]}}"#,
        blob('a'),
        "9".repeat(64)
    );
    let live = format!("app/blobs/{}", blob('a'));
    let dead = format!("app/blobs/{}", blob('b'));
    for (key, body) in [
        ("app/manifests/main".to_string(), main),
        (live.clone(), "blob a".into()),
        (dead.clone(), "blob b".into()),
    ] {
        s3.put_object()
            .bucket(CACHE_BUCKET)
            .key(key)
            .body(body.into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    [live, dead]
}

/// The janitor's queue.
const QUEUE: &str = "janitor.fifo";

/// What the event source mapping receives, sorted by message group (repository) and
/// left visible ([`handle_message`] deletes what the janitor handled, as the mapping does).
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Message> {
    let mut messages = support::sqs::receive(sqs, url, 0).await;
    messages.sort_by_key(|m| support::sqs::group(m).to_string());
    messages
}

/// The janitor's answer to `m` (received from `url`) as its SQS event: the batch item
/// failures, and the record's output when it was handled. As the event source mapping
/// does, `m` is then deleted unless it failed.
async fn handle_message(
    janitor: &CacheJanitor,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    m: &Message,
) -> (Vec<String>, Option<JanitorOutput>) {
    let batch = std::slice::from_ref(m);
    let event = support::sqs::lambda_event(batch, QUEUE);
    let answer: BatchOutput<JanitorOutput> = handle_payload(janitor, event, &home())
        .await
        .unwrap()
        .into_batch()
        .expect("an SQS event is answered as a batch");
    let failed: Vec<String> = answer
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    support::sqs::delete_handled(sqs, url, batch, &failed).await;
    let output = answer.records.into_iter().find_map(|r| match r {
        afterpush::lambda::sqs_batch::RecordOutcome::Handled { output, .. } => Some(output),
        _ => None,
    });
    (failed, output)
}

fn home() -> Invocation {
    Invocation {
        home: Some(Home {
            account: ACCOUNT.into(),
            region: REGION.into(),
        }),
        ..Invocation::default()
    }
}

async fn images(ecr: &aws_sdk_ecr::Client, repository: &str) -> usize {
    support::ecr_image_digests(ecr, repository).await.len()
}

async fn object(s3: &aws_sdk_s3::Client, key: &str) -> Option<Vec<u8>> {
    match s3.get_object().bucket(BUCKET).key(key).send().await {
        Ok(o) => Some(o.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
        Err(e) => panic!(
            "GetObject {key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        ),
    }
}

#[tokio::test]
async fn a_fanned_out_sweep_sweeps_each_repository_alone_and_gathers_one_report() {
    let moto = support::TestMoto::start();
    let (ecr, ecs, s3) = (moto.ecr().await, moto.ecs().await, moto.s3().await);
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let ([queue_url], dead_url) =
        support::sqs::create_fifo_with_dead_letters(&sqs, [QUEUE], "janitor-dead.fifo").await;
    support::create_s3_bucket(&s3, BUCKET).await;
    let [live_blob, dead_blob] = seed_cache(&s3).await;
    support::create_ecs_cluster(&ecs, "web").await;
    for repository in REPOSITORIES {
        support::create_ecr_repository(&ecr, repository).await;
        for n in 1..=2 {
            let seed = format!("{repository} {n}");
            support::put_seeded_manifest(&ecr, repository, &seed, &format!("v{n}")).await;
        }
    }
    // A running task pulled beta:v1: the sweep of beta keeps it.
    support::register_task_definition(&ecs, "web", &[("c0", &format!("{HOST}/beta:v1"))]).await;
    support::run_fargate_task(&ecs, "web", "web").await;

    let proxy = MotoFaultProxy::start(moto.port);
    let config = support::TestMoto::sdk_config_at(&proxy.endpoint()).await;
    let one_attempt = ClientSettings {
        max_attempts: 1,
        ..ClientSettings::default()
    };
    let vars = [
        ("CLEANUP_POLICY", EXPIRE_ALL_IMAGES),
        ("DRY_RUN", "false"),
        ("REPORT_BUCKET", BUCKET),
        ("JANITOR_QUEUE_URL", queue_url.as_str()),
    ];
    let settings = JanitorSettings::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    let janitor = CacheJanitor {
        settings,
        filters: RepositoryTagFilters::default(),
        soci_tag_suffix: "-soci".into(),
        catalog: Box::new(EcrCatalog::with_settings(&config, &one_attempt)),
        s3: Some(s3.clone()),
        deadline_margin: Duration::from_secs(30),
        queue: Some(Box::new(SqsQueues::new(
            sqs.clone(),
            BTreeMap::from([(Target::Janitor, queue_url.clone())]),
        ))),
    };

    // The schedule: a manifest and three messages, no image deleted; the S3 cache
    // collected by the schedule's invocation itself.
    let schedule = json!({"version":"0","id":"5c1e0d2a-sweep","detail-type":"Scheduled Event",
        "source":"aws.events","account":ACCOUNT,"region":REGION,"time":"2026-12-07T03:00:00Z",
        "resources":[],"detail":{}});
    let out = janitor.handle(schedule.clone(), &home()).await.unwrap();
    let caches = out.report.expect("the S3 caches' part");
    assert_eq!(caches.deleted, 1, "{}", caches.to_json());
    assert!(caches.repositories.is_empty(), "{}", caches.to_json());
    assert!(
        !support::s3_object_exists(&s3, CACHE_BUCKET, &dead_blob).await
            && support::s3_object_exists(&s3, CACHE_BUCKET, &live_blob).await
    );
    let fan_out = out.fan_out.expect("the sweep fans out");
    assert_eq!((fan_out.repositories, fan_out.messages_sent), (3, Some(3)));
    let run = fan_out.run_id.clone();
    assert!(run.starts_with("20261207T030000Z-"), "{run}");
    let prefix = format!("cache-janitor/runs/{run}/");
    let manifest: Value = serde_json::from_slice(
        &object(&s3, &format!("{prefix}manifest.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = manifest["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repository"].as_str().unwrap())
        .collect();
    assert_eq!(names, REPOSITORIES);
    for repository in REPOSITORIES {
        assert_eq!(images(&ecr, repository).await, 2, "{repository}");
    }
    assert!(object(&s3, &format!("{prefix}s3-caches.json"))
        .await
        .is_some());

    // The same schedule event delivered again: the same run, and the FIFO queue drops
    // the messages it already has.
    let again = janitor.handle(schedule, &home()).await.unwrap();
    assert_eq!(again.fan_out.unwrap().run_id, run);
    let messages = receive(&sqs, &queue_url).await;
    let groups: Vec<&str> = messages.iter().map(support::sqs::group).collect();
    assert_eq!(groups, REPOSITORIES, "one message per repository, once");
    for m in &messages {
        assert_eq!(support::sqs::target_attribute(m), Some("janitor"));
    }
    let report_key = format!("{prefix}report.json");

    // alpha, then beta: each message sweeps its repository only.
    let (failed, out) = handle_message(&janitor, &sqs, &queue_url, &messages[0]).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(out.unwrap().report.unwrap().deleted, 2);
    assert_eq!(
        (
            images(&ecr, "alpha").await,
            images(&ecr, "beta").await,
            images(&ecr, "team/gamma").await
        ),
        (0, 2, 2)
    );
    assert!(object(&s3, &format!("{prefix}repositories/alpha.json"))
        .await
        .is_some());
    assert!(
        object(&s3, &report_key).await.is_none(),
        "two parts missing"
    );
    let (failed, out) = handle_message(&janitor, &sqs, &queue_url, &messages[1]).await;
    assert!(failed.is_empty(), "{failed:?}");
    let beta = out.unwrap().report.unwrap();
    assert_eq!(beta.deleted, 1, "{}", beta.to_json());
    let kept = &beta.repositories[0].keeps;
    assert!(
        kept.iter()
            .any(|k| k.in_use.iter().any(|u| u.starts_with("ecs task web/"))),
        "{}",
        beta.to_json()
    );
    assert_eq!(
        (images(&ecr, "beta").await, images(&ecr, "team/gamma").await),
        (1, 2)
    );
    assert!(object(&s3, &report_key).await.is_none(), "one part missing");

    // team/gamma's listing is refused: it keeps everything, its part says why, and its
    // record is a batch item failure, so its message stays in the queue.
    proxy.always(
        Operation::Target("DescribeImages"),
        Fault::Error {
            status: 400,
            code: "AccessDeniedException",
        },
    );
    let (failed, out) = handle_message(&janitor, &sqs, &queue_url, &messages[2]).await;
    proxy.clear();
    assert_eq!(failed, [messages[2].message_id().unwrap()]);
    assert!(out.is_none());
    assert_eq!(images(&ecr, "team/gamma").await, 2);
    let part = object(&s3, &format!("{prefix}repositories/team%2Fgamma.json"))
        .await
        .expect("a blocked part is written too");
    let part: Report = serde_json::from_slice(&part).unwrap();
    assert!(part.blocked.is_some(), "{}", part.to_json());
    let report: Report =
        serde_json::from_slice(&object(&s3, &report_key).await.expect("gathered")).unwrap();
    assert_eq!(report.run_id, run);
    // alpha 2, beta 1, the S3 cache's blob 1.
    assert_eq!(report.deleted, 4, "{}", report.to_json());
    assert_eq!(report.s3_caches.len(), 1);
    assert_eq!(report.repositories.len(), 2, "gamma was not swept");
    let blocked: Vec<&str> = report
        .blocked_repositories
        .iter()
        .map(|b| b.repository.as_str())
        .collect();
    assert_eq!(blocked, ["team/gamma"]);
    assert!(report.blocked.is_none(), "the others deleted");

    // The message comes again (its second receive): gamma is swept and the report
    // gathered again.
    let retry = receive(&sqs, &queue_url).await;
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].message_id(), messages[2].message_id());
    let (failed, out) = handle_message(&janitor, &sqs, &queue_url, &retry[0]).await;
    assert!(failed.is_empty(), "{failed:?}");
    let out = out.unwrap();
    assert_eq!(out.report.unwrap().deleted, 2);
    assert!(out.fan_out.unwrap().gathered.is_some());
    assert_eq!(images(&ecr, "team/gamma").await, 0);
    let report: Report = serde_json::from_slice(&object(&s3, &report_key).await.unwrap()).unwrap();
    assert_eq!(report.deleted, 6, "{}", report.to_json());
    assert_eq!(report.planned_deletions, 6);
    assert_eq!(report.repositories.len(), 3);
    assert!(
        report.blocked_repositories.is_empty(),
        "{}",
        report.to_json()
    );
    assert!(report.in_use_references >= 1);
    assert!(receive(&sqs, &queue_url).await.is_empty());
    assert!(receive(&sqs, &dead_url).await.is_empty());
}
