//! Test fixtures for surveys through ECR's API (`test-util`: the unit tests, the
//! integration tests and the survey benchmark; never in the product): image manifests
//! built by hand, their DescribeImages details as ECR (or moto) reports them, SOCI v2
//! outputs in the shape the indexer writes, and an in-memory ECR seeded with every
//! manifest of an OCI layout.

use crate::catalog::ecr::{ImageDetail, MemoryEcr};
use crate::oci::{annotation, media, ManifestSummary, Sha256Digest};
use crate::registry::{push_bytes, BlobRef, Manifest, Repository};
use crate::soci::convert::SOURCE_DIGEST_ANNOTATION;
use serde_json::json;
use std::path::Path;

/// What DescribeImages reports besides tags and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reports {
    /// Real ECR: `artifactMediaType` and `subjectManifestDigest`.
    Ecr,
    /// moto: the manifest media type only.
    Moto,
}

/// The DescribeImages detail of the manifest `bytes` tagged `tags`.
pub fn detail_of(tags: &[String], bytes: &[u8], reports: Reports) -> ImageDetail {
    let summary = ManifestSummary::parse("fixture", bytes).expect("a manifest");
    let media_type = summary.effective_media_type(None).to_string();
    let mut detail = ImageDetail {
        digest: Sha256Digest::of(bytes).to_string(),
        tags: tags.to_vec(),
        manifest_media_type: Some(media_type.clone()),
        size_bytes: bytes.len() as u64,
        ..Default::default()
    };
    if reports == Reports::Ecr {
        detail.artifact_media_type = if media::is_index(&media_type) {
            None
        } else {
            summary.artifact_type().map(str::to_string)
        };
        detail.subject = summary.subject.map(|s| s.digest);
    }
    detail
}

/// Pushes the configs of a `linux/amd64` and a `linux/arm64` image into `repo`.
pub async fn push_configs(repo: &dyn Repository) -> (BlobRef, BlobRef) {
    let mut out = vec![];
    for arch in ["amd64", "arm64"] {
        let bytes = json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
            .to_string();
        let size = bytes.len() as u64;
        let digest = push_bytes(repo, bytes.into()).await.expect("config pushed");
        out.push(BlobRef {
            media_type: media::OCI_CONFIG.into(),
            digest,
            size,
        });
    }
    let arm64 = out.pop().unwrap();
    (out.pop().unwrap(), arm64)
}

/// An OCI image manifest with `config` and gzip layers of `layer_sizes` bytes whose
/// digests come from `seed` (layers are never read by a survey).
pub fn image_manifest(seed: &str, config: &BlobRef, layer_sizes: &[u64]) -> Manifest {
    let layers: Vec<_> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, size)| {
            json!({
                "mediaType": media::OCI_LAYER_GZIP,
                "digest": Sha256Digest::of(format!("{seed} layer {i}").as_bytes()).to_string(),
                "size": size,
            })
        })
        .collect();
    let bytes = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest.to_string(), "size": config.size},
        "layers": layers,
    })
    .to_string();
    Manifest::new(media::OCI_MANIFEST, bytes.into_bytes())
}

/// The SOCI v2 output of the single-platform `image` as the indexer writes it with
/// `span_size` and the layers of at least `min_layer_size`: (the SOCI index manifest,
/// the SOCI-enabled image index naming `image` as its source).
pub fn soci_v2_output(
    image: &Manifest,
    arch: &str,
    span_size: u64,
    min_layer_size: u64,
) -> (Manifest, Manifest) {
    let parsed = ManifestSummary::parse("image", &image.bytes).expect("an image manifest");
    let ztocs: Vec<_> = parsed
        .layers
        .iter()
        .filter(|l| l.size >= min_layer_size)
        .map(|l| {
            json!({
                "mediaType": media::SOCI_ZTOC,
                "digest": Sha256Digest::of(format!("ztoc of {}", l.digest).as_bytes()).to_string(),
                "size": 1000,
                "annotations": {
                    annotation::SOCI_LAYER_DIGEST: l.digest,
                    annotation::SOCI_LAYER_MEDIA_TYPE: l.media_type,
                    annotation::SOCI_SPAN_SIZE: span_size.to_string(),
                },
            })
        })
        .collect();
    let soci = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": media::SOCI_INDEX_V2,
        "config": {"mediaType": media::OCI_EMPTY, "digest": Sha256Digest::of(b"{}").to_string(), "size": 2},
        "layers": ztocs,
    })
    .to_string();
    let soci = Manifest::new(media::OCI_MANIFEST, soci.into_bytes());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [
            {
                "mediaType": media::OCI_MANIFEST,
                "digest": image.digest.to_string(),
                "size": image.bytes.len(),
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {annotation::SOCI_INDEX_DIGEST: soci.digest.to_string()},
            },
            {
                "mediaType": media::OCI_MANIFEST,
                "digest": soci.digest.to_string(),
                "size": soci.bytes.len(),
                "artifactType": media::SOCI_INDEX_V2,
                "annotations": {annotation::SOCI_IMAGE_MANIFEST_DIGEST: image.digest.to_string()},
            },
        ],
        "annotations": {SOURCE_DIGEST_ANNOTATION: image.digest.to_string()},
    })
    .to_string();
    (soci, Manifest::new(media::OCI_INDEX, index.into_bytes()))
}

/// Seeds `ecr`'s `repository` with every manifest of the OCI layout directory `dir`
/// (`repo` open on it): each blob that is an image manifest or index, with the tags
/// the layout gives it.
pub async fn seed_from_layout(
    ecr: &MemoryEcr,
    repository: &str,
    repo: &dyn Repository,
    dir: &Path,
    reports: Reports,
) {
    let mut tags_of: std::collections::HashMap<Sha256Digest, Vec<String>> = Default::default();
    for tag in repo.list_tags().await.expect("layout tags") {
        let digest = repo.resolve(&tag).await.expect("tag resolves").digest;
        tags_of.entry(digest).or_default().push(tag);
    }
    let mut blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .expect("layout blobs")
        .map(|e| e.expect("blob entry").path())
        .collect();
    blobs.sort();
    for path in blobs {
        let bytes = std::fs::read(&path).expect("blob");
        let Ok(summary) = ManifestSummary::parse("blob", &bytes) else {
            continue;
        };
        let is_manifest = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .is_some_and(|v| v["schemaVersion"] == 2)
            && (summary.config.is_some() || !summary.manifests.is_empty());
        if !is_manifest {
            continue;
        }
        let tags = tags_of
            .get(&Sha256Digest::of(&bytes))
            .cloned()
            .unwrap_or_default();
        ecr.put(repository, detail_of(&tags, &bytes, reports), bytes);
    }
}
