//! Opening a [`Repository`] from a parsed [`ImageRef`].

use super::layout::{ArchiveRepository, LayoutRepository};
use super::{ImageRef, Location, RegistryError, Repository, Result};

/// How to open repositories. Registry settings (endpoint override, plain HTTP, ECR) are
/// added here when the distribution client is wired in.
#[derive(Debug, Clone, Default)]
pub struct OpenSettings {
    /// Create a layout directory (or start a new archive) when it does not exist yet.
    /// Sources are opened without it, so a typo is an error, not an empty image.
    pub create: bool,
}

impl OpenSettings {
    /// Settings for a destination: missing layouts and archives are created.
    pub fn for_writing() -> Self {
        Self { create: true }
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
        // wired at merge: the HTTP DistributionRepository (another helper's work) goes here.
        Location::Registry { host, repository } => Err(RegistryError::Unsupported(
            format!("registry reference {host}/{repository}"),
            "this build (the distribution client is not wired in yet)".into(),
        )),
    }
}
