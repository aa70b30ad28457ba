//! The survey of one repository: what the indexer and the stitcher would do if every
//! tag were pushed again now, found without writing anything.
//!
//! Every tag's manifest is read once and turned into the push event ECR would raise
//! for it ([`super::event::push_event`]). The handlers' decision code
//! ([`soci_push_decision`], [`stitch_push_decision`]) runs on that event, so
//! `REPOSITORY_TAG_FILTERS`, `SOCI_SKIP_ARCH_TAGS` and the own-output and skip rules hold
//! as on a real push. Then [`super::soci_state`] and [`super::stitch_state`] say whether
//! the work is already done.
//!
//! A stitched tag the stitcher would (re)write is not indexed as it is: its work is the
//! stitch, followed by the indexer on the index the stitch writes (as ECR's event for
//! the stitcher's push would start it).

use super::event::{push_event, EventOrigin};
use super::soci_state::{soci_state, SociState};
use super::stitch_state::{stitch_state, tag_groups, StitchState};
use super::{ReconcileError, ReconcileSettings};
use crate::events::{soci_push_decision, stitch_push_decision, EcrImageActionEvent, PushDecision};
use crate::oci::Sha256Digest;
use crate::registry::{Manifest, Repository};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Which function's work it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkKind {
    /// The stitcher's: write a stitched tag.
    Stitch,
    /// The indexer's: build a SOCI index.
    Index,
}

/// One piece of work: the push event that makes the function do it.
#[derive(Debug, Clone, Serialize)]
pub struct Work {
    /// Whose work.
    pub kind: WorkKind,
    /// The repository.
    pub repository: String,
    /// The tag the event names.
    pub tag: String,
    /// The digest the event names.
    pub digest: Sha256Digest,
    /// Why it is needed.
    pub reason: String,
    /// Layers the indexer would read (0 for a stitch).
    pub layers: usize,
    /// Layer bytes the indexer would read (0 for a stitch).
    pub bytes: u64,
    /// The synthetic `ECR Image Action` event for the function.
    pub event: EcrImageActionEvent,
    /// For a stitch: the indexer's work on the index it writes, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub then: Option<Box<Work>>,
}

/// What the survey of one repository found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Survey {
    /// The repository name the events carry.
    pub repository: String,
    /// Where it is (`Repository::location`).
    pub location: String,
    /// Tags listed.
    pub tags: usize,
    /// The work to do: stitches first, then SOCI indexes.
    pub work: Vec<Work>,
    /// Tagged images whose SOCI index is current.
    pub indexed: usize,
    /// Tagged images the indexer would build nothing for (no selected layer to index).
    pub nothing_to_index: usize,
    /// Per-arch groups whose stitched tag is current.
    pub stitched: usize,
    /// Per-arch groups still missing a required platform.
    pub waiting: Vec<String>,
    /// Tags the indexer's decision skips, by skip code (`own-output`, `filtered-out`...).
    pub index_skipped: BTreeMap<String, usize>,
    /// Per-arch groups the stitcher's decision skips, by skip code.
    pub stitch_skipped: BTreeMap<String, usize>,
    /// What the functions would fail on (named); not work, as a retry would fail again.
    pub problems: Vec<String>,
}

impl Survey {
    /// True when there is nothing to do.
    pub fn is_converged(&self) -> bool {
        self.work.is_empty()
    }
}

/// How far a survey is.
#[derive(Debug, Clone)]
pub enum SurveyStep {
    /// The tags are listed: this many steps follow.
    Listed {
        /// The number of [`SurveyStep::Done`] steps to come.
        steps: u64,
    },
    /// One step done (a tag read, a group or an image examined).
    Done {
        /// What was examined.
        what: String,
    },
}

/// A progress callback (the CLI draws a bar with it).
pub type SurveyProgress = Arc<dyn Fn(SurveyStep) + Send + Sync>;

struct Tagged {
    tag: String,
    manifest: Manifest,
    event: EcrImageActionEvent,
}

/// Surveys `repo`, whose events name `repository` (and `origin`'s account and region).
pub async fn survey(
    repo: &dyn Repository,
    repository: &str,
    origin: &EventOrigin,
    settings: &ReconcileSettings,
    progress: Option<SurveyProgress>,
) -> Result<Survey, ReconcileError> {
    let step = |what: String| {
        if let Some(p) = &progress {
            p(SurveyStep::Done { what });
        }
    };
    let tags = repo.list_tags().await?;
    let groups = tag_groups(&tags, &settings.stitch);
    if let Some(p) = &progress {
        p(SurveyStep::Listed {
            steps: (2 * tags.len() + groups.len()) as u64,
        });
    }
    let mut out = Survey {
        repository: repository.to_string(),
        location: repo.location(),
        tags: tags.len(),
        ..Survey::default()
    };
    let mut tagged = Vec::with_capacity(tags.len());
    for tag in &tags {
        match repo.get_manifest(tag).await {
            Ok(manifest) => {
                let event = push_event(repository, tag, &manifest, origin)?;
                tagged.push(Tagged {
                    tag: tag.clone(),
                    manifest,
                    event,
                });
            }
            // Deleted between the listing and now: nothing to do for it.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        step(tag.clone());
    }
    let by_tag: BTreeMap<&str, &Tagged> = tagged.iter().map(|t| (t.tag.as_str(), t)).collect();
    let suffix = &settings.soci.tag_suffix;

    let mut restitched = BTreeSet::new();
    for group in &groups {
        step(group.target.clone());
        let mut decisions = group
            .tags
            .iter()
            .filter_map(|tag| by_tag.get(tag.as_str()))
            .map(|t| {
                (
                    t,
                    stitch_push_decision(&t.event.detail, &settings.filters, suffix),
                )
            });
        let first = decisions.clone().next();
        let Some((pushed, _)) = decisions.find(|(_, d)| d.is_work()) else {
            if let Some(reason) = first.as_ref().and_then(|(_, d)| d.skip_reason()) {
                *out.stitch_skipped.entry(reason.code().into()).or_default() += 1;
            }
            continue;
        };
        match stitch_state(repo, group, &settings.stitch).await {
            StitchState::Current => out.stitched += 1,
            StitchState::Waiting(why) => out.waiting.push(why),
            StitchState::Problem(why) => out.problems.push(format!("stitch {why}")),
            StitchState::Needed { index, reason } => {
                restitched.insert(group.target.clone());
                let target_event = push_event(repository, &group.target, &index.manifest, origin)?;
                let then = index_work(
                    repo,
                    &group.target,
                    &index.manifest,
                    &target_event,
                    settings,
                    &mut Survey::default(),
                )
                .await?
                .map(|mut w| {
                    w.reason = format!("the stitched index is new ({})", w.reason);
                    Box::new(w)
                });
                out.work.push(Work {
                    kind: WorkKind::Stitch,
                    repository: repository.to_string(),
                    tag: pushed.tag.clone(),
                    digest: pushed.manifest.digest.clone(),
                    reason,
                    layers: 0,
                    bytes: 0,
                    event: pushed.event.clone(),
                    then,
                });
            }
        }
    }

    for t in &tagged {
        step(t.tag.clone());
        if restitched.contains(&t.tag) {
            continue;
        }
        if let Some(work) =
            index_work(repo, &t.tag, &t.manifest, &t.event, settings, &mut out).await?
        {
            out.work.push(work);
        }
    }
    Ok(out)
}

/// The indexer's work for `tag` (holding `manifest`), if any; what is not work is
/// counted in `counts`.
async fn index_work(
    repo: &dyn Repository,
    tag: &str,
    manifest: &Manifest,
    event: &EcrImageActionEvent,
    settings: &ReconcileSettings,
    counts: &mut Survey,
) -> Result<Option<Work>, ReconcileError> {
    let decision = soci_push_decision(&event.detail, &settings.filters, &settings.soci.tag_suffix)
        .skipping_per_arch_tags(settings.soci.skip_arch_tags.as_ref());
    if let PushDecision::Skip { reason } = &decision {
        *counts
            .index_skipped
            .entry(reason.code().into())
            .or_default() += 1;
        return Ok(None);
    }
    match soci_state(repo, tag, manifest, &settings.soci).await? {
        SociState::Current => counts.indexed += 1,
        SociState::NothingToIndex => counts.nothing_to_index += 1,
        SociState::OwnOutput(_) => {
            *counts.index_skipped.entry("own-output".into()).or_default() += 1;
        }
        SociState::SourceGone(why) => counts.problems.push(format!("index {why}")),
        SociState::Needed {
            image,
            reason,
            expected,
        } => {
            let event = if image.digest == manifest.digest {
                event.clone()
            } else {
                push_event(
                    &event.detail.repository_name,
                    tag,
                    &image,
                    &EventOrigin {
                        account: event.account.clone(),
                        region: event.region.clone(),
                    },
                )?
            };
            return Ok(Some(Work {
                kind: WorkKind::Index,
                repository: event.detail.repository_name.clone(),
                tag: tag.to_string(),
                digest: image.digest.clone(),
                reason,
                layers: expected.layers(),
                bytes: expected.bytes(),
                event,
                then: None,
            }));
        }
    }
    Ok(None)
}
