//! The platform images of an image: the image itself, or each image manifest of an
//! index with its platform (from the index, else from the image's config). The indexer
//! builds a SOCI index per platform image, and the freshness check reads them the same way.

use super::{Result, SociError};
use crate::oci::gojson::{GoManifest, GoPlatform};
use crate::oci::{is_attestation_descriptor, media, ArtifactKind, ManifestSummary, Sha256Digest};
use crate::registry::{read_config, Manifest, Repository};

fn invalid(what: impl Into<String>, message: impl std::fmt::Display) -> SociError {
    SociError::Invalid {
        what: what.into(),
        message: message.to_string(),
    }
}

/// Reads the platform of an image from its config blob (`os`, `architecture`,
/// `variant`, `os.version`, `os.features`).
pub async fn platform_from_config(
    repo: &dyn Repository,
    manifest: &GoManifest,
) -> Result<GoPlatform> {
    let digest: Sha256Digest = manifest
        .config
        .digest
        .parse()
        .map_err(|e| invalid(format!("config {}", manifest.config.digest), e))?;
    let bytes = read_config(repo, &digest, manifest.config.size).await?;
    let platform: GoPlatform = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            format!("config {digest}"),
            format!("not an image config: {e}"),
        )
    })?;
    if platform.os.is_empty() || platform.architecture.is_empty() {
        return Err(invalid(
            format!("config {digest}"),
            "has no os/architecture",
        ));
    }
    Ok(platform)
}

pub(crate) struct PlatformImage {
    /// Position in the source index (None for a single-manifest image).
    pub(crate) position: Option<usize>,
    pub(crate) stored: Manifest,
    pub(crate) parsed: GoManifest,
    pub(crate) platform: GoPlatform,
}

/// The platform images of `source` (`summary` is its summary; `what` names it in errors).
pub(crate) async fn platform_images(
    repo: &dyn Repository,
    source: &Manifest,
    summary: &ManifestSummary,
    what: &str,
) -> Result<Vec<PlatformImage>> {
    if !media::is_index(summary.effective_media_type(Some(&source.media_type))) {
        let parsed: GoManifest = serde_json::from_slice(&source.bytes)
            .map_err(|e| invalid(what, format!("not an image manifest: {e}")))?;
        let platform = platform_from_config(repo, &parsed).await?;
        return Ok(vec![PlatformImage {
            position: None,
            stored: source.clone(),
            parsed,
            platform,
        }]);
    }
    let mut images = vec![];
    for (position, child) in summary.manifests.iter().enumerate() {
        if is_attestation_descriptor(child) || !media::is_image_manifest(&child.media_type) {
            continue;
        }
        let stored = repo.get_manifest(&child.digest).await?;
        let parsed: GoManifest = serde_json::from_slice(&stored.bytes).map_err(|e| {
            invalid(
                format!("{what} child {}", child.digest),
                format!("not an image manifest: {e}"),
            )
        })?;
        if ManifestSummary::parse(&child.digest, &stored.bytes)
            .map(|s| s.kind(Some(&stored.media_type)))
            .ok()
            != Some(ArtifactKind::Image)
        {
            continue;
        }
        let platform = match &child.platform {
            Some(p) => p.clone(),
            None => platform_from_config(repo, &parsed).await?,
        };
        images.push(PlatformImage {
            position: Some(position),
            stored,
            parsed,
            platform,
        });
    }
    if images.is_empty() {
        return Err(invalid(what, "the index holds no platform image"));
    }
    Ok(images)
}
