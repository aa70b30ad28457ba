//! Round trips through every kind of repository: a multi-arch OCI index (with
//! attestations) and a Docker manifest list, both with real gzip layers, go
//! layout -> registry (Debian's docker-registry) -> oci-archive -> layout, and every
//! manifest and blob arrives byte-identical (same digests, same bytes).

mod support;

use afterpush::oci::ManifestSummary;
use afterpush::registry::copy::{copy_image, CopyOptions};
use afterpush::registry::distribution::settings::{
    ENV_ENDPOINT, ENV_MAX_ATTEMPTS, ENV_PASSWORD, ENV_USERNAME,
};
use afterpush::registry::distribution::{Credentials, DistributionRepository, RegistrySettings};
use afterpush::registry::layout::{ArchiveRepository, LayoutRepository};
use afterpush::registry::{read_blob_as_stored, Repository};
use afterpush::sample::{self, ManifestFormat, SampleSpec};
use std::collections::BTreeMap;
use support::fault_proxy::{Fault, FaultProxy};

/// Every manifest and blob reachable from `reference`, by digest, with its bytes.
async fn contents(repo: &dyn Repository, reference: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut queue = vec![reference.to_string()];
    while let Some(r) = queue.pop() {
        let m = repo.get_manifest(&r).await.unwrap();
        let summary = ManifestSummary::parse(&r, &m.bytes).unwrap();
        for d in summary.config.iter().chain(&summary.layers) {
            let digest = d.digest.parse().unwrap();
            out.insert(
                d.digest.clone(),
                read_blob_as_stored(repo, &digest).await.unwrap().to_vec(),
            );
        }
        queue.extend(summary.manifests.iter().map(|d| d.digest.clone()));
        out.insert(m.digest.to_string(), m.bytes.to_vec());
    }
    out
}

#[tokio::test]
async fn images_round_trip_byte_identical_through_registry_layout_and_archive() {
    let registry = support::TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let source = LayoutRepository::open_or_create(dir.path().join("source")).unwrap();
    let oci = SampleSpec {
        attestations: true,
        layer_sizes: vec![16 * 1024, 300 * 1024],
        ..SampleSpec::default()
    };
    let docker = SampleSpec {
        format: ManifestFormat::Docker,
        attestations: false,
        seed: 7,
        ..oci.clone()
    };
    sample::write_multi_arch(&source, &oci, Some("oci"))
        .await
        .unwrap();
    sample::write_multi_arch(&source, &docker, Some("docker"))
        .await
        .unwrap();

    let settings = RegistrySettings::default();
    let remote = DistributionRepository::connect(&settings, &registry.host(), "roundtrip").unwrap();
    let archive_path = dir.path().join("image.tar");
    let back = LayoutRepository::open_or_create(dir.path().join("back")).unwrap();
    let options = CopyOptions::default();
    for tag in ["oci", "docker"] {
        let expected = contents(&source, tag).await;
        assert!(expected.len() > 6, "{tag}: {} items", expected.len());

        copy_image(&source, &remote, tag, Some(tag), &options)
            .await
            .unwrap();
        assert_eq!(
            contents(&remote, tag).await,
            expected,
            "{tag}: layout -> registry"
        );

        let archive = ArchiveRepository::open(&archive_path, false).unwrap();
        copy_image(&remote, &archive, tag, Some(tag), &options)
            .await
            .unwrap();
        archive.commit().await.unwrap();
        let archive = ArchiveRepository::open(&archive_path, true).unwrap();
        assert_eq!(
            contents(&archive, tag).await,
            expected,
            "{tag}: registry -> archive"
        );

        copy_image(&archive, &back, tag, Some(tag), &options)
            .await
            .unwrap();
        assert_eq!(
            contents(&back, tag).await,
            expected,
            "{tag}: archive -> layout"
        );
        assert_eq!(
            back.resolve(tag).await.unwrap().digest,
            source.resolve(tag).await.unwrap().digest
        );
    }
    // skopeo, an independent client, reads the OCI image back from the registry.
    let raw = support::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &registry.reference("roundtrip:oci"),
    ]);
    assert_eq!(
        afterpush::oci::Sha256Digest::of(&raw),
        source.resolve("oci").await.unwrap().digest
    );
}

/// `copy` reads the same `AFTERPUSH_REGISTRY_*` settings as every other verb, at both
/// ends: the endpoint override, Basic credentials and the number of attempts. Each is
/// checked by its effect, so a verb that opened registries with the built-in defaults
/// fails here.
#[tokio::test]
async fn cli_copy_reads_the_registry_settings_from_the_environment() {
    let registry = support::TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let creds = Credentials::new("ci-user", "ci-password");
    proxy.require_authorization(&creds.basic_header(), r#"Basic realm="afterpush-test""#);
    let dir = tempfile::tempdir().unwrap();
    let source = LayoutRepository::open_or_create(dir.path().join("source")).unwrap();
    sample::write_multi_arch(&source, &SampleSpec::default(), Some("v1"))
        .await
        .unwrap();
    let root = source.resolve("v1").await.unwrap().digest;

    // References name a loopback port nobody listens on: only the endpoint override
    // reaches the registry (behind the proxy, which demands the credentials).
    let nowhere = format!("docker://127.0.0.1:{}/app:v1", support::free_port());
    let endpoint = format!("http://{}", proxy.host());
    let password = creds.password.expose().to_string();
    let env = [
        (ENV_ENDPOINT, endpoint.as_str()),
        (ENV_USERNAME, creds.username.as_str()),
        (ENV_PASSWORD, password.as_str()),
    ];
    let source_ref = format!("oci:{}:v1", dir.path().join("source").display());
    let (status, _, stderr) = support::afterpush_cli(&["copy", &source_ref, &nowhere], &env);
    assert!(status.success(), "{stderr}");
    let direct =
        DistributionRepository::connect(&RegistrySettings::default(), &registry.host(), "app")
            .unwrap();
    assert_eq!(direct.resolve("v1").await.unwrap().digest, root);
    let basic = creds.basic_header();
    assert!(
        proxy
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(basic.as_str())),
        "{:#?}",
        proxy.seen()
    );

    // From the registry, with one attempt: one injected 500 fails the copy...
    let back = format!("oci:{}:v1", dir.path().join("back").display());
    proxy.add_rule(Some("GET"), "/manifests/", Fault::Status(500), 1);
    let one_attempt = [env.as_slice(), &[(ENV_MAX_ATTEMPTS, "1")]].concat();
    let (status, _, stderr) = support::afterpush_cli(&["copy", &nowhere, &back], &one_attempt);
    assert!(!status.success() && stderr.contains("500"), "{stderr}");
    assert_eq!(proxy.faults_applied(), 1);
    // ...and with the default attempts the same fault is retried through. The retry is
    // a warning, which the CLI logs by default (it set up no logging at all before)...
    proxy.add_rule(Some("GET"), "/manifests/", Fault::Status(500), 1);
    let (status, _, stderr) = support::afterpush_cli(&["copy", &nowhere, &back], &env);
    assert!(status.success() && stderr.contains("retrying"), "{stderr}");
    assert_eq!(proxy.faults_applied(), 2);
    // ...and RUST_LOG chooses what is logged.
    proxy.add_rule(Some("GET"), "/manifests/", Fault::Status(500), 1);
    let quiet = [env.as_slice(), &[("RUST_LOG", "error")]].concat();
    let (status, _, stderr) = support::afterpush_cli(&["copy", &nowhere, &back], &quiet);
    assert!(status.success() && !stderr.contains("retrying"), "{stderr}");
    assert_eq!(proxy.faults_applied(), 3);
    let copied = LayoutRepository::open(dir.path().join("back")).unwrap();
    assert_eq!(copied.resolve("v1").await.unwrap().digest, root);
}

/// `copy` from a registry walks an index chain deeper than a recursive walk survives
/// (it aborted with a stack overflow from about 700 levels in a debug build).
#[tokio::test]
async fn cli_copy_from_a_registry_walks_a_deep_index_chain() {
    const DEPTH: usize = 1000;
    let registry = support::TestRegistry::start();
    let remote =
        DistributionRepository::connect(&RegistrySettings::default(), &registry.host(), "deep")
            .unwrap();
    let image = sample::write_image(
        &remote,
        &SampleSpec::default(),
        &"linux/amd64".parse().unwrap(),
        None,
    )
    .await
    .unwrap();
    let top = support::write_index_chain(&remote, &image.manifest, DEPTH, "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) = support::afterpush_cli(
        &[
            "copy",
            &registry.reference("deep:v1"),
            &format!("oci:{}:v1", dir.path().join("copy").display()),
        ],
        &[],
    );
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stdout.contains(&format!("{} manifests", DEPTH + 1)),
        "{stdout}"
    );
    let copied = LayoutRepository::open(dir.path().join("copy")).unwrap();
    assert_eq!(copied.resolve("v1").await.unwrap().digest, top.digest);
}
