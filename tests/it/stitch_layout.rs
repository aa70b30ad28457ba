//! `afterpush stitch` on an OCI image layout and an oci-archive (the embedded default:
//! no registry), with skopeo reading the result as an independent client.

use crate::support;

use afterpush::oci::{media, Sha256Digest};
use afterpush::registry::layout::{ArchiveRepository, LayoutRepository};
use afterpush::registry::Repository;
use afterpush::sample::{self, ManifestFormat, SampleSpec};
use support::afterpush_stitch_cli as afterpush;

fn spec(seed: u64) -> SampleSpec {
    SampleSpec {
        seed,
        layer_sizes: vec![1500],
        format: ManifestFormat::Oci,
        attestations: false,
        ..SampleSpec::default()
    }
}

#[tokio::test]
async fn stitches_inside_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let repo = LayoutRepository::open_or_create(&layout).unwrap();
    let mut configs = Vec::new();
    for (p, tag) in [("linux/arm64", "1.0-arm64"), ("linux/amd64", "1.0-amd64")] {
        let img = sample::write_image(&repo, &spec(1), &p.parse().unwrap(), Some(tag))
            .await
            .unwrap();
        configs.push(img.config.digest);
    }
    let reference = format!("oci:{}", layout.display());
    let (ok, stdout, stderr) = afterpush(&["stitch", &reference, "--tag", "1.0"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("wrote"), "{stderr}");

    let repo = LayoutRepository::open(&layout).unwrap();
    let stored = repo.get_manifest("1.0").await.unwrap();
    assert_eq!(stored.media_type, media::OCI_INDEX);
    assert_eq!(stdout.trim().as_bytes(), &stored.bytes[..]);

    // skopeo picks the arm64 child of our index out of the layout.
    let config = support::skopeo(&[
        "--override-arch",
        "arm64",
        "--override-os",
        "linux",
        "inspect",
        "--config",
        "--raw",
        &format!("oci:{}:1.0", layout.display()),
    ]);
    assert_eq!(Sha256Digest::of(&config), configs[0]);

    // Running again writes nothing.
    let (ok, stdout_again, stderr) = afterpush(&["stitch", &reference, "--tag", "1.0"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("nothing written"), "{stderr}");
    assert_eq!(stdout_again, stdout);
}

#[tokio::test]
async fn stitches_inside_an_oci_archive() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("images.tar");
    {
        let repo = ArchiveRepository::open(&archive, false).unwrap();
        for (p, tag) in [("linux/amd64", "2.0-amd64"), ("linux/arm64", "2.0-arm64")] {
            sample::write_image(&repo, &spec(2), &p.parse().unwrap(), Some(tag))
                .await
                .unwrap();
        }
        repo.commit().await.unwrap();
    }
    let (ok, stdout, stderr) = afterpush(&[
        "stitch",
        &format!("oci-archive:{}", archive.display()),
        "--tag",
        "2.0",
    ]);
    assert!(ok, "{stderr}");
    let repo = ArchiveRepository::open(&archive, true).unwrap();
    let stored = repo.get_manifest("2.0").await.unwrap();
    assert_eq!(
        stdout.trim().as_bytes(),
        &stored.bytes[..],
        "the archive was committed"
    );
}
