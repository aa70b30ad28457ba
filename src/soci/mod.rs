//! SOCI indexes for images in any [`Repository`](crate::registry::Repository): which
//! layers get a zTOC, streaming each layer from the registry straight into the zTOC
//! builder, reusing zTOCs from an S3 cache, and writing SOCI index v2 (the default: the
//! image is re-published as an index that carries its SOCI indexes) or v1 (a referrer).
//! Formats: `docs/soci-index.md` (the index, v1 and v2, the JSON bytes) and
//! `docs/ztoc-format.md` (the zTOC); soci-snapshotter is the reference they follow.

pub mod build;
pub mod cache;
pub mod convert;
pub mod index;
pub mod layers;
pub mod memory;
pub mod settings;

pub use build::{BuiltIndex, Progress, ProgressEvent};
pub use cache::{
    max_cached_ztoc_size, reusable_ztoc, CachedLayer, NoZtocCache, S3ZtocCache, ZtocCache,
};
pub use convert::{create_soci, ImageReport, PlatformReport, SociOutcome};
pub use settings::{IndexVersion, PlatformSelection, SociSettings, TagMode};

use crate::oci::Sha256Digest;
use crate::registry::RegistryError;

/// Why building or publishing SOCI indexes failed. Each variant names the image or
/// layer it is about.
#[derive(Debug, thiserror::Error)]
pub enum SociError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("layer {layer}: {source}")]
    Layer {
        layer: Sha256Digest,
        source: crate::ztoc::ZtocError,
    },
    #[error("layer {layer}: the registry sent {actual} bytes, the manifest says {expected}")]
    LayerSize {
        layer: Sha256Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("setting {name}={value:?}: {message}")]
    Setting {
        name: String,
        value: String,
        message: String,
    },
    #[error(
        "layer {layer}: its zTOC build needs at least {} of memory, more than the whole memory budget of {} (MEMORY_BUDGET, by default the function's memory less {} MiB)",
        mib(*needed),
        mib(*budget),
        memory::PROCESS_HEADROOM >> 20
    )]
    MemoryBudget {
        layer: Sha256Digest,
        needed: u64,
        budget: u64,
    },
    #[error("layer {layer}: the zTOC builder stopped unexpectedly: {message}")]
    Builder {
        layer: Sha256Digest,
        message: String,
    },
}

impl SociError {
    /// True when a later attempt may succeed (registry throttling, 5xx, resets).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SociError::Registry(e) if e.is_retryable())
    }
}

/// `12.3 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

pub type Result<T, E = SociError> = std::result::Result<T, E>;
