//! Whether a SOCI index already published is what the indexer would build now, and
//! which layers it would read for an image under the current settings.
//!
//! A SOCI index records its span size: every zTOC descriptor carries
//! `com.amazon.soci.span-size`. It does not record `MIN_LAYER_SIZE`, so that setting is
//! told from the layers that got a zTOC: the indexer gives one to every gzip or tar
//! layer of at least the minimum size ([`super::layers::decide`]), so an index whose
//! zTOCs name other layers than the current minimum selects was built with another
//! minimum (or another `PLATFORMS`). When no layer lies between the old and the new
//! minimum, the index is exactly what the new settings build, and it counts as current.
//! What no manifest records (the xattr optimization, the build tool) is not checked.

use super::layers::{decide, LayerDecision};
use super::own_output::SOURCE_DIGEST_ANNOTATION;
use super::platform_images::platform_images;
use super::settings::SociSettings;
use super::Result;
use crate::oci::gojson::GoManifest;
use crate::oci::{annotation, is_attestation_descriptor, media, ManifestSummary, Sha256Digest};
use crate::registry::{Manifest, Repository};
use serde::Serialize;

/// A platform image of an image and the layers the indexer would give a zTOC.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectedPlatform {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The platform manifest's digest, as stored.
    pub manifest: Sha256Digest,
    /// The layers that get a zTOC, in image order, with their sizes in bytes.
    pub layers: Vec<(Sha256Digest, u64)>,
}

/// What the indexer would build for an image now: the selected platforms with at least
/// one layer to index. Empty when it would build nothing (`no-indexable-layer`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExpectedIndex {
    /// One entry per selected platform image that has a layer to index.
    pub platforms: Vec<ExpectedPlatform>,
}

impl ExpectedIndex {
    /// True when the indexer would build no SOCI index at all.
    pub fn is_empty(&self) -> bool {
        self.platforms.is_empty()
    }
    /// Layers that would be read (counted per platform, as an indexer without a zTOC
    /// cache reads them).
    pub fn layers(&self) -> usize {
        self.platforms.iter().map(|p| p.layers.len()).sum()
    }
    /// Layer bytes that would be read.
    pub fn bytes(&self) -> u64 {
        self.platforms
            .iter()
            .flat_map(|p| &p.layers)
            .map(|(_, size)| size)
            .sum()
    }
}

/// The layers of `manifest` that get a zTOC under `settings`.
fn indexable_layers(manifest: &GoManifest, settings: &SociSettings) -> Vec<(Sha256Digest, u64)> {
    manifest
        .layers
        .iter()
        .filter(|l| {
            matches!(
                decide(&l.media_type, l.size, settings.min_layer_size),
                LayerDecision::Index(_)
            )
        })
        .filter_map(|l| Some((l.digest.parse().ok()?, l.size)))
        .collect()
}

/// What the indexer would build for `source` (an image manifest or index) under
/// `settings`, reading its platform manifests (and, for single images, the config) as
/// the indexer does.
pub async fn expected_index(
    repo: &dyn Repository,
    source: &Manifest,
    settings: &SociSettings,
) -> Result<ExpectedIndex> {
    let what = format!("{}@{}", repo.location(), source.digest);
    let summary = ManifestSummary::parse(&what, &source.bytes)
        .map_err(crate::registry::RegistryError::from)?;
    let images = platform_images(repo, source, &summary, &what).await?;
    let platforms = images
        .iter()
        .filter(|image| settings.platforms.includes(&image.platform.short()))
        .map(|image| ExpectedPlatform {
            platform: image.platform.short(),
            manifest: image.stored.digest.clone(),
            layers: indexable_layers(&image.parsed, settings),
        })
        .filter(|p| !p.layers.is_empty())
        .collect();
    Ok(ExpectedIndex { platforms })
}

/// How a SOCI-enabled image index (v2 output, `output`) differs from what the indexer
/// would build now under `settings`; empty when it is current. Reads each platform
/// manifest it lists and each SOCI index manifest (small JSON), never a layer.
pub async fn v2_differences(
    repo: &dyn Repository,
    output: &Manifest,
    settings: &SociSettings,
) -> Result<Vec<String>> {
    let what = format!("{}@{}", repo.location(), output.digest);
    let summary = ManifestSummary::parse(&what, &output.bytes)
        .map_err(crate::registry::RegistryError::from)?;
    let mut differences = vec![];
    if !summary.annotations.contains_key(SOURCE_DIGEST_ANNOTATION) {
        differences.push(format!(
            "{what} has no {SOURCE_DIGEST_ANNOTATION} annotation"
        ));
    }
    for entry in &summary.manifests {
        let is_soci = entry
            .artifact_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/vnd.amazon.soci.index."))
            || entry
                .annotations
                .contains_key(annotation::SOCI_IMAGE_MANIFEST_DIGEST);
        if is_soci
            || is_attestation_descriptor(entry)
            || !media::is_image_manifest(&entry.media_type)
        {
            continue;
        }
        let platform = entry
            .platform
            .as_ref()
            .map(|p| p.short())
            .unwrap_or_else(|| "unknown platform".into());
        let image = repo.get_manifest(&entry.digest).await?;
        let parsed: GoManifest =
            serde_json::from_slice(&image.bytes).map_err(|e| super::SociError::Invalid {
                what: format!("{what} platform manifest {}", entry.digest),
                message: format!("not an image manifest: {e}"),
            })?;
        let expected: Vec<(Sha256Digest, u64)> = if settings.platforms.includes(&platform) {
            indexable_layers(&parsed, settings)
        } else {
            vec![]
        };
        let recorded = match entry.annotations.get(annotation::SOCI_INDEX_DIGEST) {
            Some(index) => {
                let index = repo.get_manifest(index).await?;
                ManifestSummary::parse(&format!("SOCI index {}", index.digest), &index.bytes)
                    .map_err(crate::registry::RegistryError::from)?
                    .layers
            }
            None => vec![],
        };
        let mut expected_layers: Vec<String> =
            expected.iter().map(|(d, _)| d.to_string()).collect();
        let mut recorded_layers: Vec<String> = recorded
            .iter()
            .filter_map(|z| z.annotations.get(annotation::SOCI_LAYER_DIGEST).cloned())
            .collect();
        expected_layers.sort();
        recorded_layers.sort();
        if expected_layers != recorded_layers {
            differences.push(format!(
                "{platform}: zTOCs for {} layer(s), the current settings (MIN_LAYER_SIZE {}, PLATFORMS) select {}",
                recorded_layers.len(),
                settings.min_layer_size,
                expected_layers.len()
            ));
        }
        let mut spans: Vec<&str> = recorded
            .iter()
            .filter_map(|z| {
                z.annotations
                    .get(annotation::SOCI_SPAN_SIZE)
                    .map(String::as_str)
            })
            .filter(|s| s.parse::<u64>().ok() != Some(settings.span_size))
            .collect();
        spans.dedup();
        if !spans.is_empty()
            || recorded
                .iter()
                .any(|z| !z.annotations.contains_key(annotation::SOCI_SPAN_SIZE))
        {
            differences.push(format!(
                "{platform}: zTOCs built with span size {}, SPAN_SIZE is {}",
                if spans.is_empty() {
                    "(not recorded)".to_string()
                } else {
                    spans.join(", ")
                },
                settings.span_size
            ));
        }
    }
    Ok(differences)
}
