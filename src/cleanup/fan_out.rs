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
    let s3_caches = match manifest.s3_caches {
        false => None,
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
    /// The gathered report, when this was the last part.
    pub report: Option<Report>,
}

/// Sweeps `repository`, one part of run `run_id` of `repositories` repositories, and
/// gathers the run. Refused (nothing swept) when the run has no manifest, the manifest
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
        report,
    })
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
mod tests {
    use super::*;
    use crate::catalog::ecr::seeded_manifest;
    use crate::catalog::ecr::{EcrCatalog, ImageDetail, MemoryEcr};
    use crate::cleanup::run_store::MemoryRunStore;
    use crate::oci::media;
    use crate::queue::MemoryQueue;

    const RUN: &str = "20261207T030000Z-0123abcd";

    fn ecr(repositories: &[(&str, usize)]) -> EcrCatalog<MemoryEcr> {
        let ecr = MemoryEcr::new();
        for (repository, images) in repositories {
            for i in 0..*images {
                ecr.put(
                    repository,
                    ImageDetail {
                        pushed_at: Some(Utc::now() - chrono::Duration::days(30)),
                        manifest_media_type: Some(media::OCI_MANIFEST.into()),
                        artifact_media_type: Some(media::OCI_CONFIG.into()),
                        ..Default::default()
                    },
                    seeded_manifest(&format!("{repository} {i}"), media::OCI_CONFIG, ""),
                );
            }
        }
        EcrCatalog::new(ecr)
    }

    /// Every image expires; no in-use source in memory, so the protection is off by name.
    fn policy(max_deletions: Option<usize>) -> Policy {
        let max = max_deletions.map_or(String::new(), |m| format!("max_deletions: {m}\n"));
        Policy::parse(&format!(
            "repositories: ['*']\ngrace_period: 0s\n{max}rules: [{{name: old, select: {{kind: image}}, action: expire}}]\nprotect: {{ecs: false, lambda: false}}\n"
        ))
        .unwrap()
    }

    fn settings<'a>(policy: &'a Policy, filters: &'a RepositoryTagFilters) -> FanOutSettings<'a> {
        FanOutSettings {
            policy,
            dry_run: false,
            repository_filter: filters,
            prefix: "cache-janitor/",
        }
    }

    fn origin() -> Origin {
        Origin {
            account: Some("123456789012".into()),
            region: Some("us-east-1".into()),
        }
    }

    /// What the receiving side reads from a message body.
    fn detail_of(message: &OutgoingMessage) -> events::RepositorySweep {
        match Trigger::from_value(serde_json::from_str(&message.body).unwrap()).unwrap() {
            Trigger::JanitorRepositorySweep(e) => e.detail,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shares_never_add_up_to_more_than_the_cap() {
        assert_eq!(
            budget_shares(Some(5), 3),
            [Some(2), Some(2), Some(1)].to_vec()
        );
        assert_eq!(
            budget_shares(Some(1), 3),
            [Some(1), Some(0), Some(0)].to_vec()
        );
        assert_eq!(budget_shares(None, 2), [None, None].to_vec());
        assert!(budget_shares(Some(3), 0).is_empty());
    }

    #[test]
    fn keys_and_run_ids() {
        let keys = RunKeys::new("cache-janitor/", RUN);
        assert_eq!(
            keys.result("team/app"),
            format!("cache-janitor/runs/{RUN}/repositories/team%2Fapp.json")
        );
        assert_eq!(
            keys.manifest(),
            format!("cache-janitor/runs/{RUN}/manifest.json")
        );
        assert_eq!(
            keys.report(),
            format!("cache-janitor/runs/{RUN}/report.json")
        );
        let t = "2026-12-07T03:00:00Z".parse().unwrap();
        let id = run_id_for(t, Some("ev-1"));
        assert_eq!(
            id,
            run_id_for(t, Some("ev-1")),
            "the same event, the same run"
        );
        assert_ne!(id, run_id_for(t, Some("ev-2")));
        assert!(events::janitor_sweep::is_run_id(&id), "{id}");
        assert!(events::janitor_sweep::is_run_id(&run_id_for(t, None)));
    }

    #[tokio::test]
    async fn the_run_is_gathered_when_its_last_part_is_written() {
        let catalog = ecr(&[("a", 2), ("b", 2), ("c", 2), ("other/skip", 1)]);
        let (store, queue) = (MemoryRunStore::new(), MemoryQueue::new());
        let policy = policy(Some(5));
        let filters: RepositoryTagFilters = "a:*,b:*,c:*".parse().unwrap();
        let settings = settings(&policy, &filters);
        let started = start(
            &catalog,
            None,
            &store,
            &queue,
            settings,
            RUN,
            &origin(),
            None,
        )
        .await
        .unwrap();
        let names: Vec<&str> = started
            .manifest
            .repositories
            .iter()
            .map(|r| r.repository.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"], "the filters leave other/skip out");
        assert!(started.report.is_none() && started.s3_caches.is_none());
        let messages = queue.messages(Target::Janitor);
        assert_eq!(messages.len(), 3);
        for (m, name) in messages.iter().zip(&names) {
            let d = detail_of(m);
            assert_eq!(
                (d.run_id.as_str(), d.repository.as_str(), d.repositories),
                (RUN, *name, 3)
            );
            assert_eq!(m.group_id, *name);
            assert_eq!(
                m.dedup_id,
                Sha256Digest::of(format!("{RUN}\n{name}").as_bytes()).hex()
            );
        }
        // The same event again: the same manifest, and messages the queue already has.
        let again = start(
            &catalog,
            None,
            &store,
            &queue,
            settings,
            RUN,
            &origin(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(again.manifest, started.manifest);
        assert_eq!(queue.messages(Target::Janitor).len(), 3);

        let mut gathered = None;
        for (i, m) in messages.iter().enumerate() {
            let d = detail_of(m);
            let before: Vec<usize> = names.iter().map(|n| catalog.api().len(n)).collect();
            let swept = sweep_repository(
                &catalog,
                &store,
                settings,
                &d.run_id,
                &d.repository,
                d.repositories,
                None,
            )
            .await
            .unwrap();
            // That repository only.
            for (j, n) in names.iter().enumerate() {
                let after = catalog.api().len(n);
                assert_eq!(
                    after == before[j],
                    j != i,
                    "{n} after sweeping {}",
                    d.repository
                );
            }
            assert_eq!(swept.part.repositories.len(), 1);
            assert!(swept.part.blocked.is_none());
            assert_eq!(
                swept.report.is_some(),
                i == 2,
                "gathered only after the last"
            );
            gathered = swept.report;
        }
        let report = gathered.unwrap();
        // max_deletions 5 over 3 repositories: 2, 2 and 1.
        assert_eq!(report.deleted, 5, "{}", report.to_json());
        assert_eq!(report.planned_deletions, 5);
        assert_eq!(catalog.api().len("c"), 1);
        assert_eq!(catalog.api().len("other/skip"), 1);
        assert_eq!(report.run_id, RUN);
        assert_eq!(report.trigger, "sweep");
        assert!(report.blocked.is_none() && report.blocked_repositories.is_empty());
        let stored: Report = serde_json::from_slice(
            &store
                .get(&RunKeys::new("cache-janitor/", RUN).report())
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(stored.deleted, 5);
        assert_eq!(stored.repositories.len(), 3);
    }

    /// A manifest written as `start` would, for repositories the catalog may not have.
    async fn manifest_for(
        store: &MemoryRunStore,
        settings: FanOutSettings<'_>,
        repositories: &[&str],
        s3_caches: bool,
    ) -> RunManifest {
        let manifest = RunManifest {
            run_id: RUN.into(),
            started_at: Utc::now(),
            now: Utc::now(),
            dry_run: settings.dry_run,
            settings: settings.fingerprint(),
            repositories: repositories
                .iter()
                .map(|r| PlannedRepository {
                    repository: r.to_string(),
                    max_deletions: None,
                })
                .collect(),
            s3_caches,
        };
        let keys = RunKeys::new(settings.prefix, RUN);
        write_json(store, &keys.manifest(), &manifest)
            .await
            .unwrap();
        manifest
    }

    #[tokio::test]
    async fn a_repository_that_cannot_be_listed_keeps_everything_and_is_listed_blocked() {
        let catalog = ecr(&[("a", 2)]);
        let store = MemoryRunStore::new();
        let policy = policy(None);
        let filters = RepositoryTagFilters::default();
        let settings = settings(&policy, &filters);
        manifest_for(&store, settings, &["a", "gone"], false).await;
        let gone = sweep_repository(&catalog, &store, settings, RUN, "gone", 2, None)
            .await
            .unwrap();
        let blocked = gone.part.blocked.as_ref().unwrap();
        assert!(blocked.reason.contains("gone"), "{}", blocked.reason);
        assert!(gone.report.is_none());
        let a = sweep_repository(&catalog, &store, settings, RUN, "a", 2, None)
            .await
            .unwrap();
        let report = a.report.unwrap();
        assert_eq!(report.deleted, 2);
        assert!(
            report.blocked.is_none(),
            "a deleted: the run as a whole is not blocked"
        );
        let names: Vec<&str> = report
            .blocked_repositories
            .iter()
            .map(|b| b.repository.as_str())
            .collect();
        assert_eq!(names, ["gone"]);
        assert_eq!(report.summary()["blocked_repositories"][0], "gone");
    }

    #[tokio::test]
    async fn the_s3_caches_part_is_waited_for() {
        let catalog = ecr(&[("a", 1)]);
        let store = MemoryRunStore::new();
        let policy = policy(None);
        let filters = RepositoryTagFilters::default();
        let settings = settings(&policy, &filters);
        let manifest = manifest_for(&store, settings, &["a"], true).await;
        let a = sweep_repository(&catalog, &store, settings, RUN, "a", 1, None)
            .await
            .unwrap();
        assert!(a.report.is_none(), "the S3 caches' part is missing");
        let keys = RunKeys::new(settings.prefix, RUN);
        let mut caches = Report::new("sweep".into(), false, manifest.now).finish();
        caches.errors.push("s3 caches: nothing to do".into());
        write_json(&store, &keys.s3_caches(), &caches)
            .await
            .unwrap();
        let report = gather_run(&store, &keys, &manifest).await.unwrap().unwrap();
        assert_eq!(report.deleted, 1);
        assert_eq!(report.errors, ["s3 caches: nothing to do"]);
        // A part that is not a report stops the gathering: no report is written.
        store
            .put(&keys.result("a"), b"{\"deleted\": 1}".to_vec())
            .await
            .unwrap();
        let err = gather_run(&store, &keys, &manifest).await.unwrap_err();
        assert!(err.to_string().contains("repositories/a.json"), "{err}");
    }

    async fn refusal(
        catalog: &EcrCatalog<MemoryEcr>,
        store: &MemoryRunStore,
        settings: FanOutSettings<'_>,
        repository: &str,
        count: usize,
    ) -> String {
        sweep_repository(catalog, store, settings, RUN, repository, count, None)
            .await
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn a_message_that_does_not_match_its_run_sweeps_nothing() {
        let catalog = ecr(&[("a", 2), ("b", 2)]);
        let store = MemoryRunStore::new();
        let policy = policy(None);
        let filters = RepositoryTagFilters::default();
        let settings = settings(&policy, &filters);
        let err = refusal(&catalog, &store, settings, "a", 1).await;
        assert!(
            err.contains("no manifest at memory:cache-janitor/runs/"),
            "{err}"
        );
        manifest_for(&store, settings, &["a"], false).await;
        let err = refusal(&catalog, &store, settings, "b", 1).await;
        assert!(err.contains("does not name it"), "{err}");
        let err = refusal(&catalog, &store, settings, "a", 2).await;
        assert!(
            err.contains("counts 2 repositories, the manifest 1"),
            "{err}"
        );
        let dry = FanOutSettings {
            dry_run: true,
            ..settings
        };
        let err = refusal(&catalog, &store, dry, "a", 1).await;
        assert!(err.contains("changed since the run started"), "{err}");
        let narrower: RepositoryTagFilters = "b:*".parse().unwrap();
        let narrower = FanOutSettings {
            repository_filter: &narrower,
            ..settings
        };
        let err = refusal(&catalog, &store, narrower, "a", 1).await;
        assert!(err.contains("changed since"), "{err}");
        assert!(err.ends_with("nothing swept"), "{err}");
        assert_eq!((catalog.api().len("a"), catalog.api().len("b")), (2, 2));
    }
}
