//! The S3 BuildKit cache sweep against moto's S3 behind a proxy that makes one S3
//! operation never answer (tests/support/moto_fault_proxy.rs), which moto cannot do:
//! the client's own timeouts end the call, and with longer ones the invocation
//! deadline stops the listing. Either way an error, and nothing deleted.

use crate::support;

use afterpush::aws_clients::ClientSettings;
use afterpush::catalog::ecr::EcrCatalog;
use afterpush::catalog::s3cache::{S3Cache, S3CacheUri};
use afterpush::cleanup::policy::Policy;
use afterpush::cleanup::{s3gc, sweep, RunOptions};
use afterpush::deadline::Deadline;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};
use support::moto_fault_proxy::{Fault, MotoFaultProxy, Operation};

const BUCKET: &str = "buildkit-cache";

/// S3 ListObjectsV2 (`GET /<bucket>?list-type=2...`, path-style).
fn list_objects_v2() -> Operation {
    Operation::Rest {
        method: "GET",
        path: |p| p.contains("list-type=2"),
    }
}

fn blob(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// A cache `s3://buildkit-cache/app/` with no manifest and one unreferenced blob: a
/// sweep at a later `now` would delete the blob.
async fn seed(s3: &aws_sdk_s3::Client) -> BTreeSet<String> {
    support::create_s3_bucket(s3, BUCKET).await;
    s3.put_object()
        .bucket(BUCKET)
        .key(format!("app/blobs/{}", blob('a')))
        .body(b"blob a".to_vec().into())
        .send()
        .await
        .unwrap();
    objects(s3).await
}

async fn objects(s3: &aws_sdk_s3::Client) -> BTreeSet<String> {
    let out = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

fn policy() -> Policy {
    Policy::parse(
        "repositories: ['none']\nprotect: {ecs: false, lambda: false}\nrules: []\n\
         s3_caches: [{uri: 's3://buildkit-cache/app/', blob_grace: 1h}]",
    )
    .unwrap()
}

/// A ListObjectsV2 that never answers ends in a (retryable) timeout error through the
/// client [`ClientSettings`] builds, and nothing is deleted.
#[tokio::test]
async fn an_s3_listing_that_never_answers_ends_in_a_timeout_error() {
    let moto = support::TestMoto::start();
    let direct = moto.s3().await;
    let before = seed(&direct).await;
    let proxy = MotoFaultProxy::start(moto.port);
    proxy.always(list_objects_v2(), Fault::NeverAnswer);
    let config = support::TestMoto::sdk_config_at(&proxy.endpoint()).await;
    let short = ClientSettings {
        max_attempts: 1,
        operation_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(2),
    };
    let cache = S3Cache::new(
        short.s3(&config, true),
        "s3://buildkit-cache/app/".parse::<S3CacheUri>().unwrap(),
    );
    let policy = policy();
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    let err = s3gc::collect(&cache, &policy.s3_caches[0], later, false)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "a timeout may pass: {err}");
    assert!(err.to_string().contains("ListObjectsV2"), "{err}");
    assert!(proxy.calls_to("list-type=2") >= 1);
    assert_eq!(objects(&direct).await, before, "nothing deleted");
}

/// Issue 21 item 8: the janitor's sweep lists an S3 cache under the invocation
/// deadline, as it lists ECR. With client timeouts far longer than the deadline, a
/// ListObjectsV2 that never answers is stopped by the deadline: the cache is reported
/// left for the next run, the run as stopped by the deadline, and nothing is deleted.
#[tokio::test]
async fn the_sweep_stops_an_s3_listing_at_the_invocation_deadline() {
    let moto = support::TestMoto::start();
    let direct = moto.s3().await;
    let before = seed(&direct).await;
    let proxy = MotoFaultProxy::start(moto.port);
    proxy.always(list_objects_v2(), Fault::NeverAnswer);
    let long = ClientSettings {
        max_attempts: 1,
        operation_timeout: Duration::from_secs(60),
        attempt_timeout: Duration::from_secs(60),
    };
    // ECR straight at moto (no repository selected); S3 through the proxy.
    let catalog = EcrCatalog::with_settings(&moto.sdk_config().await, &long);
    let s3 = long.s3(
        &support::TestMoto::sdk_config_at(&proxy.endpoint()).await,
        true,
    );
    let options = RunOptions {
        dry_run: false,
        now: chrono::Utc::now() + chrono::Duration::days(2),
        deadline: Some(Deadline::new(
            SystemTime::now() + Duration::from_secs(3),
            Duration::ZERO,
        )),
        ..RunOptions::dry_run_now()
    };
    let report = sweep(&catalog, Some(&s3), &policy(), &options)
        .await
        .unwrap();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("ListObjectsV2") && e.contains("the invocation deadline came")),
        "{:?}",
        report.errors
    );
    assert_eq!(report.s3_caches_left, ["s3://buildkit-cache/app/"]);
    assert!(report.stopped_by_deadline);
    assert!(report.s3_caches.is_empty());
    assert_eq!(objects(&direct).await, before, "nothing deleted");
}
