//! Invocation deadlines against the real registry and moto: the indexer starts no layer
//! it has no time for, fails retryably naming what is left and keeps the finished zTOCs
//! in the S3 cache, so that the retry resumes; the janitor stops deleting at the
//! deadline, reports what it did and what it left, and the next run finishes.
//!
//! No test waits for time to pass. The indexer's case leaves a margin of minutes either
//! way; the janitor's deadline runs on a clock that moves one second per reading, so
//! exactly which check passes does not depend on the machine's speed.

use crate::support;

use afterpush::catalog::ecr::EcrCatalog;
use afterpush::deadline::{Clock, Deadline};
use afterpush::filters::RepositoryTagFilters;
use afterpush::lambda::janitor::{self, JanitorEvent, JanitorSettings};
use afterpush::lambda::{Invocation, Repositories, SociIndexer};
use afterpush::registry::distribution::{
    AuthMode, DistributionRepository, RegistryClients, RegistrySettings, RetryPolicy,
};
use afterpush::registry::Repository;
use afterpush::sample::{self, SampleSpec};
use afterpush::soci::{
    create_soci, create_soci_within, LayerTimeBudget, NoZtocCache, S3ZtocCache, SociError,
    SociSettings,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::fault_proxy::{Fault, FaultProxy};

const CACHE_BUCKET: &str = "ztoc-cache";

async fn object_exists(s3: &aws_sdk_s3::Client, key: &str) -> bool {
    s3.head_object()
        .bucket(CACHE_BUCKET)
        .key(key)
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn an_indexer_out_of_time_leaves_its_finished_ztocs_for_the_retry() {
    let registry = support::TestRegistry::start();
    let moto = support::TestMoto::start();
    let s3 = moto.s3().await;
    s3.create_bucket()
        .bucket(CACHE_BUCKET)
        .send()
        .await
        .unwrap();
    let cache = S3ZtocCache::new(s3.clone(), CACHE_BUCKET, "afterpush/ztoc/");
    let repo =
        DistributionRepository::connect(&RegistrySettings::default(), &registry.host(), "app")
            .unwrap();
    // A large layer first (about 320 KB of gzip), then a small one (about 1.5 KB).
    let spec = SampleSpec {
        layer_sizes: vec![1024 * 1024, 4 * 1024],
        attestations: false,
        ..SampleSpec::default()
    };
    let image = sample::write_image(&repo, &spec, &spec.platforms[0], Some("1.0"))
        .await
        .unwrap();
    let (big, small) = (&image.layers[0].blob, &image.layers[1].blob);
    let settings = SociSettings {
        min_layer_size: 0,
        layer_concurrency: 1,
        // 1 KiB/s assumed: the large layer needs over 300 s, the small one about 2 s.
        layer_throughput: 1024,
        ..SociSettings::default()
    };
    assert!(
        big.size > 300 * 1024 && small.size < 4 * 1024,
        "{big:?} {small:?}"
    );
    let budget = LayerTimeBudget::new(
        Deadline::new(
            SystemTime::now() + Duration::from_secs(150),
            Duration::from_secs(30),
        ),
        settings.layer_throughput,
    );
    let err = create_soci_within(
        &repo,
        "1.0",
        Some("1.0"),
        &settings,
        &cache,
        None,
        Some(&budget),
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SociError::OutOfTime { .. }), "{message}");
    assert!(err.is_retryable(), "{message}");
    assert!(
        message.contains(&image.manifest.digest.to_string()),
        "{message}"
    );
    assert!(message.contains(&big.digest.to_string()), "{message}");
    assert!(!message.contains(&small.digest.to_string()), "{message}");
    // The small layer was indexed after the large one was left, and is in the cache.
    assert!(object_exists(&s3, &cache.key(&small.digest, settings.span_size)).await);
    assert!(!object_exists(&s3, &cache.key(&big.digest, settings.span_size)).await);
    // Nothing was published.
    assert!(repo.get_manifest("1.0-soci").await.is_err());

    // The retry (here without a deadline) takes the small layer's zTOC from the cache.
    let outcome = create_soci(&repo, "1.0", Some("1.0"), &settings, &cache, None)
        .await
        .unwrap();
    let platform = &outcome.platforms[0];
    assert_eq!(
        (platform.ztocs, platform.ztocs_from_cache),
        (2, 1),
        "{outcome:?}"
    );
    assert_eq!(outcome.tag.as_deref(), Some("1.0-soci"));
}

/// Issue 21 item 18: the indexer handler runs its registry work under the invocation
/// deadline. The registry answers 503 to every manifest PUT (the SOCI index, after its
/// zTOCs are uploaded); with a retry policy of 20 attempts whose backoffs add up to
/// far more than the 2 s the invocation has, the handler stops retrying at the
/// deadline (fewer PUTs than the attempt limit), fails retryably, and publishes no
/// index: the tags and referrers are as before.
#[tokio::test]
async fn the_indexer_handler_stops_registry_retries_at_the_invocation_deadline() {
    let registry = support::TestRegistry::start();
    let direct =
        DistributionRepository::connect(&RegistrySettings::default(), &registry.host(), "app")
            .unwrap();
    let spec = SampleSpec {
        layer_sizes: vec![4 * 1024],
        attestations: false,
        ..SampleSpec::default()
    };
    let image = sample::write_image(&direct, &spec, &spec.platforms[0], Some("1.0"))
        .await
        .unwrap();
    let proxy = FaultProxy::start(registry.port);
    proxy.add_rule(Some("PUT"), "/manifests/", Fault::Status(503), 10_000);
    let max_attempts = 20;
    let through_proxy = RegistrySettings {
        endpoint: Some(format!("http://{}", proxy.host()).parse().unwrap()),
        auth: AuthMode::Anonymous,
        retry: RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        },
        ..RegistrySettings::default()
    };
    let indexer = SociIndexer {
        settings: SociSettings {
            min_layer_size: 0,
            ..SociSettings::default()
        },
        filters: RepositoryTagFilters::default(),
        repositories: Repositories::Registry(Arc::new(
            RegistryClients::new(through_proxy).unwrap(),
        )),
        cache: Box::new(NoZtocCache),
        deadline_margin: Duration::ZERO,
    };
    let event = serde_json::json!({"detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": "123456789012", "region": "us-east-1", "detail": {
        "result": "SUCCESS", "repository-name": "app", "action-type": "PUSH",
        "image-tag": "1.0", "manifest-media-type": image.manifest.media_type,
        "image-digest": image.manifest.digest.to_string()}});
    let invocation = Invocation {
        deadline: Some(SystemTime::now() + Duration::from_secs(2)),
        home: None,
    };
    let err = indexer.handle(event, &invocation).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    let puts = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "PUT" && s.path.contains("/manifests/"))
        .count();
    assert!(
        (1..max_attempts as usize).contains(&puts),
        "{puts} manifest PUTs: retries went on past the deadline"
    );
    assert_eq!(direct.list_tags().await.unwrap(), ["1.0"]);
    assert!(direct
        .referrers(&image.manifest.digest, None)
        .await
        .unwrap()
        .is_empty());
}

/// Starts at `start` and moves `step` forward on every reading.
fn stepping_clock(start: SystemTime, step: Duration) -> Clock {
    let readings = AtomicU32::new(0);
    Arc::new(move || start + step * readings.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test]
async fn a_janitor_out_of_time_reports_what_it_left_and_the_next_run_continues() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    let s3 = moto.s3().await;
    s3.create_bucket().bucket("reports").send().await.unwrap();
    let mut old = Vec::new();
    for name in ["app-a", "app-b", "app-c"] {
        support::create_ecr_repository(&ecr, name).await;
        support::put_seeded_manifest(&ecr, name, &format!("{name} keep"), "keep-1").await;
        old.push(support::put_seeded_manifest(&ecr, name, &format!("{name} old"), "old-1").await);
    }
    let settings = JanitorSettings::from_lookup(|name| match name {
        "CLEANUP_POLICY" => Some(
            "repositories: ['app-*']\ngrace_period: 0s\n\
             rules: [{name: old, select: {tags: ['old-*']}, action: expire}]\n"
                .into(),
        ),
        "DRY_RUN" => Some("false".into()),
        "REPORT_BUCKET" => Some("reports".into()),
        _ => None,
    })
    .unwrap();
    let filters: RepositoryTagFilters = "*:*".parse().unwrap();
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);

    // The sweep reads the clock before each repository and before each delete call:
    // app-a (1st reading) and its delete (2nd) are in time, so is app-b (3rd), but not
    // app-b's delete (4th) nor app-c (5th). The AWS listings also bound each call by the
    // deadline in real time: steps of 100 s leave them 250 s, so a loaded machine cannot
    // make the run stop earlier than the readings say.
    let start = SystemTime::now();
    let margin = Duration::from_secs(30);
    let deadline = Deadline::with_clock(
        start + margin + Duration::from_secs(250),
        margin,
        stepping_clock(start, Duration::from_secs(100)),
    );
    let report = janitor::handle_within(
        &catalog,
        Some(&s3),
        &settings,
        &filters,
        JanitorEvent::Scheduled,
        Some(deadline),
    )
    .await
    .unwrap();
    let by_name = |name: &str| {
        report
            .repositories
            .iter()
            .find(|r| r.repository == name)
            .unwrap_or_else(|| panic!("{name} missing: {}", report.to_json()))
    };
    let (a, b, c) = (by_name("app-a"), by_name("app-b"), by_name("app-c"));
    assert_eq!(
        (&a.deleted, a.left.len()),
        (&vec![old[0].clone()], 0),
        "{}",
        report.to_json()
    );
    assert!(!a.stopped_by_deadline);
    assert_eq!(
        (b.deleted.len(), &b.left),
        (0, &vec![old[1].clone()]),
        "{}",
        report.to_json()
    );
    assert!(b.stopped_by_deadline);
    assert!(c.stopped_by_deadline && c.planned.is_empty() && c.images == 0);
    assert!(report.stopped_by_deadline);
    assert_eq!(report.deleted, 1);

    // The report went out, saying so.
    let listed = s3.list_objects_v2().bucket("reports").send().await.unwrap();
    let key = listed.contents()[0].key().unwrap().to_string();
    let stored = s3
        .get_object()
        .bucket("reports")
        .key(&key)
        .send()
        .await
        .unwrap();
    let stored: serde_json::Value =
        serde_json::from_slice(&stored.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(stored["stopped_by_deadline"], true, "{stored}");
    assert_eq!(
        stored["repositories"][1]["left"][0],
        old[1].to_string(),
        "{stored}"
    );

    // The next run plans again from what is there and deletes the rest.
    let report = janitor::handle(
        &catalog,
        Some(&s3),
        &settings,
        &filters,
        JanitorEvent::Scheduled,
    )
    .await
    .unwrap();
    let deleted: Vec<_> = report
        .repositories
        .iter()
        .flat_map(|r| r.deleted.clone())
        .collect();
    assert_eq!(deleted, old[1..].to_vec(), "{}", report.to_json());
    assert!(!report.stopped_by_deadline);
    for name in ["app-a", "app-b", "app-c"] {
        let images = ecr
            .describe_images()
            .repository_name(name)
            .send()
            .await
            .unwrap();
        let tags: Vec<_> = images
            .image_details()
            .iter()
            .flat_map(|d| d.image_tags().to_vec())
            .collect();
        assert_eq!(tags, ["keep-1"], "{name}");
    }
}
