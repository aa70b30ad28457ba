//! Reconcile: converge one repository on the current settings, whatever events were
//! lost or settings changed since its images were pushed.
//!
//! - [`survey`](mod@survey) lists the repository's tags through the [`Repository`] abstraction (a
//!   registry's tags list, a layout's `index.json`) and finds the work: tagged images
//!   with no SOCI index for the current settings ([`soci_state`]), complete per-arch tag
//!   groups whose stitched tag is missing or out of date ([`stitch_state`]). Each piece
//!   of work is the synthetic `ECR Image Action` push event ([`event`]) that the
//!   handlers take, and the survey runs the handlers' own decision code on it.
//! - [`plan`] sums the work per repository and in total, with the Lambda time and cost
//!   it would take.
//! - [`apply`](mod@apply) does the work in-process with the library calls the indexer and the
//!   stitcher make.
//! - [`fan_out`] sends the work to the functions' queues instead, one message per piece
//!   of work.
//!
//! Nothing is remembered between runs: the survey reads what the repository holds now,
//! so a second run finds nothing the first one finished, and a run stopped halfway is
//! finished by the next one.
//!
//! [`Repository`]: crate::registry::Repository

pub mod apply;
// Test fixtures (test-util): never in the product.
#[cfg(any(test, feature = "test-util"))]
pub mod ecr_fixtures;
pub mod ecr_listing;
pub mod event;
pub mod fan_out;
pub mod plan;
pub mod registry_survey;
pub mod report;
pub mod soci_state;
pub mod stitch_state;
pub mod survey;

pub use apply::{apply, ApplyReport, ItemResult};
pub use ecr_listing::{EcrApiRepository, EcrCalls};
pub use event::{push_event, work_id, EventOrigin};
pub use fan_out::{enqueue, EnqueueError, EnqueueReport};
pub use plan::{CostModel, Plan, RepositoryPlan, Totals};
pub use registry_survey::{survey_ecr_registry, RegistrySurvey, RepositoryFailure};
pub use report::ReconcileReport;
pub use survey::{survey, Survey, SurveyProgress, Work, WorkKind};

use crate::filters::RepositoryTagFilters;
use crate::registry::RegistryError;
use crate::settings::{self, ProcessEnv};
use crate::soci::{SociError, SociSettings, TagMode};
use crate::stitch::{StitchError, StitchSettings};

/// What can go wrong surveying or reconciling a repository. Every variant names what it
/// is about.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading the repository failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Reading an image as the indexer does failed.
    #[error(transparent)]
    Soci(#[from] SociError),
    /// Reading a per-arch tag group as the stitcher does failed.
    #[error(transparent)]
    Stitch(#[from] StitchError),
    /// A setting the survey cannot work with.
    #[error("{0}")]
    Setting(String),
    /// A synthetic event could not be built (names the image).
    #[error("synthetic push event for {0}")]
    Event(String),
}

impl ReconcileError {
    /// Whether another try may succeed (the registry throttled or was unreachable).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReconcileError::Registry(e) => e.is_retryable(),
            ReconcileError::Soci(e) => e.is_retryable(),
            ReconcileError::Stitch(e) => e.is_retryable(),
            ReconcileError::Setting(_) | ReconcileError::Event(_) => false,
        }
    }
}

/// The settings the indexer and the stitcher run with, read from the same environment
/// variables, so the survey looks for exactly what they would build.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// The indexer's settings (`SPAN_SIZE`, `MIN_LAYER_SIZE`, `SOCI_INDEX_VERSION`, ...).
    pub soci: SociSettings,
    /// The stitcher's settings (`ARCH_TAG_TEMPLATE`, `REQUIRED_PLATFORMS`, ...).
    pub stitch: StitchSettings,
    /// `REPOSITORY_TAG_FILTERS`.
    pub filters: RepositoryTagFilters,
}

impl ReconcileSettings {
    /// The functions' settings from the process environment.
    pub fn from_env() -> Result<Self, ReconcileError> {
        let filters = settings::value_or_default(&ProcessEnv, settings::REPOSITORY_TAG_FILTERS)
            .parse::<RepositoryTagFilters>()
            .map_err(|e| ReconcileError::Setting(e.to_string()))?;
        Self::new(
            SociSettings::from_env()?,
            StitchSettings::from_env()?,
            filters,
        )
    }

    /// These settings; refuses what the survey cannot check.
    pub fn new(
        soci: SociSettings,
        stitch: StitchSettings,
        filters: RepositoryTagFilters,
    ) -> Result<Self, ReconcileError> {
        if soci.tag_mode == TagMode::None && soci.index_version == crate::soci::IndexVersion::V2 {
            // A v2 index pushed by digest only has no name the distribution API lists:
            // the survey could not tell an indexed image from one that is not.
            return Err(ReconcileError::Setting(
                "SOCI_TAG_MODE=none: the survey finds SOCI v2 indexes by their tag, and with \
                 this mode they have none; use suffix or in-place"
                    .into(),
            ));
        }
        Ok(Self {
            soci,
            stitch,
            filters,
        })
    }
}
