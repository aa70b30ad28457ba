//! OCI image layout and oci-archive repositories, cross-checked with skopeo (an
//! independent client) and GNU tar.

mod support;

use afterpush::oci::{media, ManifestSummary, Sha256Digest};
use afterpush::registry::layout::{ArchiveRepository, LayoutRepository};
use afterpush::registry::open::{open_repository, OpenSettings};
use afterpush::registry::{
    read_blob_as_stored, Manifest, RegistryError, Repository, MAX_MANIFEST_SIZE,
};
use afterpush::sample::{self, LayerCompression, ManifestFormat, SampleSpec};
use std::path::Path;
use std::process::Command;
use support::{skopeo, stdout_of};

fn small_spec() -> SampleSpec {
    SampleSpec {
        layer_sizes: vec![3000, 70_000],
        ..SampleSpec::default()
    }
}

#[tokio::test]
async fn skopeo_reads_what_we_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let layout_dir = dir.path().join("ours");
    let repo = LayoutRepository::open_or_create(&layout_dir).unwrap();
    let written = sample::write_multi_arch(&repo, &small_spec(), Some("v1"))
        .await
        .unwrap();
    let ours = repo.get_manifest("v1").await.unwrap();
    assert_eq!(ours.digest, written.index.digest);
    assert_eq!(ours.media_type, media::OCI_INDEX);

    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:v1", layout_dir.display()),
    ]);
    assert_eq!(raw, ours.bytes.to_vec(), "skopeo sees other index bytes");

    // skopeo copies every platform (and verifies every blob digest on the way).
    let archive = dir.path().join("skopeo.tar");
    skopeo(&[
        "copy",
        "--all",
        &format!("oci:{}:v1", layout_dir.display()),
        &format!("oci-archive:{}:copied", archive.display()),
    ]);
    let theirs = ArchiveRepository::open(&archive, true).unwrap();
    let m = theirs.get_manifest("copied").await.unwrap();
    assert_eq!(m.digest, written.index.digest, "skopeo changed the index");
    for img in &written.images {
        let child = theirs
            .get_manifest(&img.manifest.digest.to_string())
            .await
            .unwrap();
        assert_eq!(child.digest, img.manifest.digest);
        for layer in &img.layers {
            let bytes = read_blob_as_stored(&theirs, &layer.blob.digest)
                .await
                .unwrap();
            assert_eq!(bytes.len() as u64, layer.blob.size);
        }
    }
}

#[tokio::test]
async fn we_read_what_skopeo_wrote_and_skopeo_reads_our_archive() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let repo = LayoutRepository::open_or_create(&src).unwrap();
    let written = sample::write_multi_arch(&repo, &small_spec(), Some("v1"))
        .await
        .unwrap();

    // Our archive, read by skopeo.
    let archive_path = dir.path().join("ours.tar");
    let archive = ArchiveRepository::open(&archive_path, false).unwrap();
    afterpush::registry::copy::copy_image(&repo, &archive, "v1", Some("v1"), &Default::default())
        .await
        .unwrap();
    archive.commit().await.unwrap();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:v1", archive_path.display()),
    ]);
    assert_eq!(Sha256Digest::of(&raw), written.index.digest);

    // skopeo's layout, read by us: tags, manifests, blobs all verified.
    let theirs_dir = dir.path().join("theirs");
    skopeo(&[
        "copy",
        "--all",
        &format!("oci-archive:{}:v1", archive_path.display()),
        &format!("oci:{}:from-skopeo", theirs_dir.display()),
    ]);
    let theirs = LayoutRepository::open(&theirs_dir).unwrap();
    assert_eq!(theirs.list_tags().await.unwrap(), vec!["from-skopeo"]);
    let index = theirs.get_manifest("from-skopeo").await.unwrap();
    assert_eq!(index.digest, written.index.digest);
    let summary = ManifestSummary::parse("index", &index.bytes).unwrap();
    assert_eq!(
        summary.manifests.len(),
        written.images.len() + written.attestations.len()
    );
    for img in &written.images {
        let config = read_blob_as_stored(&theirs, &img.config.digest)
            .await
            .unwrap();
        assert_eq!(Sha256Digest::of(&config), img.config.digest);
    }
}

#[tokio::test]
async fn gnu_tar_reads_sample_layers_with_symlink_xattr_and_subsecond_mtimes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("l")).unwrap();
    let img = sample::write_image(
        &repo,
        &small_spec(),
        &"linux/arm/v7".parse().unwrap(),
        Some("arm"),
    )
    .await
    .unwrap();
    let layer = repo.blob_path(&img.layers[0].blob.digest);
    let listing = String::from_utf8(stdout_of(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--full-time", "-tvzf"])
            .arg(&layer),
    ))
    .unwrap();
    assert!(
        listing.contains("usr/share/sample/latest -> data-0.txt"),
        "{listing}"
    );
    assert!(listing.contains("etc/afterpush-sample"), "{listing}");
    // --full-time prints the sub-second part of PAX mtimes.
    assert!(
        listing
            .lines()
            .any(|l| l.contains("2023-11-14") && l.contains('.')),
        "{listing}"
    );
    // GNU tar marks entries carrying xattrs with '*' after the mode.
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rw-r--r--*") && l.ends_with("etc/afterpush-sample")),
        "{listing}"
    );
    let config: serde_json::Value = serde_json::from_slice(
        &read_blob_as_stored(&repo, &img.config.digest)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config["architecture"], "arm");
    assert_eq!(config["variant"], "v7");
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        img.layers[0].diff_id.to_string()
    );
    // The diff_id is the digest of the uncompressed tar.
    let plain = Command::new("gzip")
        .arg("-dc")
        .arg(&layer)
        .output()
        .unwrap();
    assert_eq!(Sha256Digest::of(&plain.stdout), img.layers[0].diff_id);
}

#[tokio::test]
async fn samples_are_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let spec = SampleSpec {
        format: ManifestFormat::Docker,
        ..small_spec()
    };
    let ra = LayoutRepository::open_or_create(a.path().join("l")).unwrap();
    let rb = LayoutRepository::open_or_create(b.path().join("l")).unwrap();
    let wa = sample::write_multi_arch(&ra, &spec, Some("x"))
        .await
        .unwrap();
    let wb = sample::write_multi_arch(&rb, &spec, Some("x"))
        .await
        .unwrap();
    assert_eq!(wa, wb);
    let other = sample::write_multi_arch(
        &rb,
        &SampleSpec {
            seed: 2,
            ..spec.clone()
        },
        Some("y"),
    )
    .await
    .unwrap();
    assert_ne!(other.index.digest, wa.index.digest);
    assert_eq!(wa.index.media_type, media::DOCKER_LIST);
    assert!(
        wa.attestations.is_empty(),
        "no attestations in a Docker list"
    );
}

#[tokio::test]
async fn tampered_blob_is_detected_naming_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("l")).unwrap();
    let img = sample::write_image(
        &repo,
        &small_spec(),
        &"linux/amd64".parse().unwrap(),
        Some("t"),
    )
    .await
    .unwrap();
    let layer = &img.layers[1].blob.digest;
    let path = repo.blob_path(layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = read_blob_as_stored(&repo, layer)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&layer.to_string()), "{err}");
    assert!(err.contains("mismatch"), "{err}");
    // A range read does not verify (it cannot), but returns the bytes asked for.
    use futures::TryStreamExt;
    let part: Vec<bytes::Bytes> = repo
        .get_blob(layer, Some(10..20))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(part.concat(), bytes[10..20].to_vec());

    // A tampered manifest too.
    let mpath = repo.blob_path(&img.manifest.digest);
    let mut m = std::fs::read(&mpath).unwrap();
    m.push(b' ');
    std::fs::write(&mpath, &m).unwrap();
    let err = repo.get_manifest("t").await.unwrap_err().to_string();
    assert!(err.contains(&img.manifest.digest.to_string()), "{err}");
}

#[tokio::test]
async fn missing_tag_and_bad_references_name_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("l")).unwrap();
    let err = repo.get_manifest("nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let missing = Sha256Digest::of(b"missing");
    let err = repo.get_manifest(&missing.to_string()).await.unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains(&missing.to_string()),
        "{err}"
    );
    let err = repo.get_manifest("bad tag!").await.unwrap_err().to_string();
    assert!(err.contains("bad tag!"), "{err}");
    let err = repo
        .get_manifest("sha256:abc")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256:abc"), "{err}");

    // Opening something that is not a layout names the path.
    let not_layout = dir.path().join("nothing");
    let err = LayoutRepository::open(&not_layout).unwrap_err().to_string();
    assert!(err.contains(&not_layout.display().to_string()), "{err}");
    let r = format!("oci-archive:{}:x", dir.path().join("absent.tar").display())
        .parse()
        .unwrap();
    let err = open_repository(&r, &OpenSettings::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.tar"), "{err}");
}

#[tokio::test]
async fn malformed_and_oversized_manifests_are_refused_naming_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("l")).unwrap();
    // Writing: non-JSON, oversized, missing content.
    let err = repo
        .put_manifest(
            &Manifest::new(media::OCI_MANIFEST, &b"not json"[..]),
            Some("bad"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad") && err.contains("JSON"), "{err}");
    let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
    let err = repo
        .put_manifest(
            &Manifest::new(media::OCI_MANIFEST, big.clone()),
            Some("big"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestTooLarge { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("big"), "{err}");
    assert!(!err.to_string().contains("manifest manifest"), "{err}");
    let dangling = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[]}}"#,
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        Sha256Digest::of(b"{}")
    );
    let err = repo
        .put_manifest(
            &Manifest::new(media::OCI_MANIFEST, dangling.into_bytes()),
            Some("d"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&Sha256Digest::of(b"{}").to_string()), "{err}");
    assert!(
        repo.list_tags().await.unwrap().is_empty(),
        "nothing half-written"
    );

    // Reading: a tag pointing at non-JSON or oversized bytes (planted, as another tool
    // might have written them).
    for (tag, bytes) in [("garbage", b"\x00\x01garbage".to_vec()), ("huge", big)] {
        let digest = Sha256Digest::of(&bytes);
        std::fs::write(repo.blob_path(&digest), &bytes).unwrap();
        let index_path = repo.root().join("index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": media::OCI_MANIFEST, "digest": digest.to_string(), "size": bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        let err = repo.get_manifest(tag).await.unwrap_err().to_string();
        assert!(err.contains(tag), "{tag}: {err}");
    }

    // An index.json over the limit of an image index (valid JSON, padded: 157 MB of
    // entries took 2.3 GB to parse) is refused before it is parsed, naming the file.
    let index_path = repo.root().join("index.json");
    let before = std::fs::read(&index_path).unwrap();
    let mut padded = before[..before.len() - 1].to_vec();
    padded.extend(format!(r#","padding":"{}"}}"#, " ".repeat(MAX_MANIFEST_SIZE)).bytes());
    std::fs::write(&index_path, &padded).unwrap();
    let err = repo.get_manifest("garbage").await.unwrap_err().to_string();
    assert!(
        err.contains(&index_path.display().to_string()) && err.contains("limit"),
        "{err}"
    );
    // Nor is one written past the limit: one just under it takes no more tags, and
    // stays as it was.
    let filler = MAX_MANIFEST_SIZE + 1 - before.len() - r#","padding":""}"#.len();
    let mut full = before[..before.len() - 1].to_vec();
    full.extend(format!(r#","padding":"{}"}}"#, " ".repeat(filler)).bytes());
    assert_eq!(full.len(), MAX_MANIFEST_SIZE);
    std::fs::write(&index_path, &full).unwrap();
    let tagged = repo.get_manifest("garbage").await.unwrap_err(); // readable again
    assert!(tagged.to_string().contains("garbage"), "{tagged}");
    let image = sample::write_image(&repo, &small_spec(), &"linux/amd64".parse().unwrap(), None)
        .await
        .unwrap();
    let manifest = repo
        .get_manifest(&image.manifest.digest.to_string())
        .await
        .unwrap();
    let err = repo
        .put_manifest(&manifest, Some("one-too-many"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("limit"), "{err}");
    assert_eq!(std::fs::read(&index_path).unwrap(), full);
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[tokio::test]
async fn archive_is_untouched_until_commit_and_after_a_failed_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    let archive = ArchiveRepository::open(&path, false).unwrap();
    sample::write_multi_arch(&archive, &small_spec(), Some("v1"))
        .await
        .unwrap();
    assert!(!path.exists(), "nothing is written before commit");
    archive.commit().await.unwrap();
    drop(archive);
    let before = file_bytes(&path);

    // A failed piece of work: a blob lands, then the manifest is refused. Without a
    // commit the archive keeps its bytes.
    let reopened = ArchiveRepository::open(&path, true).unwrap();
    afterpush::registry::push_bytes(&reopened, bytes::Bytes::from_static(b"extra"))
        .await
        .unwrap();
    let bad = Manifest::new(media::OCI_MANIFEST, &b"{"[..]);
    assert!(reopened.put_manifest(&bad, Some("v2")).await.is_err());
    drop(reopened);
    assert_eq!(
        file_bytes(&path),
        before,
        "the archive changed without a commit"
    );

    // The same content committed twice gives the same bytes (deterministic tar), and
    // leaves no temporary files behind.
    let again = ArchiveRepository::open(&path, true).unwrap();
    again
        .put_manifest(&again.get_manifest("v1").await.unwrap(), Some("v1"))
        .await
        .unwrap();
    again.commit().await.unwrap();
    assert_eq!(file_bytes(&path), before, "tar output is not deterministic");
    drop(again);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(leftovers, vec!["image.tar"]);

    // GNU tar sees a sorted, zero-mtime layout.
    let out = Command::new("tar")
        .args(["--full-time", "-tvf"])
        .arg(&path)
        .output()
        .unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(
        names.contains(&"oci-layout") && names.contains(&"index.json"),
        "{listing}"
    );
    assert!(
        listing.lines().all(|l| l.contains("1970-01-01")),
        "{listing}"
    );
}

#[tokio::test]
async fn archive_with_unexpected_entries_is_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.tar");
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(4);
    h.set_mode(0o644);
    builder
        .append_data(&mut h, "etc/passwd", &b"root"[..])
        .unwrap();
    std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
    let err = ArchiveRepository::open(&path, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("etc/passwd") && err.contains("evil.tar"),
        "{err}"
    );
}

#[tokio::test]
async fn tags_are_replaced_deleted_and_referrers_found() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("l")).unwrap();
    let spec = small_spec();
    let a = sample::write_image(&repo, &spec, &"linux/amd64".parse().unwrap(), Some("t"))
        .await
        .unwrap();
    let b = sample::write_image(&repo, &spec, &"linux/arm64".parse().unwrap(), Some("t"))
        .await
        .unwrap();
    assert_eq!(repo.resolve("t").await.unwrap().digest, b.manifest.digest);
    assert_eq!(repo.list_tags().await.unwrap(), vec!["t"]);
    // a is still there by digest.
    assert_eq!(
        repo.resolve(&a.manifest.digest.to_string())
            .await
            .unwrap()
            .size,
        a.manifest.size
    );

    // A referrer (an artifact with a subject), stored untagged, is found by subject.
    let empty = afterpush::registry::push_bytes(&repo, bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let referrer = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/vnd.example+json","config":{{"mediaType":"{}","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{}","digest":"{}","size":{}}}}}"#,
        media::OCI_MANIFEST,
        media::OCI_EMPTY,
        media::OCI_MANIFEST,
        b.manifest.digest,
        b.manifest.size
    );
    let referrer = Manifest::new(media::OCI_MANIFEST, referrer.into_bytes());
    repo.put_manifest(&referrer, None).await.unwrap();
    let found = repo.referrers(&b.manifest.digest, None).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].digest, referrer.digest.to_string());
    assert_eq!(
        found[0].artifact_type.as_deref(),
        Some("application/vnd.example+json")
    );
    assert!(repo
        .referrers(&b.manifest.digest, Some("other/type"))
        .await
        .unwrap()
        .is_empty());
    assert!(repo
        .referrers(&a.manifest.digest, None)
        .await
        .unwrap()
        .is_empty());
    // Asked about several at once (one scan of index.json), each gets its own answer,
    // in order, a digest asked twice included.
    let each = repo
        .referrers_of_each(
            &[
                a.manifest.digest.clone(),
                b.manifest.digest.clone(),
                b.manifest.digest.clone(),
            ],
            None,
        )
        .await
        .unwrap();
    let digests = |list: &[afterpush::oci::DescriptorSummary]| -> Vec<String> {
        list.iter().map(|d| d.digest.clone()).collect()
    };
    let each: Vec<Vec<String>> = each.iter().map(|l| digests(l)).collect();
    assert_eq!(each, [vec![], digests(&found), digests(&found)]);

    // Deleting a manifest takes its tags; deleting a layer by digest is refused.
    repo.delete_manifest(&b.manifest.digest).await.unwrap();
    assert!(repo.list_tags().await.unwrap().is_empty());
    assert!(repo.get_manifest("t").await.unwrap_err().is_not_found());
    let err = repo
        .delete_manifest(&a.layers[0].blob.digest)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a manifest"), "{err}");
    assert!(repo
        .blob_size(&a.layers[0].blob.digest)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn cache_manifest_and_uncompressed_layers() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("l")).unwrap();
    let spec = SampleSpec {
        compression: LayerCompression::None,
        ..small_spec()
    };
    let img = sample::write_image(&repo, &spec, &"linux/amd64".parse().unwrap(), Some("plain"))
        .await
        .unwrap();
    assert_eq!(img.layers[0].blob.media_type, media::OCI_LAYER_TAR);
    assert_eq!(img.layers[0].blob.digest, img.layers[0].diff_id);
    let cache = sample::write_buildkit_cache(&repo, &small_spec(), Some("cache"))
        .await
        .unwrap();
    let m = repo.get_manifest("cache").await.unwrap();
    let kind = ManifestSummary::parse("cache", &m.bytes)
        .unwrap()
        .kind(None);
    assert_eq!(kind, afterpush::oci::ArtifactKind::BuildkitCache);
    assert_eq!(m.digest, cache.manifest.digest);
}

#[tokio::test]
async fn a_bad_blob_push_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("l")).unwrap();
    let claimed = Sha256Digest::of(b"what was announced");
    let data = bytes::Bytes::from_static(b"something else entirely");
    let stream: afterpush::registry::BlobStream = Box::pin(futures::stream::iter(vec![
        Ok(data.slice(..10)),
        Ok(data.slice(10..)),
    ]));
    let err = repo
        .push_blob(&claimed, data.len() as u64, stream)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&claimed.to_string()), "{err}");
    // Wrong size, and a stream that fails midway.
    let stream: afterpush::registry::BlobStream =
        Box::pin(futures::stream::iter(vec![Ok(data.clone())]));
    assert!(repo
        .push_blob(&Sha256Digest::of(&data), 3, stream)
        .await
        .is_err());
    let stream: afterpush::registry::BlobStream = Box::pin(futures::stream::iter(vec![
        Ok(data.slice(..5)),
        Err(RegistryError::Invalid {
            location: "test".into(),
            message: "connection dropped".into(),
        }),
    ]));
    let err = repo
        .push_blob(&Sha256Digest::of(&data), data.len() as u64, stream)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("connection dropped"), "{err}");
    let blobs: Vec<_> = std::fs::read_dir(repo.root().join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "left behind: {blobs:?}");
    assert_eq!(repo.blob_size(&claimed).await.unwrap(), None);
}

/// Issue 21, item 20: a layout's file I/O runs on blocking threads, not on the runtime's.
/// `index.json` is made a FIFO whose writer is a task of the same single-threaded
/// runtime. Reading `index.json` on the runtime's only thread blocks it in open(2), so
/// the writer task never runs and nothing moves again; read on a blocking thread, the
/// writer runs and the tag list comes back. (The wait below only detects that deadlock;
/// nothing here measures how long anything takes.)
#[test]
fn layout_file_io_leaves_a_single_threaded_runtime_free() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("layout");
    let repo = LayoutRepository::open_or_create(&root).unwrap();
    let index = root.join("index.json");
    let empty_index = std::fs::read(&index).unwrap();
    std::fs::remove_file(&index).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&index)
        .status()
        .unwrap()
        .success());

    let (done, finished) = std::sync::mpsc::channel();
    let (fifo, contents) = (index.clone(), empty_index.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tags = rt.block_on(async move {
            // Polled only when the runtime's thread is free to poll it.
            let writer = tokio::spawn(async move {
                tokio::fs::write(&fifo, &contents).await.unwrap();
            });
            let tags = repo.list_tags().await;
            writer.await.unwrap();
            tags
        });
        let _ = done.send(tags.map_err(|e| e.to_string()));
    });
    match finished.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(tags) => assert_eq!(tags.unwrap(), Vec::<String>::new()),
        Err(_) => {
            // Release the blocked reader before failing.
            std::fs::write(&index, &empty_index).unwrap();
            panic!("the layout read index.json on the runtime's thread: the runtime is stuck");
        }
    }
}
