//! `afterpush demo --keep DIR` end to end: runs the built binary, then checks what the
//! three handlers left in the layout (read back with the library, independently of the
//! demo's own summary) and the lines the demo prints about it.

mod support;

use afterpush::oci::gojson::{GoIndex, GoManifest};
use afterpush::oci::{annotation, media, Sha256Digest};
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::{read_blob_as_stored, Repository};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn run_demo(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_afterpush"))
        .arg("demo")
        .arg("--keep")
        .arg(dir)
        .output()
        .expect("the afterpush binary runs")
}

/// The platform of a descriptor as `os/arch`.
fn platform_of(d: &afterpush::oci::gojson::GoDescriptor) -> String {
    let p = d.platform.as_ref().expect("descriptor has a platform");
    format!("{}/{}", p.os, p.architecture)
}

async fn index_at(repo: &LayoutRepository, reference: &str) -> GoIndex {
    let m = repo.get_manifest(reference).await.unwrap();
    assert_eq!(m.media_type, media::OCI_INDEX, "{reference}");
    serde_json::from_slice(&m.bytes).unwrap()
}

#[tokio::test]
async fn demo_leaves_a_stitched_index_soci_indexes_and_every_cache_in_the_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    let output = run_demo(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let repo = LayoutRepository::open(&dir).unwrap();

    // The per-arch tags CI pushed, and the stitched index over exactly them.
    let amd64 = repo.resolve("1.0-amd64").await.unwrap().digest;
    let arm64 = repo.resolve("1.0-arm64").await.unwrap().digest;
    let stitched = index_at(&repo, "1.0").await;
    let children: BTreeMap<String, String> = stitched
        .manifests
        .iter()
        .map(|d| (platform_of(d), d.digest.clone()))
        .collect();
    assert_eq!(
        children,
        BTreeMap::from([
            ("linux/amd64".to_string(), amd64.to_string()),
            ("linux/arm64".to_string(), arm64.to_string()),
        ])
    );

    // 1.0-soci: the SOCI-enabled version of the stitched index, with one SOCI index
    // descriptor per platform, each bound to a rewritten manifest of that platform.
    let soci = index_at(&repo, "1.0-soci").await;
    assert_eq!(
        soci.annotations
            .get("dev.afterpush.soci.source-digest")
            .map(String::as_str),
        Some(
            repo.resolve("1.0")
                .await
                .unwrap()
                .digest
                .to_string()
                .as_str()
        )
    );
    let soci_descriptors: Vec<_> = soci
        .manifests
        .iter()
        .filter(|d| d.artifact_type.as_deref() == Some(media::SOCI_INDEX_V2))
        .collect();
    let soci_platforms: BTreeSet<String> =
        soci_descriptors.iter().map(|d| platform_of(d)).collect();
    assert_eq!(
        soci_platforms,
        BTreeSet::from(["linux/amd64".to_string(), "linux/arm64".to_string()])
    );
    let mut restored_files = 0;
    for d in &soci_descriptors {
        let image_manifest = &d.annotations[annotation::SOCI_IMAGE_MANIFEST_DIGEST];
        let image = soci
            .manifests
            .iter()
            .find(|m| &m.digest == image_manifest)
            .expect("the SOCI descriptor's image manifest is in the index");
        assert_eq!(platform_of(image), platform_of(d));
        assert_eq!(
            image.annotations.get(annotation::SOCI_INDEX_DIGEST),
            Some(&d.digest)
        );

        let soci_index: GoManifest =
            serde_json::from_slice(&repo.get_manifest(&d.digest).await.unwrap().bytes).unwrap();
        assert_eq!(soci_index.config.media_type, media::SOCI_INDEX_V2);
        // The demo lowers MIN_LAYER_SIZE to 1 MiB: the ~1.9 MiB layer gets a zTOC,
        // the small one does not.
        assert_eq!(soci_index.layers.len(), 1, "{}", d.digest);
        for z in &soci_index.layers {
            let layer_digest: Sha256Digest = z.annotations[annotation::SOCI_LAYER_DIGEST]
                .parse()
                .unwrap();
            let layer = read_blob_as_stored(&repo, &layer_digest)
                .await
                .unwrap()
                .to_vec();
            let ztoc_bytes = read_blob_as_stored(&repo, &z.digest.parse().unwrap())
                .await
                .unwrap();
            let ztoc = afterpush::ztoc::Ztoc::from_bytes(&ztoc_bytes).unwrap();
            assert_eq!(ztoc.compressed_archive_size, layer.len() as i64);
            let files = support::files_of_layer(&layer);
            assert!(files.len() >= 2, "{layer_digest}: {:?}", files.keys());
            for (name, content) in &files {
                let restored = afterpush::ztoc::extract_file(&ztoc, &layer, name)
                    .unwrap_or_else(|e| panic!("{name} in {layer_digest}: {e}"));
                assert_eq!(&restored, content, "{name} in layer {layer_digest}");
                restored_files += 1;
            }
        }
    }
    assert!(restored_files >= 4, "{restored_files}");

    // The per-arch tags got their own SOCI-enabled indexes too.
    for tag in ["1.0-amd64-soci", "1.0-arm64-soci"] {
        let index = index_at(&repo, tag).await;
        assert!(
            index
                .manifests
                .iter()
                .any(|d| d.artifact_type.as_deref() == Some(media::SOCI_INDEX_V2)),
            "{tag}"
        );
    }

    // The janitor ran in dry-run mode: both caches are still tagged and stored, and
    // so is every manifest index.json lists.
    for tag in ["cache-main", "cache-feature-x"] {
        let cache = repo.resolve(tag).await.unwrap();
        let manifest: GoManifest =
            serde_json::from_slice(&repo.get_manifest(tag).await.unwrap().bytes).unwrap();
        assert_eq!(
            manifest.config.media_type,
            media::BUILDKIT_CACHE_CONFIG,
            "{tag}"
        );
        assert!(repo.blob_path(&cache.digest).is_file(), "{tag}");
    }
    for (digest, tag) in repo.index_entries().unwrap() {
        assert!(repo.blob_path(&digest).is_file(), "{digest} ({tag:?})");
    }

    // What the demo says about it.
    let expect_line = |needle: &str| {
        assert!(
            stdout.lines().any(|l| l.contains(needle)),
            "no line with {needle:?} in:\n{stdout}"
        );
    };
    expect_line("MIN_LAYER_SIZE=1.0 MiB for the demo");
    expect_line("manifest-stitcher  waiting: app:1.0 still needs linux/arm64");
    expect_line(&format!(
        "manifest-stitcher  stitched app:1.0 = index {}",
        &repo.resolve("1.0").await.unwrap().digest.hex()[..12]
    ));
    expect_line("-> app:1.0-soci (linux/amd64: 1 zTOC (1 from cache)");
    // The loop guard, for each kind of push the handlers make.
    for pushed in ["app:1.0-soci", "app:1.0-amd64-soci", "app:1.0-arm64-soci"] {
        let event = stdout
            .lines()
            .position(|l| l.contains(&format!("PUSH {pushed} ")))
            .unwrap_or_else(|| panic!("no event for {pushed}:\n{stdout}"));
        let handled: Vec<&str> = stdout.lines().skip(event + 1).take(3).collect();
        assert!(
            handled.iter().all(|l| l.contains("skipped (own-output)")),
            "{pushed}: {handled:#?}"
        );
    }
    expect_line("soci-indexer       skipped (own-output): afterpush's own output: artifact-media-type application/vnd.amazon.soci.index.v2+json");
    expect_line("manifest-stitcher  ignored: 1.0 does not match ARCH_TAG_TEMPLATE");
    // The 30-day plan: the branch cache goes, the main cache and the images stay.
    let row = |tag: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(3) == Some(tag))
            .unwrap_or_else(|| panic!("no plan row for {tag}:\n{stdout}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(row("cache-feature-x"), "DELETE");
    for kept in ["cache-main", "1.0", "1.0-amd64", "1.0-arm64", "1.0-soci"] {
        assert_eq!(row(kept), "keep", "{kept}");
    }
    expect_line("1 planned, 0 deleted (dry run)");
}

#[test]
fn demo_refuses_a_keep_directory_that_is_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), b"mine").unwrap();
    let output = run_demo(tmp.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&tmp.path().display().to_string()) && stderr.contains("not empty"),
        "{stderr}"
    );
    // Nothing of the user's was touched, nothing was added.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
}
