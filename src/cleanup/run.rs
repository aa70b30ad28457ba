//! The two runs the Lambda and the CLI share: [`on_push`] (prune what a cache push
//! superseded, or evaluate the pushed repository when the push can set off an expire
//! rule) and [`sweep`] (every selected repository, every rule, every S3 cache).
//!
//! Before any deletion both collect the images ECS and Lambda use ([`super::in_use`]);
//! those are kept whatever the rules say, and a failure to list them blocks every
//! deletion of the run.

use super::executor::{self, RepositoryReport};
use super::in_use::InUse;
use super::planner::{plan_in_use, rules_set_off_by_push, Snapshot};
use super::policy::{self, Pattern, Policy, Rule, RuleAction, S3CachePolicy, Select, When};
use super::s3gc;
use super::shared;
use super::{Blocked, JanitorError, Report};
use crate::catalog::paginate::Paging;
use crate::catalog::s3cache::{S3Cache, S3CacheUri};
use crate::catalog::Catalog;
use crate::deadline::Deadline;
use crate::filters::RepositoryTagFilters;
use crate::oci::{media, ArtifactKind};
use chrono::{DateTime, Utc};

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

/// A repository the run did not get to (or whose listing the deadline cut short):
/// stopped by the deadline, else by `max_deletions`.
fn unvisited(repository: &str, dry_run: bool, out_of_time: bool) -> RepositoryReport {
    RepositoryReport {
        repository: repository.to_string(),
        images: 0,
        dry_run,
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
            if options.deadline_has_passed() {
                report
                    .repositories
                    .push(unvisited(repository, options.dry_run, true));
            }
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

/// True when a sweep visits `repository`: the policy selects it and
/// `options.repository_filter` (if any) names it. A sweep that fans out picks its
/// repositories with this too.
pub fn sweeps_repository(policy: &Policy, options: &RunOptions, repository: &str) -> bool {
    policy.selects_repository(repository)
        && options
            .repository_filter
            .as_ref()
            .is_none_or(|f| f.matches_repository(repository))
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
        let mut all = match catalog.list_repositories().await {
            Ok(all) => all,
            // The listing ran into the deadline: the run stops here and says so, and
            // its report still goes out within the margin.
            Err(e) if options.deadline_has_passed() => {
                tracing::warn!(error = %e, "the invocation deadline stopped the repository listing");
                report.errors.push(e.to_string());
                report.stopped_by_deadline = true;
                return Ok(report.finish());
            }
            Err(e) => return Err(e.into()),
        };
        all.retain(|r| sweeps_repository(policy, options, r));
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
            report
                .repositories
                .push(unvisited(repository, options.dry_run, out_of_time));
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
                    // The cache's listings stop at the invocation deadline, as ECR's do.
                    let paging = Paging::default();
                    paging.set_deadline(options.deadline.clone());
                    let cache = S3Cache::new(client.clone(), c.uri.clone()).with_paging(paging);
                    match s3gc::collect(&cache, &c, options.now, options.dry_run).await {
                        Ok(r) => report.s3_caches.push(r),
                        Err(e) => {
                            tracing::error!(cache = %c.uri, error = %e, "S3 cache GC failed");
                            report.errors.push(e.to_string());
                            if options.deadline_has_passed() {
                                report.s3_caches_left.push(c.uri.to_string());
                            }
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

/// A successful push, as far as the janitor needs it: where, which tag, and the media
/// types that tell a BuildKit cache from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// The repository pushed to.
    pub repository: String,
    /// The pushed tag; `None` for a push by digest.
    pub tag: Option<String>,
    /// The pushed manifest's media type.
    pub manifest_media_type: Option<String>,
    /// The pushed manifest's config (artifact) media type.
    pub artifact_media_type: Option<String>,
}

#[tracing::instrument(skip_all, fields(repository = %pushed.repository, tag = ?pushed.tag))]
/// On a push of a cache tag: deletes the untagged cache manifests of that repository
/// (the ones earlier exports left behind), subject to the grace period and the policy's
/// keep rules. On a push to a repository an ECR lifecycle policy decides for, or any
/// other tagged push that can set off an expire rule (see [`rules_set_off_by_push`]):
/// evaluates the repository under the whole policy at once, rather than at the next
/// sweep. Any other push is reported as ignored. Only successful pushes come here: the
/// event decision (`crate::events`) skips the rest.
pub async fn on_push(
    catalog: &dyn Catalog,
    policy: &Policy,
    pushed: &PushedImage,
    options: &RunOptions,
) -> Result<Report, JanitorError> {
    let tag = pushed.tag.clone().unwrap_or_default();
    let mut report = Report::new(
        format!("push {}:{tag}", pushed.repository),
        options.dry_run,
        options.now,
    );
    let is_cache_type = pushed.artifact_media_type.as_deref() == Some(media::BUILDKIT_CACHE_CONFIG);
    let lifecycle = policy.lifecycle_policy_for(&pushed.repository);
    let ignored = if !policy.selects_repository(&pushed.repository) {
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
    let kind = pushed_kind(pushed);
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
        &pushed.repository,
        options,
        &mut budget,
        &mut report,
    )
    .await;
    Ok(report.finish())
}

/// The kind of a pushed image, as far as its media types tell.
fn pushed_kind(pushed: &PushedImage) -> ArtifactKind {
    let summary = crate::oci::ManifestSummary {
        media_type: pushed.manifest_media_type.clone(),
        config: pushed.artifact_media_type.clone().map(|media_type| {
            crate::oci::DescriptorSummary {
                media_type,
                ..Default::default()
            }
        }),
        ..Default::default()
    };
    summary.kind(pushed.manifest_media_type.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_catalog_that_cannot_list_images_in_use_deletes_nothing() {
        use crate::catalog::ecr::{EcrCatalog, MemoryEcr};
        let ecr = MemoryEcr::new();
        ecr.put(
            "app",
            crate::catalog::ecr::month_old_image(),
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

    #[tokio::test]
    async fn a_sweep_the_deadline_cuts_short_reports_it_and_deletes_nothing() {
        use crate::catalog::ecr::{EcrCatalog, MemoryEcr};
        let ecr = MemoryEcr::new();
        ecr.put(
            "app",
            crate::catalog::ecr::month_old_image(),
            b"{}".to_vec(),
        );
        let catalog = EcrCatalog::new(ecr);
        let policy = Policy::parse(
            "repositories: ['*']\nrules: [{name: old, select: {kind: image}, action: expire}]\nprotect: {ecs: false, lambda: false}\n",
        )
        .unwrap();
        // A deadline already behind: the first listing call is cut.
        let passed = Deadline::new(
            std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
            std::time::Duration::ZERO,
        );
        let options = RunOptions {
            dry_run: false,
            deadline: Some(passed),
            ..RunOptions::dry_run_now()
        };
        let report = sweep(&catalog, None, &policy, &options).await.unwrap();
        assert!(report.stopped_by_deadline, "{}", report.to_json());
        assert_eq!(report.deleted, 0);
        assert!(
            report.errors.iter().any(|e| e.contains("deadline")),
            "{}",
            report.to_json()
        );
        assert_eq!(catalog.api().len("app"), 1);
    }
}
