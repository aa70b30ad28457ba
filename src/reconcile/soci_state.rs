//! Whether one tagged image has the SOCI index the indexer would build now.
//!
//! - v2, `SOCI_TAG_MODE=suffix`: `<tag><suffix>` must hold an index whose
//!   `dev.afterpush.soci.source-digest` names the image, built with the current span size,
//!   minimum layer size and platforms ([`crate::soci::freshness::v2_differences`]).
//! - v2, `in-place`: the tag itself holds that index (the image is the one its
//!   annotation names).
//! - v1: every selected platform manifest with a layer to index has a SOCI v1 referrer.
//!
//! An image in which the indexer would find no layer to index needs nothing, whatever
//! is there: the indexer would skip it (`no-indexable-layer`), so reporting it would
//! make the survey find the same work after every run.

use super::ReconcileError;
use crate::oci::{media, ManifestSummary, Sha256Digest};
use crate::registry::{Manifest, Repository};
use crate::soci::convert::{output_tag, SOURCE_DIGEST_ANNOTATION};
use crate::soci::freshness::{expected_index, v2_differences, ExpectedIndex};
use crate::soci::is_our_soci_output;
use crate::soci::{IndexVersion, SociSettings, TagMode};

/// The SOCI state of one tagged image.
#[derive(Debug, Clone)]
pub enum SociState {
    /// Its SOCI index is there and current.
    Current,
    /// The indexer would build nothing for it (no selected layer to index).
    NothingToIndex,
    /// The tag holds afterpush's own output, not an image to index (the reason).
    OwnOutput(String),
    /// The image needs indexing: `image` is what the indexer's event names.
    Needed {
        /// The image to index (for in-place output, the source the output names).
        image: Manifest,
        /// Why (missing, built under other settings, ...).
        reason: String,
        /// What the indexer would read.
        expected: ExpectedIndex,
    },
    /// In-place output whose source image is gone: nothing can rebuild it.
    SourceGone(String),
}

/// The state of the image `manifest` that `tag` holds, under `settings`.
pub async fn soci_state(
    repo: &dyn Repository,
    tag: &str,
    manifest: &Manifest,
    settings: &SociSettings,
) -> Result<SociState, ReconcileError> {
    let what = format!("{}:{tag}", repo.location());
    let summary = ManifestSummary::parse(&what, &manifest.bytes)
        .map_err(crate::registry::RegistryError::from)?;
    if let Some(why) = is_our_soci_output(&summary) {
        let source = summary.annotations.get(SOURCE_DIGEST_ANNOTATION);
        return match (settings.tag_mode, settings.index_version, source) {
            (TagMode::InPlace, IndexVersion::V2, Some(source)) => {
                in_place_output(repo, &what, manifest, source, settings).await
            }
            _ => Ok(SociState::OwnOutput(why.to_string())),
        };
    }
    let expected = expected_index(repo, manifest, settings).await?;
    if expected.is_empty() {
        return Ok(SociState::NothingToIndex);
    }
    let needed = |reason: String, expected: ExpectedIndex| SociState::Needed {
        image: manifest.clone(),
        reason,
        expected,
    };
    match settings.index_version {
        IndexVersion::V1 => {
            let mut missing = ExpectedIndex::default();
            for platform in expected.platforms {
                let referrers = repo
                    .referrers(&platform.manifest, Some(media::SOCI_INDEX_V1))
                    .await?;
                if referrers.is_empty() {
                    missing.platforms.push(platform);
                }
            }
            if missing.is_empty() {
                return Ok(SociState::Current);
            }
            let platforms: Vec<&str> = missing
                .platforms
                .iter()
                .map(|p| p.platform.as_str())
                .collect();
            Ok(needed(
                format!("no SOCI v1 referrer for {}", platforms.join(", ")),
                missing,
            ))
        }
        IndexVersion::V2 => {
            let Some(out) = output_tag(Some(tag), settings).filter(|t| t != tag) else {
                return Ok(needed("not indexed in place yet".into(), expected));
            };
            let output = match repo.get_manifest(&out).await {
                Ok(m) => m,
                Err(e) if e.is_not_found() => {
                    return Ok(needed(format!("no {out} tag"), expected));
                }
                Err(e) => return Err(e.into()),
            };
            let names = ManifestSummary::parse(&out, &output.bytes)
                .ok()
                .and_then(|s| s.annotations.get(SOURCE_DIGEST_ANNOTATION).cloned());
            if names.as_deref() != Some(manifest.digest.to_string().as_str()) {
                return Ok(needed(
                    format!(
                        "{out} holds the SOCI index of {}, not of this image",
                        names.as_deref().unwrap_or("another image")
                    ),
                    expected,
                ));
            }
            let differences = v2_differences(repo, &output, settings).await?;
            if differences.is_empty() {
                Ok(SociState::Current)
            } else {
                Ok(needed(
                    format!(
                        "{out} was built under other settings: {}",
                        differences.join("; ")
                    ),
                    expected,
                ))
            }
        }
    }
}

/// `SOCI_TAG_MODE=in-place`: the tag holds the output; the image is its source.
async fn in_place_output(
    repo: &dyn Repository,
    what: &str,
    output: &Manifest,
    source: &str,
    settings: &SociSettings,
) -> Result<SociState, ReconcileError> {
    let differences = v2_differences(repo, output, settings).await?;
    if differences.is_empty() {
        return Ok(SociState::Current);
    }
    let source_digest: Sha256Digest = match source.parse() {
        Ok(d) => d,
        Err(_) => {
            return Ok(SociState::SourceGone(format!(
                "{what}: {SOURCE_DIGEST_ANNOTATION} {source:?} is not a digest"
            )))
        }
    };
    let image = match repo.get_manifest(&source_digest.to_string()).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => {
            return Ok(SociState::SourceGone(format!(
                "{what} was built under other settings ({}), but its source image {source} is gone",
                differences.join("; ")
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let expected = expected_index(repo, &image, settings).await?;
    if expected.is_empty() {
        return Ok(SociState::NothingToIndex);
    }
    Ok(SociState::Needed {
        image,
        reason: format!("built under other settings: {}", differences.join("; ")),
        expected,
    })
}
