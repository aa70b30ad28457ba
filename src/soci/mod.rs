//! SOCI indexes for images in any [`Repository`](crate::registry::Repository): which
//! layers get a zTOC, streaming each layer from the registry straight into the zTOC
//! builder, reusing zTOCs from an S3 cache, and writing SOCI index v2 (the default: the
//! image is re-published as an index that carries its SOCI indexes) or v1 (a referrer).
//! Formats: `docs/soci-index.md` (the index, v1 and v2, the JSON bytes) and
//! `docs/ztoc-format.md` (the zTOC); soci-snapshotter is the reference they follow.

pub mod build;
pub mod cache;
pub mod convert;
pub mod freshness;
pub mod index;
pub mod layers;
pub mod memory;
mod own_output;
mod platform_images;
pub mod settings;
pub mod time_budget;

pub use build::{BuiltIndex, Progress, ProgressEvent};
pub use cache::{
    max_cached_ztoc_size, reusable_ztoc, CachedLayer, NoZtocCache, S3ZtocCache, ZtocCache,
};
pub use convert::{create_soci, create_soci_within, ImageReport, PlatformReport, SociOutcome};
pub use own_output::{is_our_soci_output, is_soci_index_type};
pub use settings::{IndexVersion, PlatformSelection, SociSettings, TagMode};
pub use time_budget::LayerTimeBudget;

use crate::oci::Sha256Digest;
use crate::registry::RegistryError;

/// Why building or publishing SOCI indexes failed. Each variant names the image or
/// layer it is about.
#[derive(Debug, thiserror::Error)]
pub enum SociError {
    /// Reading from or writing to the repository failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The zTOC builder refused a layer (corrupt or truncated gzip, an invalid tar header...).
    #[error("layer {layer}: {source}")]
    Layer {
        /// The layer's digest.
        layer: Sha256Digest,
        /// What the zTOC builder found.
        source: crate::ztoc::ZtocError,
    },
    /// The registry sent another number of bytes for a layer than its descriptor's size.
    #[error("layer {layer}: the registry sent {actual} bytes, the manifest says {expected}")]
    LayerSize {
        /// The layer's digest.
        layer: Sha256Digest,
        /// The size the image manifest gives, in bytes.
        expected: u64,
        /// The bytes the registry sent.
        actual: u64,
    },
    /// An image, index, config or layer descriptor is malformed (a bad digest, a config without a platform, an index without platform images).
    #[error("{what}: {message}")]
    Invalid {
        /// What is malformed (`layer sha256:...`, `config sha256:...`).
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// An indexer setting has a value it cannot use.
    #[error("setting {name}={value:?}: {message}")]
    Setting {
        /// The setting's name.
        name: String,
        /// The value as given.
        value: String,
        /// Why it was refused.
        message: String,
    },
    /// The invocation's deadline leaves no time to index the remaining layers: they were
    /// not started, and a retry resumes from the zTOCs already in the cache.
    #[error(
        "{image}: not enough time left before the invocation deadline to index layer(s) {}; \
         they were not started, the zTOCs finished so far are in the cache, and a retry \
         resumes from there",
        left.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
    )]
    OutOfTime {
        /// The image and platform manifest whose layers are left.
        image: String,
        /// The layers not started.
        left: Vec<Sha256Digest>,
    },
    /// A layer's zTOC build alone needs more memory than the whole `MEMORY_BUDGET`.
    #[error(
        "layer {layer}: its zTOC build needs at least {} of memory, more than the whole memory budget of {} (MEMORY_BUDGET, by default the function's memory less {} MiB)",
        crate::format::bytes(*needed),
        crate::format::bytes(*budget),
        memory::PROCESS_HEADROOM >> 20
    )]
    MemoryBudget {
        /// The layer that cannot be indexed.
        layer: Sha256Digest,
        /// Bytes its build needs at least.
        needed: u64,
        /// The whole budget, in bytes.
        budget: u64,
    },
    /// The zTOC builder's thread panicked or was cancelled.
    #[error("layer {layer}: the zTOC builder stopped unexpectedly: {message}")]
    Builder {
        /// The layer being indexed.
        layer: Sha256Digest,
        /// The join error.
        message: String,
    },
}

impl SociError {
    /// True when a later attempt may succeed (registry throttling, 5xx, resets, an
    /// invocation that ran out of time).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SociError::Registry(e) if e.is_retryable())
            || matches!(self, SociError::OutOfTime { .. })
    }
}

/// A result whose error defaults to [`SociError`].
pub type Result<T, E = SociError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::SociError;

    /// A budget under 52 KiB printed as "0.0 MiB".
    #[test]
    fn a_small_memory_budget_is_printed_in_its_own_unit() {
        let e = SociError::MemoryBudget {
            layer: crate::oci::Sha256Digest::of(b"layer"),
            needed: 10 << 20,
            budget: 1000,
        };
        let text = e.to_string();
        assert!(
            text.contains("needs at least 10.0 MiB") && text.contains("memory budget of 1000 B"),
            "{text}"
        );
    }
}
