//! The SOCI indexer end to end against the real registry (Debian's docker-registry):
//! sample images with real layers are pushed, indexed, and the result is checked both
//! structurally (index, rewritten manifests, annotations, tags) and functionally (every
//! zTOC restores its layer's files). zTOC reuse is checked against moto's S3.

mod support;

use afterpush::oci::gojson::{GoIndex, GoManifest};
use afterpush::oci::{annotation, media, Sha256Digest};
use afterpush::registry::distribution::{DistributionRepository, RegistrySettings, RetryPolicy};
use afterpush::registry::{
    push_bytes, read_blob_as_stored, BlobRef, BlobStream, Manifest, Repository, Result as RegResult,
};
use afterpush::sample::{self, LayerCompression, ManifestFormat, SampleImage, SampleSpec};
use afterpush::soci::{create_soci, IndexVersion, NoZtocCache, S3ZtocCache, SociSettings, TagMode};
use async_trait::async_trait;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Mutex;
use support::TestRegistry;

fn connect(host: &str, name: &str) -> DistributionRepository {
    let settings = RegistrySettings {
        retry: RetryPolicy::fast(),
        ..RegistrySettings::default()
    };
    DistributionRepository::connect(&settings, host, name).unwrap()
}

/// Records what passes through to the real repository (an observer, not a mock: every
/// call is served by the registry). Lets tests assert "pushed nothing" and "downloaded
/// that layer zero times".
#[derive(Debug)]
struct Recording<R> {
    inner: R,
    writes: Mutex<Vec<String>>,
    blob_reads: Mutex<Vec<Sha256Digest>>,
}

impl<R> Recording<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            writes: Mutex::new(vec![]),
            blob_reads: Mutex::new(vec![]),
        }
    }
    fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }
    fn reads_of(&self, d: &Sha256Digest) -> usize {
        self.blob_reads
            .lock()
            .unwrap()
            .iter()
            .filter(|x| *x == d)
            .count()
    }
}

#[async_trait]
impl<R: Repository> Repository for Recording<R> {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn resolve(&self, reference: &str) -> RegResult<BlobRef> {
        self.inner.resolve(reference).await
    }
    async fn get_manifest(&self, reference: &str) -> RegResult<Manifest> {
        self.inner.get_manifest(reference).await
    }
    async fn put_manifest(&self, manifest: &Manifest, tag: Option<&str>) -> RegResult<()> {
        self.writes
            .lock()
            .unwrap()
            .push(format!("manifest {} {:?}", manifest.digest, tag));
        self.inner.put_manifest(manifest, tag).await
    }
    async fn push_referrer(&self, manifest: &Manifest) -> RegResult<()> {
        self.writes
            .lock()
            .unwrap()
            .push(format!("referrer {}", manifest.digest));
        self.inner.push_referrer(manifest).await
    }
    async fn delete_manifest(&self, digest: &Sha256Digest) -> RegResult<()> {
        self.writes.lock().unwrap().push(format!("delete {digest}"));
        self.inner.delete_manifest(digest).await
    }
    async fn blob_size(&self, digest: &Sha256Digest) -> RegResult<Option<u64>> {
        self.inner.blob_size(digest).await
    }
    async fn get_blob(
        &self,
        digest: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> RegResult<BlobStream> {
        self.blob_reads.lock().unwrap().push(digest.clone());
        self.inner.get_blob(digest, range).await
    }
    async fn push_blob(&self, digest: &Sha256Digest, size: u64, data: BlobStream) -> RegResult<()> {
        if self.inner.blob_size(digest).await?.is_none() {
            self.writes.lock().unwrap().push(format!("blob {digest}"));
        }
        self.inner.push_blob(digest, size, data).await
    }
    async fn list_tags(&self) -> RegResult<Vec<String>> {
        self.inner.list_tags().await
    }
    async fn referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> RegResult<Vec<afterpush::oci::DescriptorSummary>> {
        self.inner.referrers(digest, artifact_type).await
    }
}

/// A minimum layer size between the smallest and the largest layer of the sample, so
/// the image has layers over and under it whatever the compression ratio.
fn min_between(image: &SampleImage) -> u64 {
    let layers: Vec<u64> = image.layers.iter().map(|l| l.blob.size).collect();
    let (lo, hi) = (*layers.iter().min().unwrap(), *layers.iter().max().unwrap());
    assert!(hi > lo * 2, "sample layers too close in size: {layers:?}");
    (lo + hi) / 2
}

fn settings(min_layer_size: u64) -> SociSettings {
    SociSettings {
        min_layer_size,
        span_size: 64 * 1024,
        ..SociSettings::default()
    }
}

/// Reads each zTOC of a SOCI index back and restores every regular file of its layer.
async fn check_soci_index_restores_layers(
    repo: &dyn Repository,
    soci_index: &str,
    expected_ztocs: usize,
) {
    let m = repo.get_manifest(soci_index).await.unwrap();
    let index: GoManifest = serde_json::from_slice(&m.bytes).unwrap();
    assert_eq!(index.config.media_type, media::SOCI_INDEX_V2);
    assert_eq!(
        read_blob_as_stored(repo, &index.config.digest.parse().unwrap())
            .await
            .unwrap()
            .as_ref(),
        b"{}"
    );
    assert_eq!(
        index.layers.len(),
        expected_ztocs,
        "{}",
        String::from_utf8_lossy(&m.bytes)
    );
    for z in &index.layers {
        assert_eq!(z.media_type, "application/octet-stream");
        let layer_digest: Sha256Digest = z.annotations[annotation::SOCI_LAYER_DIGEST]
            .parse()
            .unwrap();
        let layer = read_blob_as_stored(repo, &layer_digest)
            .await
            .unwrap()
            .to_vec();
        let ztoc_bytes = read_blob_as_stored(repo, &z.digest.parse().unwrap())
            .await
            .unwrap();
        let ztoc = afterpush::ztoc::Ztoc::from_bytes(&ztoc_bytes).unwrap();
        assert_eq!(ztoc.compressed_archive_size, layer.len() as i64);
        let files = support::files_of_layer(&layer);
        assert!(!files.is_empty());
        for (name, content) in &files {
            let restored = afterpush::ztoc::extract_file(&ztoc, &layer, name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&restored, content, "{name} in layer {layer_digest}");
        }
    }
}

#[tokio::test]
async fn multi_arch_image_gets_a_soci_v2_index_per_platform() {
    let registry = TestRegistry::start();
    let repo = Recording::new(connect(&registry.host(), "app"));
    let spec = SampleSpec {
        layer_sizes: vec![8 * 1024, 1536 * 1024],
        attestations: true,
        ..SampleSpec::default()
    };
    let sample = sample::write_multi_arch(&repo, &spec, Some("1.0"))
        .await
        .unwrap();
    let settings = settings(min_between(&sample.images[0]));

    let outcome = create_soci(&repo, "1.0", Some("1.0"), &settings, &NoZtocCache, None)
        .await
        .unwrap();
    assert_eq!(outcome.skipped, None);
    assert_eq!(outcome.tag.as_deref(), Some("1.0-soci"));
    assert_eq!(outcome.platforms.len(), 2);
    // The original tag is untouched in suffix mode.
    assert_eq!(
        repo.resolve("1.0").await.unwrap().digest,
        sample.index.digest
    );

    let out = repo.get_manifest("1.0-soci").await.unwrap();
    assert_eq!(out.media_type, media::OCI_INDEX);
    assert_eq!(Some(out.digest.to_string()), outcome.output);
    let index: GoIndex = serde_json::from_slice(&out.bytes).unwrap();
    let images: Vec<_> = index
        .manifests
        .iter()
        .filter(|d| {
            d.artifact_type.is_none()
                && !d
                    .annotations
                    .contains_key(annotation::DOCKER_REFERENCE_TYPE)
        })
        .collect();
    let socis: Vec<_> = index
        .manifests
        .iter()
        .filter(|d| d.artifact_type.as_deref() == Some(media::SOCI_INDEX_V2))
        .collect();
    let attestations: Vec<_> = index
        .manifests
        .iter()
        .filter(|d| {
            d.annotations
                .contains_key(annotation::DOCKER_REFERENCE_TYPE)
        })
        .collect();
    assert_eq!(
        (images.len(), socis.len(), attestations.len()),
        (2, 2, 2),
        "{}",
        String::from_utf8_lossy(&out.bytes)
    );
    for (image, original) in images.iter().zip(&sample.images) {
        assert_eq!(
            image.platform.as_ref().unwrap().short(),
            original.platform.to_string()
        );
        let rewritten = repo.get_manifest(&image.digest).await.unwrap();
        let parsed: GoManifest = serde_json::from_slice(&rewritten.bytes).unwrap();
        assert_eq!(parsed.media_type.as_deref(), Some(media::OCI_MANIFEST));
        assert_eq!(parsed.config.digest, original.config.digest.to_string());
        let layer_digests: Vec<String> = parsed.layers.iter().map(|l| l.digest.clone()).collect();
        let original_layers: Vec<String> = original
            .layers
            .iter()
            .map(|l| l.blob.digest.to_string())
            .collect();
        assert_eq!(layer_digests, original_layers, "layers unchanged");
        let soci_digest = &parsed.annotations[annotation::SOCI_INDEX_DIGEST];
        assert_eq!(
            &image.annotations[annotation::SOCI_INDEX_DIGEST],
            soci_digest
        );
        let soci = socis
            .iter()
            .find(|s| &s.digest == soci_digest)
            .expect("SOCI descriptor for the manifest");
        assert_eq!(
            soci.annotations[annotation::SOCI_IMAGE_MANIFEST_DIGEST],
            image.digest
        );
        assert_eq!(soci.platform, image.platform);
        check_soci_index_restores_layers(&repo, soci_digest, 1).await;
    }
    // Attestations are kept byte-for-byte and point at the rewritten manifests.
    for a in &attestations {
        assert!(sample
            .attestations
            .iter()
            .any(|s| s.digest.to_string() == a.digest));
        assert!(images
            .iter()
            .any(|i| i.digest == a.annotations[annotation::DOCKER_REFERENCE_DIGEST]));
    }

    // A second delivery of the same event does nothing and pushes nothing.
    let before = repo.writes().len();
    let again = create_soci(
        &repo,
        &sample.index.digest.to_string(),
        Some("1.0"),
        &settings,
        &NoZtocCache,
        None,
    )
    .await
    .unwrap();
    assert!(
        again
            .skipped
            .as_deref()
            .unwrap_or("")
            .contains("already holds"),
        "{again:?}"
    );
    assert_eq!(
        repo.writes().len(),
        before,
        "{:?}",
        &repo.writes()[before..]
    );

    // Replaying the events our own pushes raise does nothing either.
    let mut own: Vec<(String, Option<&str>)> = vec![(out.digest.to_string(), Some("1.0-soci"))];
    own.extend(images.iter().map(|d| (d.digest.clone(), None)));
    own.extend(socis.iter().map(|d| (d.digest.clone(), None)));
    for (digest, tag) in own {
        let o = create_soci(&repo, &digest, tag, &settings, &NoZtocCache, None)
            .await
            .unwrap();
        assert!(o.skipped.is_some(), "{digest}: {o:?}");
    }
    assert_eq!(repo.writes().len(), before);
}

#[tokio::test]
async fn docker_tar_image_in_place_and_small_images() {
    let registry = TestRegistry::start();
    let repo = connect(&registry.host(), "svc");
    let spec = SampleSpec {
        format: ManifestFormat::Docker,
        compression: LayerCompression::None,
        attestations: false,
        layer_sizes: vec![4 * 1024, 1024 * 1024],
        platforms: vec!["linux/amd64".parse().unwrap()],
        ..SampleSpec::default()
    };
    let image = sample::write_image(&repo, &spec, &spec.platforms[0], Some("2.0"))
        .await
        .unwrap();
    let settings = SociSettings {
        tag_mode: TagMode::InPlace,
        ..settings(min_between(&image))
    };
    let outcome = create_soci(&repo, "2.0", Some("2.0"), &settings, &NoZtocCache, None)
        .await
        .unwrap();
    assert_eq!(outcome.tag.as_deref(), Some("2.0"));
    let moved = repo.get_manifest("2.0").await.unwrap();
    assert_ne!(
        moved.digest, image.manifest.digest,
        "in-place moves the tag"
    );
    let index: GoIndex = serde_json::from_slice(&moved.bytes).unwrap();
    assert_eq!(index.manifests.len(), 2);
    assert_eq!(
        index.manifests[0].platform.as_ref().unwrap().short(),
        "linux/amd64",
        "platform taken from the config"
    );
    let soci = &index.manifests[1];
    let soci_manifest: GoManifest =
        serde_json::from_slice(&repo.get_manifest(&soci.digest).await.unwrap().bytes).unwrap();
    assert_eq!(
        soci_manifest.layers[0].annotations[annotation::SOCI_LAYER_MEDIA_TYPE],
        media::DOCKER_LAYER_TAR
    );
    check_soci_index_restores_layers(&repo, &soci.digest, 1).await;
    // The tag now names our output: the event it raised is recognised and skipped.
    let o = create_soci(&repo, "2.0", Some("2.0"), &settings, &NoZtocCache, None)
        .await
        .unwrap();
    assert!(o.skipped.is_some());

    // All layers under the minimum: a clean no-op that pushes nothing.
    let small = Recording::new(connect(&registry.host(), "small"));
    sample::write_image(&small, &spec, &spec.platforms[0], Some("1"))
        .await
        .unwrap();
    let big_min = SociSettings {
        min_layer_size: 100 << 20,
        ..settings.clone()
    };
    let before = small.writes().len();
    let o = create_soci(&small, "1", Some("1"), &big_min, &NoZtocCache, None)
        .await
        .unwrap();
    assert!(
        o.skipped.as_deref().unwrap().contains("no layer to index"),
        "{o:?}"
    );
    assert_eq!(small.writes().len(), before);
    assert_eq!(small.list_tags().await.unwrap(), vec!["1"]);
}

/// Pushes a single-platform image whose only layer is `layer` (declared gzip).
async fn push_image_with_layer(repo: &dyn Repository, layer: Vec<u8>, tag: &str) -> Sha256Digest {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_len = config.len();
    let config_digest = push_bytes(repo, Bytes::from(config)).await.unwrap();
    let layer_len = layer.len();
    let layer_digest = push_bytes(repo, Bytes::from(layer)).await.unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config_digest}","size":{config_len}}},"layers":[{{"mediaType":"{}","digest":"{layer_digest}","size":{layer_len}}}]}}"#,
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        media::OCI_LAYER_GZIP
    );
    repo.put_manifest(
        &Manifest::new(media::OCI_MANIFEST, manifest.into_bytes()),
        Some(tag),
    )
    .await
    .unwrap();
    layer_digest
}

#[tokio::test]
async fn a_corrupt_layer_fails_the_image_naming_the_layer_and_moves_no_tag() {
    let registry = TestRegistry::start();
    let repo = connect(&registry.host(), "broken");
    // A real gzip layer, truncated in the middle: the blob itself is consistent (its
    // digest matches), its content is not a complete gzip stream.
    let mut tar = tar::Builder::new(Vec::new());
    let content: Vec<u8> = (0..400_000u32)
        .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
        .collect();
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "data.bin", &content[..])
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
    let mut layer = gz.finish().unwrap();
    layer.truncate(layer.len() / 2);
    let layer_digest = push_image_with_layer(&repo, layer, "bad").await;

    let err = create_soci(
        &repo,
        "bad",
        Some("bad"),
        &settings(1024),
        &NoZtocCache,
        None,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&layer_digest.to_string()), "{err}");
    assert_eq!(repo.list_tags().await.unwrap(), vec!["bad"], "no -soci tag");
}

/// The zTOC cache the indexer uses in Lambda, on an empty bucket of moto's S3.
async fn ztoc_cache(moto: &support::TestMoto) -> (aws_sdk_s3::Client, S3ZtocCache) {
    let s3 = moto.s3().await;
    support::create_s3_bucket(&s3, "ztoc-cache").await;
    let cache = S3ZtocCache::new(s3.clone(), "ztoc-cache", "afterpush/ztoc/");
    (s3, cache)
}

#[tokio::test]
async fn ztocs_are_reused_from_the_s3_cache() {
    let registry = TestRegistry::start();
    let moto = support::TestMoto::start();
    let (s3, cache) = ztoc_cache(&moto).await;

    let repo = Recording::new(connect(&registry.host(), "base"));
    let spec = SampleSpec {
        layer_sizes: vec![8 * 1024, 1536 * 1024],
        attestations: false,
        platforms: vec!["linux/amd64".parse().unwrap()],
        ..SampleSpec::default()
    };
    let first = sample::write_image(&repo, &spec, &spec.platforms[0], Some("a"))
        .await
        .unwrap();
    let settings = settings(min_between(&first));
    let big = first
        .layers
        .iter()
        .max_by_key(|l| l.blob.size)
        .unwrap()
        .blob
        .digest
        .clone();
    create_soci(&repo, "a", Some("a"), &settings, &cache, None)
        .await
        .unwrap();
    assert_eq!(repo.reads_of(&big), 1);

    // Another image with the same base layer (same bytes, another tag and config).
    let other = connect(&registry.host(), "other");
    let other = Recording::new(other);
    afterpush::registry::copy::copy_image(&repo, &other, "a", Some("b"), &Default::default())
        .await
        .unwrap();
    let reads_before = other.reads_of(&big);
    let o = create_soci(&other, "b", Some("b"), &settings, &cache, None)
        .await
        .unwrap();
    assert_eq!(
        other.reads_of(&big) - reads_before,
        0,
        "the base layer was downloaded again"
    );
    assert_eq!(o.platforms[0].ztocs_from_cache, 1);

    // A corrupt cache entry is detected and rebuilt.
    let key = cache.key(&big, settings.span_size);
    s3.put_object()
        .bucket("ztoc-cache")
        .key(&key)
        .body(Bytes::from_static(b"garbage").into())
        .send()
        .await
        .unwrap();
    let third = Recording::new(connect(&registry.host(), "third"));
    afterpush::registry::copy::copy_image(&repo, &third, "a", Some("c"), &Default::default())
        .await
        .unwrap();
    let reads_before = third.reads_of(&big);
    let o = create_soci(&third, "c", Some("c"), &settings, &cache, None)
        .await
        .unwrap();
    assert_eq!(o.platforms[0].ztocs_from_cache, 0);
    assert_eq!(third.reads_of(&big) - reads_before, 1);
}

/// A cache entry's body and `x-amz-meta-*` metadata, as stored in moto's S3.
async fn cache_object(
    s3: &aws_sdk_s3::Client,
    key: &str,
) -> (Bytes, std::collections::HashMap<String, String>) {
    let out = s3
        .get_object()
        .bucket("ztoc-cache")
        .key(key)
        .send()
        .await
        .unwrap();
    let metadata = out.metadata().cloned().unwrap_or_default();
    (out.body.collect().await.unwrap().into_bytes(), metadata)
}

/// Whoever can write to the cache bucket can store anything under a layer's key, with
/// metadata to match. Each forgery below is rejected: the layer is rebuilt from the
/// registry, the published index carries the real zTOC, and the entry is repaired.
#[tokio::test]
async fn forged_cache_entries_are_rebuilt_and_never_published() {
    use afterpush::soci::build::LayerResult;
    use afterpush::soci::max_cached_ztoc_size;
    use afterpush::ztoc::Ztoc;
    let registry = TestRegistry::start();
    let moto = support::TestMoto::start();
    let (s3, cache) = ztoc_cache(&moto).await;
    let repo = connect(&registry.host(), "base");
    let spec = SampleSpec {
        layer_sizes: vec![8 * 1024, 1536 * 1024, 1024 * 1024],
        attestations: false,
        platforms: vec!["linux/amd64".parse().unwrap()],
        ..SampleSpec::default()
    };
    let image = sample::write_image(&repo, &spec, &spec.platforms[0], Some("a"))
        .await
        .unwrap();
    let settings = settings(min_between(&image));
    let mut indexed: Vec<(Sha256Digest, u64)> = image
        .layers
        .iter()
        .filter(|l| l.blob.size >= settings.min_layer_size)
        .map(|l| (l.blob.digest.clone(), l.blob.size))
        .collect();
    indexed.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    let [(target, target_size), (other, _)] = <[_; 2]>::try_from(indexed).unwrap();
    create_soci(&repo, "a", Some("a"), &settings, &cache, None)
        .await
        .unwrap();
    let key = cache.key(&target, settings.span_size);
    let (good, _) = cache_object(&s3, &key).await;
    let (other_ztoc, other_metadata) =
        cache_object(&s3, &cache.key(&other, settings.span_size)).await;
    let good_ztoc = Ztoc::from_bytes(&good).unwrap();

    // What a forger writes: the body's digest recomputed, bound to the target layer.
    let bound_to_target = |body: &[u8]| {
        std::collections::HashMap::from([
            (
                "ztoc-sha256".to_string(),
                Sha256Digest::of(body).to_string(),
            ),
            ("layer-digest".to_string(), target.to_string()),
            ("layer-size".to_string(), target_size.to_string()),
        ])
    };
    let forged = |change: &dyn Fn(&mut Ztoc)| {
        let mut z = good_ztoc.clone();
        change(&mut z);
        let body = Bytes::from(z.to_bytes());
        (bound_to_target(&body), body)
    };
    let last_file = good_ztoc
        .files
        .iter()
        .rposition(|f| f.file_type == "reg" && f.uncompressed_size > 0)
        .unwrap();
    let mut garbage = vec![0u8; 4096];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut garbage);
    let garbage = Bytes::from(garbage);
    let oversized = Bytes::from(vec![0u8; max_cached_ztoc_size(target_size) as usize + 1]);
    let cases = vec![
        (
            "another layer size",
            forged(&|z| z.compressed_archive_size += 1),
        ),
        (
            "a span digest missing",
            forged(&|z| {
                z.span_digests.pop();
            }),
        ),
        (
            "an entry past the archive",
            forged(&|z| z.files[last_file].uncompressed_size = z.uncompressed_archive_size),
        ),
        (
            "another layer's zTOC claiming this layer",
            (bound_to_target(&other_ztoc), other_ztoc.clone()),
        ),
        (
            "another layer's entry copied under this key",
            (other_metadata.clone(), other_ztoc.clone()),
        ),
        (
            "the real zTOC bound to another layer",
            (
                std::collections::HashMap::from([
                    (
                        "ztoc-sha256".to_string(),
                        Sha256Digest::of(&good).to_string(),
                    ),
                    ("layer-digest".to_string(), other.to_string()),
                    ("layer-size".to_string(), target_size.to_string()),
                ]),
                good.clone(),
            ),
        ),
        (
            "the real zTOC bound to no layer (as stored before the binding)",
            (
                std::collections::HashMap::from([(
                    "ztoc-sha256".to_string(),
                    Sha256Digest::of(&good).to_string(),
                )]),
                good.clone(),
            ),
        ),
        ("garbage", (bound_to_target(&garbage), garbage.clone())),
        (
            "an oversized object",
            (bound_to_target(&oversized), oversized.clone()),
        ),
    ];
    for (i, (what, (metadata, body))) in cases.into_iter().enumerate() {
        s3.put_object()
            .bucket("ztoc-cache")
            .key(&key)
            .set_metadata(Some(metadata))
            .body(body.into())
            .send()
            .await
            .unwrap();
        let dest = Recording::new(connect(&registry.host(), &format!("forged{i}")));
        afterpush::registry::copy::copy_image(&repo, &dest, "a", Some("a"), &Default::default())
            .await
            .unwrap();
        let reads_before = dest.reads_of(&target);
        let o = create_soci(&dest, "a", Some("a"), &settings, &cache, None)
            .await
            .unwrap();
        let platform = &o.platforms[0];
        assert_eq!(
            platform.ztocs_from_cache, 1,
            "{what}: only the other layer's zTOC is reused"
        );
        assert_eq!(
            dest.reads_of(&target) - reads_before,
            1,
            "{what}: the layer is rebuilt"
        );
        let published: Vec<&Sha256Digest> = platform
            .layers
            .iter()
            .filter(|l| l.layer == target)
            .filter_map(|l| match &l.result {
                LayerResult::Indexed { entry, .. } => Some(&entry.ztoc_digest),
                LayerResult::Skipped(_) => None,
            })
            .collect();
        assert_eq!(published, vec![&Sha256Digest::of(&good)], "{what}");
        check_soci_index_restores_layers(&dest, platform.soci_index.as_deref().unwrap(), 2).await;
        assert_eq!(
            cache_object(&s3, &key).await.0,
            good,
            "{what}: entry repaired"
        );
    }
}

#[tokio::test]
async fn soci_v1_indexes_are_found_through_referrers() {
    let registry = TestRegistry::start();
    let repo = connect(&registry.host(), "v1");
    let spec = SampleSpec {
        layer_sizes: vec![8 * 1024, 1536 * 1024],
        attestations: false,
        platforms: vec!["linux/arm64".parse().unwrap()],
        ..SampleSpec::default()
    };
    let image = sample::write_image(&repo, &spec, &spec.platforms[0], Some("x"))
        .await
        .unwrap();
    let settings = SociSettings {
        index_version: IndexVersion::V1,
        ..settings(min_between(&image))
    };
    let o = create_soci(&repo, "x", Some("x"), &settings, &NoZtocCache, None)
        .await
        .unwrap();
    let soci = o.platforms[0].soci_index.clone().unwrap();
    let referrers = repo
        .referrers(&image.manifest.digest, Some(media::SOCI_INDEX_V1))
        .await
        .unwrap();
    assert_eq!(
        referrers
            .iter()
            .map(|r| r.digest.clone())
            .collect::<Vec<_>>(),
        vec![soci.clone()]
    );
    let m: GoManifest =
        serde_json::from_slice(&repo.get_manifest(&soci).await.unwrap().bytes).unwrap();
    assert_eq!(m.subject.unwrap().digest, image.manifest.digest.to_string());
    // Idempotent: the referrer is there, nothing is rebuilt.
    let again = create_soci(&repo, "x", Some("x"), &settings, &NoZtocCache, None)
        .await
        .unwrap();
    assert!(
        again.platforms.is_empty() && again.skipped.is_some(),
        "{again:?}"
    );
}

#[tokio::test]
async fn registry_errors_mid_upload_are_retried_or_fail_cleanly() {
    use support::fault_proxy::{Fault, FaultProxy};
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let repo = connect(&proxy.host(), "flaky");
    let spec = SampleSpec {
        layer_sizes: vec![8 * 1024, 1536 * 1024],
        attestations: false,
        platforms: vec!["linux/amd64".parse().unwrap()],
        ..SampleSpec::default()
    };
    let image = sample::write_image(&repo, &spec, &spec.platforms[0], Some("t"))
        .await
        .unwrap();
    let settings = settings(min_between(&image));

    // Transient: a reset while the zTOC uploads, a 503 on a manifest put.
    proxy.add_rule(Some("PUT"), "/blobs/uploads/", Fault::Reset, 1);
    proxy.add_rule(Some("PUT"), "/manifests/", Fault::Status(503), 1);
    let o = create_soci(&repo, "t", Some("t"), &settings, &NoZtocCache, None)
        .await
        .unwrap();
    assert_eq!(o.tag.as_deref(), Some("t-soci"));
    assert!(proxy.faults_applied() >= 2);

    // Persistent: the final tag cannot be written. The error names the URL, and neither
    // `t` nor a new `u-soci` moved.
    sample::write_image(
        &repo,
        &SampleSpec {
            seed: 9,
            ..spec.clone()
        },
        &spec.platforms[0],
        Some("u"),
    )
    .await
    .unwrap();
    proxy.add_rule(Some("PUT"), "/manifests/u-soci", Fault::Status(500), 100);
    let err = create_soci(&repo, "u", Some("u"), &settings, &NoZtocCache, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("u-soci") && err.to_string().contains("500"),
        "{err}"
    );
    proxy.clear_rules();
    let mut tags = repo.list_tags().await.unwrap();
    tags.sort();
    assert_eq!(tags, vec!["t", "t-soci", "u"]);
}

/// An attempt that ends part-way (here: the registry fails one layer persistently; in
/// Lambda: the 15-minute timeout) keeps the zTOCs it finished in the S3 cache, so the
/// next attempt (Lambda's async retry) downloads only what is left. A real failure from
/// the real registry, through the fault proxy; what no local server can do is kill the
/// process at a deadline, and the cache path taken is the same.
#[tokio::test]
async fn an_interrupted_image_resumes_from_the_ztoc_cache() {
    use support::fault_proxy::{Fault, FaultProxy};
    let registry = TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let moto = support::TestMoto::start();
    let (_, cache) = ztoc_cache(&moto).await;
    let repo = Recording::new(connect(&proxy.host(), "big"));
    let spec = SampleSpec {
        layer_sizes: vec![1536 * 1024; 3],
        attestations: false,
        platforms: vec!["linux/amd64".parse().unwrap()],
        ..SampleSpec::default()
    };
    let image = sample::write_image(&repo, &spec, &spec.platforms[0], Some("t"))
        .await
        .unwrap();
    let layers: Vec<Sha256Digest> = image.layers.iter().map(|l| l.blob.digest.clone()).collect();
    let settings = SociSettings {
        layer_concurrency: 1,
        ..settings(1024)
    };

    // First attempt: the last layer cannot be read.
    proxy.add_rule(
        Some("GET"),
        &format!("/blobs/{}", layers[2]),
        Fault::Status(500),
        1000,
    );
    let err = create_soci(&repo, "t", Some("t"), &settings, &cache, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&layers[2].to_string()), "{err}");
    assert_eq!(
        repo.list_tags().await.unwrap(),
        vec!["t"],
        "no -soci tag yet"
    );
    proxy.clear_rules();

    // Second attempt: the two finished layers come from the cache, only the last is read.
    let reads_before: Vec<usize> = layers.iter().map(|l| repo.reads_of(l)).collect();
    let o = create_soci(&repo, "t", Some("t"), &settings, &cache, None)
        .await
        .unwrap();
    let reads: Vec<usize> = layers
        .iter()
        .zip(&reads_before)
        .map(|(l, before)| repo.reads_of(l) - before)
        .collect();
    assert_eq!(
        reads,
        vec![0, 0, 1],
        "layer downloads in the second attempt"
    );
    assert_eq!(o.platforms[0].ztocs_from_cache, 2);
    assert_eq!(o.tag.as_deref(), Some("t-soci"));
}

/// The seed workflow without containerd: an oci-archive (as `docker buildx build -o
/// type=oci,dest=image.tar` writes) is pushed and indexed in one command, then inspected.
#[tokio::test]
async fn cli_soci_create_push_to_list_and_info() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let archive_path = dir.path().join("image.tar");
    let archive =
        afterpush::registry::layout::ArchiveRepository::open(&archive_path, false).unwrap();
    let spec = SampleSpec {
        layer_sizes: vec![8 * 1024, 1536 * 1024],
        attestations: true,
        ..SampleSpec::default()
    };
    let written = sample::write_multi_arch(&archive, &spec, Some("1.0"))
        .await
        .unwrap();
    archive.commit().await.unwrap();
    let min = min_between(&written.images[0]).to_string();

    let afterpush = env!("CARGO_BIN_EXE_afterpush");
    let run = |args: &[&str]| {
        String::from_utf8(support::stdout_of(
            std::process::Command::new(afterpush).args(args),
        ))
        .unwrap()
    };
    let target = registry.reference("app:1.0");
    let out = run(&[
        "soci",
        "create",
        &format!("oci-archive:{}:1.0", archive_path.display()),
        "--push-to",
        &target,
        "--min-layer-size",
        &min,
        "--span-size",
        "64KiB",
    ]);
    assert!(
        out.contains("tagged") && out.contains("app:1.0-soci"),
        "{out}"
    );
    assert_eq!(out.matches("SOCI index sha256:").count(), 2, "{out}");

    let list = run(&["soci", "list", &registry.reference("app:1.0-soci")]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        lines.len(),
        2 + 2,
        "two platforms and two attestations: {list}"
    );
    for platform in ["linux/amd64", "linux/arm64"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(platform) && l.contains("SOCI v2 index")),
            "{list}"
        );
    }
    let soci_digest = list
        .lines()
        .find_map(|l| l.split("SOCI v2 index ").nth(1))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let info = run(&[
        "soci",
        "info",
        &registry.reference(&format!("app@{soci_digest}")),
    ]);
    assert!(
        info.contains("application/vnd.amazon.soci.index.v2+json") && info.contains("zTOC sha256:"),
        "{info}"
    );

    // A bad reference fails and names it.
    let out = std::process::Command::new(afterpush)
        .args(["soci", "create", "oci-archive:/nonexistent.tar:1.0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent.tar"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `soci list` on an index with thousands of children answers for each: its v2 SOCI
/// index, its v1 one (a referrer), or none. Thousands, because an answer per child
/// that costs a pass over the whole index (or, in a layout, a re-read of every tagged
/// manifest) is quadratic, which only a wide index makes show.
#[tokio::test]
async fn cli_soci_list_answers_for_every_child_of_a_wide_index() {
    const CHILDREN: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("wide");
    let repo = afterpush::registry::layout::LayoutRepository::open_or_create(&layout).unwrap();
    let config = push_bytes(&repo, Bytes::from_static(b"{}")).await.unwrap();
    let descriptor = |m: &Manifest| {
        serde_json::json!({
            "mediaType": m.media_type,
            "digest": m.digest.to_string(),
            "size": m.bytes.len(),
        })
    };
    let artifact = |artifact_type: &str, n: usize, subject: Option<&Manifest>| {
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": media::OCI_EMPTY, "digest": config.to_string(), "size": 2},
            "layers": [],
            "annotations": {"n": n.to_string()},
        });
        if let Some(s) = subject {
            m["subject"] = descriptor(s);
        }
        Manifest::new(media::OCI_MANIFEST, serde_json::to_vec(&m).unwrap())
    };
    let mut entries = Vec::new();
    let mut expected = Vec::new();
    for n in 0..CHILDREN {
        let child = Manifest::new(
            media::OCI_MANIFEST,
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": {"mediaType": media::OCI_CONFIG, "digest": config.to_string(), "size": 2},
                "layers": [],
                "annotations": {"n": n.to_string()},
            }))
            .unwrap(),
        );
        repo.put_manifest(&child, None).await.unwrap();
        let mut entry = descriptor(&child);
        entry["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
        entries.push(entry);
        let soci = match n % 100 {
            0 => {
                let v1 = artifact(media::SOCI_INDEX_V1, n, Some(&child));
                repo.put_manifest(&v1, None).await.unwrap();
                format!("SOCI v1 index {}", v1.digest)
            }
            50 => {
                let v2 = artifact(media::SOCI_INDEX_V2, n, None);
                repo.put_manifest(&v2, None).await.unwrap();
                let mut soci = descriptor(&v2);
                soci["artifactType"] = media::SOCI_INDEX_V2.into();
                soci["annotations"] = serde_json::json!({
                    annotation::SOCI_IMAGE_MANIFEST_DIGEST: child.digest.to_string()
                });
                entries.push(soci);
                format!("SOCI v2 index {} ({} bytes)", v2.digest, v2.bytes.len())
            }
            _ => "no SOCI index".to_string(),
        };
        expected.push(format!("{} {soci}", child.digest));
    }
    let index = Manifest::new(
        media::OCI_INDEX,
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": entries,
        }))
        .unwrap(),
    );
    repo.put_manifest(&index, Some("wide")).await.unwrap();

    let (status, stdout, stderr) = support::afterpush_cli(
        &["soci", "list", &format!("oci:{}:wide", layout.display())],
        &[],
    );
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), CHILDREN, "{stdout}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with("linux/amd64") && line.ends_with(want.as_str()),
            "{line:?} should end with {want:?}"
        );
    }
}

/// A `soci create` that fails midway (a layer of the second platform is corrupt) leaves
/// the layout as it found it: none of the zTOCs or SOCI indexes it wrote before.
#[tokio::test]
async fn cli_soci_create_that_fails_leaves_no_ztoc_behind() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("image");
    let repo = afterpush::registry::layout::LayoutRepository::open_or_create(&layout).unwrap();
    let spec = SampleSpec {
        layer_sizes: vec![8 * 1024, 1536 * 1024],
        ..SampleSpec::default()
    };
    let written = sample::write_multi_arch(&repo, &spec, Some("1.0"))
        .await
        .unwrap();
    let min = min_between(&written.images[0]).to_string();
    let last = written.images.last().unwrap().layers.last().unwrap();
    let path = repo.blob_path(&last.blob.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let before = support::files_under(&layout);

    let (status, _, stderr) = support::afterpush_cli(
        &[
            "soci",
            "create",
            &format!("oci:{}:1.0", layout.display()),
            "--min-layer-size",
            &min,
            "--span-size",
            "64KiB",
            "--layer-concurrency",
            "1",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&last.blob.digest.to_string()), "{stderr}");
    let after = support::files_under(&layout);
    let left: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    assert!(left.is_empty(), "the failed run left {left:?}");
    assert_eq!(after, before);
}

/// An index may list another index (a nested multi-arch image). `soci list` said
/// `linux/amd64 <digest> no SOCI index` for it, as if it were an amd64 image.
#[tokio::test]
async fn cli_soci_list_names_a_nested_index_as_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("nested");
    let repo = afterpush::registry::layout::LayoutRepository::open_or_create(&layout).unwrap();
    let config = push_bytes(&repo, Bytes::from_static(b"{}")).await.unwrap();
    let image = Manifest::new(
        media::OCI_MANIFEST,
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config.to_string(), "size": 2},
            "layers": [],
        }))
        .unwrap(),
    );
    repo.put_manifest(&image, None).await.unwrap();
    let entry = |m: &Manifest| {
        serde_json::json!({
            "mediaType": m.media_type,
            "digest": m.digest.to_string(),
            "size": m.bytes.len(),
            "platform": {"os": "linux", "architecture": "amd64"},
        })
    };
    let index_of = |entries: Vec<serde_json::Value>| {
        Manifest::new(
            media::OCI_INDEX,
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_INDEX,
                "manifests": entries,
            }))
            .unwrap(),
        )
    };
    let nested = index_of(vec![entry(&image)]);
    repo.put_manifest(&nested, None).await.unwrap();
    let top = index_of(vec![entry(&image), entry(&nested)]);
    repo.put_manifest(&top, Some("top")).await.unwrap();

    let (status, stdout, stderr) = support::afterpush_cli(
        &["soci", "list", &format!("oci:{}:top", layout.display())],
        &[],
    );
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("linux/amd64")
            && lines[0].ends_with(&format!("{} no SOCI index", image.digest)),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("-")
            && lines[1].contains(&format!("{} nested image index", nested.digest))
            && !lines[1].contains("no SOCI index"),
        "{stdout}"
    );
}
