//! Opening a [`Repository`] from a parsed [`ImageRef`].

use super::distribution::{DistributionRepository, RegistrySettings};
use super::layout::{ArchiveRepository, LayoutRepository};
use super::{ImageRef, Location, RegistryError, Repository, Result};

/// How to open repositories.
///
/// Every CLI verb takes its settings from [`OpenSettings::from_env`], the one place that
/// reads `AFTERPUSH_REGISTRY_*`. `Default` reads nothing (library callers and tests that
/// set the registry settings themselves).
#[derive(Debug, Clone, Default)]
pub struct OpenSettings {
    /// Create a layout directory (or start a new archive) when it does not exist yet.
    /// Sources are opened without it, so a typo is an error, not an empty image.
    pub create: bool,
    /// Endpoint override, plain HTTP, auth (ECR tokens) and retries for registries.
    pub registry: RegistrySettings,
}

impl OpenSettings {
    /// Registry settings from the environment (`AFTERPUSH_REGISTRY_*`).
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            create: false,
            registry: RegistrySettings::from_env()?,
        })
    }

    /// The same settings, creating missing layouts and archives.
    pub fn creating(mut self) -> Self {
        self.create = true;
        self
    }
}

/// Opens the repository an image reference points into.
///
/// For an `oci-archive`, writes become visible only on [`Repository::commit`].
pub async fn open_repository(r: &ImageRef, settings: &OpenSettings) -> Result<Box<dyn Repository>> {
    match &r.location {
        Location::Layout(dir) => {
            let repo = if settings.create {
                LayoutRepository::open_or_create(dir)?
            } else {
                LayoutRepository::open(dir)?
            };
            Ok(Box::new(repo))
        }
        Location::Archive(file) => Ok(Box::new(ArchiveRepository::open(file, !settings.create)?)),
        Location::Registry { host, repository } => Ok(Box::new(DistributionRepository::connect(
            &settings.registry,
            host,
            repository,
        )?)),
    }
}

/// Opens the repository of a source reference and says which manifest it means: the
/// digest or tag given; for a layout or archive without either, its only `index.json`
/// entry (as skopeo reads `oci:DIR`); for a registry, `latest`. Sources are never
/// created, whatever `settings.create` says.
pub async fn open_source(
    r: &ImageRef,
    settings: &OpenSettings,
) -> Result<(Box<dyn Repository>, String)> {
    let settings = OpenSettings {
        create: false,
        ..settings.clone()
    };
    if let Some(reference) = r.reference() {
        return Ok((open_repository(r, &settings).await?, reference));
    }
    let sole = match &r.location {
        Location::Layout(dir) => {
            let repo = LayoutRepository::open(dir)?;
            let sole = repo.sole_entry()?;
            (Box::new(repo) as Box<dyn Repository>, sole)
        }
        Location::Archive(file) => {
            let repo = ArchiveRepository::open(file, true)?;
            let sole = repo.layout().sole_entry()?;
            (Box::new(repo) as Box<dyn Repository>, sole)
        }
        Location::Registry { .. } => {
            return Ok((open_repository(r, &settings).await?, "latest".into()))
        }
    };
    match sole {
        (repo, Some(digest)) => Ok((repo, digest.to_string())),
        (repo, None) => {
            let tags = repo.list_tags().await?;
            Err(RegistryError::Invalid {
                location: r.to_string(),
                message: format!(
                    "name the image to use (REF:TAG): the index.json has no single entry; tags: {}",
                    if tags.is_empty() {
                        "none".to_string()
                    } else {
                        tags.join(", ")
                    }
                ),
            })
        }
    }
}
