//! Copying images between layouts and archives: byte-identical round trips of a
//! multi-arch OCI index and a Docker manifest list with real gzip layers.
//! (Registry round trips are added once the distribution client is merged.)

mod support;

use afterpush::oci::{ManifestSummary, Sha256Digest};
use afterpush::registry::copy::{copy_image, CopyEvent, CopyOptions};
use afterpush::registry::layout::{ArchiveRepository, LayoutRepository};
use afterpush::registry::open::{open_repository, OpenSettings};
use afterpush::registry::{read_blob_as_stored, Manifest, Repository};
use afterpush::sample::{self, ManifestFormat, SampleSpec};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Every manifest and blob reachable from `reference`, by digest, with its bytes.
async fn closure(repo: &dyn Repository, reference: &str) -> BTreeMap<Sha256Digest, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![repo.get_manifest(reference).await.unwrap()];
    while let Some(m) = todo.pop() {
        let s = ManifestSummary::parse("m", &m.bytes).unwrap();
        for child in &s.manifests {
            todo.push(repo.get_manifest(&child.digest).await.unwrap());
        }
        for blob in s.config.iter().chain(&s.layers) {
            let d: Sha256Digest = blob.digest.parse().unwrap();
            let bytes = read_blob_as_stored(repo, &d).await.unwrap();
            assert_eq!(bytes.len() as u64, blob.size);
            out.insert(d, bytes.to_vec());
        }
        out.insert(m.digest.clone(), m.bytes.to_vec());
    }
    out
}

async fn round_trip(spec: SampleSpec) {
    let dir = tempfile::tempdir().unwrap();
    let src = LayoutRepository::open_or_create(dir.path().join("src")).unwrap();
    let written = sample::write_multi_arch(&src, &spec, Some("v1"))
        .await
        .unwrap();
    let original = closure(&src, "v1").await;
    assert_eq!(
        original.len(),
        1 + spec.platforms.len() * (2 + spec.layer_sizes.len()) + written.attestations.len() * 3
    );

    // layout -> archive
    let tar = dir.path().join("image.tar");
    let archive = ArchiveRepository::open(&tar, false).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let options = CopyOptions {
        progress: Some(Arc::new(move |e| sink.lock().unwrap().push(e))),
        concurrency: 3,
        ..Default::default()
    };
    let report = copy_image(&src, &archive, "v1", Some("v1"), &options)
        .await
        .unwrap();
    archive.commit().await.unwrap();
    drop(archive);
    assert_eq!(report.root.as_ref().unwrap().digest, written.index.digest);
    assert_eq!(report.blobs_skipped, 0);
    let blob_bytes: u64 = original
        .iter()
        .filter(|(d, _)| report.root.as_ref().unwrap().digest != **d)
        .map(|(_, b)| b.len() as u64)
        .sum::<u64>();
    // Every manifest is pushed, every blob transferred (manifests are not blobs here).
    let manifests = 1 + spec.platforms.len() + written.attestations.len();
    assert_eq!(report.manifests, manifests);
    assert_eq!(report.blobs_copied, original.len() - manifests);
    let events = events.lock().unwrap().clone();
    let streamed: u64 = events
        .iter()
        .map(|e| match e {
            CopyEvent::BlobBytes { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum();
    assert_eq!(streamed, report.bytes_copied);
    assert!(
        report.bytes_copied < blob_bytes,
        "manifest bytes are not blob bytes"
    );

    // archive -> layout, through open_repository as the CLI does it.
    let archive_ref = format!("oci-archive:{}:v1", tar.display()).parse().unwrap();
    let from_archive = open_repository(&archive_ref, &OpenSettings::default())
        .await
        .unwrap();
    let back_ref = format!("oci:{}:v1", dir.path().join("back").display())
        .parse()
        .unwrap();
    let back = open_repository(&back_ref, &OpenSettings::default().creating())
        .await
        .unwrap();
    copy_image(
        from_archive.as_ref(),
        back.as_ref(),
        "v1",
        Some("v1"),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    back.commit().await.unwrap();
    assert_eq!(closure(from_archive.as_ref(), "v1").await, original);
    assert_eq!(closure(back.as_ref(), "v1").await, original);

    // Copying again skips every blob.
    let again = copy_image(
        &src,
        back.as_ref(),
        "v1",
        Some("v2"),
        &CopyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(again.blobs_copied, 0);
    assert_eq!(again.blobs_skipped, report.blobs_copied);
    assert_eq!(
        back.resolve("v2").await.unwrap().digest,
        written.index.digest
    );
}

#[tokio::test]
async fn multi_arch_oci_index_round_trips_byte_identical() {
    round_trip(SampleSpec {
        platforms: vec![
            "linux/amd64".parse().unwrap(),
            "linux/arm64".parse().unwrap(),
            "linux/arm/v7".parse().unwrap(),
        ],
        layer_sizes: vec![10_000, 300_000],
        ..SampleSpec::default()
    })
    .await;
}

#[tokio::test]
async fn docker_manifest_list_round_trips_byte_identical() {
    round_trip(SampleSpec {
        format: ManifestFormat::Docker,
        layer_sizes: vec![20_000, 200_000],
        ..SampleSpec::default()
    })
    .await;
}

#[tokio::test]
async fn a_large_layer_streams_through_and_a_missing_child_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = LayoutRepository::open_or_create(dir.path().join("src")).unwrap();
    let spec = SampleSpec {
        platforms: vec!["linux/amd64".parse().unwrap()],
        layer_sizes: vec![40 * 1024 * 1024],
        attestations: false,
        ..SampleSpec::default()
    };
    let written = sample::write_multi_arch(&src, &spec, Some("big"))
        .await
        .unwrap();
    let layer = &written.images[0].layers[0].blob;
    eprintln!(
        "40 MiB of content -> {} bytes gzip ({:.2}x)",
        layer.size,
        (40 * 1024 * 1024) as f64 / layer.size as f64
    );
    assert!(
        layer.size > 10 * 1024 * 1024,
        "tests need layers over 10 MiB: {}",
        layer.size
    );
    let dst = LayoutRepository::open_or_create(dir.path().join("dst")).unwrap();
    copy_image(&src, &dst, "big", Some("big"), &CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(
        dst.blob_size(&layer.digest).await.unwrap(),
        Some(layer.size)
    );

    // Remove a platform manifest from the source: the copy fails naming it, and the
    // destination gets no index.
    let child = &written.images[0].manifest.digest;
    std::fs::remove_file(src.blob_path(child)).unwrap();
    let other = LayoutRepository::open_or_create(dir.path().join("other")).unwrap();
    let err = copy_image(&src, &other, "big", Some("big"), &CopyOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&child.to_string()), "{err}");
    assert!(other.list_tags().await.unwrap().is_empty());
}

#[tokio::test]
async fn referrers_are_copied_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let src = LayoutRepository::open_or_create(dir.path().join("src")).unwrap();
    let spec = SampleSpec {
        platforms: vec!["linux/amd64".parse().unwrap()],
        layer_sizes: vec![1000],
        ..SampleSpec::default()
    };
    let written = sample::write_multi_arch(&src, &spec, Some("v1"))
        .await
        .unwrap();
    let empty = afterpush::registry::push_bytes(&src, bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let subject = &written.images[0].manifest;
    let referrer = Manifest::new(
        afterpush::oci::media::OCI_MANIFEST,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{}","digest":"{}","size":{}}}}}"#,
            subject.media_type, subject.digest, subject.size
        )
        .into_bytes(),
    );
    src.put_manifest(&referrer, None).await.unwrap();

    let plain = LayoutRepository::open_or_create(dir.path().join("plain")).unwrap();
    copy_image(&src, &plain, "v1", Some("v1"), &CopyOptions::default())
        .await
        .unwrap();
    assert!(plain
        .referrers(&subject.digest, None)
        .await
        .unwrap()
        .is_empty());

    let with = LayoutRepository::open_or_create(dir.path().join("with")).unwrap();
    let report = copy_image(
        &src,
        &with,
        "v1",
        Some("v1"),
        &CopyOptions {
            referrers: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.referrers, 1);
    let found = with.referrers(&subject.digest, None).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].digest, referrer.digest.to_string());
}

/// Runs the CLI with no registry settings; returns (success, stdout, stderr).
fn afterpush(args: &[&str]) -> (bool, String, String) {
    let (status, stdout, stderr) = support::afterpush_cli(args, &[]);
    (status.success(), stdout, stderr)
}

/// A three-platform sample image with attestations, tagged `demo`, in a new layout (what
/// the first `afterpush demo` wrote; the demo now replays push events instead).
async fn write_sample_layout(layout: &std::path::Path, seed: u64) -> LayoutRepository {
    let repo = LayoutRepository::open_or_create(layout).unwrap();
    let spec = SampleSpec {
        seed,
        platforms: ["linux/amd64", "linux/arm64", "linux/arm/v7"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect(),
        layer_sizes: vec![65536, 1048576],
        attestations: true,
        ..SampleSpec::default()
    };
    sample::write_multi_arch(&repo, &spec, Some("demo"))
        .await
        .unwrap();
    repo
}

#[tokio::test]
async fn cli_copy_of_a_sample_to_an_archive_skopeo_reads() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("demo");
    let repo = write_sample_layout(&layout, 1).await;
    let index = repo.get_manifest("demo").await.unwrap();

    let tar = dir.path().join("demo.tar");
    let (ok, stdout, stderr) = afterpush(&[
        "copy",
        &format!("oci:{}:demo", layout.display()),
        &format!("oci-archive:{}", tar.display()),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("7 manifests"), "{stdout}");
    let raw = support::skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:demo", tar.display()),
    ]);
    assert_eq!(Sha256Digest::of(&raw), index.digest);

    // A copy that fails midway (a layer of the source is gone) leaves the existing
    // archive exactly as it was.
    let before = std::fs::read(&tar).unwrap();
    let other_dir = dir.path().join("other");
    let other = write_sample_layout(&other_dir, 9).await;
    let other_index = other.get_manifest("demo").await.unwrap();
    let child = &ManifestSummary::parse("index", &other_index.bytes)
        .unwrap()
        .manifests[1]
        .digest;
    let child = other.get_manifest(child).await.unwrap();
    let layer: Sha256Digest = ManifestSummary::parse("child", &child.bytes)
        .unwrap()
        .layers[1]
        .digest
        .parse()
        .unwrap();
    std::fs::remove_file(other.blob_path(&layer)).unwrap();
    let (ok, _, stderr) = afterpush(&[
        "copy",
        &format!("oci:{}:demo", other_dir.display()),
        &format!("oci-archive:{}:other", tar.display()),
    ]);
    assert!(!ok && stderr.contains(&layer.to_string()), "{stderr}");
    assert_eq!(
        std::fs::read(&tar).unwrap(),
        before,
        "a failed copy changed the archive"
    );
    // Nor a layout: a new one is not left behind, empty, and an existing one keeps
    // exactly its files (none of the blobs the failed copy wrote).
    let new_layout = dir.path().join("new-layout");
    let (ok, _, stderr) = afterpush(&[
        "copy",
        &format!("oci:{}:demo", other_dir.display()),
        &format!("oci:{}:other", new_layout.display()),
    ]);
    assert!(!ok && stderr.contains(&layer.to_string()), "{stderr}");
    assert!(
        !new_layout.exists(),
        "a failed copy left {}",
        new_layout.display()
    );
    let files_before = support::files_under(&layout);
    let (ok, _, stderr) = afterpush(&[
        "copy",
        &format!("oci:{}:demo", other_dir.display()),
        &format!("oci:{}:other", layout.display()),
    ]);
    assert!(!ok && stderr.contains(&layer.to_string()), "{stderr}");
    assert_eq!(
        support::files_under(&layout),
        files_before,
        "a failed copy left blobs"
    );

    // Errors name the reference, and each cause once: an error whose message already
    // includes its source is not followed by that source again ("…: Is a directory (os
    // error 21): Is a…").
    let odd = dir.path().join("odd-layout");
    std::fs::create_dir_all(odd.join("oci-layout")).unwrap();
    let (ok, _, stderr) = afterpush(&["copy", &format!("oci:{}:x", odd.display()), "oci:/tmp/y"]);
    assert!(!ok && stderr.contains("odd-layout"), "{stderr}");
    assert_eq!(stderr.matches("Is a directory").count(), 1, "{stderr}");
    let (ok, _, stderr) = afterpush(&["copy", "oci:/nonexistent/x:tag", "oci:/tmp/y"]);
    assert!(!ok && stderr.contains("/nonexistent/x"), "{stderr}");
    let (ok, _, stderr) = afterpush(&["copy", "s3://bucket/x", "oci:/tmp/y"]);
    assert!(!ok && stderr.contains("s3://bucket/x"), "{stderr}");
}

/// An index chain thousands deep (legal OCI, and what a hostile source can send) is
/// copied, and no verb that walks it crashes: each answers or fails with a message.
/// Thousands, because a walk that recurses overflows its stack (abort, rc 134) from
/// about 700 levels in a debug build.
#[tokio::test]
async fn a_deep_index_chain_is_copied_and_no_verb_crashes_on_it() {
    const DEPTH: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("deep");
    let repo = LayoutRepository::open_or_create(&layout).unwrap();
    let image = sample::write_image(
        &repo,
        &SampleSpec::default(),
        &"linux/amd64".parse().unwrap(),
        None,
    )
    .await
    .unwrap();
    let top = support::write_index_chain(&repo, &image.manifest, DEPTH, "deep").await;
    repo.put_manifest(&top, Some("deep-amd64")).await.unwrap();

    let copy_dir = dir.path().join("copy");
    let (status, stdout, stderr) = support::afterpush_cli(
        &[
            "copy",
            &format!("oci:{}:deep", layout.display()),
            &format!("oci:{}:deep", copy_dir.display()),
        ],
        &[],
    );
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stdout.contains(&format!("{} manifests", DEPTH + 1)),
        "{stdout}"
    );
    let copied = LayoutRepository::open(&copy_dir).unwrap();
    assert_eq!(copied.resolve("deep").await.unwrap().digest, top.digest);
    assert_eq!(closure(&copied, "deep").await, closure(&repo, "deep").await);

    // The other walkers: each exits with a code (0 or a clean failure), none by a signal.
    let image_ref = format!("oci:{}:deep", layout.display());
    let repo_ref = format!("oci:{}", layout.display());
    for args in [
        vec!["soci", "list", image_ref.as_str()],
        vec!["soci", "create", image_ref.as_str()],
        vec![
            "stitch",
            repo_ref.as_str(),
            "--tag",
            "deep",
            "--mode",
            "partial",
        ],
    ] {
        let (status, _, stderr) = support::afterpush_cli(&args, &[]);
        assert!(
            status.code().is_some(),
            "{args:?} crashed: {status}: {stderr}"
        );
    }
    // The janitor's view of a layout walks every manifest reachable from index.json.
    let catalog = afterpush::catalog::layout::LayoutCatalog::open(&layout).unwrap();
    let images = afterpush::catalog::Catalog::list_images(&catalog, "deep")
        .await
        .unwrap();
    assert_eq!(images.len(), DEPTH + 1);
}

/// What the CLI writes for the user (layout blobs, index.json, archives, zTOCs) gets the
/// permissions `cp` gives a new file: 0666 less the umask, not the 0600 of the private
/// temporary file each is written as before it is renamed into place.
#[tokio::test]
async fn cli_outputs_take_the_permissions_of_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let repo = write_sample_layout(&source, 3).await;
    let index = repo.get_manifest("demo").await.unwrap();
    let child = &ManifestSummary::parse("index", &index.bytes)
        .unwrap()
        .manifests[0]
        .digest;
    let child = repo.get_manifest(child).await.unwrap();
    let layer: Sha256Digest = ManifestSummary::parse("child", &child.bytes)
        .unwrap()
        .layers[0]
        .digest
        .parse()
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for (umask, expected) in [("022", 0o644), ("077", 0o600)] {
        let out = dir.path().join(format!("umask-{umask}"));
        let (layout, archive, ztoc) = (
            out.join("layout"),
            out.join("image.tar"),
            out.join("layer.ztoc"),
        );
        std::fs::create_dir(&out).unwrap();
        let layer_path = repo.blob_path(&layer);
        let script = format!(
            r#"umask {umask} && "$0" copy "oci:{src}:demo" "oci:{layout}:demo" && "$0" copy "oci:{src}:demo" "oci-archive:{archive}:demo" && "$0" ztoc create "{layer}" -o "{ztoc}""#,
            src = source.display(),
            layout = layout.display(),
            archive = archive.display(),
            layer = layer_path.display(),
            ztoc = ztoc.display(),
        );
        support::stdout_of(std::process::Command::new("sh").args([
            "-c",
            &script,
            env!("CARGO_BIN_EXE_afterpush"),
        ]));
        let written = LayoutRepository::open(&layout).unwrap();
        for file in [
            layout.join("index.json"),
            layout.join("oci-layout"),
            written.blob_path(&index.digest),
            written.blob_path(&layer),
            archive,
            ztoc,
        ] {
            assert_eq!(mode(&file), expected, "umask {umask}: {}", file.display());
        }
    }
}
