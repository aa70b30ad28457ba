//! `afterpush cleanup plan|apply`: the cache janitor from the command line, against ECR
//! (aws-config: `AWS_ENDPOINT_URL`, profiles, regions as usual) and S3 caches.

use crate::aws_clients::ClientSettings;
use crate::catalog::ecr::EcrCatalog;
use crate::catalog::s3cache::S3CacheUri;
use crate::catalog::{Catalog, CatalogError, DeleteOutcome, ImageRecord};
use crate::cleanup::ecr_lifecycle::LifecyclePolicy;
use crate::cleanup::policy::{EcrRuleGroup, Pattern, Policy};
use crate::cleanup::render::decisions_table;
use crate::cleanup::shared::Coverage;
use crate::cleanup::{sweep, Report, RunOptions};
use crate::format::{self, count, printable};
use crate::oci::Sha256Digest;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use std::io::IsTerminal as _;
use std::path::PathBuf;

/// `afterpush cleanup ...`
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// `plan` or `apply`, with their options.
    #[command(subcommand)]
    pub action: CleanupAction,
}

/// The verbs of `afterpush cleanup`.
#[derive(Debug, Subcommand)]
pub enum CleanupAction {
    /// Show what the policy would delete, and why (deletes nothing).
    Plan(CleanupOptions),
    /// Delete what the policy says (index before children, batches of 100).
    Apply(CleanupOptions),
}

/// The options `plan` and `apply` share.
#[derive(Debug, Args)]
pub struct CleanupOptions {
    /// The policy file (YAML or JSON): an afterpush policy, or an ECR lifecycle policy
    /// document (`lifecyclePolicyText`).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "from_ecr",
        conflicts_with = "from_ecr"
    )]
    pub policy: Option<PathBuf>,
    /// Use each --repository's own ECR lifecycle policy (GetLifecyclePolicy), under
    /// afterpush's safety rules: a dry run of what ECR would do.
    #[arg(long)]
    pub from_ecr: bool,
    /// Only these repositories (each must match the policy); default: all it selects.
    #[arg(long = "repository", value_name = "R")]
    pub repositories: Vec<String>,
    /// Only this S3 BuildKit cache (s3://bucket/prefix/); default: the policy's.
    #[arg(long = "s3-cache", value_name = "URI")]
    pub s3_caches: Vec<String>,
    /// Plan as of this time: RFC 3339 (`2026-12-24T00:00:00Z`) or `+DURATION` from now
    /// (`+30d`: "what will this policy delete next month?").
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// List the kept images too, with the rule or safety reason that keeps each.
    #[arg(long)]
    pub all: bool,
}

/// Parses `--as-of`.
pub fn parse_as_of(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Some(rel) = text.strip_prefix('+') {
        let d = humantime::parse_duration(rel)
            .with_context(|| format!("--as-of {text:?}: {rel:?} is not a duration"))?;
        return chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .with_context(|| {
                format!(
                    "--as-of {text:?}: {rel:?} from now is past the latest time afterpush can plan for ({})",
                    DateTime::<Utc>::MAX_UTC.format("%Y-%m-%d")
                )
            });
    }
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("--as-of {text:?} is neither RFC 3339 nor +DURATION"))?
        .with_timezone(&Utc))
}

/// Runs `afterpush cleanup plan|apply`.
pub async fn run(args: CleanupArgs) -> anyhow::Result<()> {
    let (opts, dry_run) = match args.action {
        CleanupAction::Plan(o) => (o, true),
        CleanupAction::Apply(o) => (o, false),
    };
    let config = crate::aws_clients::load_sdk_config().await;
    let clients = ClientSettings::from_env()?;
    // The same consumer accounts as the janitor's, from the same variables.
    let consumers = crate::catalog::consumer_accounts::ConsumerAccounts::parse(
        &std::env::var(crate::settings::CONSUMER_ACCOUNTS).unwrap_or_default(),
        &std::env::var(crate::settings::IN_USE_READER_ROLE).unwrap_or_default(),
    )?;
    let catalog = EcrCatalog::with_settings_and_consumers(&config, &clients, &consumers);
    let policy = match &opts.policy {
        Some(path) => Policy::load(path)?,
        None => policy_from_ecr(&catalog, &opts.repositories).await?,
    };
    let now = match &opts.as_of {
        Some(t) => parse_as_of(t, Utc::now())?,
        None => Utc::now(),
    };
    let s3_caches = opts
        .s3_caches
        .iter()
        .map(|u| {
            u.parse::<S3CacheUri>()
                .map_err(|e| anyhow::anyhow!("--s3-cache: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Path-style works with every endpoint (S3-compatible stores, moto).
    let s3 = clients.s3(&config, std::env::var_os("AWS_ENDPOINT_URL").is_some());
    let options = RunOptions {
        dry_run,
        now,
        repositories: opts.repositories,
        s3_caches,
        // The CLI's scope is the policy and --repository.
        repository_filter: None,
        // The CLI has no deadline.
        deadline: None,
    };
    let report = if std::io::stderr().is_terminal() {
        let progress = ProgressCatalog::new(catalog);
        let report = sweep(&progress, Some(&s3), &policy, &options).await;
        progress.bar.finish_and_clear();
        report?
    } else {
        sweep(&catalog, Some(&s3), &policy, &options).await?
    };
    if opts.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", render(&report, opts.all));
    }
    if report.failed > 0 || !report.errors.is_empty() {
        anyhow::bail!(
            "{} deletions failed, {} errors (see above)",
            report.failed,
            report.errors.len()
        );
    }
    Ok(())
}

/// The policy `--from-ecr` stands for: each repository's own lifecycle policy, with
/// afterpush's defaults (grace period, dry run) around it.
async fn policy_from_ecr(catalog: &EcrCatalog, repositories: &[String]) -> anyhow::Result<Policy> {
    if repositories.is_empty() {
        anyhow::bail!(
            "--from-ecr needs --repository R: the repositories whose lifecycle policies to read"
        );
    }
    let mut groups = Vec::new();
    for r in repositories {
        let text = catalog
            .api()
            .lifecycle_policy_text(r)
            .await
            .with_context(|| format!("GetLifecyclePolicy on repository {r:?}"))?
            .with_context(|| format!("repository {r:?} has no lifecycle policy"))?;
        let policy = LifecyclePolicy::parse(&text)
            .with_context(|| format!("the lifecycle policy of repository {r:?}"))?;
        groups.push(EcrRuleGroup {
            repositories: vec![Pattern::parse("--repository", r)?],
            policy,
        });
    }
    let mut policy = Policy::from_lifecycle_policy(Vec::new(), groups[0].policy.clone());
    policy.repositories = groups.iter().flat_map(|g| g.repositories.clone()).collect();
    policy.ecr_lifecycle = groups;
    Ok(policy)
}

/// The report as text: the deletions of each repository as a table, then totals.
pub fn render(report: &Report, with_kept: bool) -> String {
    let mut out = String::new();
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for r in &report.repositories {
        let mut rows = r.planned.clone();
        if with_kept {
            rows.extend(r.keeps.iter().cloned());
        }
        if !rows.is_empty() {
            out.push_str(&decisions_table(&r.repository, report.now, &rows));
        }
        out.push_str(&format!(
            "{}: {verb} {} of {} ({}), kept {}{}\n",
            printable(&r.repository),
            if report.dry_run {
                r.planned.len()
            } else {
                r.deleted.len()
            },
            count(r.images as u64, "image", "images"),
            format::bytes(r.bytes_reclaimed),
            r.kept,
            if r.stopped_by_max_deletions {
                ", stopped at max_deletions"
            } else {
                ""
            }
        ));
        for c in &r.rules {
            out.push_str(&format!(
                "  rule {}{}: matched {}, {verb} {}{}{}\n",
                printable(&c.rule),
                c.description
                    .as_deref()
                    .map(|d| format!(" ({})", printable(d)))
                    .unwrap_or_default(),
                c.matched,
                c.expired,
                match c.kept_by_safety {
                    0 => String::new(),
                    n => format!(", {n} more kept by safety rules"),
                },
                match c.would_archive {
                    Some(n) => format!(", would archive {n} (never done by afterpush)"),
                    None => String::new(),
                }
            ));
        }
        for f in &r.failed {
            out.push_str(&format!(
                "  failed {}: {} {}\n",
                f.digest,
                printable(&f.code),
                printable(&f.message)
            ));
        }
        // Kept because ECS or Lambda uses them: always shown, with who uses each.
        for k in r.keeps.iter().filter(|k| !k.in_use.is_empty()) {
            out.push_str(&format!(
                "  in use, kept {} ({}): {}\n",
                k.digest,
                if k.tags.is_empty() {
                    "untagged".to_string()
                } else {
                    printable(&k.tags.join(",")).into_owned()
                },
                printable(&k.in_use.join("; "))
            ));
        }
    }
    // Who else may pull: the reason an uncovered repository keeps what it keeps.
    for shared in &report.shared {
        for c in &shared.consumers {
            out.push_str(&format!(
                "{}: may be pulled by {} ({}): {}\n",
                shared.repository,
                c.principal,
                c.granted_by,
                match c.coverage {
                    Coverage::Covered => "its workloads are listed",
                    Coverage::Accepted => "not listed, risk accepted by the policy",
                    Coverage::Uncovered => "not listed: every image it could run is kept",
                }
            ));
        }
    }
    for c in &report.s3_caches {
        for (name, why) in &c.plan.expired_manifests {
            out.push_str(&format!(
                "{}: manifest {}: expire ({})\n",
                printable(&c.plan.uri.to_string()),
                printable(name),
                printable(why)
            ));
        }
        out.push_str(&format!(
            "{}: {verb} {} manifests and {} blobs ({}); {} live blobs, {} young unreferenced\n",
            c.plan.uri,
            c.plan.expired_manifests.len(),
            c.plan.dead_blobs.len(),
            format::bytes(c.plan.bytes_reclaimed),
            c.plan.live_blobs,
            c.plan.young_blobs
        ));
        for f in &c.failed {
            out.push_str(&format!(
                "  failed {}: {} {}\n",
                printable(&f.key),
                printable(&f.code),
                printable(&f.message)
            ));
        }
    }
    for e in &report.errors {
        out.push_str(&format!("error: {}\n", printable(e)));
    }
    out.push_str(&format!(
        "run {} as of {}: {} planned, {} deleted, {} failed, {} reclaimed{}\n",
        report.run_id,
        report.now.to_rfc3339(),
        report.planned_deletions,
        report.deleted,
        report.failed,
        format::bytes(report.bytes_reclaimed),
        if report.dry_run { " (dry run)" } else { "" }
    ));
    out
}

/// Shows on a terminal what the janitor is doing (listing a repository, deleting a
/// batch) with an indicatif spinner; the catalog calls pass through unchanged.
struct ProgressCatalog<C> {
    inner: C,
    bar: indicatif::ProgressBar,
}

impl<C> ProgressCatalog<C> {
    fn new(inner: C) -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Self { inner, bar }
    }
}

#[async_trait::async_trait]
impl<C: Catalog> Catalog for ProgressCatalog<C> {
    async fn list_repositories(&self) -> Result<Vec<String>, CatalogError> {
        self.bar.set_message("listing repositories");
        self.inner.list_repositories().await
    }
    async fn list_images(&self, repository: &str) -> Result<Vec<ImageRecord>, CatalogError> {
        self.bar
            .set_message(format!("listing {}", printable(repository)));
        self.inner.list_images(repository).await
    }
    async fn delete_images(
        &self,
        repository: &str,
        digests: &[Sha256Digest],
    ) -> Result<DeleteOutcome, CatalogError> {
        self.bar.set_message(format!(
            "deleting {} from {}",
            count(digests.len() as u64, "image", "images"),
            printable(repository)
        ));
        self.inner.delete_images(repository, digests).await
    }
    fn in_use(&self) -> Option<&dyn crate::cleanup::in_use::InUseSource> {
        self.inner.in_use()
    }
    fn repository_policies(
        &self,
    ) -> Option<&dyn crate::catalog::repository_policy::RepositoryPolicies> {
        self.inner.repository_policies()
    }
}
