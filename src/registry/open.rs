//! Opening a [`Repository`] from a parsed [`ImageRef`].

use super::distribution::{DistributionRepository, RegistrySettings};
use super::layout::{ArchiveRepository, LayoutRepository};
use super::{ImageRef, Location, Repository, Result};

/// How to open repositories.
#[derive(Debug, Clone, Default)]
pub struct OpenSettings {
    /// Create a layout directory (or start a new archive) when it does not exist yet.
    /// Sources are opened without it, so a typo is an error, not an empty image.
    pub create: bool,
    /// Endpoint override, plain HTTP, auth (ECR tokens) and retries for registries.
    pub registry: RegistrySettings,
}

impl OpenSettings {
    /// Settings for a destination: missing layouts and archives are created.
    pub fn for_writing() -> Self {
        Self {
            create: true,
            ..Self::default()
        }
    }

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
