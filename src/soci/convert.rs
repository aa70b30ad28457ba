//! Publishing SOCI indexes for an image (`docs/soci-index.md` §3 for v1, §4 for v2).
//!
//! v2, following soci-snapshotter's `soci convert`: every platform manifest of the
//! image is re-serialised as an OCI manifest (annotated with its SOCI index digest when it
//! has one), and a new OCI image index holds those manifests, the original attestation
//! manifests, and one descriptor per SOCI index. Unlike `soci convert`, attestation
//! manifests are kept byte-for-byte, and their `vnd.docker.reference.digest` is pointed at
//! the rewritten manifest so provenance stays attached.
//!
//! Everything is pushed children first and the tag last, so a failure anywhere leaves no
//! tag moved; everything is deterministic, so a repeated run pushes identical bytes.

use super::build::{build_index_for_manifest, BuiltIndex, LayerOutcome, LayerResult, Progress};
use super::cache::ZtocCache;
pub use super::platform_images::platform_from_config;
use super::platform_images::{platform_images, PlatformImage};
use super::settings::{IndexVersion, SociSettings, TagMode};
use super::time_budget::LayerTimeBudget;
use super::{Result, SociError};
use crate::oci::gojson::{to_go_json, GoDescriptor, GoIndex};
use crate::oci::{
    annotation, media, ArtifactKind, DescriptorSummary, ManifestSummary, Sha256Digest,
};
use crate::registry::{Manifest, Repository};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::Instant;

pub use super::own_output::SOURCE_DIGEST_ANNOTATION;

/// What happened to one platform of the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlatformReport {
    /// The platform, `os/arch[/variant]`.
    pub platform: String,
    /// The digest of the platform manifest as the source stored it.
    pub manifest: String,
    /// The v2 rewritten manifest's digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_manifest: Option<String>,
    /// The digest of the SOCI index built for it (`None` when no layer was indexable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soci_index: Option<String>,
    /// The SOCI index manifest's size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soci_index_size: Option<u64>,
    /// Layers that got a zTOC.
    pub ztocs: usize,
    /// Of those, zTOCs taken from the cache.
    pub ztocs_from_cache: usize,
    /// Layers skipped (see [`LayerResult::Skipped`]).
    pub layers_skipped: usize,
    /// Layer bytes read to build zTOCs.
    pub bytes_read: u64,
    /// Every layer's outcome, in image order (not serialised).
    #[serde(skip)]
    pub layers: Vec<LayerOutcome>,
}

/// What `create_soci` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SociOutcome {
    /// The repository (see `Repository::location`).
    pub repository: String,
    /// The digest of the image the event or command named.
    pub source: String,
    /// Set when nothing was done, with the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// With `skipped`, a stable code for metrics: `own-output`, `not-an-image`,
    /// `already-indexed` or `no-indexable-layer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_code: Option<Cow<'static, str>>,
    /// The v2 index pushed (or found already there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The tag the v2 index was pushed under (`None` with `SOCI_TAG_MODE=none`, for v1, or when skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// One report per platform that was indexed (selected, and without a v1 index already).
    pub platforms: Vec<PlatformReport>,
    /// Layer bytes read over all platforms.
    pub bytes_read: u64,
    /// Wall-clock seconds the run took.
    pub seconds: f64,
}

/// An image as the report of `afterpush soci list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// The platform, `os/arch[/variant]`.
    pub platform: String,
    /// The platform manifest's digest.
    pub manifest: String,
    /// The digest of its SOCI index, `None` when it has none.
    pub soci_index: Option<String>,
}

/// Why a manifest is afterpush's (or soci's) own SOCI output, if it is. Such pushes must
/// never trigger more work: every push we make raises another ECR event.
pub fn our_own_output(
    manifest: &ManifestSummary,
    tag: Option<&str>,
    settings: &SociSettings,
) -> Option<String> {
    if manifest.kind(None) == ArtifactKind::SociIndex {
        return Some("it is a SOCI index".into());
    }
    if manifest
        .annotations
        .contains_key(annotation::SOCI_INDEX_DIGEST)
    {
        return Some(format!(
            "it is an image manifest annotated with {} (SOCI v2 output)",
            annotation::SOCI_INDEX_DIGEST
        ));
    }
    if manifest.annotations.contains_key(SOURCE_DIGEST_ANNOTATION)
        || manifest.manifests.iter().any(is_soci_descriptor)
    {
        return Some("it is an image index that already carries SOCI indexes".into());
    }
    if let Some(tag) = tag {
        if settings.tag_mode == TagMode::Suffix && tag.ends_with(&settings.tag_suffix) {
            return Some(format!(
                "its tag {tag} ends with the SOCI suffix {}",
                settings.tag_suffix
            ));
        }
    }
    None
}

fn is_soci_descriptor(d: &DescriptorSummary) -> bool {
    d.artifact_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/vnd.amazon.soci.index."))
        || d.annotations
            .contains_key(annotation::SOCI_IMAGE_MANIFEST_DIGEST)
}

/// The tag the v2 output goes to, if any.
pub fn output_tag(source_tag: Option<&str>, settings: &SociSettings) -> Option<String> {
    let tag = source_tag?;
    match settings.tag_mode {
        TagMode::Suffix => Some(format!("{tag}{}", settings.tag_suffix)),
        TagMode::InPlace => Some(tag.to_string()),
        TagMode::None => None,
    }
}

fn invalid(what: impl Into<String>, message: impl std::fmt::Display) -> SociError {
    SociError::Invalid {
        what: what.into(),
        message: message.to_string(),
    }
}

/// Builds and publishes SOCI indexes for the image at `reference` (tag or digest) of
/// `repo`. `source_tag` is the tag the image was pushed under (from the event or the
/// CLI reference); it names the v2 output per the tag mode.
pub async fn create_soci(
    repo: &dyn Repository,
    reference: &str,
    source_tag: Option<&str>,
    settings: &SociSettings,
    cache: &dyn ZtocCache,
    progress: Option<Progress>,
) -> Result<SociOutcome> {
    create_soci_within(repo, reference, source_tag, settings, cache, progress, None).await
}

/// [`create_soci`] under an invocation's deadline: layers the `budget` has no time for
/// are not started, and the result is then [`SociError::OutOfTime`] (retryable), naming
/// the image and the layers left, with every finished zTOC in `cache`.
pub async fn create_soci_within(
    repo: &dyn Repository,
    reference: &str,
    source_tag: Option<&str>,
    settings: &SociSettings,
    cache: &dyn ZtocCache,
    progress: Option<Progress>,
    budget: Option<&LayerTimeBudget>,
) -> Result<SociOutcome> {
    let started = Instant::now();
    let source = repo.get_manifest(reference).await?;
    let what = format!("{}@{}", repo.location(), source.digest);
    let summary = ManifestSummary::parse(&what, &source.bytes)
        .map_err(crate::registry::RegistryError::from)?;
    let mut outcome = SociOutcome {
        repository: repo.location(),
        source: source.digest.to_string(),
        skipped: None,
        skip_code: None,
        output: None,
        tag: None,
        platforms: vec![],
        bytes_read: 0,
        seconds: 0.0,
    };
    let finish = |mut o: SociOutcome| {
        o.bytes_read = o.platforms.iter().map(|p| p.bytes_read).sum();
        o.seconds = started.elapsed().as_secs_f64();
        Ok(o)
    };
    if let Some(reason) = our_own_output(&summary, source_tag, settings) {
        outcome.skipped = Some(format!("{what}: {reason}"));
        outcome.skip_code = Some("own-output".into());
        return finish(outcome);
    }
    let kind = summary.kind(Some(&source.media_type));
    if !matches!(kind, ArtifactKind::Image | ArtifactKind::Index) {
        outcome.skipped = Some(format!("{what} is a {kind}, not an image"));
        outcome.skip_code = Some("not-an-image".into());
        return finish(outcome);
    }

    // Idempotency: the output of an earlier run for this very image is already there.
    let out_tag = output_tag(source_tag, settings);
    if settings.index_version == IndexVersion::V2 {
        if let Some(tag) = &out_tag {
            if let Some(existing) = existing_output(repo, tag, &source.digest, settings).await? {
                outcome.skipped = Some(format!(
                    "{tag} already holds the SOCI-enabled index {existing} of {}",
                    source.digest
                ));
                outcome.skip_code = Some("already-indexed".into());
                outcome.output = Some(existing.to_string());
                outcome.tag = Some(tag.clone());
                return finish(outcome);
            }
        }
    }

    let images = platform_images(repo, &source, &summary, &what).await?;
    let mut built: Vec<(usize, BuiltIndex)> = vec![];
    for (i, image) in images.iter().enumerate() {
        let short = image.platform.short();
        if !settings.platforms.includes(&short) {
            tracing::info!(platform = %short, "platform not selected; no SOCI index");
            continue;
        }
        if settings.index_version == IndexVersion::V1
            && !repo
                .referrers(&image.stored.digest, Some(media::SOCI_INDEX_V1))
                .await?
                .is_empty()
        {
            tracing::info!(platform = %short, manifest = %image.stored.digest, "already has a SOCI v1 index");
            continue;
        }
        let subject = (settings.index_version == IndexVersion::V1).then(|| GoDescriptor {
            media_type: image.stored.media_type.clone(),
            digest: image.stored.digest.to_string(),
            size: image.stored.bytes.len() as u64,
            ..Default::default()
        });
        let index = build_index_for_manifest(
            repo,
            &image.parsed,
            settings.index_version,
            subject,
            settings,
            cache,
            progress.clone(),
            budget,
        )
        .await
        .map_err(|e| match e {
            SociError::OutOfTime { left, .. } => SociError::OutOfTime {
                image: format!("{what} platform {short} manifest {}", image.stored.digest),
                left,
            },
            other => other,
        })?;
        built.push((i, index));
    }

    let mut reports: Vec<PlatformReport> =
        built.iter().map(|(i, b)| report(&images[*i], b)).collect();
    if built.iter().all(|(_, b)| b.manifest.is_none()) {
        outcome.platforms = reports;
        outcome.skipped = Some(format!(
            "{what}: no layer to index (gzip or tar layers of at least {} bytes)",
            settings.min_layer_size
        ));
        outcome.skip_code = Some("no-indexable-layer".into());
        return finish(outcome);
    }

    // The SOCI index manifests (their zTOCs and config are in already).
    for (_, b) in &built {
        if let Some(m) = &b.manifest {
            match settings.index_version {
                IndexVersion::V1 => repo.push_referrer(m).await?,
                IndexVersion::V2 => repo.put_manifest(m, None).await?,
            }
        }
    }
    if settings.index_version == IndexVersion::V1 {
        outcome.platforms = reports;
        return finish(outcome);
    }

    let index = publish_v2(repo, &source, &images, &built, &mut reports, &what).await?;
    match &out_tag {
        Some(tag) => repo.put_manifest(&index, Some(tag)).await?,
        None => repo.put_manifest(&index, None).await?,
    }
    tracing::info!(image = %what, index = %index.digest, tag = ?out_tag, "SOCI-enabled index published");
    outcome.output = Some(index.digest.to_string());
    outcome.tag = out_tag;
    outcome.platforms = reports;
    finish(outcome)
}

async fn existing_output(
    repo: &dyn Repository,
    tag: &str,
    source: &Sha256Digest,
    settings: &SociSettings,
) -> Result<Option<Sha256Digest>> {
    let existing = match repo.get_manifest(tag).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let summary = match ManifestSummary::parse(tag, &existing.bytes) {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    let ours = summary
        .annotations
        .get(SOURCE_DIGEST_ANNOTATION)
        .map(String::as_str)
        == Some(source.to_string().as_str());
    if !ours {
        return Ok(None);
    }
    // Built by an earlier run under other settings (SPAN_SIZE, MIN_LAYER_SIZE, PLATFORMS):
    // rebuilt, so that changing a setting and replaying the events converges.
    let differences = super::freshness::v2_differences(repo, &existing, settings).await?;
    if !differences.is_empty() {
        tracing::info!(%tag, index = %existing.digest, ?differences, "the SOCI-enabled index was built under other settings; rebuilding it");
        return Ok(None);
    }
    Ok(Some(existing.digest))
}

fn report(image: &PlatformImage, built: &BuiltIndex) -> PlatformReport {
    let mut r = PlatformReport {
        platform: image.platform.short(),
        manifest: image.stored.digest.to_string(),
        rewritten_manifest: None,
        soci_index: built.manifest.as_ref().map(|m| m.digest.to_string()),
        soci_index_size: built.manifest.as_ref().map(|m| m.bytes.len() as u64),
        ztocs: 0,
        ztocs_from_cache: 0,
        layers_skipped: 0,
        bytes_read: built.bytes_read(),
        layers: built.layers.clone(),
    };
    for l in &built.layers {
        match &l.result {
            LayerResult::Indexed { from_cache, .. } => {
                r.ztocs += 1;
                r.ztocs_from_cache += usize::from(*from_cache);
            }
            LayerResult::Skipped(_) => r.layers_skipped += 1,
        }
    }
    r
}

/// Rewrites the platform manifests, then builds (but does not push) the v2 index.
async fn publish_v2(
    repo: &dyn Repository,
    source: &Manifest,
    images: &[PlatformImage],
    built: &[(usize, BuiltIndex)],
    reports: &mut [PlatformReport],
    what: &str,
) -> Result<Manifest> {
    let mut index: GoIndex = if images.len() == 1 && images[0].position.is_none() {
        GoIndex {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            ..Default::default()
        }
    } else {
        let mut parsed: GoIndex = serde_json::from_slice(&source.bytes)
            .map_err(|e| invalid(what, format!("not an image index: {e}")))?;
        parsed.media_type = Some(media::OCI_INDEX.into());
        parsed
    };
    let mut soci_descriptors = vec![];
    let mut renamed: Vec<(String, String)> = vec![];
    for (i, image) in images.iter().enumerate() {
        let soci = built
            .iter()
            .find(|(j, _)| *j == i)
            .and_then(|(_, b)| b.manifest.as_ref());
        let mut rewritten = image.parsed.clone();
        rewritten.media_type = Some(media::OCI_MANIFEST.into());
        rewritten.config.media_type = media::OCI_CONFIG.into();
        if let Some(soci) = soci {
            rewritten.annotations.insert(
                annotation::SOCI_INDEX_DIGEST.into(),
                soci.digest.to_string(),
            );
        }
        let rewritten_manifest = Manifest::new(media::OCI_MANIFEST, to_go_json(&rewritten));
        repo.put_manifest(&rewritten_manifest, None).await?;
        renamed.push((
            image.stored.digest.to_string(),
            rewritten_manifest.digest.to_string(),
        ));
        if let Some(r) = reports
            .iter_mut()
            .find(|r| r.manifest == image.stored.digest.to_string())
        {
            r.rewritten_manifest = Some(rewritten_manifest.digest.to_string());
        }
        let descriptor = GoDescriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: rewritten_manifest.digest.to_string(),
            size: rewritten_manifest.bytes.len() as u64,
            annotations: rewritten.annotations.clone(),
            platform: Some(image.platform.clone()),
            ..Default::default()
        };
        match image.position {
            Some(p) => {
                let old = &mut index.manifests[p];
                old.digest = descriptor.digest.clone();
                old.size = descriptor.size;
                old.media_type = descriptor.media_type.clone();
                old.annotations = descriptor.annotations.clone();
            }
            None => index.manifests.push(descriptor.clone()),
        }
        if let Some(soci) = soci {
            soci_descriptors.push(GoDescriptor {
                media_type: media::OCI_MANIFEST.into(),
                digest: soci.digest.to_string(),
                size: soci.bytes.len() as u64,
                annotations: [(
                    annotation::SOCI_IMAGE_MANIFEST_DIGEST.to_string(),
                    rewritten_manifest.digest.to_string(),
                )]
                .into(),
                platform: Some(image.platform.clone()),
                artifact_type: Some(media::SOCI_INDEX_V2.into()),
                ..Default::default()
            });
        }
    }
    // Attestations stay attached to the manifests they describe.
    for d in index.manifests.iter_mut() {
        if let Some(target) = d.annotations.get_mut(annotation::DOCKER_REFERENCE_DIGEST) {
            if let Some((_, new)) = renamed.iter().find(|(old, _)| old == target) {
                *target = new.clone();
            }
        }
    }
    index.manifests.extend(soci_descriptors);
    index
        .annotations
        .insert(SOURCE_DIGEST_ANNOTATION.into(), source.digest.to_string());
    Ok(Manifest::new(media::OCI_INDEX, to_go_json(&index)))
}
