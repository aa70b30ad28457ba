//! S3 BuildKit cache mark and sweep against moto's S3: manifests expire by name and
//! age, then exactly the blobs no remaining manifest names (and older than blob_grace)
//! go. moto cannot backdate objects, so ages are tested by collecting at a later `now`.

use crate::support;

use afterpush::catalog::s3cache::{S3Cache, S3CacheUri};
use afterpush::cleanup::policy::Policy;
use afterpush::cleanup::s3gc::collect;
use chrono::{Duration, Utc};
use std::collections::BTreeSet;

const BUCKET: &str = "buildkit-cache";

fn blob(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// A cacheconfig as BuildKit's s3 cache writes it under `manifests/<name>`.
fn cache_manifest(blobs: &[char]) -> String {
    let layers: Vec<String> = blobs
        .iter()
        .map(|b| format!(r#"{{"blob":"{}","parent":-1}}"#, blob(*b)))
        .collect();
    format!(
        r#"{{"layers":[{}],"records":[{{"digest":"sha256:{}","results":[{{"layerIndex":0}}]}}]}}"#,
        layers.join(","),
        "9".repeat(64)
    )
}

async fn objects(s3: &aws_sdk_s3::Client) -> BTreeSet<String> {
    let out = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn s3_cache_loses_exactly_the_dead_blobs() {
    let moto = support::TestMoto::start();
    let s3 = moto.s3().await;
    support::create_s3_bucket(&s3, BUCKET).await;
    let put = |key: String, body: String| {
        let s3 = s3.clone();
        async move {
            s3.put_object()
                .bucket(BUCKET)
                .key(key)
                .body(body.into_bytes().into())
                .send()
                .await
                .unwrap();
        }
    };
    put("app/manifests/main".into(), cache_manifest(&['a', 'b'])).await;
    put(
        "app/manifests/feature-old".into(),
        cache_manifest(&['b', 'c']),
    )
    .await;
    put("app/manifests/feature-new".into(), cache_manifest(&['d'])).await;
    for b in ['a', 'b', 'c', 'd', 'e'] {
        put(format!("app/blobs/{}", blob(b)), format!("blob {b}")).await;
    }
    // Not BuildKit blobs, or another cache: never touched.
    put("app/blobs/README".into(), "x".into()).await;
    put(
        "other/blobs/".to_string() + &blob('f'),
        "other cache".into(),
    )
    .await;
    let all = objects(&s3).await;

    let policy = Policy::parse(
        "repositories: ['*']\ns3_caches: [{uri: 's3://buildkit-cache/app/', keep: [main], expire_unused_for: 14d, blob_grace: 24h}]",
    )
    .unwrap()
    .s3_caches
    .remove(0);
    let cache = S3Cache::new(
        s3.clone(),
        "s3://buildkit-cache/app".parse::<S3CacheUri>().unwrap(),
    );

    // Now: every blob is younger than blob_grace — nothing goes, even the unreferenced e.
    let now = collect(&cache, &policy, Utc::now(), false).await.unwrap();
    assert!(now.plan.dead_blobs.is_empty() && now.plan.expired_manifests.is_empty());
    assert_eq!(now.plan.young_blobs, 1);
    assert_eq!(objects(&s3).await, all);

    // +13 days: no manifest expired yet; only the unreferenced blob e goes.
    let r = collect(&cache, &policy, Utc::now() + Duration::days(13), false)
        .await
        .unwrap();
    assert_eq!(r.deleted, [format!("blobs/{}", blob('e'))]);
    assert_eq!(r.plan.live_blobs, 4);

    // +30 days, dry run: the plan names both branch manifests and blobs c and d, and
    // nothing is deleted.
    let at30 = Utc::now() + Duration::days(30);
    let dry = collect(&cache, &policy, at30, true).await.unwrap();
    let expired: BTreeSet<&str> = dry
        .plan
        .expired_manifests
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        expired,
        BTreeSet::from(["manifests/feature-old", "manifests/feature-new"])
    );
    let dead: BTreeSet<String> = dry.plan.dead_blobs.iter().cloned().collect();
    assert_eq!(
        dead,
        BTreeSet::from([
            format!("blobs/{}", blob('c')),
            format!("blobs/{}", blob('d'))
        ])
    );
    assert!(dry.deleted.is_empty());
    let before = objects(&s3).await;

    // Apply: exactly those four objects go.
    let r = collect(&cache, &policy, at30, false).await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let after = objects(&s3).await;
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(
        gone,
        BTreeSet::from([
            "app/manifests/feature-old".to_string(),
            "app/manifests/feature-new".to_string(),
            format!("app/blobs/{}", blob('c')),
            format!("app/blobs/{}", blob('d')),
        ])
    );
    assert!(after.contains(&format!("app/blobs/{}", blob('a'))));
    assert!(after.contains("app/blobs/README"));
    assert!(after.contains(&format!("other/blobs/{}", blob('f'))));
}

#[tokio::test]
async fn missing_bucket_is_an_error_naming_the_cache() {
    let moto = support::TestMoto::start();
    let s3 = moto.s3().await;
    // The bucket does not exist: listing fails with an error naming the cache URI.
    let policy = Policy::parse("repositories: ['*']\ns3_caches: [{uri: 's3://missing-bucket/p/'}]")
        .unwrap()
        .s3_caches
        .remove(0);
    let cache = S3Cache::new(s3, policy.uri.clone());
    let err = collect(&cache, &policy, Utc::now(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://missing-bucket/p/"), "{err}");
}
