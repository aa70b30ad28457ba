//! The cache janitor: a [`policy`], a pure [`planner`], an [`executor`] over a
//! [`Catalog`], the S3 cache collector [`s3gc`], plans as text tables ([`render`]), and
//! the two entry points the Lambda and the CLI share: [`on_push`] (prune what a cache
//! push superseded, or evaluate the pushed repository when the push can set off an
//! expire rule) and [`sweep`] (every selected repository, every rule, every S3 cache).
//! Both return a [`Report`].
//!
//! Before any deletion both collect the images ECS and Lambda use ([`in_use`]); those
//! are kept whatever the rules say, and a failure to list them blocks every deletion of
//! the run.

pub mod ecr_lifecycle;
pub mod executor;
mod first_seen;
pub mod in_use;
pub mod planner;
pub mod policy;
pub mod render;
pub mod s3gc;
pub mod shared;
mod yaml_expansion;

use crate::catalog::s3cache::{S3Cache, S3CacheUri};
use crate::catalog::{ApiErrorKind, Catalog, CatalogError};
use crate::deadline::Deadline;
use crate::events::{EcrImageAction, Trigger};
use crate::filters::RepositoryTagFilters;
use crate::oci::{media, ArtifactKind};
use chrono::{DateTime, Utc};
use executor::RepositoryReport;
use in_use::InUse;
use planner::{plan_in_use, rules_set_off_by_push, Snapshot};
use policy::{Pattern, Policy, Rule, RuleAction, S3CachePolicy, Select, When};
use s3gc::S3CacheReport;
use serde::Serialize;

/// Errors of a janitor run as a whole (per-image failures are in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    /// A setting or option is unusable: no policy, both `CLEANUP_POLICY` and `AFTERPUSH_CLEANUP_POLICY_FILE`, an invalid policy or `DRY_RUN`, a repository the policy does not select.
    #[error("setting {var}: {message}")]
    Settings {
        /// The variable or option at fault.
        var: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The cleanup policy does not parse or validate.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// Listing or deleting through the catalog (ECR, S3) failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The report could not be written to the report bucket.
    #[error("writing the report to s3://{bucket}/{key}: {message}")]
    Report {
        /// The report bucket.
        bucket: String,
        /// The key it was to be written to.
        key: String,
        /// The S3 error.
        message: String,
        /// What the PutObject call failed with.
        kind: ApiErrorKind,
    },
    /// The images in use could not be listed: the run deleted nothing.
    #[error("nothing deleted: {reason}")]
    Blocked {
        /// Why the images in use could not be listed.
        reason: String,
        /// Whether a later run may succeed (throttling, 5xx).
        retryable: bool,
    },
}

impl JanitorError {
    /// True when a later run may succeed: API and S3 calls that were throttled, met a
    /// server error or timed out (by the kind the SDK error gave, see
    /// [`ApiErrorKind`]). Access denied, not found, invalid requests, bad settings,
    /// policies, events and malformed images or cache objects do not heal.
    pub fn is_retryable(&self) -> bool {
        match self {
            JanitorError::Catalog(e) => e.is_retryable(),
            JanitorError::Report { kind, .. } => kind.is_retryable(),
            JanitorError::Blocked { retryable, .. } => *retryable,
            JanitorError::Settings { .. } | JanitorError::Policy(_) => false,
        }
    }
}

/// One run: what was planned, deleted, kept, and why.
#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<shared::SharedRepository>,
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
}

impl Report {
    fn new(trigger: String, dry_run: bool, now: DateTime<Utc>) -> Self {
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
        }
    }

    fn finish(mut self) -> Self {
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
        self.stopped_by_deadline = !self.s3_caches_left.is_empty()
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

/// Why a run deleted nothing.
#[derive(Debug, Clone, Serialize)]
pub struct Blocked {
    /// Why the images in use could not be listed.
    pub reason: String,
    /// A later run may succeed (throttling, 5xx).
    pub retryable: bool,
}

/// The images in use when the policy protects them; `Err` blocks the run.
async fn images_in_use(catalog: &dyn Catalog, policy: &Policy) -> Result<InUse, Blocked> {
    if !policy.protect.any() {
        return Ok(InUse::default());
    }
    match catalog.in_use() {
        None => Err(Blocked {
            reason: "the policy protects images in use by ECS and Lambda, but this catalog \
                     cannot list them; turn the protection off by name \
                     (`protect: {ecs: false, lambda: false}`) to clean without it"
                .into(),
            retryable: false,
        }),
        Some(source) => source
            .collect(&policy.protect)
            .await
            .map(|refs| InUse { refs })
            .map_err(|e| Blocked {
                reason: e.to_string(),
                retryable: e.retryable,
            }),
    }
}

/// Collects the images in use into `report`; `None` when the run must stop (the report
/// then says why).
async fn in_use_or_block(
    catalog: &dyn Catalog,
    policy: &Policy,
    report: &mut Report,
) -> Option<InUse> {
    match images_in_use(catalog, policy).await {
        Ok(in_use) => {
            report.in_use_references = in_use.refs.len();
            tracing::info!(references = in_use.refs.len(), "images in use listed");
            Some(in_use)
        }
        Err(blocked) => {
            tracing::error!(reason = %blocked.reason, "images in use unknown: nothing is deleted");
            report
                .errors
                .push(format!("nothing deleted: {}", blocked.reason));
            report.blocked = Some(blocked);
            None
        }
    }
}

/// What a run knows before it plans: the images in use, and the registry's policy (read
/// once; each repository's own is read when it is planned).
struct Seen {
    in_use: InUse,
    registry_policy: Option<shared::RegistryPolicy>,
}

impl Seen {
    async fn after(catalog: &dyn Catalog, policy: &Policy, in_use: InUse) -> Self {
        let registry_policy = match policy.protect.any() {
            true => shared::registry_policy(catalog).await,
            false => None,
        };
        Seen {
            in_use,
            registry_policy,
        }
    }
}

/// How a run is carried out.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Deletes nothing when true (the default everywhere).
    pub dry_run: bool,
    /// The time the plan is made for (`--as-of`): ages are measured to it.
    pub now: DateTime<Utc>,
    /// Only these repositories (each must still match the policy); empty: all selected.
    pub repositories: Vec<String>,
    /// Only these S3 caches; empty: the policy's.
    pub s3_caches: Vec<S3CacheUri>,
    /// A sweep also skips repositories these filters do not name (the functions'
    /// `REPOSITORY_TAG_FILTERS`, repository part), so the scheduled janitor stays within
    /// the repositories its pushes are filtered to; `None`: the policy alone decides.
    pub repository_filter: Option<RepositoryTagFilters>,
    /// No repository is started and no delete issued once this has passed (a Lambda
    /// invocation's deadline less the margin); `None`: no deadline (the CLI).
    pub deadline: Option<Deadline>,
}

impl RunOptions {
    /// Options for a dry run of every selected repository and cache, with ages measured to now.
    pub fn dry_run_now() -> Self {
        RunOptions {
            dry_run: true,
            now: Utc::now(),
            repositories: Vec::new(),
            s3_caches: Vec::new(),
            repository_filter: None,
            deadline: None,
        }
    }

    fn deadline_has_passed(&self) -> bool {
        self.deadline.as_ref().is_some_and(Deadline::has_passed)
    }
}

/// Plans one repository and carries the plan out; `budget` is the deletions left.
async fn run_repository(
    catalog: &dyn Catalog,
    policy: &Policy,
    seen: &Seen,
    repository: &str,
    options: &RunOptions,
    budget: &mut Option<usize>,
    report: &mut Report,
) {
    let images = match catalog.list_images(repository).await {
        Ok(images) => images,
        Err(e) => {
            tracing::error!(repository, error = %e, "cannot list images; skipping repository");
            report.errors.push(e.to_string());
            return;
        }
    };
    let snapshot = Snapshot {
        repository: repository.to_string(),
        images,
    };
    let mut protected = seen.in_use.protected(repository, &snapshot.images);
    if policy.protect.any() {
        if let Some(sharing) = shared::repository_sharing(
            catalog,
            seen.registry_policy.as_ref(),
            repository,
            &policy.accept_uncovered,
        )
        .await
        {
            for c in sharing.uncovered() {
                tracing::warn!(repository, consumer = %c.principal, granted_by = %c.granted_by,
                    "shared with a consumer whose workloads are not listed: keeping every image it could run");
            }
            shared::keep_for_uncovered(&sharing, &snapshot.images, &mut protected);
            report.shared.push(sharing);
        }
    }
    let plan = plan_in_use(&snapshot, policy, options.now, *budget, &protected);
    if let Some(left) = budget.as_mut() {
        *left -= plan.deletions;
    }
    tracing::info!(
        repository,
        images = snapshot.images.len(),
        deletions = plan.deletions,
        in_use = protected.len(),
        bytes = plan.bytes_reclaimed,
        dry_run = options.dry_run,
        "planned"
    );
    report
        .repositories
        .push(executor::execute(catalog, &plan, options.dry_run, options.deadline.as_ref()).await);
}

#[tracing::instrument(skip_all, fields(dry_run = options.dry_run, now = %options.now))]
/// The scheduled sweep: every repository the policy selects and `options.repository_filter`
/// names (or exactly `options.repositories`),
/// every rule, one shared `max_deletions` budget; then every S3 cache.
pub async fn sweep(
    catalog: &dyn Catalog,
    s3: Option<&aws_sdk_s3::Client>,
    policy: &Policy,
    options: &RunOptions,
) -> Result<Report, JanitorError> {
    let mut report = Report::new("sweep".into(), options.dry_run, options.now);
    catalog.set_deadline(options.deadline.clone());
    let Some(in_use) = in_use_or_block(catalog, policy, &mut report).await else {
        return Ok(report.finish());
    };
    let seen = Seen::after(catalog, policy, in_use).await;
    let repositories: Vec<String> = if options.repositories.is_empty() {
        let mut all = catalog.list_repositories().await?;
        all.retain(|r| {
            policy.selects_repository(r)
                && options
                    .repository_filter
                    .as_ref()
                    .is_none_or(|f| f.matches_repository(r))
        });
        all.sort();
        all
    } else {
        for r in &options.repositories {
            if !policy.selects_repository(r) {
                return Err(JanitorError::Settings {
                    var: "repository",
                    message: format!("{r:?} is not selected by the policy's repositories"),
                });
            }
        }
        options.repositories.clone()
    };
    let mut budget = policy.max_deletions;
    for repository in &repositories {
        let out_of_time = options.deadline_has_passed();
        if budget == Some(0) || out_of_time {
            report.repositories.push(RepositoryReport {
                repository: repository.clone(),
                images: 0,
                dry_run: options.dry_run,
                planned: Vec::new(),
                deleted: Vec::new(),
                failed: Vec::new(),
                kept: 0,
                keeps: Vec::new(),
                bytes_reclaimed: 0,
                stopped_by_max_deletions: !out_of_time,
                stopped_by_deadline: out_of_time,
                left: Vec::new(),
                delete_calls: 0,
                rules: Vec::new(),
            });
            continue;
        }
        run_repository(
            catalog,
            policy,
            &seen,
            repository,
            options,
            &mut budget,
            &mut report,
        )
        .await;
    }
    let caches: Vec<S3CachePolicy> = if options.s3_caches.is_empty() {
        policy.s3_caches.clone()
    } else {
        options
            .s3_caches
            .iter()
            .map(|uri| {
                policy
                    .s3_caches
                    .iter()
                    .find(|c| &c.uri == uri)
                    .cloned()
                    // A cache the policy does not name: no manifest expires, only blobs
                    // no manifest references are collected.
                    .unwrap_or_else(|| S3CachePolicy {
                        uri: uri.clone(),
                        keep: Vec::new(),
                        expire_unused_for: None,
                        blob_grace: policy::DEFAULT_BLOB_GRACE,
                    })
            })
            .collect()
    };
    if !caches.is_empty() {
        match s3 {
            None => report
                .errors
                .push("S3 caches configured but no S3 client given".into()),
            Some(client) => {
                for c in caches {
                    if options.deadline_has_passed() {
                        report.s3_caches_left.push(c.uri.to_string());
                        continue;
                    }
                    let cache = S3Cache::new(client.clone(), c.uri.clone());
                    match s3gc::collect(&cache, &c, options.now, options.dry_run).await {
                        Ok(r) => report.s3_caches.push(r),
                        Err(e) => {
                            tracing::error!(cache = %c.uri, error = %e, "S3 cache GC failed");
                            report.errors.push(e.to_string());
                        }
                    }
                }
            }
        }
    }
    Ok(report.finish())
}

/// The policy used on a cache push: the policy's `keep` rules, then "untagged BuildKit
/// cache manifests expire" — what the push superseded — with the same grace period.
pub fn on_push_policy(policy: &Policy) -> Policy {
    let mut rules: Vec<Rule> = policy
        .rules
        .iter()
        .filter(|r| r.action == RuleAction::Keep)
        .cloned()
        .collect();
    rules.push(Rule {
        name: "superseded-by-push".into(),
        select: Select {
            kinds: vec![ArtifactKind::BuildkitCache],
            tags: Vec::<Pattern>::new(),
            exclude_tags: Vec::new(),
            tagged: Some(false),
        },
        action: RuleAction::Expire,
        when: When::default(),
    });
    Policy {
        rules,
        s3_caches: Vec::new(),
        ecr_lifecycle: Vec::new(),
        ..policy.clone()
    }
}

#[tracing::instrument(skip_all, fields(repository = %event.repository_name, tag = ?event.image_tag))]
/// On a push of a cache tag: deletes the untagged cache manifests of that repository
/// (the ones earlier exports left behind), subject to the grace period and the policy's
/// keep rules. On a push to a repository an ECR lifecycle policy decides for, or any
/// other tagged push that can set off an expire rule (see [`rules_set_off_by_push`]):
/// evaluates the repository under the whole policy at once, rather than at the next
/// sweep. Any other event is reported as ignored.
pub async fn on_push(
    catalog: &dyn Catalog,
    policy: &Policy,
    event: &EcrImageAction,
    options: &RunOptions,
) -> Result<Report, JanitorError> {
    let tag = event.image_tag.clone().unwrap_or_default();
    let mut report = Report::new(
        format!("push {}:{tag}", event.repository_name),
        options.dry_run,
        options.now,
    );
    let is_cache_type = event.artifact_media_type.as_deref() == Some(media::BUILDKIT_CACHE_CONFIG);
    let lifecycle = policy.lifecycle_policy_for(&event.repository_name);
    let ignored = if event.action_type != "PUSH" || event.result != "SUCCESS" {
        Some(format!("{} {} event", event.result, event.action_type))
    } else if !policy.selects_repository(&event.repository_name) {
        Some("repository not selected by the policy".into())
    } else if lifecycle.is_some() {
        // An ECR lifecycle policy decides here: the whole repository is evaluated at
        // once, where ECR would act within a day.
        None
    } else if tag.is_empty() {
        Some("untagged push".into())
    } else {
        None
    };
    let cache_push = is_cache_type || policy.is_cache_tag(&tag);
    let kind = pushed_kind(event);
    let ignored = ignored.or_else(|| {
        (lifecycle.is_none() && !cache_push && rules_set_off_by_push(policy, &tag, kind).is_empty()).then(|| {
            format!("not a BuildKit cache push, and no expire rule selects tag {tag:?} or untagged {kind} manifests")
        })
    });
    if let Some(why) = ignored {
        report.ignored = Some(why);
        return Ok(report.finish());
    }
    catalog.set_deadline(options.deadline.clone());
    let Some(in_use) = in_use_or_block(catalog, policy, &mut report).await else {
        return Ok(report.finish());
    };
    let seen = Seen::after(catalog, policy, in_use).await;
    let push_policy = if cache_push && lifecycle.is_none() {
        on_push_policy(policy)
    } else {
        policy.clone()
    };
    let mut budget = policy.max_deletions;
    run_repository(
        catalog,
        &push_policy,
        &seen,
        &event.repository_name,
        options,
        &mut budget,
        &mut report,
    )
    .await;
    Ok(report.finish())
}

/// The kind of a pushed image, as far as its event tells (media types only).
fn pushed_kind(event: &EcrImageAction) -> ArtifactKind {
    let summary = crate::oci::ManifestSummary {
        media_type: event.manifest_media_type.clone(),
        config: event
            .artifact_media_type
            .clone()
            .map(|media_type| crate::oci::DescriptorSummary {
                media_type,
                ..Default::default()
            }),
        ..Default::default()
    };
    summary.kind(event.manifest_media_type.as_deref())
}

/// What the Lambda reads from its environment.
#[derive(Debug, Clone)]
pub struct JanitorSettings {
    /// The cleanup policy, from `CLEANUP_POLICY` (or `AFTERPUSH_CLEANUP_POLICY_FILE`).
    pub policy: Policy,
    /// `DRY_RUN`, true unless set to false/0/no/off.
    pub dry_run: bool,
    /// `REPORT_BUCKET`: a JSON report object per run goes there.
    pub report_bucket: Option<String>,
    /// `AFTERPUSH_REPORT_PREFIX`, default `cache-janitor/`.
    pub report_prefix: String,
    /// `CONSUMER_ACCOUNTS` and `IN_USE_READER_ROLE`: the other accounts whose ECS and
    /// Lambda are listed, and the role assumed in each.
    pub consumers: crate::catalog::consumer_accounts::ConsumerAccounts,
}

impl JanitorSettings {
    /// From `CLEANUP_POLICY` (inline YAML/JSON) or `AFTERPUSH_CLEANUP_POLICY_FILE`, `DRY_RUN`, `REPORT_BUCKET`,
    /// `AFTERPUSH_REPORT_PREFIX`.
    pub fn from_env() -> Result<Self, JanitorError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`Self::from_env`], reading variables through `get` (testable).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, JanitorError> {
        let policy = match (get("CLEANUP_POLICY"), get("AFTERPUSH_CLEANUP_POLICY_FILE")) {
            (Some(text), None) => Policy::parse(&text).map_err(|e| JanitorError::Settings {
                var: "CLEANUP_POLICY",
                message: e.to_string(),
            })?,
            (None, Some(path)) => {
                Policy::load(std::path::Path::new(&path)).map_err(|e| JanitorError::Settings {
                    var: "AFTERPUSH_CLEANUP_POLICY_FILE",
                    message: e.to_string(),
                })?
            }
            (Some(_), Some(_)) => {
                return Err(JanitorError::Settings {
                    var: "CLEANUP_POLICY",
                    message: "set CLEANUP_POLICY or AFTERPUSH_CLEANUP_POLICY_FILE, not both".into(),
                })
            }
            (None, None) => {
                return Err(JanitorError::Settings {
                    var: "CLEANUP_POLICY",
                    message: "neither CLEANUP_POLICY nor AFTERPUSH_CLEANUP_POLICY_FILE is set"
                        .into(),
                })
            }
        };
        let dry_run = match get("DRY_RUN").filter(|v| !v.trim().is_empty()) {
            None => true,
            Some(v) => {
                crate::settings::parse_bool("DRY_RUN", &v).map_err(|e| JanitorError::Settings {
                    var: "DRY_RUN",
                    message: format!("{v:?}: {}", e.problem),
                })?
            }
        };
        let consumers = crate::catalog::consumer_accounts::ConsumerAccounts::parse(
            &get(crate::settings::CONSUMER_ACCOUNTS).unwrap_or_default(),
            &get(crate::settings::IN_USE_READER_ROLE).unwrap_or_default(),
        )
        .map_err(|e| JanitorError::Settings {
            var: if e.name == crate::settings::IN_USE_READER_ROLE {
                crate::settings::IN_USE_READER_ROLE
            } else {
                crate::settings::CONSUMER_ACCOUNTS
            },
            message: format!("{:?}: {}", e.value, e.problem),
        })?;
        Ok(JanitorSettings {
            consumers,
            policy,
            dry_run,
            report_bucket: get("REPORT_BUCKET").filter(|b| !b.is_empty()),
            report_prefix: get("AFTERPUSH_REPORT_PREFIX")
                .unwrap_or_else(|| "cache-janitor/".into()),
        })
    }
}

/// What triggers the janitor.
#[derive(Debug, Clone)]
pub enum JanitorEvent {
    /// An `ECR Image Action` (push) event's detail.
    Push(EcrImageAction),
    /// The EventBridge schedule (or a manual run).
    Scheduled,
}

impl JanitorEvent {
    /// The run a trigger parsed by [`Trigger::from_value`] calls for: an `ECR Image
    /// Action` is a push, the schedule a sweep. Whether a push is work at all (filters,
    /// the loop guard) is [`crate::events::janitor_decision`]'s call, made before this.
    pub fn from_trigger(trigger: &Trigger) -> Self {
        match trigger {
            Trigger::EcrImageAction(event) => JanitorEvent::Push(event.detail.clone()),
            Trigger::Scheduled(_) => JanitorEvent::Scheduled,
        }
    }
}

/// The Lambda's handler body: runs the event, logs the report as JSON, and stores it
/// in `REPORT_BUCKET` when set. No deadline; see [`handle_within`].
pub async fn handle(
    catalog: &dyn Catalog,
    s3: Option<&aws_sdk_s3::Client>,
    settings: &JanitorSettings,
    repository_filter: &RepositoryTagFilters,
    event: JanitorEvent,
) -> Result<Report, JanitorError> {
    handle_within(catalog, s3, settings, repository_filter, event, None).await
}

/// [`handle`] under an invocation's `deadline`: no repository or S3 cache is started and
/// no delete issued once it has passed; the report (stored all the same) says what was
/// left (`stopped_by_deadline`, each repository's `left`), and the next run plans again.
pub async fn handle_within(
    catalog: &dyn Catalog,
    s3: Option<&aws_sdk_s3::Client>,
    settings: &JanitorSettings,
    repository_filter: &RepositoryTagFilters,
    event: JanitorEvent,
    deadline: Option<Deadline>,
) -> Result<Report, JanitorError> {
    let options = RunOptions {
        dry_run: settings.dry_run,
        repository_filter: Some(repository_filter.clone()),
        deadline,
        ..RunOptions::dry_run_now()
    };
    let report = match &event {
        JanitorEvent::Push(detail) => on_push(catalog, &settings.policy, detail, &options).await?,
        JanitorEvent::Scheduled => sweep(catalog, s3, &settings.policy, &options).await?,
    };
    tracing::info!(summary = %report.summary(), "cache-janitor report");
    if report.stopped_by_deadline {
        tracing::warn!("the invocation deadline stopped the run; the next run continues");
    }
    if let (Some(bucket), Some(client)) = (&settings.report_bucket, s3) {
        put_report(client, bucket, &settings.report_prefix, &report).await?;
    }
    // The report is out; the invocation fails so that the failure is seen (and retried
    // when a later attempt can succeed).
    if let Some(b) = &report.blocked {
        return Err(JanitorError::Blocked {
            reason: b.reason.clone(),
            retryable: b.retryable,
        });
    }
    Ok(report)
}

/// Stores `report` at `s3://bucket/<prefix><YYYY-MM-DD>/<run id>.json`; returns the key.
pub async fn put_report(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    report: &Report,
) -> Result<String, JanitorError> {
    let key = format!(
        "{prefix}{}/{}.json",
        report.started_at.format("%Y-%m-%d"),
        report.run_id
    );
    client
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/json")
        .body(report.to_json().into_bytes().into())
        .send()
        .await
        .map_err(|e| JanitorError::Report {
            bucket: bucket.to_string(),
            key: key.clone(),
            kind: ApiErrorKind::of_sdk_error(&e),
            message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "repositories: ['*']\nrules: []";

    fn settings(vars: &[(&str, &str)]) -> Result<JanitorSettings, JanitorError> {
        JanitorSettings::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn only_call_failures_are_retryable() {
        let api = CatalogError::Api {
            operation: "DescribeImages",
            repository: "app".into(),
            message: "Rate exceeded".into(),
            kind: ApiErrorKind::Throttled,
        };
        assert!(JanitorError::Catalog(api).is_retryable());
        for kind in [
            ApiErrorKind::AccessDenied,
            ApiErrorKind::NotFound,
            ApiErrorKind::Invalid,
        ] {
            let api = CatalogError::Api {
                operation: "DescribeImages",
                repository: "app".into(),
                message: format!("{kind}"),
                kind,
            };
            assert!(!JanitorError::Catalog(api).is_retryable(), "{kind}");
        }
        let bad = CatalogError::BadImage {
            repository: "app".into(),
            digest: "sha256:x".into(),
            message: "not JSON".into(),
        };
        assert!(!JanitorError::Catalog(bad).is_retryable());
        assert!(!JanitorError::Settings {
            var: "CLEANUP_POLICY",
            message: "unset".into()
        }
        .is_retryable());
    }

    #[test]
    fn settings_default_to_a_dry_run_and_name_bad_variables() {
        let s = settings(&[("CLEANUP_POLICY", POLICY)]).unwrap();
        assert!(s.dry_run && s.report_bucket.is_none());
        assert_eq!(s.report_prefix, "cache-janitor/");
        let s = settings(&[
            ("CLEANUP_POLICY", POLICY),
            ("DRY_RUN", "False"),
            ("REPORT_BUCKET", "r"),
        ])
        .unwrap();
        assert!(!s.dry_run);
        assert_eq!(s.report_bucket.as_deref(), Some("r"));
        assert!(s.consumers.accounts.is_empty());
        let s = settings(&[
            ("CLEANUP_POLICY", POLICY),
            (
                "CONSUMER_ACCOUNTS",
                "222222222222:eu-west-1,us-east-1,333333333333",
            ),
            ("IN_USE_READER_ROLE", "reader"),
        ])
        .unwrap();
        assert_eq!(s.consumers.account_ids(), ["222222222222", "333333333333"]);
        assert_eq!(s.consumers.accounts[0].regions, ["eu-west-1", "us-east-1"]);
        assert_eq!(s.consumers.role_name, "reader");
        for (vars, expected) in [
            (
                vec![],
                "setting CLEANUP_POLICY: neither CLEANUP_POLICY nor AFTERPUSH_CLEANUP_POLICY_FILE is set",
            ),
            (
                vec![("CLEANUP_POLICY", POLICY), ("AFTERPUSH_CLEANUP_POLICY_FILE", "/x")],
                "setting CLEANUP_POLICY: set CLEANUP_POLICY or AFTERPUSH_CLEANUP_POLICY_FILE, not both",
            ),
            (
                vec![("CLEANUP_POLICY", POLICY), ("CONSUMER_ACCOUNTS", "2222:eu-west-1")],
                "setting CONSUMER_ACCOUNTS: \"2222:eu-west-1\": \"2222:eu-west-1\": \"2222\" is not a 12-digit account id",
            ),
            (
                vec![("CLEANUP_POLICY", POLICY), ("CONSUMER_ACCOUNTS", "eu-west-1")],
                "setting CONSUMER_ACCOUNTS: \"eu-west-1\": \"eu-west-1\": a region must follow",
            ),
            (
                vec![("CLEANUP_POLICY", POLICY), ("IN_USE_READER_ROLE", "a/b")],
                "setting IN_USE_READER_ROLE: \"a/b\": expected an IAM role name",
            ),
            (
                vec![("CLEANUP_POLICY", POLICY), ("DRY_RUN", "maybe")],
                "setting DRY_RUN: \"maybe\": expected true or false",
            ),
            (
                vec![("CLEANUP_POLICY", POLICY), ("DRY_RUN", "ture")],
                "setting DRY_RUN: \"ture\": expected true or false",
            ),
            (
                vec![("AFTERPUSH_CLEANUP_POLICY_FILE", "/nonexistent/policy.yaml")],
                "setting AFTERPUSH_CLEANUP_POLICY_FILE: cannot read policy file /nonexistent/policy.yaml",
            ),
            (
                vec![("CLEANUP_POLICY", "repositories: ['*']\ngrace_period: 1x")],
                "setting CLEANUP_POLICY: grace_period: \"1x\" is not a duration",
            ),
        ] {
            let err = settings(&vars).unwrap_err().to_string();
            assert!(
                err.starts_with(expected),
                "expected {expected:?}, got {err:?}"
            );
        }
    }

    /// The handler's path: `Trigger::from_value`, then `JanitorEvent::from_trigger`.
    fn janitor_event(event: serde_json::Value) -> Result<JanitorEvent, crate::events::EventError> {
        Trigger::from_value(event).map(|t| JanitorEvent::from_trigger(&t))
    }

    #[test]
    fn events_are_told_apart_by_detail_type() {
        let push = serde_json::json!({"detail-type": "ECR Image Action", "source": "aws.ecr", "detail": {
            "result": "SUCCESS", "repository-name": "app", "action-type": "PUSH", "image-tag": "cache-main",
            "image-digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}});
        assert!(
            matches!(janitor_event(push).unwrap(), JanitorEvent::Push(d) if d.repository_name == "app")
        );
        let tick = serde_json::json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        assert!(matches!(
            janitor_event(tick).unwrap(),
            JanitorEvent::Scheduled
        ));
        let other =
            serde_json::json!({"detail-type": "ECR Image Scan", "source": "aws.ecr", "detail": {}});
        assert!(janitor_event(other)
            .unwrap_err()
            .to_string()
            .contains("ECR Image Scan"));
        // The event parser names the bad field.
        let bad = serde_json::json!({"detail-type": "ECR Image Action", "source": "aws.ecr", "detail": {"result": 1}});
        assert!(janitor_event(bad)
            .unwrap_err()
            .to_string()
            .contains("detail.result"));
    }

    #[tokio::test]
    async fn a_catalog_that_cannot_list_images_in_use_deletes_nothing() {
        use crate::catalog::ecr::{EcrCatalog, MemoryEcr};
        let ecr = MemoryEcr::new();
        ecr.put(
            "app",
            crate::catalog::ecr::ImageDetail {
                pushed_at: Some(Utc::now() - chrono::Duration::days(30)),
                manifest_media_type: Some(media::OCI_MANIFEST.into()),
                artifact_media_type: Some(media::OCI_CONFIG.into()),
                ..Default::default()
            },
            b"{}".to_vec(),
        );
        // No ECS or Lambda behind this catalog.
        let catalog = EcrCatalog::new(ecr);
        let expire =
            "repositories: ['*']\nrules: [{name: old, select: {kind: image}, action: expire}]\n";
        let options = RunOptions {
            dry_run: false,
            ..RunOptions::dry_run_now()
        };
        let report = sweep(&catalog, None, &Policy::parse(expire).unwrap(), &options)
            .await
            .unwrap();
        let blocked = report.blocked.as_ref().unwrap();
        assert!(
            blocked.reason.contains("cannot list them"),
            "{}",
            blocked.reason
        );
        assert!(report.repositories.is_empty());
        assert_eq!(catalog.api().len("app"), 1);
        // Turned off by name, the run goes on.
        let off = format!("{expire}protect: {{ecs: false, lambda: false}}");
        let report = sweep(&catalog, None, &Policy::parse(&off).unwrap(), &options)
            .await
            .unwrap();
        assert!(report.blocked.is_none());
        assert_eq!(report.deleted, 1);
    }

    #[test]
    fn on_push_policy_keeps_keep_rules_and_expires_untagged_caches_only() {
        let p = Policy::parse(
            "repositories: ['*']\ngrace_period: 3h\nrules:\n  - {name: k, select: {tags: [cache-main]}, action: keep}\n  - {name: e, select: {kind: image}, action: expire}",
        )
        .unwrap();
        let q = on_push_policy(&p);
        let names: Vec<&str> = q.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["k", "superseded-by-push"]);
        assert_eq!(q.grace_period, p.grace_period);
        assert_eq!(q.rules[1].select.tagged, Some(false));
    }
}
