//! The manifest stitcher: per-architecture tags (`app:1.2.3-amd64`, `app:1.2.3-arm64`)
//! become one multi-arch tag (`app:1.2.3`) when they are pushed.
//!
//! Every call recomputes the index from what the repository holds (its tag list, each
//! per-arch manifest and config), so events may arrive in any order, twice, or at the
//! same time: see [`stitch`] for how concurrent writers converge. The children are read
//! from the repository the index is written to, so they exist there before the index is
//! put (registries and ECR refuse an index naming a missing child).

mod collect;
pub mod index;
mod per_arch;
pub mod platform;
pub mod template;

use crate::oci::Sha256Digest;
use crate::registry::{Manifest, RegistryError, Repository};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use tracing::{info, warn};

pub use collect::Collected;
pub use per_arch::PerArchTag;
pub use platform::PlatformSpec;
pub use template::{ArchTagTemplate, TargetTagTemplate};

/// What can go wrong stitching. Every variant names the tag, digest or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StitchError {
    /// A registry request failed.
    #[error("{context}: {source}")]
    Registry {
        /// What was being done (e.g. "reading target tag app:1.2.3").
        context: String,
        /// The registry's error.
        #[source]
        source: Box<RegistryError>,
    },
    /// `ARCH_TAG_TEMPLATE` or `TARGET_TAG_TEMPLATE` does not parse.
    #[error("{name}={template:?} is not a valid template: {reason}")]
    InvalidTemplate {
        /// The setting's name.
        name: String,
        /// The template as given.
        template: String,
        /// Why it was refused.
        reason: String,
    },
    /// A `REQUIRED_PLATFORMS` entry does not parse as `os/arch[/variant]`, or is listed twice.
    #[error("invalid platform {value:?}: {reason}")]
    InvalidPlatform {
        /// The entry as given (the whole list, for a duplicate).
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A stitcher setting has a value it cannot use (e.g. `STITCH_MODE`).
    #[error("{name}={value:?}: {reason}")]
    InvalidSetting {
        /// The setting's name.
        name: String,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A per-arch tag's image (or every image of its per-arch index) is for another platform than the tag's name says.
    #[error("tag {tag} names platform {tag_platform} but its config ({manifest}) says {config_platform}")]
    PlatformMismatch {
        /// The per-arch tag.
        tag: String,
        /// The platform the tag's name says.
        tag_platform: String,
        /// The image or index the tag points to (`image sha256:...` or `index sha256:...`).
        manifest: String,
        /// The platform(s) its config(s) declare.
        config_platform: String,
    },
    /// Two per-arch tags hold images for the same platform, so the index would list it twice.
    #[error("platform {platform} appears twice: in {first} and in {second}")]
    DuplicatePlatform {
        /// The platform both images are for.
        platform: String,
        /// The first tag and its digest.
        first: String,
        /// The second tag and its digest.
        second: String,
    },
    /// A per-arch image's config is missing, unreadable or not a valid image config.
    #[error("tag {tag} ({digest}): config {config}: {reason}")]
    InvalidConfig {
        /// The per-arch tag.
        tag: String,
        /// The image manifest's digest.
        digest: String,
        /// The config's digest (`(none)` when the manifest has none).
        config: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A per-arch tag holds an artifact (or another kind of manifest) rather than an image.
    #[error("tag {tag} ({digest}) is {what}, not an image manifest or an index of them")]
    NotAnImage {
        /// The per-arch tag.
        tag: String,
        /// The digest of what it holds.
        digest: String,
        /// What it holds instead (kind and media type).
        what: String,
    },
    /// A per-arch tag's manifest, or a digest listed in it, does not parse.
    #[error("tag {tag} ({digest}): {reason}")]
    InvalidManifest {
        /// The per-arch tag.
        tag: String,
        /// The manifest's digest.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry refused to move the immutable target tag to the stitched index.
    #[error("target tag {target} in {location} is immutable and already holds {existing}; the stitched index {wanted} cannot replace it ({message})")]
    ImmutableTag {
        /// The target tag.
        target: String,
        /// The repository (see `Repository::location`).
        location: String,
        /// The digest the target holds now (or "another image" when unknown).
        existing: String,
        /// The digest of the index that could not be written.
        wanted: String,
        /// The registry's refusal, as it wrote it.
        message: String,
    },
    /// The target tag holds a single image that is none of the per-arch images: it is not replaced by an index.
    #[error("target tag {target} in {location} holds image manifest {existing}, which is none of the per-arch images; refusing to replace a single image with an index")]
    TargetIsForeignImage {
        /// The target tag.
        target: String,
        /// The repository (see `Repository::location`).
        location: String,
        /// The digest of the image the target holds.
        existing: Sha256Digest,
    },
    /// Concurrent writers kept changing the target for every round the stitcher makes (retryable).
    #[error("target tag {target} in {location} kept changing under concurrent writers for {rounds} rounds; retry later")]
    NotConverged {
        /// The target tag.
        target: String,
        /// The repository (see `Repository::location`).
        location: String,
        /// How many recompute-and-write rounds were made.
        rounds: usize,
    },
}

impl StitchError {
    /// True when a later attempt may succeed (registry throttling or outages, a race
    /// that did not settle). Immutable-tag refusals and bad input are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            StitchError::Registry { source, .. } => source.is_retryable(),
            StitchError::NotConverged { .. } => true,
            _ => false,
        }
    }
}

/// A result whose error defaults to [`StitchError`].
pub type Result<T, E = StitchError> = std::result::Result<T, E>;

/// `STITCH_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StitchMode {
    /// Write only when every required platform exists.
    #[default]
    Complete,
    /// Write what exists and update as the rest arrives.
    Partial,
}

impl FromStr for StitchMode {
    type Err = StitchError;
    fn from_str(s: &str) -> Result<Self> {
        match crate::settings::parse_choice(
            crate::settings::STITCH_MODE,
            s,
            &["complete", "partial"],
        ) {
            Ok("complete") => Ok(StitchMode::Complete),
            Ok(_) => Ok(StitchMode::Partial),
            Err(e) => Err(StitchError::InvalidSetting {
                name: e.name,
                value: e.value,
                reason: e.problem,
            }),
        }
    }
}

/// The stitcher's configuration (environment variables of the Lambda, flags of the CLI).
///
/// Which repositories and tags reach the stitcher at all is `REPOSITORY_TAG_FILTERS`,
/// applied to the event by `crate::events::decision::stitch_push_decision` before
/// [`handle_push`] runs.
#[derive(Debug, Clone)]
pub struct StitchSettings {
    /// `ARCH_TAG_TEMPLATE`, default `{tag}-{arch}`.
    pub arch_tag_template: ArchTagTemplate,
    /// `TARGET_TAG_TEMPLATE`, default `{tag}`.
    pub target_tag_template: TargetTagTemplate,
    /// `REQUIRED_PLATFORMS`, default `linux/amd64,linux/arm64`.
    pub required_platforms: Vec<PlatformSpec>,
    /// `STITCH_MODE`, default `complete`.
    pub mode: StitchMode,
}

impl Default for StitchSettings {
    fn default() -> Self {
        Self::from_lookup(|_| None).expect("the defaults are valid")
    }
}

impl StitchSettings {
    /// The `REQUIRED_PLATFORMS` used when the variable is unset or blank.
    pub const DEFAULT_REQUIRED_PLATFORMS: &'static str = "linux/amd64,linux/arm64";

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (an environment, a map in tests). Unset or
    /// blank variables take their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        use crate::settings as names;
        let get = |name: &str, default: &str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let mode: StitchMode = get(names::STITCH_MODE, "complete").parse()?;
        Self::new(
            &get(names::ARCH_TAG_TEMPLATE, ArchTagTemplate::DEFAULT),
            &get(names::TARGET_TAG_TEMPLATE, TargetTagTemplate::DEFAULT),
            &get(names::REQUIRED_PLATFORMS, Self::DEFAULT_REQUIRED_PLATFORMS),
            mode,
        )
    }

    /// Settings from their string forms (what the CLI flags hold).
    pub fn new(
        arch_tag_template: &str,
        target_tag_template: &str,
        required_platforms: &str,
        mode: StitchMode,
    ) -> Result<Self> {
        let required = platform::parse_platform_list(required_platforms)?;
        if required.is_empty() && mode == StitchMode::Complete {
            return Err(StitchError::InvalidSetting {
                name: "REQUIRED_PLATFORMS".to_string(),
                value: required_platforms.to_string(),
                reason: "complete mode needs at least one required platform".to_string(),
            });
        }
        Ok(Self {
            arch_tag_template: ArchTagTemplate::parse(arch_tag_template)?,
            target_tag_template: TargetTagTemplate::parse(target_tag_template)?,
            required_platforms: required,
            mode,
        })
    }
}

/// The index the stitcher wrote, would write, or found already in place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StitchedIndex {
    /// The index's media type (OCI image index or Docker manifest list).
    pub media_type: String,
    /// The digest of the index's bytes.
    pub digest: Sha256Digest,
    /// The platforms it lists, in order (`linux/amd64`, ...).
    pub platforms: Vec<String>,
    /// How many attached manifests (attestations, SOCI indexes) it carries.
    pub attestations: usize,
    /// The exact bytes (compact JSON). Not serialised: read back, it is empty.
    #[serde(skip, default = "no_manifest")]
    pub manifest: Manifest,
}

fn no_manifest() -> Manifest {
    Manifest::new("", bytes::Bytes::new())
}

impl StitchedIndex {
    /// The index JSON as text (it is always UTF-8 JSON).
    pub fn json(&self) -> &str {
        std::str::from_utf8(&self.manifest.bytes).expect("serde_json writes UTF-8")
    }
}

/// What a push event or a CLI run led to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum StitchOutcome {
    /// The pushed tag is not a per-arch tag (or is our own target).
    Ignored {
        /// The pushed tag.
        tag: String,
        /// Why it is not stitched.
        reason: String,
    },
    /// `complete` mode and a required platform is missing: nothing written.
    Incomplete {
        /// The target tag.
        target: String,
        /// The platforms present, in index order.
        present: Vec<String>,
        /// The missing platforms with the tag each is expected under.
        missing: Vec<String>,
    },
    /// The target already is this index: nothing written.
    Unchanged {
        /// The target tag.
        target: String,
        /// The index the target already holds.
        index: StitchedIndex,
    },
    /// The target now is this index.
    Written {
        /// The target tag.
        target: String,
        /// The index written to it.
        index: StitchedIndex,
    },
    /// Dry run: the target would become this index.
    WouldWrite {
        /// The target tag.
        target: String,
        /// The index it would hold.
        index: StitchedIndex,
    },
}

impl StitchOutcome {
    /// The index written, found or planned, if any.
    pub fn index(&self) -> Option<&StitchedIndex> {
        match self {
            StitchOutcome::Unchanged { index, .. }
            | StitchOutcome::Written { index, .. }
            | StitchOutcome::WouldWrite { index, .. } => Some(index),
            _ => None,
        }
    }
}

/// How many recompute-and-write rounds one call makes before giving up on a target
/// that other writers keep changing.
const MAX_ROUNDS: usize = 5;

/// Handles the push of `pushed_tag` (the Lambda's entry): when it is a per-arch tag,
/// stitches its base tag; otherwise says why it is ignored.
#[tracing::instrument(skip(repo, settings), fields(repository = %repo.location()))]
pub async fn handle_push(
    repo: &dyn Repository,
    pushed_tag: &str,
    settings: &StitchSettings,
) -> Result<StitchOutcome> {
    let Some(matched) = settings.arch_tag_template.match_tag(pushed_tag) else {
        let reason = format!(
            "does not match ARCH_TAG_TEMPLATE {} (with a GOOS/GOARCH name in place of {{os}}/{{arch}})",
            settings.arch_tag_template.as_str()
        );
        info!(tag = pushed_tag, %reason, "ignored");
        return Ok(StitchOutcome::Ignored {
            tag: pushed_tag.to_string(),
            reason,
        });
    };
    let target = settings.target_tag_template.render(&matched.base_tag);
    if target == pushed_tag {
        // Our own push of the target raising an event: never stitch the stitched tag.
        let reason = "it is the stitched target tag itself".to_string();
        info!(tag = pushed_tag, %reason, "ignored");
        return Ok(StitchOutcome::Ignored {
            tag: pushed_tag.to_string(),
            reason,
        });
    }
    stitch(repo, &matched.base_tag, settings, false).await
}

/// Stitches the per-arch tags of `base_tag` into the target tag.
///
/// Convergence: each round recomputes the index from the registry, re-reads the target,
/// and writes only when they differ; after a write it runs another round. A call thus
/// returns only once it has seen the target equal to an index computed *after* its last
/// write, so the last write to the target lists every arch pushed before its writer
/// read the tags, and racing writers end on one index. With `dry_run`, nothing is written.
#[tracing::instrument(skip(repo, settings), fields(repository = %repo.location()))]
pub async fn stitch(
    repo: &dyn Repository,
    base_tag: &str,
    settings: &StitchSettings,
    dry_run: bool,
) -> Result<StitchOutcome> {
    let target = settings.target_tag_template.render(base_tag);
    let mut wrote = false;
    for round in 1..=MAX_ROUNDS {
        let collected = collect::collect(repo, base_tag, settings).await?;
        let present: Vec<String> = collected
            .children
            .iter()
            .map(|c| c.platform.to_string())
            .collect();
        let missing: Vec<String> = settings
            .required_platforms
            .iter()
            .filter(|r| !collected.children.iter().any(|c| c.platform.satisfies(r)))
            .map(|r| {
                format!(
                    "{r} (tag {})",
                    settings.arch_tag_template.render(base_tag, r)
                )
            })
            .collect();
        if collected.children.is_empty()
            || (settings.mode == StitchMode::Complete && !missing.is_empty())
        {
            info!(%target, ?present, ?missing, "not stitching: required platforms missing");
            return Ok(StitchOutcome::Incomplete {
                target,
                present,
                missing,
            });
        }
        let manifest = index::build_index(&collected.children, &collected.attestations);
        let stitched = StitchedIndex {
            media_type: manifest.media_type.clone(),
            digest: manifest.digest.clone(),
            platforms: present,
            attestations: count_entries(&manifest) - collected.children.len(),
            manifest,
        };
        let current = match repo.resolve(&target).await {
            Ok(current) => Some(current),
            Err(e) if e.is_not_found() => None,
            Err(source) => {
                return Err(StitchError::Registry {
                    context: format!("reading target tag {target}"),
                    source: Box::new(source),
                })
            }
        };
        if let Some(current) = &current {
            if current.digest == stitched.digest {
                info!(%target, digest = %stitched.digest, round, "target is up to date");
                return Ok(if wrote {
                    StitchOutcome::Written {
                        target,
                        index: stitched,
                    }
                } else {
                    StitchOutcome::Unchanged {
                        target,
                        index: stitched,
                    }
                });
            }
            if crate::oci::media::is_image_manifest(&current.media_type)
                && !collected
                    .children
                    .iter()
                    .any(|c| c.digest == current.digest)
            {
                return Err(StitchError::TargetIsForeignImage {
                    target,
                    location: repo.location(),
                    existing: current.digest.clone(),
                });
            }
        }
        if dry_run {
            return Ok(StitchOutcome::WouldWrite {
                target,
                index: stitched,
            });
        }
        info!(%target, digest = %stitched.digest, platforms = ?stitched.platforms, round, "writing stitched index");
        if let Err(source) = repo.put_manifest(&stitched.manifest, Some(&target)).await {
            if let Some(message) = immutable_refusal(&source) {
                return Err(StitchError::ImmutableTag {
                    target,
                    location: repo.location(),
                    existing: current
                        .map(|c| c.digest.to_string())
                        .unwrap_or_else(|| "another image".to_string()),
                    wanted: stitched.digest.to_string(),
                    message,
                });
            }
            return Err(StitchError::Registry {
                context: format!("writing index {} to tag {target}", stitched.digest),
                source: Box::new(source),
            });
        }
        wrote = true;
    }
    warn!(%target, "target did not settle");
    Err(StitchError::NotConverged {
        target,
        location: repo.location(),
        rounds: MAX_ROUNDS,
    })
}

fn count_entries(manifest: &Manifest) -> usize {
    serde_json::from_slice::<serde_json::Value>(&manifest.bytes)
        .ok()
        .and_then(|v| v["manifests"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Recognises a registry's refusal to move an immutable tag: ECR answers a manifest PUT
/// with `TAG_INVALID` "... already exists ... cannot be overwritten because the
/// repository is immutable" (PutImage: `ImageTagAlreadyExistsException`); others use
/// `TAG_IMMUTABLE` or `MANIFEST_IMMUTABLE`. Retrying cannot help, so it is not retried.
pub fn immutable_refusal(error: &RegistryError) -> Option<String> {
    let text = error.to_string();
    let code_says = matches!(
        error,
        RegistryError::Http { code: Some(code), .. }
            if code == "TAG_IMMUTABLE" || code == "MANIFEST_IMMUTABLE"
    );
    let lower = text.to_ascii_lowercase();
    (code_says
        || text.contains("ImageTagAlreadyExists")
        || (lower.contains("immutable") && lower.contains("already exists")))
    .then_some(text)
}

#[cfg(test)]
mod tests;
