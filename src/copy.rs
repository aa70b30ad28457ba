//! Copying an image (all platforms, attestations, optionally referrers) between repositories.
