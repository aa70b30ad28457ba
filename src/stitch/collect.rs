//! Reading the per-arch children of one base tag from a repository: its tag list, each
//! matching tag's manifest, and the config blob of every platform image (the platform
//! is read from the config, never trusted from the tag name alone).

use super::index::{AttestationChild, PlatformChild};
use super::platform::platform_from_config;
use super::platform::PlatformSpec;
use super::template::TagPlatformHint;
use super::{Result, StitchError, StitchSettings};
use crate::oci::{
    annotation, is_attestation_descriptor, media, ArtifactKind, DescriptorSummary, ManifestSummary,
    Sha256Digest,
};
use crate::registry::{read_config, Manifest, RegistryError, Repository};
use std::collections::BTreeMap;
use tracing::{debug, warn};

/// The children found for a base tag, with duplicates rejected and in output order.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// The platform images, in index order (required platforms first, in their order).
    pub children: Vec<PlatformChild>,
    /// The attached manifests (attestations, SOCI indexes) kept from per-arch indexes.
    pub attestations: Vec<AttestationChild>,
}

fn registry_error(context: String) -> impl FnOnce(RegistryError) -> StitchError {
    move |source| StitchError::Registry {
        context,
        source: Box::new(source),
    }
}

/// Collects the children of `base_tag` (see the module docs).
pub async fn collect(
    repo: &dyn Repository,
    base_tag: &str,
    settings: &StitchSettings,
) -> Result<Collected> {
    let tags = repo.list_tags().await.map_err(registry_error(format!(
        "listing the tags of {}",
        repo.location()
    )))?;
    let matcher = settings.arch_tag_template.matcher_for(base_tag);
    let mut children = Vec::new();
    let mut attestations = Vec::new();
    for tag in &tags {
        let Some(matched) = matcher(tag) else {
            continue;
        };
        let manifest = match repo.get_manifest(tag).await {
            Ok(m) => m,
            // Deleted between the listing and now: as if never pushed.
            Err(e) if e.is_not_found() => {
                debug!(%tag, "per-arch tag vanished while stitching");
                continue;
            }
            Err(e) => return Err(registry_error(format!("reading tag {tag}"))(e)),
        };
        collect_tag(
            repo,
            tag,
            &matched.hint,
            &manifest,
            &mut children,
            &mut attestations,
        )
        .await?;
    }
    let children = super::index::order_children(&settings.required_platforms, children)?;
    Ok(Collected {
        children,
        attestations,
    })
}

async fn collect_tag(
    repo: &dyn Repository,
    tag: &str,
    hint: &TagPlatformHint,
    manifest: &Manifest,
    children: &mut Vec<PlatformChild>,
    attestations: &mut Vec<AttestationChild>,
) -> Result<()> {
    let summary = parse_summary(tag, manifest)?;
    let mt = summary
        .effective_media_type(Some(&manifest.media_type))
        .to_string();
    if media::is_image_manifest(&mt) {
        let child = image_child(
            repo,
            tag,
            &mt,
            manifest.descriptor().digest,
            manifest.bytes.len() as u64,
            &summary,
            BTreeMap::new(),
        )
        .await?;
        check_hint(tag, hint, &child)?;
        children.push(child);
        return Ok(());
    }
    if !media::is_index(&mt) {
        return Err(StitchError::NotAnImage {
            tag: tag.to_string(),
            digest: manifest.digest.to_string(),
            what: format!("a {} ({mt})", summary.kind(Some(&manifest.media_type))),
        });
    }
    // A per-arch index (buildx with provenance): its platform images that agree with the
    // tag name, and the attestations of those images.
    let mut found = Vec::new();
    let mut tag_attestations = Vec::new();
    for d in &summary.manifests {
        let digest: Sha256Digest = d.digest.parse().map_err(|e| StitchError::InvalidManifest {
            tag: tag.to_string(),
            digest: manifest.digest.to_string(),
            reason: format!("entry {}: {e}", d.digest),
        })?;
        if is_attestation_descriptor(d) || d.artifact_type.is_some() {
            push_attached(tag, d, digest, &mut tag_attestations);
            continue;
        }
        if !media::is_image_manifest(&d.media_type) {
            warn!(%tag, entry = %digest, media_type = %d.media_type, "per-arch index entry is not an image manifest: left out");
            continue;
        }
        let child_manifest =
            repo.get_manifest(&digest.to_string())
                .await
                .map_err(registry_error(format!(
                    "reading {digest} listed in tag {tag}"
                )))?;
        let child_summary = parse_summary(tag, &child_manifest)?;
        if child_summary.kind(Some(&d.media_type)) != ArtifactKind::Image {
            // A SOCI index, signature or other artifact listed without artifactType.
            push_attached(tag, d, digest, &mut tag_attestations);
            continue;
        }
        let annotations = d.annotations.clone().into_iter().collect();
        found.push(
            image_child(
                repo,
                tag,
                &d.media_type,
                digest,
                child_manifest.bytes.len() as u64,
                &child_summary,
                annotations,
            )
            .await?,
        );
    }
    let total = found.len();
    let (agreeing, other): (Vec<_>, Vec<_>) = found
        .into_iter()
        .partition(|c| hint.agrees_with(&c.platform));
    if agreeing.is_empty() {
        return Err(StitchError::PlatformMismatch {
            tag: tag.to_string(),
            tag_platform: hint.to_string(),
            manifest: format!("index {}", manifest.digest),
            config_platform: if total == 0 {
                "no platform image at all".to_string()
            } else {
                other
                    .iter()
                    .map(|c| c.platform.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    for c in &other {
        warn!(%tag, platform = %c.platform, digest = %c.digest, "per-arch index entry for another platform than the tag names: left out");
    }
    tag_attestations.retain(|a| agreeing.iter().any(|c| c.digest == a.attests));
    children.extend(agreeing);
    attestations.extend(tag_attestations);
    Ok(())
}

fn parse_summary(tag: &str, manifest: &Manifest) -> Result<ManifestSummary> {
    ManifestSummary::parse(&format!("tag {tag} ({})", manifest.digest), &manifest.bytes).map_err(
        |e| StitchError::InvalidManifest {
            tag: tag.to_string(),
            digest: manifest.digest.to_string(),
            reason: e.to_string(),
        },
    )
}

fn check_hint(tag: &str, hint: &TagPlatformHint, child: &PlatformChild) -> Result<()> {
    if hint.agrees_with(&child.platform) {
        Ok(())
    } else {
        Err(StitchError::PlatformMismatch {
            tag: tag.to_string(),
            tag_platform: hint.to_string(),
            manifest: format!("image {}", child.digest),
            config_platform: child.platform.to_string(),
        })
    }
}

async fn image_child(
    repo: &dyn Repository,
    tag: &str,
    media_type: &str,
    digest: Sha256Digest,
    size: u64,
    summary: &ManifestSummary,
    annotations: BTreeMap<String, String>,
) -> Result<PlatformChild> {
    let bad_config = |config: String, reason: String| StitchError::InvalidConfig {
        tag: tag.to_string(),
        digest: digest.to_string(),
        config,
        reason,
    };
    let config = summary.config.as_ref().ok_or_else(|| {
        bad_config(
            "(none)".to_string(),
            "the manifest has no config".to_string(),
        )
    })?;
    if config.media_type != media::OCI_CONFIG && config.media_type != media::DOCKER_CONFIG {
        return Err(StitchError::NotAnImage {
            tag: tag.to_string(),
            digest: digest.to_string(),
            what: format!("an artifact with config type {}", config.media_type),
        });
    }
    let config_digest: Sha256Digest = config
        .digest
        .parse()
        .map_err(|e: crate::oci::OciError| bad_config(config.digest.clone(), e.to_string()))?;
    let bytes = read_config(repo, &config_digest, config.size)
        .await
        .map_err(registry_error(format!(
            "reading config {config_digest} of tag {tag}"
        )))?;
    let platform = platform_from_config(&bytes)
        .map_err(|reason| bad_config(config_digest.to_string(), reason))?;
    Ok(PlatformChild {
        tag: tag.to_string(),
        media_type: media_type.to_string(),
        digest,
        size,
        platform,
        annotations,
    })
}

/// Keeps an index entry that is attached to a platform image (an attestation, a SOCI
/// index) when it names that image; anything else is left out with a log line.
fn push_attached(
    tag: &str,
    d: &DescriptorSummary,
    digest: Sha256Digest,
    out: &mut Vec<AttestationChild>,
) {
    let attests = [
        annotation::DOCKER_REFERENCE_DIGEST,
        annotation::SOCI_IMAGE_MANIFEST_DIGEST,
    ]
    .iter()
    .find_map(|key| d.annotations.get(*key))
    .and_then(|r| r.parse::<Sha256Digest>().ok());
    let Some(attests) = attests else {
        warn!(%tag, entry = %digest, media_type = %d.media_type, "per-arch index entry is neither a platform image nor attached to one: left out");
        return;
    };
    out.push(AttestationChild {
        tag: tag.to_string(),
        media_type: d.media_type.clone(),
        digest,
        size: d.size,
        artifact_type: d.artifact_type.clone(),
        // As found: these are not platforms of the stitched image, so not normalised.
        platform: d.platform.as_ref().map(|p| PlatformSpec {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
            os_version: p.os_version.clone(),
            os_features: p.os_features.clone(),
        }),
        annotations: d.annotations.clone(),
        attests,
    });
}
