//! What one scheduled reconcile run found and did, as the reconciler stores it: the
//! registry survey's counts, the plan's totals, what was sent to the queues, the
//! repositories that failed, and where the next run goes on when this one stopped at
//! its deadline.

use super::fan_out::EnqueueReport;
use super::plan::{Plan, Totals};
use super::registry_survey::{RegistrySurvey, RepositoryFailure};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One reconcile run's report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReconcileReport {
    /// The run's id (the invocation's request id, or a fresh one).
    pub run_id: String,
    /// `dry` or `enqueue`.
    pub mode: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Where this run started: after this repository (a previous run's cursor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_after: Option<String>,
    /// Repositories listed in the registry.
    pub repositories_listed: usize,
    /// Repositories `REPOSITORY_TAG_FILTERS` selects.
    pub repositories_selected: usize,
    /// Repositories surveyed by this run.
    pub repositories_surveyed: usize,
    /// True when every selected repository after the start was surveyed.
    pub complete: bool,
    /// Where the next run goes on (the last repository surveyed), when not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<String>,
    /// Pieces of work found.
    pub work_found: usize,
    /// Images and groups already as the settings want them.
    pub already_done: usize,
    /// The plan's totals (images, layers, bytes, estimated Lambda time and cost).
    pub totals: Totals,
    /// Per repository with work: its totals.
    pub repositories: Vec<RepositoryLine>,
    /// What was sent to the queues (enqueue mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enqueued: Option<EnqueueReport>,
    /// Repositories whose survey failed (their work is not known).
    pub failures: Vec<RepositoryFailure>,
    /// What the functions would fail on, per repository.
    pub problems: Vec<String>,
}

/// One repository's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryLine {
    /// The repository.
    pub repository: String,
    /// Its totals.
    pub totals: Totals,
}

impl ReconcileReport {
    /// The report of `survey`, whose repositories' surveys are in `plan`, and of what
    /// was sent.
    pub fn new(
        run_id: String,
        mode: &str,
        started_at: DateTime<Utc>,
        started_after: Option<String>,
        survey: &RegistrySurvey,
        plan: &Plan,
        enqueued: Option<EnqueueReport>,
    ) -> Self {
        let surveys = || plan.repositories.iter().map(|r| &r.survey);
        let already_done = surveys()
            .map(|s| s.indexed + s.stitched + s.nothing_to_index)
            .sum();
        let problems = surveys()
            .flat_map(|s| {
                s.problems
                    .iter()
                    .map(move |p| format!("{}: {p}", s.repository))
            })
            .collect();
        Self {
            run_id,
            mode: mode.to_string(),
            started_at,
            finished_at: Utc::now(),
            started_after,
            repositories_listed: survey.listed,
            repositories_selected: survey.selected,
            repositories_surveyed: plan.repositories.len() + survey.failures.len(),
            complete: survey.complete,
            resume_after: survey.resume_after.clone(),
            work_found: surveys().map(|s| s.work.len()).sum(),
            already_done,
            totals: plan.total.clone(),
            repositories: plan
                .repositories
                .iter()
                .filter(|r| !r.survey.work.is_empty())
                .map(|r| RepositoryLine {
                    repository: r.survey.repository.clone(),
                    totals: r.totals.clone(),
                })
                .collect(),
            enqueued,
            failures: survey.failures.clone(),
            problems,
        }
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let sent = self
            .enqueued
            .as_ref()
            .map(|e| format!(", {} enqueued", e.total_sent()))
            .unwrap_or_default();
        format!(
            "{} repositories surveyed of {} selected: {} pieces of work{sent}, {} already done, \
             {} repositories failed{}",
            self.repositories_surveyed,
            self.repositories_selected,
            self.work_found,
            self.already_done,
            self.failures.len(),
            match &self.resume_after {
                Some(r) if !self.complete => format!("; the next run goes on after {r}"),
                _ => String::new(),
            }
        )
    }
}
