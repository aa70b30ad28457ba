//! Doing a survey's work in-process, with the library calls the indexer and the
//! stitcher handlers make: the handlers' decision on the work's event, then
//! [`soci::create_soci`] or [`stitch::handle_push`], then [`Repository::commit`].
//!
//! A stitch that writes its target is followed by the indexer on the push event of that
//! write, as ECR would raise it. One failed piece of work does not stop the others: each
//! is independent, as queue messages are, and the next survey finds what is left.

use super::event::{push_event, EventOrigin};
use super::survey::{Survey, Work, WorkKind};
use super::ReconcileSettings;
use crate::events::{soci_push_decision, stitch_push_decision, EcrImageActionEvent, PushDecision};
use crate::registry::Repository;
use crate::soci::{self, Progress, ZtocCache};
use crate::stitch::{self, StitchOutcome};
use serde::Serialize;

/// How one piece of work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemStatus {
    /// Written.
    Done,
    /// The decision or the library found nothing to do (the reason is in `detail`).
    Skipped,
    /// It failed (the error is in `detail`); the next survey finds it again.
    Failed,
}

/// What became of one piece of work (or of the indexing that followed a stitch).
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    /// Whose work.
    pub kind: WorkKind,
    /// The event's tag.
    pub tag: String,
    /// The event's digest.
    pub digest: String,
    /// How it ended.
    pub status: ItemStatus,
    /// What was written, why it was skipped, or the error.
    pub detail: String,
    /// Layer bytes the indexer read.
    pub bytes_read: u64,
}

/// What an apply run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    /// The repository.
    pub repository: String,
    /// One entry per piece of work done or tried, in order.
    pub results: Vec<ItemResult>,
}

impl ApplyReport {
    /// How many ended with `status`.
    pub fn count(&self, status: ItemStatus) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }
}

/// Does the work `survey` found in `repo`. `on_item` sees each result as it comes.
pub async fn apply(
    repo: &dyn Repository,
    survey: &Survey,
    settings: &ReconcileSettings,
    cache: &dyn ZtocCache,
    progress: Option<Progress>,
    on_item: Option<&(dyn Fn(&ItemResult) + Send + Sync)>,
) -> ApplyReport {
    let mut report = ApplyReport {
        repository: survey.repository.clone(),
        results: vec![],
    };
    let mut record = |r: ItemResult| {
        if let Some(f) = on_item {
            f(&r);
        }
        report.results.push(r);
    };
    for work in &survey.work {
        match work.kind {
            WorkKind::Index => {
                record(run_index(repo, &work.event, settings, cache, progress.clone()).await)
            }
            WorkKind::Stitch => {
                let (result, written) = run_stitch(repo, work, settings).await;
                record(result);
                if let Some(event) = written {
                    record(run_index(repo, &event, settings, cache, progress.clone()).await);
                }
            }
        }
    }
    report
}

fn result(
    kind: WorkKind,
    event: &EcrImageActionEvent,
    status: ItemStatus,
    detail: String,
    bytes_read: u64,
) -> ItemResult {
    ItemResult {
        kind,
        tag: event.detail.tag().unwrap_or_default().to_string(),
        digest: event.detail.image_digest.clone().unwrap_or_default(),
        status,
        detail,
        bytes_read,
    }
}

/// The indexer's handler body on `event`, in-process.
async fn run_index(
    repo: &dyn Repository,
    event: &EcrImageActionEvent,
    settings: &ReconcileSettings,
    cache: &dyn ZtocCache,
    progress: Option<Progress>,
) -> ItemResult {
    let decision = soci_push_decision(&event.detail, &settings.filters, &settings.soci.tag_suffix)
        .skipping_per_arch_tags(settings.soci.skip_arch_tags.as_ref());
    let PushDecision::Work { tag, digest, .. } = &decision else {
        let why = decision
            .skip_reason()
            .map(|r| r.to_string())
            .unwrap_or_default();
        return result(WorkKind::Index, event, ItemStatus::Skipped, why, 0);
    };
    let created = async {
        let outcome = soci::create_soci(
            repo,
            &digest.to_string(),
            Some(tag),
            &settings.soci,
            cache,
            progress,
        )
        .await?;
        repo.commit().await?;
        Ok::<_, super::ReconcileError>(outcome)
    }
    .await;
    match created {
        Ok(outcome) => match &outcome.skipped {
            Some(why) => result(WorkKind::Index, event, ItemStatus::Skipped, why.clone(), 0),
            None => result(
                WorkKind::Index,
                event,
                ItemStatus::Done,
                match (&outcome.output, &outcome.tag) {
                    (Some(index), Some(tag)) => format!("{tag} = {index}"),
                    (Some(index), None) => format!("SOCI-enabled index {index}"),
                    _ => format!(
                        "{} SOCI v1 referrer(s)",
                        outcome
                            .platforms
                            .iter()
                            .filter(|p| p.soci_index.is_some())
                            .count()
                    ),
                },
                outcome.bytes_read,
            ),
        },
        Err(e) => result(
            WorkKind::Index,
            event,
            ItemStatus::Failed,
            crate::format::cause_chain(&e),
            0,
        ),
    }
}

/// The stitcher's handler body on the work's event, in-process; with the push event of
/// the stitched index when it wrote one.
async fn run_stitch(
    repo: &dyn Repository,
    work: &Work,
    settings: &ReconcileSettings,
) -> (ItemResult, Option<EcrImageActionEvent>) {
    let event = &work.event;
    let decision =
        stitch_push_decision(&event.detail, &settings.filters, &settings.soci.tag_suffix);
    let PushDecision::Work { tag, .. } = &decision else {
        let why = decision
            .skip_reason()
            .map(|r| r.to_string())
            .unwrap_or_default();
        return (
            result(WorkKind::Stitch, event, ItemStatus::Skipped, why, 0),
            None,
        );
    };
    let stitched = async {
        let outcome = stitch::handle_push(repo, tag, &settings.stitch).await?;
        repo.commit().await?;
        Ok::<_, super::ReconcileError>(outcome)
    }
    .await;
    let failed = |e: &(dyn std::error::Error + 'static)| {
        (
            result(
                WorkKind::Stitch,
                event,
                ItemStatus::Failed,
                crate::format::cause_chain(e),
                0,
            ),
            None,
        )
    };
    match stitched {
        Ok(StitchOutcome::Written { target, index }) => {
            let origin = EventOrigin {
                account: event.account.clone(),
                region: event.region.clone(),
            };
            let written = match push_event(
                &event.detail.repository_name,
                &target,
                &index.manifest,
                &origin,
            ) {
                Ok(e) => e,
                Err(e) => return failed(&e),
            };
            (
                result(
                    WorkKind::Stitch,
                    event,
                    ItemStatus::Done,
                    format!(
                        "{target} = {} ({})",
                        index.digest,
                        index.platforms.join(", ")
                    ),
                    0,
                ),
                Some(written),
            )
        }
        Ok(other) => (
            result(
                WorkKind::Stitch,
                event,
                ItemStatus::Skipped,
                serde_json::to_string(&other).unwrap_or_else(|_| format!("{other:?}")),
                0,
            ),
            None,
        ),
        Err(e) => failed(&e),
    }
}
