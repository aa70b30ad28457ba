//! Multi-arch sample images (an index over platform images, with buildx-style
//! attestations): only tests and benchmarks write them, so they are built with the
//! `test-util` feature alone. `afterpush demo` writes single-platform images and caches
//! (in `sample/mod.rs`), which the product keeps.

use super::{
    descriptor_json, push_json, put_json_manifest, write_image, ManifestFormat, Result,
    SampleError, SampleImage, SamplePlatform, SampleSpec,
};
use crate::oci::{annotation, media};
use crate::registry::{BlobRef, Repository};
use serde_json::{json, Value};

/// A multi-arch image as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleIndex {
    /// The image index (or Docker manifest list).
    pub index: BlobRef,
    /// The platform images, in `spec.platforms` order.
    pub images: Vec<SampleImage>,
    /// Attestation manifests, in the order of `images`.
    pub attestations: Vec<BlobRef>,
}

impl SampleSpec {
    fn index_type(&self) -> &'static str {
        match self.format {
            ManifestFormat::Oci => media::OCI_INDEX,
            ManifestFormat::Docker => media::DOCKER_LIST,
        }
    }
}

impl SamplePlatform {
    fn to_json(&self) -> Value {
        let mut p = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

/// Writes a buildx-style attestation manifest (SLSA provenance, in-toto) for an image.
pub async fn write_attestation(repo: &dyn Repository, image: &SampleImage) -> Result<BlobRef> {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{
            "name": format!("pkg:docker/afterpush-sample@latest?platform={}", image.platform.to_string().replace('/', "%2F")),
            "digest": { "sha256": image.manifest.digest.hex() },
        }],
        "predicate": {
            "builder": { "id": "" },
            "buildType": "https://mobyproject.org/buildkit@v1",
            "metadata": { "buildInvocationID": format!("afterpush-sample-{}", image.manifest.digest.hex()) },
        },
    });
    let layer = push_json(repo, media::IN_TOTO, &statement).await?;
    let config = json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [layer.digest.to_string()] },
    });
    let config = push_json(repo, media::OCI_CONFIG, &config).await?;
    let mut layer_desc = descriptor_json(&layer);
    layer_desc["annotations"] =
        json!({ "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2" });
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor_json(&config),
        "layers": [layer_desc],
    });
    put_json_manifest(repo, media::OCI_MANIFEST, &manifest, None).await
}

/// Writes every platform image (untagged), their attestations when asked, and the index
/// (or Docker manifest list) over them, tagged when `tag` is set.
pub async fn write_multi_arch(
    repo: &dyn Repository,
    spec: &SampleSpec,
    tag: Option<&str>,
) -> Result<SampleIndex> {
    if spec.platforms.is_empty() {
        return Err(SampleError::Spec(
            "a multi-arch sample needs at least one platform".into(),
        ));
    }
    let mut images = Vec::new();
    for p in &spec.platforms {
        images.push(write_image(repo, spec, p, None).await?);
    }
    let mut entries: Vec<Value> = images
        .iter()
        .map(|img| {
            let mut d = descriptor_json(&img.manifest);
            d["platform"] = img.platform.to_json();
            d
        })
        .collect();
    let mut attestations = Vec::new();
    if spec.attestations && spec.format == ManifestFormat::Oci {
        for img in &images {
            let att = write_attestation(repo, img).await?;
            let mut d = descriptor_json(&att);
            d["annotations"] = json!({
                annotation::DOCKER_REFERENCE_DIGEST: img.manifest.digest.to_string(),
                annotation::DOCKER_REFERENCE_TYPE: annotation::ATTESTATION_MANIFEST,
            });
            d["platform"] = json!({ "architecture": "unknown", "os": "unknown" });
            entries.push(d);
            attestations.push(att);
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": spec.index_type(),
        "manifests": entries,
    });
    let index = put_json_manifest(repo, spec.index_type(), &index, tag).await?;
    Ok(SampleIndex {
        index,
        images,
        attestations,
    })
}
