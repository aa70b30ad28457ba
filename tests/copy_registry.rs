//! Round trips through every kind of repository: a multi-arch OCI index (with
//! attestations) and a Docker manifest list, both with real gzip layers, go
//! layout -> registry (Debian's docker-registry) -> oci-archive -> layout, and every
//! manifest and blob arrives byte-identical (same digests, same bytes).

mod support;

use afterpush::copy::{copy_image, CopyOptions};
use afterpush::oci::ManifestSummary;
use afterpush::registry::distribution::{DistributionRepository, RegistrySettings};
use afterpush::registry::layout::{ArchiveRepository, LayoutRepository};
use afterpush::registry::{read_blob, Repository};
use afterpush::sample::{self, ManifestFormat, SampleSpec};
use std::collections::BTreeMap;

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
                read_blob(repo, &digest).await.unwrap().to_vec(),
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
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &registry.reference("roundtrip:oci"),
        ])
        .output()
        .expect("skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        afterpush::oci::Sha256Digest::of(&out.stdout),
        source.resolve("oci").await.unwrap().digest
    );
}
