//! A scheduled sweep too large for one invocation, fanned out per repository through
//! the janitor's own work queue, and gathered back into one report.
//!
//! - [`start`]: the schedule's invocation picks the repositories as a whole sweep does
//!   ([`super::sweeps_repository`]), writes the run's [`RunManifest`]
//!   (`<prefix>runs/<run-id>/manifest.json`), sends one `Janitor Repository Sweep`
//!   message per repository ([`crate::queue::send_all`]), then sweeps the policy's S3
//!   caches itself.
//! - [`sweep_repository`]: one message's invocation sweeps that repository alone, with
//!   the same planner and rules, and its own listing of the images in use (so every
//!   deletion is gated as in a whole sweep), under the settings the manifest recorded
//!   (anything else is refused: nothing is swept). Its result goes to
//!   `<prefix>runs/<run-id>/repositories/<urlencoded repository>.json`.
//! - Every part written is followed by [`gather_run`]: once every part the manifest
//!   expects is there, the parts are combined ([`super::gather`]) into
//!   `<prefix>runs/<run-id>/report.json`. Two last parts gathering at once write the
//!   same report.
//!
//! `max_deletions` stays a cap on the whole run: each repository gets its share
//! ([`budget_shares`]), since the runs cannot share one counter.

use super::run_store::{RunStore, StoreError};
use super::{gather, sweep, sweeps_repository, Blocked, JanitorError, Report, RunOptions};
use crate::catalog::Catalog;
use crate::cleanup::policy::Policy;
use crate::deadline::Deadline;
use crate::events::{self, Trigger};
use crate::filters::RepositoryTagFilters;
use crate::oci::Sha256Digest;
use crate::queue::MAX_ID_CHARS;
use crate::queue::{send_all, OutgoingMessage, QueueError, SendReport, Target, WorkQueue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a run is swept with; a part made under other settings is refused.
#[derive(Debug, Clone, Copy)]
pub struct FanOutSettings<'a> {
    /// The cleanup policy.
    pub policy: &'a Policy,
    /// Plan and report only.
    pub dry_run: bool,
    /// `REPOSITORY_TAG_FILTERS`: the repositories a sweep visits.
    pub repository_filter: &'a RepositoryTagFilters,
    /// The report prefix (`cache-janitor/`): the run's objects go under `<prefix>runs/`.
    pub prefix: &'a str,
}

impl FanOutSettings<'_> {
    /// sha256 of what decides a plan: the policy as parsed, `DRY_RUN`, the filters.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::json!({
            "policy": self.policy,
            "dry_run": self.dry_run,
            "repository_filter": self.repository_filter.to_string(),
        });
        Sha256Digest::of(text.to_string().as_bytes()).hex()
    }

    fn options(&self) -> RunOptions {
        RunOptions {
            dry_run: self.dry_run,
            repository_filter: Some(self.repository_filter.clone()),
            ..RunOptions::dry_run_now()
        }
    }
}

/// The keys of one run's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKeys {
    run: String,
}

impl RunKeys {
    /// The keys of run `run_id` under `prefix`.
    pub fn new(prefix: &str, run_id: &str) -> Self {
        Self {
            run: format!("{prefix}runs/{run_id}/"),
        }
    }
    /// `<prefix>runs/<run-id>/manifest.json`.
    pub fn manifest(&self) -> String {
        format!("{}manifest.json", self.run)
    }
    /// `<prefix>runs/<run-id>/repositories/`.
    pub fn results(&self) -> String {
        format!("{}repositories/", self.run)
    }
    /// `<prefix>runs/<run-id>/repositories/<urlencoded repository>.json`.
    pub fn result(&self, repository: &str) -> String {
        let name: String = url::form_urlencoded::byte_serialize(repository.as_bytes()).collect();
        format!("{}{name}.json", self.results())
    }
    /// `<prefix>runs/<run-id>/s3-caches.json`: the S3 caches' part.
    pub fn s3_caches(&self) -> String {
        format!("{}s3-caches.json", self.run)
    }
    /// `<prefix>runs/<run-id>/report.json`: the gathered report.
    pub fn report(&self) -> String {
        format!("{}report.json", self.run)
    }
}

/// What a fanned-out run expects, written before any message is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunManifest {
    /// The run's id.
    pub run_id: String,
    /// When the fan-out started.
    pub started_at: DateTime<Utc>,
    /// The time every part plans for: ages are measured to it.
    pub now: DateTime<Utc>,
    /// Plan and report only.
    pub dry_run: bool,
    /// [`FanOutSettings::fingerprint`] of the settings it was made with.
    pub settings: String,
    /// The repositories, in name order, each with its share of `max_deletions`.
    pub repositories: Vec<PlannedRepository>,
    /// True when the policy has S3 caches: their part is expected too.
    pub s3_caches: bool,
}

/// One repository of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedRepository {
    /// Its name.
    pub repository: String,
    /// Its share of the policy's `max_deletions` (`None`: no limit).
    pub max_deletions: Option<usize>,
}

/// Why a fan-out, or one repository's part of it, did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    /// Listing or sweeping failed.
    #[error(transparent)]
    Janitor(#[from] JanitorError),
    /// Reading or writing the run's objects failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object of the run is not what the janitor writes.
    #[error("{location}: {message}")]
    Unreadable {
        /// Where it is.
        location: String,
        /// What is wrong with it.
        message: String,
    },
    /// Sending the messages failed (what was sent before is in `sent`).
    #[error("sending the sweep of run {run_id} to {queue}: {error} ({sent} messages sent before)")]
    Queue {
        /// The run.
        run_id: String,
        /// The janitor's queue.
        queue: String,
        /// The failed call.
        error: QueueError,
        /// Messages accepted before it.
        sent: usize,
    },
    /// Some messages were refused for good.
    #[error("run {run_id}: {} messages not sent: {}", failed.len(), failed.iter().map(|(id, why)| format!("{id}: {why}")).collect::<Vec<_>>().join("; "))]
    NotSent {
        /// The run.
        run_id: String,
        /// Deduplication id and why, per message.
        failed: Vec<(String, String)>,
    },
    /// A repository's message does not match its run: nothing is swept.
    #[error("run {run_id}, repository {repository}: {message}; nothing swept")]
    Refused {
        /// The run.
        run_id: String,
        /// The repository.
        repository: String,
        /// Why.
        message: String,
    },
}

impl FanOutError {
    /// True when the same event may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            FanOutError::Janitor(e) => e.is_retryable(),
            FanOutError::Store(e) => e.is_retryable(),
            FanOutError::Queue { error, .. } => error.retryable,
            // A later try sends them again; the queue drops what it already has.
            FanOutError::NotSent { .. } => true,
            FanOutError::Unreadable { .. } | FanOutError::Refused { .. } => false,
        }
    }
}

/// A run id for the schedule event `event_id` at `time`: its time, and 8 hex digits of
/// the event id's sha256, so that the same event delivered again is the same run
/// (same manifest, same messages, which the FIFO queue drops as duplicates). Without an
/// id (a manual run), 8 random hex digits.
pub fn run_id_for(time: DateTime<Utc>, event_id: Option<&str>) -> String {
    let suffix = match event_id.filter(|id| !id.is_empty()) {
        Some(id) => Sha256Digest::of(id.as_bytes()).hex()[..8].to_string(),
        None => format!("{:08x}", rand::random::<u32>()),
    };
    format!("{}-{suffix}", time.format("%Y%m%dT%H%M%SZ"))
}

/// `max` split over `n` repositories: `max / n` each, one more for the first `max % n`,
/// so the run never deletes more than `max`. `None` (no limit) for each when `max` is.
pub fn budget_shares(max: Option<usize>, n: usize) -> Vec<Option<usize>> {
    (0..n)
        .map(|i| max.map(|max| max / n + usize::from(i < max % n)))
        .collect()
}

/// The account and region the messages name (the schedule's own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The 12-digit account id.
    pub account: Option<String>,
    /// The region.
    pub region: Option<String>,
}

/// The message that sweeps `repository` in `manifest`'s run: an EventBridge-shaped
/// `Janitor Repository Sweep` event, group id the repository (its sha256 when longer
/// than a group id may be), deduplication id the sha256 of run id and repository.
pub fn sweep_message(
    manifest: &RunManifest,
    repository: &str,
    origin: &Origin,
) -> Result<OutgoingMessage, FanOutError> {
    let seed = format!("{}\n{repository}", manifest.run_id);
    let mut event = serde_json::json!({
        "version": "0",
        "id": events::synthetic_event_id(&seed),
        "source": events::AFTERPUSH_SOURCE,
        "detail-type": events::JANITOR_REPOSITORY_SWEEP,
        "time": manifest.started_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "resources": [],
        "detail": {
            "run-id": manifest.run_id,
            "repository": repository,
            "repositories": manifest.repositories.len(),
        },
    });
    if let Some(account) = &origin.account {
        event["account"] = account.as_str().into();
    }
    if let Some(region) = &origin.region {
        event["region"] = region.as_str().into();
    }
    // The receiving side parses it exactly so: what cannot be read is not sent.
    if let Err(e) = Trigger::from_value(event.clone()) {
        return Err(FanOutError::Refused {
            run_id: manifest.run_id.clone(),
            repository: repository.to_string(),
            message: format!("its sweep event does not parse: {e}"),
        });
    }
    let group_id = if repository.len() <= MAX_ID_CHARS {
        repository.to_string()
    } else {
        Sha256Digest::of(repository.as_bytes()).hex()
    };
    Ok(OutgoingMessage {
        target: Target::Janitor,
        body: event.to_string(),
        dedup_id: Sha256Digest::of(seed.as_bytes()).hex(),
        group_id,
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    store: &dyn RunStore,
    key: &str,
) -> Result<Option<T>, FanOutError> {
    let Some(bytes) = store.get(key).await? else {
        return Ok(None);
    };
    crate::strict_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| FanOutError::Unreadable {
            location: store.location(key),
            message: e.to_string(),
        })
}

async fn write_json<T: Serialize>(
    store: &dyn RunStore,
    key: &str,
    value: &T,
) -> Result<(), FanOutError> {
    let body = serde_json::to_vec_pretty(value).expect("run objects always serialise");
    Ok(store.put(key, body).await?)
}

/// What [`start`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// The run's manifest.
    pub manifest: RunManifest,
    /// Where it is.
    pub manifest_location: String,
    /// What the sending did.
    pub sent: SendReport,
    /// The S3 caches' part, when the policy has S3 caches.
    pub s3_caches: Option<Report>,
    /// The S3 caches' part was already written (the same event again): nothing swept now.
    pub s3_caches_again: bool,
    /// The gathered report, when every part was already there.
    pub report: Option<Report>,
}

/// Fans the schedule's sweep out: the manifest of run `run_id` (the one already there
/// when the same event comes again, so a retry resends the same messages), one message
/// per repository, then the S3 caches' part, then a gathering.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    catalog: &dyn Catalog,
    s3: Option<&aws_sdk_s3::Client>,
    store: &dyn RunStore,
    queue: &dyn WorkQueue,
    settings: FanOutSettings<'_>,
    run_id: &str,
    origin: &Origin,
    deadline: Option<Deadline>,
) -> Result<Started, FanOutError> {
    let keys = RunKeys::new(settings.prefix, run_id);
    let fingerprint = settings.fingerprint();
    let manifest = match read_json::<RunManifest>(store, &keys.manifest()).await? {
        Some(manifest) if manifest.settings == fingerprint => manifest,
        Some(_) => {
            return Err(FanOutError::Unreadable {
                location: store.location(&keys.manifest()),
                message: "written under other settings (policy, DRY_RUN or filters changed \
                          since); the next scheduled run starts a new run"
                    .into(),
            })
        }
        None => {
            let options = settings.options();
            catalog.set_deadline(deadline.clone());
            let mut names = catalog
                .list_repositories()
                .await
                .map_err(JanitorError::from)?;
            names.retain(|r| sweeps_repository(settings.policy, &options, r));
            names.sort();
            let shares = budget_shares(settings.policy.max_deletions, names.len());
            let now = Utc::now();
            let manifest = RunManifest {
                run_id: run_id.to_string(),
                started_at: now,
                now,
                dry_run: settings.dry_run,
                settings: fingerprint,
                repositories: names
                    .into_iter()
                    .zip(shares)
                    .map(|(repository, max_deletions)| PlannedRepository {
                        repository,
                        max_deletions,
                    })
                    .collect(),
                s3_caches: !settings.policy.s3_caches.is_empty(),
            };
            write_json(store, &keys.manifest(), &manifest).await?;
            manifest
        }
    };
    tracing::info!(
        run_id,
        repositories = manifest.repositories.len(),
        "sweep fans out"
    );
    let messages = manifest
        .repositories
        .iter()
        .map(|r| sweep_message(&manifest, &r.repository, origin))
        .collect::<Result<Vec<_>, _>>()?;
    let sent = send_all(queue, &messages)
        .await
        .map_err(|(error, sent)| FanOutError::Queue {
            run_id: run_id.to_string(),
            queue: queue.queue_of(Target::Janitor),
            error,
            sent: sent.total_sent(),
        })?;
    if !sent.failed.is_empty() {
        return Err(FanOutError::NotSent {
            run_id: run_id.to_string(),
            failed: sent.failed,
        });
    }
    let done = match manifest.s3_caches {
        true => finished_part(store, &keys.s3_caches()).await?,
        false => None,
    };
    let s3_caches_again = done.is_some();
    let s3_caches = match manifest.s3_caches {
        false => None,
        // The same event again after the part was written: what it did stands (a
        // second collection would find nothing left and report that instead).
        true if done.is_some() => done,
        true => {
            // The same sweep with no repository selected: its S3 caches only, gated on
            // the images in use as a whole sweep's are.
            let caches_only = Policy {
                repositories: Vec::new(),
                ..settings.policy.clone()
            };
            let options = RunOptions {
                now: manifest.now,
                deadline,
                ..settings.options()
            };
            let mut part = sweep(catalog, s3, &caches_only, &options).await?;
            part.run_id = run_id.to_string();
            write_json(store, &keys.s3_caches(), &part).await?;
            Some(part)
        }
    };
    let report = gather_run(store, &keys, &manifest).await?;
    Ok(Started {
        manifest_location: store.location(&keys.manifest()),
        manifest,
        sent,
        s3_caches,
        s3_caches_again,
        report,
    })
}

/// What [`sweep_repository`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RepositorySwept {
    /// The repository's part; `blocked` when its run deleted nothing.
    pub part: Report,
    /// Where it went.
    pub part_location: String,
    /// The part was already written (the message came twice): nothing swept now.
    pub again: bool,
    /// The gathered report, when this was the last part.
    pub report: Option<Report>,
}

/// Sweeps `repository`, one part of run `run_id` of `repositories` repositories, and
/// gathers the run. A part already written and not blocked is not swept again. Refused (nothing swept) when the run has no manifest, the manifest
/// does not name the repository or count as many, or the settings changed since. A run
/// that deletes nothing (the images in use unknown, the repository's listing refused)
/// is a part all the same, `blocked`; the caller fails the invocation for it.
#[allow(clippy::too_many_arguments)]
pub async fn sweep_repository(
    catalog: &dyn Catalog,
    store: &dyn RunStore,
    settings: FanOutSettings<'_>,
    run_id: &str,
    repository: &str,
    repositories: usize,
    deadline: Option<Deadline>,
) -> Result<RepositorySwept, FanOutError> {
    let keys = RunKeys::new(settings.prefix, run_id);
    let refused = |message: String| FanOutError::Refused {
        run_id: run_id.to_string(),
        repository: repository.to_string(),
        message,
    };
    let manifest: RunManifest = read_json(store, &keys.manifest()).await?.ok_or_else(|| {
        refused(format!(
            "no manifest at {}",
            store.location(&keys.manifest())
        ))
    })?;
    if manifest.run_id != run_id {
        return Err(refused(format!(
            "the manifest is run {}'s",
            manifest.run_id
        )));
    }
    if manifest.settings != settings.fingerprint() {
        return Err(refused(
            "the policy, DRY_RUN or the filters changed since the run started".into(),
        ));
    }
    if manifest.repositories.len() != repositories {
        return Err(refused(format!(
            "the message counts {repositories} repositories, the manifest {}",
            manifest.repositories.len()
        )));
    }
    let planned = manifest
        .repositories
        .iter()
        .find(|r| r.repository == repository)
        .ok_or_else(|| refused("the manifest does not name it".into()))?;
    let options = RunOptions {
        now: manifest.now,
        repositories: vec![repository.to_string()],
        deadline,
        ..settings.options()
    };
    if !sweeps_repository(settings.policy, &options, repository) {
        return Err(refused("the policy or the filters do not select it".into()));
    }
    // The same message again after its part was written (delivered twice): what the
    // first sweep did stands; only a blocked part is swept again.
    if let Some(part) = finished_part(store, &keys.result(repository)).await? {
        tracing::info!(
            run_id,
            repository,
            "this repository's part is already written"
        );
        let report = gather_run(store, &keys, &manifest).await?;
        return Ok(RepositorySwept {
            part_location: store.location(&keys.result(repository)),
            part,
            again: true,
            report,
        });
    }
    let policy = Policy {
        max_deletions: planned.max_deletions,
        // The S3 caches are the fan-out's own part.
        s3_caches: Vec::new(),
        ..settings.policy.clone()
    };
    let mut part = match sweep(catalog, None, &policy, &options).await {
        Ok(part) => part,
        Err(e) => {
            let mut part = Report::new("sweep".into(), manifest.dry_run, manifest.now);
            part.errors.push(e.to_string());
            part.blocked = Some(Blocked {
                reason: e.to_string(),
                retryable: e.is_retryable(),
            });
            part.finish()
        }
    };
    part.run_id = run_id.to_string();
    let visited = part.repositories.iter().any(|r| r.repository == repository);
    if part.blocked.is_none() && !visited {
        // Its images could not be listed: the run deleted nothing there.
        part.blocked = Some(Blocked {
            reason: match part.errors.is_empty() {
                true => format!("{repository} was not swept"),
                false => part.errors.join("; "),
            },
            retryable: true,
        });
    }
    write_json(store, &keys.result(repository), &part).await?;
    let report = gather_run(store, &keys, &manifest).await?;
    Ok(RepositorySwept {
        part_location: store.location(&keys.result(repository)),
        part,
        again: false,
        report,
    })
}

/// The part at `key` when it is written and was not blocked.
async fn finished_part(store: &dyn RunStore, key: &str) -> Result<Option<Report>, FanOutError> {
    Ok(read_json::<Report>(store, key)
        .await?
        .filter(|part| part.blocked.is_none()))
}

/// Gathers run `manifest` once every part it expects is written: the report, also
/// written to `<prefix>runs/<run-id>/report.json`; `None` while parts are missing. A
/// part that does not read as a report stops the gathering with an error (no report
/// is better than a wrong one).
pub async fn gather_run(
    store: &dyn RunStore,
    keys: &RunKeys,
    manifest: &RunManifest,
) -> Result<Option<Report>, FanOutError> {
    let written: std::collections::BTreeSet<String> =
        store.list(&keys.results()).await?.into_iter().collect();
    let missing = manifest
        .repositories
        .iter()
        .filter(|r| !written.contains(&keys.result(&r.repository)))
        .count();
    if missing > 0 {
        tracing::info!(run_id = %manifest.run_id, missing, "parts still missing");
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(manifest.repositories.len() + 1);
    if manifest.s3_caches {
        match read_json::<Report>(store, &keys.s3_caches()).await? {
            Some(part) => parts.push((None, part)),
            None => return Ok(None),
        }
    }
    for r in &manifest.repositories {
        let key = keys.result(&r.repository);
        let part =
            read_json::<Report>(store, &key)
                .await?
                .ok_or_else(|| FanOutError::Unreadable {
                    location: store.location(&key),
                    message: "listed but gone".into(),
                })?;
        parts.push((Some(r.repository.clone()), part));
    }
    let report = gather(
        &manifest.run_id,
        manifest.now,
        manifest.started_at,
        manifest.dry_run,
        parts,
    );
    write_json(store, &keys.report(), &report).await?;
    tracing::info!(run_id = %manifest.run_id, summary = %report.summary(), "fanned-out sweep gathered");
    Ok(Some(report))
}

#[cfg(test)]
mod tests;
