//! A janitor run's [`Report`]: what was planned, deleted, kept and left, and why; the
//! same value goes to the logs (as a summary), to the report bucket and to the CLI.

use super::executor::RepositoryReport;
use super::s3gc::S3CacheReport;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One run: what was planned, deleted, kept, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The run's id: its start time (`YYYYMMDDTHHMMSSZ`), a dash and 8 random hex digits.
    pub run_id: String,
    /// `sweep`, or `push REPO:TAG`.
    pub trigger: String,
    /// True when the run deleted nothing on purpose.
    pub dry_run: bool,
    /// The time the plan was made for: ages are measured to it.
    pub now: DateTime<Utc>,
    /// When the run started (wall clock).
    pub started_at: DateTime<Utc>,
    /// When the run finished (wall clock).
    pub finished_at: DateTime<Utc>,
    /// Why nothing was done, when nothing was to be done (an event that is not a cache push).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    /// Why nothing was planned or deleted although there was work: the images in use
    /// could not be listed (fail closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// References to this account's images that ECS and Lambda hold (0 when the policy
    /// turned the protection off).
    pub in_use_references: usize,
    /// Repositories other principals may pull, with each consumer and whether the
    /// janitor sees its workloads (an uncovered one keeps every image it could be running).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<super::shared::SharedRepository>,
    /// One entry per repository visited.
    pub repositories: Vec<RepositoryReport>,
    /// One entry per S3 cache visited.
    pub s3_caches: Vec<S3CacheReport>,
    /// Repositories or caches that could not be listed: the run goes on without them.
    pub errors: Vec<String>,
    /// Deletions planned, in repositories and S3 caches together.
    pub planned_deletions: usize,
    /// Images and S3 objects actually deleted.
    pub deleted: usize,
    /// Deletions that failed.
    pub failed: usize,
    /// Bytes the deletions free (planned ones in a dry run).
    pub bytes_reclaimed: u64,
    /// True when the policy's `max_deletions` cut some repository's plan short.
    pub stopped_by_max_deletions: bool,
    /// The invocation's deadline stopped the run: see each repository's `left`, and
    /// `s3_caches_left`. The next run plans again and continues.
    pub stopped_by_deadline: bool,
    /// S3 caches not visited because of the deadline.
    pub s3_caches_left: Vec<String>,
    /// A sweep that fanned out: the repositories whose own run deleted nothing (their
    /// images in use unknown, their listing refused), with why. Absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_repositories: Vec<BlockedRepository>,
}

impl Report {
    pub(super) fn new(trigger: String, dry_run: bool, now: DateTime<Utc>) -> Self {
        let started_at = Utc::now();
        Report {
            run_id: format!(
                "{}-{:08x}",
                started_at.format("%Y%m%dT%H%M%SZ"),
                rand::random::<u32>()
            ),
            trigger,
            dry_run,
            now,
            started_at,
            finished_at: started_at,
            ignored: None,
            blocked: None,
            in_use_references: 0,
            shared: Vec::new(),
            repositories: Vec::new(),
            s3_caches: Vec::new(),
            errors: Vec::new(),
            planned_deletions: 0,
            deleted: 0,
            failed: 0,
            bytes_reclaimed: 0,
            stopped_by_max_deletions: false,
            stopped_by_deadline: false,
            s3_caches_left: Vec::new(),
            blocked_repositories: Vec::new(),
        }
    }

    pub(super) fn finish(mut self) -> Self {
        self.finished_at = Utc::now();
        self.planned_deletions = self
            .repositories
            .iter()
            .map(|r| r.planned.len())
            .sum::<usize>()
            + self
                .s3_caches
                .iter()
                .map(|c| c.plan.expired_manifests.len() + c.plan.dead_blobs.len())
                .sum::<usize>();
        self.deleted = self
            .repositories
            .iter()
            .map(|r| r.deleted.len())
            .sum::<usize>()
            + self
                .s3_caches
                .iter()
                .map(|c| c.deleted.len())
                .sum::<usize>();
        self.failed = self
            .repositories
            .iter()
            .map(|r| r.failed.len())
            .sum::<usize>()
            + self.s3_caches.iter().map(|c| c.failed.len()).sum::<usize>();
        self.bytes_reclaimed = self
            .repositories
            .iter()
            .map(|r| r.bytes_reclaimed)
            .sum::<u64>()
            + self
                .s3_caches
                .iter()
                .filter(|c| c.dry_run || c.failed.is_empty())
                .map(|c| c.plan.bytes_reclaimed)
                .sum::<u64>();
        self.stopped_by_max_deletions =
            self.repositories.iter().any(|r| r.stopped_by_max_deletions);
        self.stopped_by_deadline = self.stopped_by_deadline
            || !self.s3_caches_left.is_empty()
            || self.repositories.iter().any(|r| r.stopped_by_deadline);
        self
    }

    /// Counts only, one line per repository and cache: what goes to the logs (a full
    /// report of thousands of deletions would exceed a CloudWatch log event).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "run_id": self.run_id,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "now": self.now,
            "ignored": self.ignored,
            "blocked": self.blocked,
            "in_use_references": self.in_use_references,
            "uncovered_consumers": self.shared.iter().flat_map(|r| r.uncovered().map(move |c| {
                format!("{}: {} ({})", r.repository, c.principal, c.granted_by)
            })).collect::<Vec<_>>(),
            "planned_deletions": self.planned_deletions,
            "deleted": self.deleted,
            "failed": self.failed,
            "bytes_reclaimed": self.bytes_reclaimed,
            "stopped_by_max_deletions": self.stopped_by_max_deletions,
            "stopped_by_deadline": self.stopped_by_deadline,
            "errors": self.errors,
            "blocked_repositories": self.blocked_repositories.iter()
                .map(|b| b.repository.as_str()).collect::<Vec<_>>(),
            "repositories": self.repositories.iter().map(|r| serde_json::json!({
                "repository": r.repository,
                "images": r.images,
                "kept_in_use": r.keeps.iter().filter(|d| !d.in_use.is_empty()).count(),
                "planned": r.planned.len(),
                "deleted": r.deleted.len(),
                "failed": r.failed.len(),
                "bytes_reclaimed": r.bytes_reclaimed,
                "left": r.left.len(),
            })).collect::<Vec<_>>(),
            "s3_caches": self.s3_caches.iter().map(|c| serde_json::json!({
                "uri": c.plan.uri,
                "expired_manifests": c.plan.expired_manifests.len(),
                "dead_blobs": c.plan.dead_blobs.len(),
                "deleted": c.deleted.len(),
                "failed": c.failed.len(),
                "bytes_reclaimed": c.plan.bytes_reclaimed,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

/// The parts of a sweep that fanned out, gathered into one report of the same shape
/// as a whole sweep's: the run's id, trigger `sweep`, every repository and S3 cache of
/// the parts, their errors, the totals summed again, and the repositories whose run was
/// blocked listed by name. `blocked` is set only when every part was blocked (nothing
/// at all was deleted); `in_use_references` is the largest count a part saw.
///
/// `parts` are `(repository, its run's report)`; the S3 caches' part has no repository.
/// The result depends on the parts alone (sorted by repository), so two invocations
/// that gather the same parts write the same report.
pub fn gather(
    run_id: &str,
    now: DateTime<Utc>,
    started_at: DateTime<Utc>,
    dry_run: bool,
    mut parts: Vec<(Option<String>, Report)>,
) -> Report {
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut report = Report::new("sweep".into(), dry_run, now);
    report.run_id = run_id.to_string();
    report.started_at = started_at;
    let all_blocked = !parts.is_empty() && parts.iter().all(|(_, p)| p.blocked.is_some());
    let finished_at = parts.iter().map(|(_, p)| p.finished_at).max();
    for (repository, part) in parts {
        report.in_use_references = report.in_use_references.max(part.in_use_references);
        report.shared.extend(part.shared);
        report.repositories.extend(part.repositories);
        report.s3_caches.extend(part.s3_caches);
        report.errors.extend(part.errors);
        report.s3_caches_left.extend(part.s3_caches_left);
        report.stopped_by_deadline |= part.stopped_by_deadline;
        if let Some(blocked) = part.blocked {
            report.blocked_repositories.push(BlockedRepository {
                repository: repository.unwrap_or_else(|| "(s3 caches)".into()),
                reason: blocked.reason,
                retryable: blocked.retryable,
            });
        }
    }
    if all_blocked {
        report.blocked = Some(Blocked {
            reason: format!(
                "every part of the run was blocked; first: {}: {}",
                report.blocked_repositories[0].repository, report.blocked_repositories[0].reason
            ),
            retryable: report.blocked_repositories.iter().all(|b| b.retryable),
        });
    }
    let mut report = report.finish();
    report.finished_at = finished_at.unwrap_or(started_at).max(started_at);
    report
}

/// A repository of a fanned-out sweep whose own run deleted nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedRepository {
    /// The repository.
    pub repository: String,
    /// Why its run deleted nothing.
    pub reason: String,
    /// A later run may succeed.
    pub retryable: bool,
}

/// Why a run deleted nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blocked {
    /// Why the images in use could not be listed.
    pub reason: String,
    /// A later run may succeed (throttling, 5xx).
    pub retryable: bool,
}
