//! What a registry (or anyone between us and one) can make the distribution client do,
//! and its bounds: paged lists that loop, endless config blobs, dripping blob bodies,
//! redirects and upload locations on other hosts, and how many requests one call may
//! send. Against the real registry (Debian's docker-registry) behind the fault proxy,
//! with small loopback servers standing in for other hosts (tests/support). Nothing
//! here sends traffic to a non-loopback address.

mod support;

use afterpush::oci::gojson::GoManifest;
use afterpush::oci::{media, Sha256Digest};
use afterpush::registry::distribution::{
    Credentials, DistributionRepository, RegistryClient, RegistrySettings, RetryPolicy,
};
use afterpush::registry::{push_bytes, BlobStream, Manifest, Repository};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::sync::Arc;
use support::fault_proxy::{Fault, FaultProxy};
use support::http_server::RecordingServer;
use support::{pseudo_random, TestRegistry};

fn settings() -> RegistrySettings {
    RegistrySettings {
        retry: RetryPolicy::fast(),
        ..RegistrySettings::default()
    }
}

fn repo(host: &str, name: &str) -> DistributionRepository {
    DistributionRepository::connect(&settings(), host, name).unwrap()
}

/// A repository whose client sends Basic credentials with every request (as for ECR).
fn repo_with_credentials(host: &str, name: &str) -> DistributionRepository {
    let client = RegistryClient::with_credentials(
        &settings(),
        host,
        Arc::new(Credentials::new("AWS", "registry-secret")),
    )
    .unwrap();
    DistributionRepository::new(Arc::new(client), name).unwrap()
}

/// Pushes a small image tagged `tag`; returns its manifest and config bytes.
async fn push_image(repo: &DistributionRepository, tag: &str) -> (Manifest, Vec<u8>) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = pseudo_random(5_000, 7);
    let config_digest = push_bytes(repo, Bytes::from(config.clone())).await.unwrap();
    let layer_digest = push_bytes(repo, Bytes::from(layer.clone())).await.unwrap();
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{layer_digest}","size":{}}}]}}"#,
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        config.len(),
        media::OCI_LAYER_GZIP,
        layer.len()
    );
    let manifest = Manifest::new(media::OCI_MANIFEST, body.into_bytes());
    repo.put_manifest(&manifest, Some(tag)).await.unwrap();
    (manifest, config)
}

fn count(proxy: &FaultProxy, method: &str, path_contains: &str) -> usize {
    proxy
        .seen()
        .iter()
        .filter(|s| s.method == method && s.path.contains(path_contains))
        .count()
}

/// Issue 21, item 9: a tags/list whose `Link` names the same page again is an error
/// naming the loop (it used to be followed for 10,000 pages and returned as if whole).
#[tokio::test]
async fn a_looping_tag_list_link_fails_naming_the_loop() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");
    push_image(&app, "v1").await;
    proxy.add_rule(
        Some("GET"),
        "/tags/list",
        Fault::Respond {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                (
                    "Link".into(),
                    r#"</v2/app/tags/list?n=1000>; rel="next""#.into(),
                ),
            ],
            body: br#"{"name":"app","tags":["v1"]}"#.to_vec(),
        },
        100_000,
    );
    let err = app.list_tags().await.unwrap_err().to_string();
    assert!(
        err.contains("loops") && err.contains("tags/list?n=1000") && err.contains("tag list"),
        "{err}"
    );
    assert_eq!(
        count(&proxy, "GET", "/tags/list"),
        1,
        "the repeated page is not fetched"
    );
}

/// Issue 21, item 12: referrers API answers in pages are all read (a SOCI index on the
/// second page was "not found").
#[tokio::test]
async fn referrers_on_a_second_page_are_found() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");
    let (subject, _) = push_image(&app, "v1").await;
    let entry = |n: u8| {
        format!(
            r#"{{"mediaType":"{}","digest":"{}","size":10,"artifactType":"application/vnd.amazon.soci.index.v1+json"}}"#,
            media::OCI_MANIFEST,
            Sha256Digest::of(&[n])
        )
    };
    let page = |n: u8| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
            media::OCI_INDEX,
            entry(n)
        )
        .into_bytes()
    };
    let path = format!("/referrers/{}", subject.digest);
    proxy.add_rule(
        Some("GET"),
        &path,
        Fault::Respond {
            status: 200,
            headers: vec![
                ("Content-Type".into(), media::OCI_INDEX.into()),
                (
                    "Link".into(),
                    format!(
                        r#"</v2/app/referrers/{}?page=2>; rel="next""#,
                        subject.digest
                    ),
                ),
            ],
            body: page(1),
        },
        1,
    );
    proxy.add_rule(
        Some("GET"),
        &path,
        Fault::Respond {
            status: 200,
            headers: vec![("Content-Type".into(), media::OCI_INDEX.into())],
            body: page(2),
        },
        1,
    );
    let found = app.referrers(&subject.digest, None).await.unwrap();
    let digests: Vec<String> = found.iter().map(|d| d.digest.clone()).collect();
    assert_eq!(
        digests,
        vec![
            Sha256Digest::of(&[1]).to_string(),
            Sha256Digest::of(&[2]).to_string()
        ]
    );
}

/// Issue 21, item 10: a config declared as N bytes and served without end is cut off
/// after N + 1 bytes, naming the declared size (it used to be read whole into memory).
#[tokio::test]
async fn an_endless_config_is_cut_off_at_its_declared_size() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");
    let (manifest, config) = push_image(&app, "v1").await;
    let parsed: GoManifest = serde_json::from_slice(&manifest.bytes).unwrap();
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{}", parsed.config.digest),
        Fault::Flood {
            status: 200,
            headers: vec![],
            size: 64 * 1024 * 1024,
        },
        1,
    );
    let err = afterpush::soci::convert::platform_from_config(&app, &parsed)
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!("more than the declared {} bytes", config.len())),
        "{message}"
    );
}

/// Issue 21, item 11: a blob body that drips (a byte every 100 ms) is broken off once a
/// stall-timeout window passes without enough progress, and the download resumes with
/// a range request (it used to be read at whatever pace the server chose).
#[tokio::test]
async fn a_dripping_blob_body_is_broken_off_and_resumed() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let mut settings = RegistrySettings::from_lookup(|k| {
        (k == "AFTERPUSH_REGISTRY_BLOB_STALL_TIMEOUT").then(|| "1s".to_string())
    })
    .unwrap();
    settings.retry = RetryPolicy::fast();
    let app = DistributionRepository::connect(&settings, &proxy.host(), "app").unwrap();
    let data = pseudo_random(60, 3);
    let digest = push_bytes(&app, Bytes::from(data.clone())).await.unwrap();
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{digest}"),
        Fault::Drip {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: data.clone(),
            interval: std::time::Duration::from_millis(100),
        },
        1,
    );
    let read = afterpush::registry::read_blob_as_stored(&app, &digest)
        .await
        .unwrap();
    assert_eq!(read, data);
    assert_eq!(
        count(&proxy, "GET", &format!("/blobs/{digest}")),
        2,
        "the dripping body was broken off and the rest fetched again"
    );
}

/// Issue 21, item 4: an upload `Location` on another origin gets no credentials.
#[tokio::test]
async fn an_upload_location_on_another_origin_gets_no_credentials() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let elsewhere = RecordingServer::start("201 Created", "", "");
    let app = repo_with_credentials(&proxy.host(), "app");
    proxy.add_rule(
        Some("POST"),
        "/blobs/uploads/",
        Fault::Respond {
            status: 202,
            headers: vec![(
                "Location".into(),
                format!("{}/upload/session-1", elsewhere.origin()),
            )],
            body: vec![],
        },
        1,
    );
    push_bytes(&app, Bytes::from_static(b"blob for elsewhere"))
        .await
        .unwrap();
    let requests = elsewhere.requests();
    assert!(!requests.is_empty(), "the upload went to the Location");
    for r in &requests {
        assert_eq!(r.authorization, None, "{r:?}");
    }
    // The registry itself did get them.
    assert!(proxy.seen().iter().all(|s| s
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic "))));
}

/// Issue 21, item 6: an error answered by a redirect target is reported without its
/// body, and the target gets no credentials.
#[tokio::test]
async fn a_redirect_targets_error_body_is_never_quoted() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let target = RecordingServer::start("403 Forbidden", "", "METADATA-SECRET-AKIA1234");
    let app = repo_with_credentials(&proxy.host(), "app");
    let digest = push_bytes(&app, Bytes::from_static(b"redirected blob"))
        .await
        .unwrap();
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{digest}"),
        Fault::Respond {
            status: 307,
            headers: vec![(
                "Location".into(),
                format!("{}/latest/meta-data/", target.origin()),
            )],
            body: vec![],
        },
        1,
    );
    let err = afterpush::registry::read_blob_as_stored(&app, &digest)
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("METADATA-SECRET"), "{err}");
    assert!(err.contains("403") && err.contains("redirect"), "{err}");
    let requests = target.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].authorization, None);
}

/// Issue 21, item 6: a redirect to the metadata address is refused before any
/// connection. (Only the refusal is observable here; the address is never contacted
/// because the policy decides before connecting. Not run against the old code, which
/// would have connected.)
#[tokio::test]
async fn a_redirect_to_the_metadata_address_is_refused() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");
    let digest = push_bytes(&app, Bytes::from_static(b"a blob"))
        .await
        .unwrap();
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{digest}"),
        Fault::Respond {
            status: 307,
            headers: vec![(
                "Location".into(),
                "http://169.254.169.254/latest/meta-data/iam/security-credentials/".into(),
            )],
            body: vec![],
        },
        100,
    );
    let err = afterpush::registry::read_blob_as_stored(&app, &digest)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("169.254.169.254") && err.contains("refused"),
        "{err}"
    );
}

/// Issue 21, item 18: one retry budget per request. A manifest read whose attempts
/// alternate between 500s and bodies cut off, a blob download that breaks again on
/// every resume, and an upload whose session cannot start each send at most
/// `max_attempts` requests (they used to send up to 25).
#[tokio::test]
async fn retries_are_not_stacked() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");
    let max = RetryPolicy::fast().max_attempts as usize;
    push_image(&app, "v1").await;
    let data = pseudo_random(200_000, 5);
    let digest = push_bytes(&app, Bytes::from(data)).await.unwrap();

    for _ in 0..max {
        proxy.add_rule(Some("GET"), "/manifests/v1", Fault::Status(500), max - 1);
        proxy.add_rule(
            Some("GET"),
            "/manifests/v1",
            Fault::ResetMidBody { after: 10 },
            1,
        );
    }
    let before = count(&proxy, "GET", "/manifests/v1");
    app.get_manifest("v1").await.unwrap_err();
    assert_eq!(count(&proxy, "GET", "/manifests/v1") - before, max);
    proxy.clear_rules();

    let blob = format!("/blobs/{digest}");
    proxy.add_rule(Some("GET"), &blob, Fault::ResetMidBody { after: 1_000 }, 1);
    for _ in 0..max {
        proxy.add_rule(Some("GET"), &blob, Fault::Status(500), max - 1);
        proxy.add_rule(Some("GET"), &blob, Fault::ResetMidBody { after: 1_000 }, 1);
    }
    afterpush::registry::read_blob_as_stored(&app, &digest)
        .await
        .unwrap_err();
    assert_eq!(count(&proxy, "GET", &blob), max);
    proxy.clear_rules();

    proxy.add_rule(Some("POST"), "/blobs/uploads/", Fault::Status(500), 1_000);
    let bytes = Bytes::from_static(b"an upload that cannot start");
    let upload_digest = Sha256Digest::of(&bytes);
    let reopen: afterpush::registry::distribution::upload::Reopen =
        Box::new(move || -> BoxFuture<'static, _> {
            let bytes = bytes.clone();
            Box::pin(async move {
                let stream: BlobStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
                Ok(stream)
            })
        });
    let before = count(&proxy, "POST", "/blobs/uploads/");
    app.push_blob_reopenable(&upload_digest, 27, reopen)
        .await
        .unwrap_err();
    assert_eq!(count(&proxy, "POST", "/blobs/uploads/") - before, max);
}

/// Issue 21, item 18: retries stop at the deadline of `with_deadline` (an invocation's):
/// with it already past, a failing request is sent once and not retried.
#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");
    push_image(&app, "v1").await;
    proxy.add_rule(Some("GET"), "/manifests/v1", Fault::Status(503), 1_000);
    let passed = std::time::Instant::now();
    let err = afterpush::registry::distribution::with_deadline(passed, app.get_manifest("v1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(count(&proxy, "GET", "/manifests/v1"), 1);
    // Without a deadline the same request is retried to the attempt limit.
    app.get_manifest("v1").await.unwrap_err();
    assert_eq!(
        count(&proxy, "GET", "/manifests/v1"),
        1 + RetryPolicy::fast().max_attempts as usize
    );
}
