//! The OCI distribution client against the real registry (Debian's docker-registry),
//! with a fault-injecting proxy and a token server where the registry cannot misbehave
//! or authenticate on its own (see tests/support/fault_proxy.rs and token_server.rs).

use crate::support;

use afterpush::oci::{media, OciError, Sha256Digest};
use afterpush::registry::distribution::{
    AuthMode, Credentials, DistributionRepository, RegistryClient, RegistrySettings, RetryPolicy,
};
use afterpush::registry::ecr::EcrTokenProvider;
use afterpush::registry::{
    push_bytes, read_blob_as_stored, BlobStream, Manifest, RegistryError, Repository,
};
use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::Duration;
use support::fault_proxy::{Fault, FaultProxy};
use support::token_server::TokenServer;
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

/// A stream of `bytes` cut into uneven pieces (callers must not assume chunk sizes).
fn uneven_stream(bytes: Vec<u8>) -> BlobStream {
    let bytes = Bytes::from(bytes);
    let mut pieces = Vec::new();
    let (mut at, mut step) = (0usize, 1usize);
    while at < bytes.len() {
        let end = (at + step).min(bytes.len());
        pieces.push(Ok(bytes.slice(at..end)));
        at = end;
        step = step * 7 % 300_007 + 1;
    }
    futures::stream::iter(pieces).boxed()
}

fn descriptor_json(media_type: &str, digest: &Sha256Digest, size: usize) -> String {
    format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{size}}}"#)
}

/// An image manifest (pretty-printed, with a trailing newline: the bytes must survive
/// exactly, not be re-serialised).
async fn push_image(
    repo: &DistributionRepository,
    docker: bool,
    seed: u64,
    tag: Option<&str>,
) -> Manifest {
    let (mt, config_mt, layer_mt) = if docker {
        (
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP,
        )
    } else {
        (
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP,
        )
    };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"seed":{seed}}}"#
    );
    let layer = pseudo_random(20_000, seed);
    let config_digest = push_bytes(repo, Bytes::from(config.clone())).await.unwrap();
    let layer_digest = push_bytes(repo, Bytes::from(layer.clone())).await.unwrap();
    let body = format!(
        "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{mt}\",\n   \"config\": {},\n   \"layers\": [ {} ]\n}}\n",
        descriptor_json(config_mt, &config_digest, config.len()),
        descriptor_json(layer_mt, &layer_digest, layer.len()),
    );
    let manifest = Manifest::new(mt, body);
    repo.put_manifest(&manifest, tag).await.unwrap();
    manifest
}

fn index_of(list_type: &str, children: &[&Manifest]) -> Manifest {
    let entries: Vec<String> = children
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"architecture":"{}","os":"linux"}}}}"#,
                m.media_type,
                m.digest,
                m.bytes.len(),
                ["amd64", "arm64"][i % 2]
            )
        })
        .collect();
    Manifest::new(
        list_type,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{list_type}","manifests":[{}]}}"#,
            entries.join(",")
        ),
    )
}

#[tokio::test]
async fn manifests_and_blobs_round_trip_byte_identical() {
    let registry = TestRegistry::start();
    let app = repo(&registry.host(), "team/app");
    assert_eq!(app.location(), format!("{}/team/app", registry.host()));

    let oci_a = push_image(&app, false, 1, None).await;
    let oci_b = push_image(&app, false, 2, None).await;
    let docker_a = push_image(&app, true, 3, None).await;
    let docker_b = push_image(&app, true, 4, None).await;
    let oci_index = index_of(media::OCI_INDEX, &[&oci_a, &oci_b]);
    let docker_list = index_of(media::DOCKER_LIST, &[&docker_a, &docker_b]);
    app.put_manifest(&oci_index, Some("oci")).await.unwrap();
    app.put_manifest(&docker_list, Some("docker"))
        .await
        .unwrap();
    app.put_manifest(&oci_a, Some("single")).await.unwrap();

    for (tag, want) in [
        ("oci", &oci_index),
        ("docker", &docker_list),
        ("single", &oci_a),
    ] {
        let by_tag = app.get_manifest(tag).await.unwrap();
        assert_eq!(&by_tag, want, "{tag}");
        let by_digest = app.get_manifest(&want.digest.to_string()).await.unwrap();
        assert_eq!(&by_digest, want, "{tag} by digest");
        assert_eq!(app.resolve(tag).await.unwrap(), want.descriptor(), "{tag}");
    }
    // Children pushed by digest only are there, exactly.
    for child in [&oci_b, &docker_a, &docker_b] {
        assert_eq!(
            &app.get_manifest(&child.digest.to_string()).await.unwrap(),
            child
        );
    }
    // An independent client sees the same bytes.
    let raw = support::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/team/app:docker", registry.host()),
    ]);
    assert_eq!(raw, docker_list.bytes.to_vec());

    // Blobs come back byte-identical.
    let layer = pseudo_random(20_000, 3);
    let layer_digest = Sha256Digest::of(&layer);
    assert_eq!(
        read_blob_as_stored(&app, &layer_digest).await.unwrap(),
        layer
    );
    assert_eq!(app.blob_size(&layer_digest).await.unwrap(), Some(20_000));
    assert_eq!(
        app.blob_size(&Sha256Digest::of(b"absent")).await.unwrap(),
        None
    );

    assert_eq!(
        app.list_tags().await.unwrap(),
        vec!["docker", "oci", "single"]
    );
    app.delete_manifest(&docker_list.digest).await.unwrap();
    let err = app.get_manifest("docker").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(app.list_tags().await.unwrap(), vec!["oci", "single"]);
    // A repository nothing was pushed to has no tags.
    assert!(repo(&registry.host(), "empty")
        .list_tags()
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn tag_lists_follow_link_pagination() {
    let registry = TestRegistry::start();
    let app = repo(&registry.host(), "app");
    let m = push_image(&app, false, 9, None).await;
    let mut want: Vec<String> = (0..11).map(|i| format!("t{i:02}")).collect();
    for tag in &want {
        app.put_manifest(&m, Some(tag)).await.unwrap();
    }
    want.sort();
    // Pages of 3: the client must follow `Link` four times.
    assert_eq!(app.list_tags_paged(3).await.unwrap(), want);
    assert_eq!(app.list_tags().await.unwrap(), want);
}

#[tokio::test]
async fn range_reads_return_exact_slices() {
    let registry = TestRegistry::start();
    let app = repo(&registry.host(), "app");
    let data = pseudo_random(300_000, 7);
    let digest = push_bytes(&app, Bytes::from(data.clone())).await.unwrap();
    for (start, end) in [
        (0u64, 1u64),
        (0, 300_000),
        (1234, 98_765),
        (299_999, 300_000),
        (5, 5),
    ] {
        let chunks: Vec<Bytes> = app
            .get_blob(&digest, Some(start..end))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            chunks.concat(),
            &data[start as usize..end as usize],
            "{start}..{end}"
        );
    }
    let err = app
        .get_blob(&digest, Some(300_000..400_000))
        .await
        .err()
        .expect("a range past the end fails");
    assert!(
        err.to_string().contains(&digest.to_string()) || err.to_string().contains("416"),
        "{err}"
    );
}

#[tokio::test]
async fn chunked_upload_mount_and_clean_failures() {
    let registry = TestRegistry::start();
    let small_chunks = RegistrySettings {
        monolithic_max: 16 * 1024,
        chunk_size: 64 * 1024,
        ..settings()
    };
    let app = DistributionRepository::connect(&small_chunks, &registry.host(), "app").unwrap();
    let data = pseudo_random(1024 * 1024 + 7, 11);
    let digest = Sha256Digest::of(&data);
    app.push_blob(&digest, data.len() as u64, uneven_stream(data.clone()))
        .await
        .unwrap();
    assert_eq!(read_blob_as_stored(&app, &digest).await.unwrap(), data);
    // Present already: skipped (the stream is not even read).
    let never_read: BlobStream = futures::stream::iter(vec![Err(RegistryError::Invalid {
        location: "test".into(),
        message: "must not be read".into(),
    })])
    .boxed();
    app.push_blob(&digest, data.len() as u64, never_read)
        .await
        .unwrap();

    // Mount into another repository of the same registry.
    let other = app.sibling("other").unwrap();
    assert_eq!(other.blob_size(&digest).await.unwrap(), None);
    assert!(other.mount_blob(&digest, "app").await.unwrap());
    assert_eq!(
        other.blob_size(&digest).await.unwrap(),
        Some(data.len() as u64)
    );
    // Declined mount (the source has no such blob): false, and nothing appears.
    let absent = Sha256Digest::of(b"not there");
    assert!(!other.mount_blob(&absent, "app").await.unwrap());
    assert_eq!(other.blob_size(&absent).await.unwrap(), None);

    // A stream that is not what was declared: refused before the final PUT, nothing stored.
    for (len, chunked) in [(1000usize, false), (200_000, true)] {
        let bytes = pseudo_random(len, 99);
        let claimed = Sha256Digest::of(b"something else");
        let err = app
            .push_blob(&claimed, len as u64, uneven_stream(bytes.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Oci(OciError::DigestMismatch { .. })),
            "chunked={chunked}: {err:?}"
        );
        assert!(err.to_string().contains(&claimed.to_string()), "{err}");
        assert_eq!(app.blob_size(&claimed).await.unwrap(), None);
        assert_eq!(
            app.blob_size(&Sha256Digest::of(&bytes)).await.unwrap(),
            None
        );
        // Too long / too short for the declared size.
        let real = Sha256Digest::of(&bytes);
        let err = app
            .push_blob(&real, len as u64 - 1, uneven_stream(bytes.clone()))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("longer than the declared"),
            "{err}"
        );
        let err = app
            .push_blob(&real, len as u64 + 1, uneven_stream(bytes.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&format!("{len} bytes")), "{err}");
        assert_eq!(app.blob_size(&real).await.unwrap(), None);
    }
    // A source that breaks mid-way: the error comes back, nothing is visible.
    let data = pseudo_random(300_000, 5);
    let digest = Sha256Digest::of(&data);
    let broken: BlobStream = futures::stream::iter(vec![
        Ok(Bytes::from(data[..100_000].to_vec())),
        Err(RegistryError::Io {
            path: "layer.tar.gz".into(),
            source: std::io::Error::other("disk on fire"),
        }),
    ])
    .boxed();
    let err = app
        .push_blob(&digest, data.len() as u64, broken)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert_eq!(app.blob_size(&digest).await.unwrap(), None);
}

#[tokio::test]
async fn missing_tags_and_bad_references_name_the_reference() {
    let registry = TestRegistry::start();
    let app = repo(&registry.host(), "app");
    push_image(&app, false, 1, Some("exists")).await;
    let err = app.get_manifest("nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("{}/app:nope", registry.host())),
        "{err}"
    );
    let err = app.resolve("nope").await.unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("app:nope"),
        "{err}"
    );
    let missing = Sha256Digest::of(b"missing");
    let err = app.get_manifest(&missing.to_string()).await.unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains(&missing.to_string()),
        "{err}"
    );
    for bad in ["-bad-tag", "sha256:short", "has space"] {
        let err = app.get_manifest(bad).await.unwrap_err();
        assert!(matches!(err, RegistryError::Reference(_)), "{bad}: {err:?}");
        assert!(err.to_string().contains(bad), "{err}");
    }
    assert!(DistributionRepository::connect(&settings(), &registry.host(), "Upper/Case").is_err());
}

#[tokio::test]
async fn oversized_or_non_json_manifests_are_refused_naming_the_reference() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");

    // Pushing: refused before any request, nothing is written.
    let huge = Manifest::new(
        media::OCI_MANIFEST,
        format!(
            r#"{{"schemaVersion":2,"annotations":{{"x":"{}"}}}}"#,
            "a".repeat(4 * 1024 * 1024)
        ),
    );
    let err = app.put_manifest(&huge, Some("huge")).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestTooLarge { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("app:huge"), "{err}");
    assert!(proxy
        .seen()
        .iter()
        .all(|s| !s.path.contains("manifests/huge")));

    // Reading: the real registry refuses to store such manifests, so the proxy answers
    // with canned responses (the one mock here: a misbehaving registry).
    let mt = ("Content-Type".to_string(), media::OCI_MANIFEST.to_string());
    let garbage = b"<html>this is not a manifest</html>".to_vec();
    let garbage_digest = Sha256Digest::of(&garbage);
    proxy.add_rule(
        Some("GET"),
        "/manifests/garbage",
        Fault::Respond {
            status: 200,
            headers: vec![
                mt.clone(),
                ("Docker-Content-Digest".into(), garbage_digest.to_string()),
            ],
            body: garbage.clone(),
        },
        1,
    );
    let err = app.get_manifest("garbage").await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Oci(OciError::InvalidManifest { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("app:garbage"), "{err}");

    proxy.add_rule(
        Some("GET"),
        "/manifests/big",
        Fault::Respond {
            status: 200,
            headers: vec![mt],
            body: vec![b' '; 5 * 1024 * 1024],
        },
        1,
    );
    let err = app.get_manifest("big").await.unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestTooLarge { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("app:big"), "{err}");
}

#[tokio::test]
async fn tampered_blobs_and_manifests_are_detected_and_named() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");
    let manifest = push_image(&app, false, 21, Some("v1")).await;
    let layer = pseudo_random(20_000, 21);
    let layer_digest = Sha256Digest::of(&layer);

    // A byte flipped in transit.
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{layer_digest}"),
        Fault::FlipByte { offset: 777 },
        1,
    );
    let items: Vec<_> = app
        .get_blob(&layer_digest, None)
        .await
        .unwrap()
        .collect()
        .await;
    let err = items.last().unwrap().as_ref().unwrap_err();
    assert!(
        matches!(err, RegistryError::Oci(OciError::DigestMismatch { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(&layer_digest.to_string()), "{err}");
    // Never retried silently: one GET of that blob.
    let gets = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path.contains(&layer_digest.to_string()))
        .count();
    assert_eq!(gets, 1);

    proxy.add_rule(
        Some("GET"),
        "/manifests/",
        Fault::FlipByte { offset: 40 },
        2,
    );
    for reference in ["v1".to_string(), manifest.digest.to_string()] {
        let err = app.get_manifest(&reference).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::Oci(OciError::DigestMismatch { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&manifest.digest.to_string()),
            "{err}"
        );
    }

    // A blob corrupted in the registry's own storage.
    let hex = layer_digest.hex();
    let path = registry.dir.path().join(format!(
        "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut stored = std::fs::read(&path).unwrap();
    stored[100] ^= 0xff;
    std::fs::write(&path, stored).unwrap();
    let err = read_blob_as_stored(&app, &layer_digest).await.unwrap_err();
    assert!(err.to_string().contains(&layer_digest.to_string()), "{err}");
    // A range read is not verifiable (partial) but still served.
    let part: Vec<Bytes> = app
        .get_blob(&layer_digest, Some(0..10))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(part.concat(), &layer[..10]);
}

#[tokio::test]
async fn injected_500s_and_connection_resets_are_retried() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let small_chunks = RegistrySettings {
        monolithic_max: 16 * 1024,
        chunk_size: 64 * 1024,
        ..settings()
    };
    let app = DistributionRepository::connect(&small_chunks, &proxy.host(), "app").unwrap();
    proxy.add_rule(Some("HEAD"), "/blobs/", Fault::Status(500), 2);
    proxy.add_rule(Some("POST"), "/blobs/uploads/", Fault::Reset, 1);
    proxy.add_rule(Some("PATCH"), "/blobs/uploads/", Fault::Status(503), 1);
    proxy.add_rule(Some("PATCH"), "/blobs/uploads/", Fault::Reset, 1);
    proxy.add_rule(Some("PUT"), "/blobs/uploads/", Fault::Status(502), 1);
    proxy.add_rule(Some("PUT"), "/manifests/", Fault::Reset, 1);
    proxy.add_rule(Some("GET"), "/manifests/", Fault::Status(429), 1);
    proxy.add_rule(Some("GET"), "/manifests/", Fault::Reset, 1);
    proxy.add_rule(Some("GET"), "/blobs/sha256", Fault::Status(500), 1);
    proxy.add_rule(Some("GET"), "/tags/list", Fault::Reset, 1);

    let data = pseudo_random(500_000, 31);
    let digest = Sha256Digest::of(&data);
    app.push_blob(&digest, data.len() as u64, uneven_stream(data.clone()))
        .await
        .unwrap();
    let manifest = push_image(&app, false, 32, Some("v1")).await;
    assert_eq!(app.get_manifest("v1").await.unwrap(), manifest);
    assert_eq!(read_blob_as_stored(&app, &digest).await.unwrap(), data);
    assert_eq!(app.list_tags().await.unwrap(), vec!["v1"]);
    assert_eq!(proxy.faults_applied(), 11, "{:#?}", proxy.seen());

    // Bounded: a registry that keeps failing gives up with the URL and status.
    proxy.add_rule(Some("GET"), "/manifests/v1", Fault::Status(500), 100);
    let before = proxy.seen().len();
    let err = app.get_manifest("v1").await.unwrap_err();
    assert_eq!(
        proxy.seen().len() - before,
        RetryPolicy::fast().max_attempts as usize
    );
    match &err {
        RegistryError::Http { status, url, .. } => {
            assert_eq!(*status, 500);
            assert!(url.contains("/v2/app/manifests/v1"), "{url}");
        }
        other => panic!("{other:?}"),
    }
    proxy.clear_rules();

    // A lost upload session (the registry took a PATCH whose answer never arrived) is
    // restarted from the start when the source can be re-read...
    proxy.add_rule(Some("PATCH"), "/blobs/uploads/", Fault::DropResponse, 1);
    let data = pseudo_random(300_000, 41);
    let digest = Sha256Digest::of(&data);
    let reopen_data = data.clone();
    app.push_blob_reopenable(
        &digest,
        data.len() as u64,
        Box::new(move || {
            let d = reopen_data.clone();
            Box::pin(async move { Ok(uneven_stream(d)) })
        }),
    )
    .await
    .unwrap();
    assert_eq!(read_blob_as_stored(&app, &digest).await.unwrap(), data);
    // ...and fails cleanly, leaving nothing, when it cannot.
    proxy.add_rule(Some("PATCH"), "/blobs/uploads/", Fault::DropResponse, 1);
    let data = pseudo_random(300_000, 42);
    let digest = Sha256Digest::of(&data);
    let err = app
        .push_blob(&digest, data.len() as u64, uneven_stream(data.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("upload"), "{err}");
    assert_eq!(app.blob_size(&digest).await.unwrap(), None);
}

#[tokio::test]
async fn bearer_challenge_is_followed_with_basic_credentials_for_the_token() {
    let registry = TestRegistry::start();
    let creds = Credentials::new("ci-user", "ci-password");
    let token_server = TokenServer::start("opaque-token-42", Some(creds.basic_header()));
    let proxy = FaultProxy::start(registry.port);
    proxy.require_authorization(
        "Bearer opaque-token-42",
        &format!(
            r#"Bearer realm="{}",service="afterpush-test""#,
            token_server.realm()
        ),
    );
    // The realm is on another origin (port) than the registry, and the challenge came
    // over plain HTTP: the credentials stay home...
    let insecure_off = RegistrySettings {
        auth: AuthMode::Basic(creds.clone()),
        ..settings()
    };
    let app = DistributionRepository::connect(&insecure_off, &proxy.host(), "team/app").unwrap();
    let err = app.list_tags().await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Auth { .. })
            && err.to_string().contains(&token_server.realm())
            && err.to_string().contains("AFTERPUSH_REGISTRY_INSECURE"),
        "{err}"
    );
    assert!(token_server.requests().is_empty());
    // ...unless the insecure setting allows a loopback realm.
    let with_creds = RegistrySettings {
        allow_insecure_http: true,
        ..insecure_off
    };
    let app = DistributionRepository::connect(&with_creds, &proxy.host(), "team/app").unwrap();
    let m = push_image(&app, false, 51, Some("v1")).await;
    assert_eq!(app.get_manifest("v1").await.unwrap(), m);
    assert_eq!(app.list_tags().await.unwrap(), vec!["v1"]);

    let requests = token_server.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(creds.basic_header().as_str())
        );
        assert!(r.target.contains("service=afterpush-test"), "{}", r.target);
    }
    assert!(
        requests.iter().any(|r| r
            .target
            .contains("scope=repository%3Ateam%2Fapp%3Apull%2Cpush")),
        "{requests:?}"
    );
    // Cached per scope: one token per scope set, not one per request.
    assert!(requests.len() <= 2, "{requests:?}");
    let authorized = proxy
        .seen()
        .iter()
        .filter(|s| s.authorization.as_deref() == Some("Bearer opaque-token-42"))
        .count();
    assert!(authorized >= 6, "{:#?}", proxy.seen());

    // Without credentials the token server refuses, and the error names the registry.
    let anonymous = repo(&proxy.host(), "team/app");
    let err = anonymous.get_manifest("v1").await.unwrap_err();
    assert!(matches!(err, RegistryError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains(&proxy.host()), "{err}");
}

#[tokio::test]
async fn ecr_token_from_moto_is_sent_as_basic() {
    let moto = support::TestMoto::start();
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    // moto's token is base64("AWS:<account>-auth-token"), account 123456789012.
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AWS:123456789012-auth-token")
    );
    proxy.require_authorization(&expected, r#"Basic realm="ecr""#);
    let ecr_host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    let through_proxy = RegistrySettings {
        endpoint: Some(format!("http://{}", proxy.host()).parse().unwrap()),
        ..settings()
    };
    let provider = EcrTokenProvider::new(
        &moto.sdk_config().await,
        &afterpush::aws_clients::ClientSettings::default(),
        Some("123456789012".into()),
    );
    let client =
        RegistryClient::with_credentials(&through_proxy, ecr_host, Arc::new(provider)).unwrap();
    let app = DistributionRepository::new(Arc::new(client), "app").unwrap();
    assert_eq!(app.location(), format!("{ecr_host}/app"));
    let m = push_image(&app, false, 61, Some("v1")).await;
    assert_eq!(app.get_manifest("v1").await.unwrap(), m);
    let seen = proxy.seen();
    assert!(seen.len() >= 6);
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(expected.as_str())),
        "{seen:#?}"
    );
}

#[tokio::test]
async fn referrers_fall_back_to_the_tag_schema() {
    let registry = TestRegistry::start();
    let app = repo(&registry.host(), "app");
    let subject = push_image(&app, false, 71, Some("v1")).await;
    let empty = push_bytes(&app, Bytes::from_static(b"{}")).await.unwrap();
    let referrer = |artifact_type: &str, note: &str| {
        Manifest::new(
            media::OCI_MANIFEST,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"{artifact_type}","config":{},"layers":[{}],"subject":{},"annotations":{{"note":"{note}"}}}}"#,
                media::OCI_MANIFEST,
                descriptor_json(media::OCI_EMPTY, &empty, 2),
                descriptor_json(media::OCI_EMPTY, &empty, 2),
                descriptor_json(&subject.media_type, &subject.digest, subject.bytes.len()),
            ),
        )
    };
    assert!(app
        .referrers(&subject.digest, None)
        .await
        .unwrap()
        .is_empty());
    let soci = referrer(media::SOCI_INDEX_V2, "soci");
    let sig = referrer("application/vnd.example.sig", "sig");
    app.push_referrer(&soci).await.unwrap();
    app.push_referrer(&sig).await.unwrap();
    app.push_referrer(&soci).await.unwrap(); // idempotent
    let all = app.referrers(&subject.digest, None).await.unwrap();
    let digests: Vec<&str> = all.iter().map(|d| d.digest.as_str()).collect();
    assert_eq!(
        digests,
        vec![soci.digest.to_string(), sig.digest.to_string()]
    );
    assert_eq!(all[0].artifact_type.as_deref(), Some(media::SOCI_INDEX_V2));
    assert_eq!(
        all[0].annotations.get("note").map(String::as_str),
        Some("soci")
    );
    let only_soci = app
        .referrers(&subject.digest, Some(media::SOCI_INDEX_V2))
        .await
        .unwrap();
    assert_eq!(only_soci.len(), 1);
    assert_eq!(only_soci[0].digest, soci.digest.to_string());
    assert!(app
        .list_tags()
        .await
        .unwrap()
        .contains(&format!("sha256-{}", subject.digest.hex())));
    // The referrers themselves are stored exactly.
    assert_eq!(
        app.get_manifest(&sig.digest.to_string()).await.unwrap(),
        sig
    );
    let no_subject = app.push_referrer(&subject).await.unwrap_err();
    assert!(
        no_subject.to_string().contains("no subject"),
        "{no_subject}"
    );
}

#[tokio::test]
async fn downloads_broken_mid_body_resume_where_they_stopped() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");
    let data = pseudo_random(600_000, 81);
    let digest = push_bytes(&app, Bytes::from(data.clone())).await.unwrap();

    // Full read: broken twice, resumed twice, digest still verified over all bytes.
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{digest}"),
        Fault::ResetMidBody { after: 100_000 },
        2,
    );
    assert_eq!(read_blob_as_stored(&app, &digest).await.unwrap(), data);
    let gets = || {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path.contains(&digest.to_string()))
            .count()
    };
    assert_eq!(gets(), 3);
    assert_eq!(proxy.faults_applied(), 2);

    // Range read, broken once.
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{digest}"),
        Fault::ResetMidBody { after: 50_000 },
        1,
    );
    let part: Vec<Bytes> = app
        .get_blob(&digest, Some(10_000..400_000))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(part.concat(), &data[10_000..400_000]);
    assert_eq!(gets(), 5);

    // A resumed download whose resumed part is tampered with is still caught.
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{digest}"),
        Fault::ResetMidBody { after: 100_000 },
        1,
    );
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{digest}"),
        Fault::FlipByte { offset: 5 },
        1,
    );
    let err = read_blob_as_stored(&app, &digest).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Oci(OciError::DigestMismatch { .. })),
        "{err:?}"
    );

    // Bounded: a connection that always breaks gives up with a transport error.
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{digest}"),
        Fault::ResetMidBody { after: 1_000 },
        100,
    );
    let err = read_blob_as_stored(&app, &digest).await.unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn basic_challenge_is_answered_once_and_wrong_credentials_fail() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let creds = Credentials::new("ci-user", "s3cret");
    proxy.require_authorization(&creds.basic_header(), r#"Basic realm="registry""#);
    let with = |c: &Credentials| RegistrySettings {
        auth: AuthMode::Basic(c.clone()),
        ..settings()
    };
    let app = DistributionRepository::connect(&with(&creds), &proxy.host(), "app").unwrap();
    let m = push_image(&app, false, 91, Some("v1")).await;
    assert_eq!(app.get_manifest("v1").await.unwrap(), m);
    let seen = proxy.seen();
    // Only the very first request went without credentials (and got the challenge).
    assert!(seen[0].authorization.is_none());
    assert!(
        seen[1..]
            .iter()
            .all(|s| s.authorization.as_deref() == Some(creds.basic_header().as_str())),
        "{seen:#?}"
    );

    let wrong = DistributionRepository::connect(
        &with(&Credentials::new("ci-user", "nope")),
        &proxy.host(),
        "app",
    )
    .unwrap();
    let before = proxy.seen().len();
    let err = wrong.get_manifest("v1").await.unwrap_err();
    assert!(matches!(err, RegistryError::Auth { .. }), "{err:?}");
    assert!(
        !format!("{err} {err:?}").contains("nope"),
        "secrets stay out of errors"
    );
    assert_eq!(
        proxy.seen().len() - before,
        2,
        "challenge answered once, no loop"
    );
}

#[tokio::test]
async fn referrers_api_is_used_when_the_registry_has_it() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let app = repo(&proxy.host(), "app");
    let subject = Sha256Digest::of(b"subject");
    let listed = Sha256Digest::of(b"referrer");
    // docker-registry 2.8 has no referrers API: the proxy answers for one (a stand-in
    // for ECR, which has it), so the client must not fall back to the tag schema.
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{listed}","size":10,"artifactType":"{}"}}]}}"#,
        media::OCI_INDEX,
        media::OCI_MANIFEST,
        media::SOCI_INDEX_V2
    );
    proxy.add_rule(
        Some("GET"),
        &format!("/referrers/{subject}"),
        Fault::Respond {
            status: 200,
            headers: vec![("Content-Type".into(), media::OCI_INDEX.into())],
            body: index.into_bytes(),
        },
        2,
    );
    let found = app.referrers(&subject, None).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].digest, listed.to_string());
    assert!(app
        .referrers(&subject, Some("application/other"))
        .await
        .unwrap()
        .is_empty());
    assert!(
        proxy.seen().iter().all(|s| !s.path.contains("sha256-")),
        "{:#?}",
        proxy.seen()
    );
    let query = proxy.seen().last().unwrap().path.clone();
    assert!(
        query.contains("artifactType=application%2Fother"),
        "{query}"
    );
}

/// A token realm or a manifest that streams without end, or drips a byte at a time, is
/// cut off. Token answers are capped; every request but a blob transfer has a total
/// deadline (`small_response_timeout`), which a drip never trips as a read timeout.
#[tokio::test]
async fn hostile_token_realms_and_dripped_manifests_are_cut_off() {
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    // The proxy is its own realm: `/token` answers come from the rules below.
    proxy.require_authorization(
        "Bearer good",
        &format!(
            r#"Bearer realm="http://{}/token",service="t""#,
            proxy.host()
        ),
    );
    let quick = RegistrySettings {
        small_response_timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::fast()
        },
        ..settings()
    };
    let app = DistributionRepository::connect(&quick, &proxy.host(), "app").unwrap();
    let json = || vec![("Content-Type".to_string(), "application/json".to_string())];

    // 64 MiB of token answer, with no Content-Length: refused at the cap.
    proxy.add_rule(
        Some("GET"),
        "/token",
        Fault::Flood {
            status: 200,
            headers: json(),
            size: 64 << 20,
        },
        1,
    );
    let err = app.list_tags().await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Auth { .. }) && err.to_string().contains("limit"),
        "{err}"
    );

    // A token dripped a byte every 300 ms (5 s for all of it): cut at the deadline.
    let token = br#"{"token":"good"}"#.to_vec();
    proxy.add_rule(
        Some("GET"),
        "/token",
        Fault::Drip {
            status: 200,
            headers: json(),
            body: token.clone(),
            interval: Duration::from_millis(300),
        },
        1,
    );
    let err = app.list_tags().await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Auth { .. })
            && err.to_string().contains("no complete answer within"),
        "{err}"
    );

    // The same token sent at once is taken: the failures were the hostile answers.
    proxy.add_rule(
        Some("GET"),
        "/token",
        Fault::Respond {
            status: 200,
            headers: json(),
            body: token,
        },
        usize::MAX,
    );
    let m = push_image(&app, false, 71, Some("v1")).await;

    // A manifest dripped (its first 20 bytes, 6 s in all): cut at the deadline, and the
    // error names the manifest.
    proxy.add_rule(
        Some("GET"),
        "/manifests/v1",
        Fault::Drip {
            status: 200,
            headers: vec![("Content-Type".to_string(), m.media_type.clone())],
            body: m.bytes[..20].to_vec(),
            interval: Duration::from_millis(300),
        },
        1,
    );
    let err = app.get_manifest("v1").await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Transport { .. })
            && err.to_string().contains("no complete answer within")
            && err.to_string().contains("app:v1"),
        "{err}"
    );
    assert_eq!(app.get_manifest("v1").await.unwrap(), m);
}
