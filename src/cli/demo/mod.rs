//! `afterpush demo`: the whole service on one machine, with no cloud and no servers.
//!
//! An OCI image layout stands for the ECR repository `app`. The demo pushes what a CI
//! pipeline would (two per-arch images and two BuildKit cache manifests), then replays
//! the `ECR Image Action` events ECR would raise for those pushes through the three
//! Lambda handlers — the library structs the function binaries wrap, so the code that
//! runs here is the code that runs in Lambda. Every push a handler makes raises another
//! event, which is replayed too: the output shows the loop guard skipping them. It ends
//! with what is in the layout: the stitched index, the SOCI indexes per platform, and
//! the janitor's plan for a scheduled sweep 30 days later (in dry-run mode).

use crate::catalog::layout::LayoutCatalog;
use crate::cleanup::policy::Policy;
use crate::cleanup::render::decisions_table;
use crate::cleanup::{self, RunOptions};
use crate::filters::RepositoryTagFilters;
use crate::format;
use crate::lambda::{
    CacheJanitor, DecisionRecord, FunctionName, IndexerOutput, Invocation, JanitorOutput,
    JanitorSettings, ManifestStitcher, PushOutput, Repositories, SociIndexer, StitcherOutput,
};
use crate::oci::{is_attestation_descriptor, ManifestSummary, Sha256Digest};
use crate::registry::layout::LayoutRepository;
use crate::registry::Repository;
use crate::sample::{self, SamplePlatform, SampleSpec};
use crate::soci::{CachedLayer, SociOutcome, SociSettings, ZtocCache};
use crate::stitch::{StitchOutcome, StitchSettings, StitchedIndex};
use anyhow::{bail, Context};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

mod lines;
use lines::{describe, describe_janitor, pushes_of, Handled};

/// `afterpush demo`: where the layout goes and the sample seed.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Write the OCI layout to DIR (a new or empty directory) and keep it, instead of
    /// a temporary directory that is removed at the end.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Seed of the sample generator (the same seed gives the same digests).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The repository the layout stands for, and where the events say it lives.
pub const REPOSITORY: &str = "app";
/// The AWS account id the demo's events name.
pub const ACCOUNT: &str = "123456789012";
/// The AWS region the demo's events name.
pub const REGION: &str = "us-east-1";
/// The version CI builds; per-arch tags are `<VERSION>-<arch>`.
pub const VERSION: &str = "1.0";
/// The indexer's `MIN_LAYER_SIZE` in the demo. The default (10 MiB) would need sample
/// layers too big to generate quickly in a debug build; 1 MiB still leaves the small
/// layer of each image unindexed, as a real base image's small layers would be.
pub const DEMO_MIN_LAYER_SIZE: u64 = 1024 * 1024;
/// Uncompressed content of each image's layers: a small one (no zTOC) and one that
/// gzips to about 1.9 MiB (a zTOC).
const IMAGE_LAYER_SIZES: [u64; 2] = [64 * 1024, 6 * 1024 * 1024];
const CACHE_LAYER_SIZES: [u64; 1] = [512 * 1024];
/// The platforms CI builds, one per-arch tag each.
const IMAGE_PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];
/// The cache tags CI exports to (`--cache-to type=registry,ref=app:cache-<branch>`).
pub const CACHE_TAGS: [&str; 2] = ["cache-main", "cache-feature-x"];
/// How far ahead the scheduled sweep is planned.
const SWEEP_AS_OF_DAYS: i64 = 30;
/// The policy shipped for CI caches; the demo drops its S3 cache (no cloud here).
const DEMO_POLICY: &str = include_str!("../../../infra/policies/ci-caches.yaml");

/// zTOCs kept in memory for the length of the demo, standing in for the Lambda's
/// `ZTOC_CACHE_BUCKET`: the stitched index reuses the zTOCs built for the per-arch tags.
#[derive(Debug, Default)]
struct MemoryZtocCache(Mutex<BTreeMap<(Sha256Digest, u64), Bytes>>);

#[async_trait::async_trait]
impl ZtocCache for MemoryZtocCache {
    async fn get(&self, layer: &CachedLayer<'_>) -> Option<Bytes> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(layer.digest.clone(), layer.facts.span_size))
            .cloned()
    }
    async fn put(&self, layer: &CachedLayer<'_>, ztoc: Bytes) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((layer.digest.clone(), layer.facts.span_size), ztoc);
    }
}

/// Prints lines above a spinner on a TTY; the spinner is hidden otherwise.
struct Ui {
    spinner: ProgressBar,
}

impl Ui {
    /// `steps`: the length of the bar (CI pushes).
    fn new(steps: u64) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let spinner = ProgressBar::with_draw_target(Some(steps), target);
        spinner.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed}] {bar:20} {pos}/{len} CI pushes  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        spinner.enable_steady_tick(Duration::from_millis(100));
        Self { spinner }
    }
    fn busy(&self, message: impl Into<String>) {
        self.spinner.set_message(message.into());
    }
    fn line(&self, text: impl AsRef<str>) {
        self.spinner.suspend(|| println!("{}", text.as_ref()));
    }
}

/// A push waiting for its event to be replayed.
struct QueuedPush {
    digest: Sha256Digest,
    tag: Option<String>,
    /// Which handler pushed it (None: the CI pipeline).
    pushed_by: Option<&'static str>,
}

/// The `ECR Image Action` event ECR raises for a push of `digest` (under `tag`):
/// the media types are read from the stored manifest, as ECR takes them from it.
async fn push_event(
    repo: &dyn Repository,
    sequence: usize,
    digest: &Sha256Digest,
    tag: Option<&str>,
) -> anyhow::Result<(Value, String)> {
    let manifest = repo
        .get_manifest(&digest.to_string())
        .await
        .with_context(|| format!("reading pushed manifest {digest}"))?;
    let summary = ManifestSummary::parse(&digest.to_string(), &manifest.bytes)?;
    let mut detail = json!({
        "result": "SUCCESS",
        "repository-name": REPOSITORY,
        "image-digest": digest.to_string(),
        "action-type": "PUSH",
        "image-tag": tag.unwrap_or(""),
        "manifest-media-type": manifest.media_type,
    });
    // ECR's artifact-media-type is the config media type; indexes have none.
    if let Some(config) = &summary.config {
        detail["artifact-media-type"] = json!(config.media_type);
    }
    let event = json!({
        "version": "0",
        "id": event_id(sequence, &digest.to_string()),
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": ACCOUNT,
        "time": Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": REGION,
        "resources": [],
        "detail": detail,
    });
    Ok((event, summary.kind(Some(&manifest.media_type)).to_string()))
}

/// A UUID-shaped, deterministic event id.
fn event_id(sequence: usize, what: &str) -> String {
    crate::events::synthetic_event_id(&format!("{sequence}/{what}"))
}

fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": event_id(0, "scheduled"),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": REGION,
        "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/afterpush-CacheJanitorSweep")],
        "detail": {},
    })
}

/// The event loop: every push's event goes through the three handlers; what they push
/// raises further events, replayed after it.
struct Replay<'a> {
    indexer: &'a SociIndexer,
    stitcher: &'a ManifestStitcher,
    janitor: &'a CacheJanitor,
    /// (digest, tag) pairs already pushed: ECR raises no event for a manifest it
    /// already holds under that tag.
    seen: HashSet<(String, Option<String>)>,
    sequence: usize,
    failures: Vec<String>,
    /// The indexer's outcomes by output tag, for the summary.
    soci_outputs: BTreeMap<String, SociOutcome>,
}

impl Replay<'_> {
    /// Replays the event of CI's push of `digest` as `tag`, then every event the
    /// handlers' pushes raise, until there are none left.
    async fn run(
        &mut self,
        repo: &dyn Repository,
        ui: &Ui,
        digest: Sha256Digest,
        tag: String,
    ) -> anyhow::Result<()> {
        self.seen.insert((digest.to_string(), Some(tag.clone())));
        let mut queue = VecDeque::from([QueuedPush {
            digest,
            tag: Some(tag),
            pushed_by: None,
        }]);
        while let Some(push) = queue.pop_front() {
            self.sequence += 1;
            let (event, kind) =
                push_event(repo, self.sequence, &push.digest, push.tag.as_deref()).await?;
            let label = match &push.tag {
                Some(tag) => format!("{REPOSITORY}:{tag}"),
                None => format!("{REPOSITORY} (untagged)"),
            };
            ui.line(format!(
                "#{:<2} PUSH {label} {} ({kind}){}",
                self.sequence,
                format::short_digest(&push.digest.to_string()),
                push.pushed_by
                    .map(|f| format!(", pushed by {f}"))
                    .unwrap_or_default()
            ));
            // The functions ECR's push events start (the reconciler runs on its schedule).
            for function in [
                FunctionName::SociIndexer,
                FunctionName::ManifestStitcher,
                FunctionName::CacheJanitor,
            ] {
                ui.busy(format!("{function}: {label}"));
                let invocation = Invocation::default();
                let result = match function {
                    FunctionName::SociIndexer => self
                        .indexer
                        .handle(event.clone(), &invocation)
                        .await
                        .map(Handled::Indexer),
                    FunctionName::ManifestStitcher => self
                        .stitcher
                        .handle(event.clone(), &invocation)
                        .await
                        .map(Handled::Stitcher),
                    FunctionName::CacheJanitor => self
                        .janitor
                        .handle(event.clone(), &invocation)
                        .await
                        .map(Handled::Janitor),
                    // Not in the list: the reconciler takes no push.
                    FunctionName::Reconciler => continue,
                };
                let line = match &result {
                    Ok(handled) => describe(handled),
                    Err(e) => {
                        self.failures.push(format!("{function} on {label}: {e}"));
                        format!("FAILED ({}): {e}", e.error_type())
                    }
                };
                ui.line(format!("    {:<18} {line}", function.binary()));
                let Ok(handled) = result else { continue };
                if let Handled::Indexer(PushOutput {
                    outcome: Some(outcome),
                    ..
                }) = &handled
                {
                    if let (None, Some(tag)) = (&outcome.skipped, &outcome.tag) {
                        self.soci_outputs.insert(tag.clone(), outcome.clone());
                    }
                }
                for (digest, tag) in pushes_of(&handled) {
                    if self.seen.insert((digest.clone(), tag.clone())) {
                        queue.push_back(QueuedPush {
                            digest: digest.parse().with_context(|| {
                                format!("{function} reported digest {digest:?}")
                            })?,
                            tag,
                            pushed_by: Some(function.binary()),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Refuses a `--keep` directory that already holds something: the demo's story starts
/// from an empty repository, and nothing of the user's may be mixed into it.
fn prepare_keep_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("--keep {}: cannot read the directory", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "--keep {}: the directory is not empty; give a new or empty directory",
                dir.display()
            );
        }
    }
    Ok(())
}

fn demo_policy() -> anyhow::Result<Policy> {
    let mut policy = Policy::parse(DEMO_POLICY).context("the demo policy (ci-caches.yaml)")?;
    policy.s3_caches.clear();
    Ok(policy)
}

/// Runs the demo: builds sample images, replays their push events through the three handlers, and prints what each did.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.keep {
        Some(dir) => {
            prepare_keep_dir(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("afterpush-demo-")
                .tempdir()?;
            temp.path().join(REPOSITORY)
        }
    };
    let repo = LayoutRepository::open_or_create(&dir)
        .with_context(|| format!("creating the OCI layout {}", dir.display()))?;
    let ui = Ui::new((IMAGE_PLATFORMS.len() + CACHE_TAGS.len()) as u64);
    let started = std::time::Instant::now();

    let soci_settings = SociSettings {
        min_layer_size: DEMO_MIN_LAYER_SIZE,
        ..SociSettings::default()
    };
    let filters = RepositoryTagFilters::parse(&format!("{REPOSITORY}:*"))?;
    let indexer = SociIndexer {
        settings: soci_settings.clone(),
        filters: filters.clone(),
        repositories: Repositories::Layout(dir.clone()),
        cache: Box::new(MemoryZtocCache::default()),
        // The demo runs without a deadline (`Invocation::default()`).
        deadline_margin: crate::deadline::DEFAULT_DEADLINE_MARGIN,
    };
    let stitcher = ManifestStitcher {
        settings: StitchSettings::default(),
        filters: filters.clone(),
        soci_tag_suffix: soci_settings.tag_suffix.clone(),
        repositories: Repositories::Layout(dir.clone()),
    };
    let janitor = CacheJanitor {
        settings: JanitorSettings {
            policy: demo_policy()?,
            dry_run: true,
            report_bucket: None,
            report_prefix: "cache-janitor/".into(),
            consumers: Default::default(),
            fan_out: Default::default(),
            queue_url: None,
        },
        filters,
        soci_tag_suffix: soci_settings.tag_suffix.clone(),
        catalog: Box::new(
            LayoutCatalog::open(&dir)
                .with_context(|| format!("opening {} as a catalog", dir.display()))?
                .with_name(REPOSITORY),
        ),
        s3: None,
        deadline_margin: crate::deadline::DEFAULT_DEADLINE_MARGIN,
        queue: None,
    };

    ui.line("afterpush demo: the three functions on one OCI layout (no cloud, no servers)");
    ui.line(format!(
        "  layout      oci:{}  (stands for ECR repository {REPOSITORY}, account {ACCOUNT}, {REGION})",
        dir.display()
    ));
    ui.line(format!(
        "  indexer     MIN_LAYER_SIZE={} for the demo (the default is {}), SPAN_SIZE={}, SOCI index v2, tag suffix {}",
        format::bytes(DEMO_MIN_LAYER_SIZE),
        format::bytes(crate::soci::settings::DEFAULT_MIN_LAYER_SIZE),
        format::bytes(soci_settings.span_size),
        soci_settings.tag_suffix
    ));
    ui.line(format!(
        "  stitcher    ARCH_TAG_TEMPLATE={}, REQUIRED_PLATFORMS={}, STITCH_MODE=complete",
        stitcher.settings.arch_tag_template.as_str(),
        StitchSettings::DEFAULT_REQUIRED_PLATFORMS
    ));
    ui.line(format!(
        "  janitor     DRY_RUN=true, policy infra/policies/ci-caches.yaml without its S3 cache ({} rules: {})",
        janitor.settings.policy.rules.len(),
        janitor
            .settings
            .policy
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // 1. What CI pushes, each push followed by the events it raises (and the events the
    // handlers' own pushes raise, queued behind them), in push order.
    ui.line("\nCI pushes, and the ECR push events they raise, replayed through soci-indexer, manifest-stitcher, cache-janitor:");
    let platforms: Vec<SamplePlatform> = IMAGE_PLATFORMS
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let image_spec = SampleSpec {
        seed: args.seed,
        platforms: platforms.clone(),
        layer_sizes: IMAGE_LAYER_SIZES.to_vec(),
        attestations: false,
        ..SampleSpec::default()
    };
    let mut replay = Replay {
        indexer: &indexer,
        stitcher: &stitcher,
        janitor: &janitor,
        seen: HashSet::new(),
        sequence: 0,
        failures: Vec::new(),
        soci_outputs: BTreeMap::new(),
    };
    ui.spinner
        .set_length((platforms.len() + CACHE_TAGS.len()) as u64);
    for platform in &platforms {
        let tag = format!("{VERSION}-{}", platform.arch_suffix());
        ui.busy(format!("generating {REPOSITORY}:{tag}"));
        let image = sample::write_image(&repo, &image_spec, platform, Some(&tag))
            .await
            .with_context(|| format!("writing sample image {REPOSITORY}:{tag}"))?;
        let layers: Vec<String> = image
            .layers
            .iter()
            .map(|l| format::bytes(l.blob.size))
            .collect();
        ui.line(format!(
            "\nCI pushes {REPOSITORY}:{tag}  {}  image {platform}, layers {}",
            format::short_digest(&image.manifest.digest.to_string()),
            layers.join(" + ")
        ));
        replay.run(&repo, &ui, image.manifest.digest, tag).await?;
        ui.spinner.inc(1);
    }
    for (i, tag) in CACHE_TAGS.iter().enumerate() {
        ui.busy(format!("generating {REPOSITORY}:{tag}"));
        let cache_spec = SampleSpec {
            // Each branch's cache has its own layers.
            seed: args.seed.wrapping_add(1000 * (i as u64 + 1)),
            layer_sizes: CACHE_LAYER_SIZES.to_vec(),
            ..image_spec.clone()
        };
        let cache = sample::write_buildkit_cache(&repo, &cache_spec, Some(tag))
            .await
            .with_context(|| format!("writing sample cache {REPOSITORY}:{tag}"))?;
        ui.line(format!(
            "\nCI pushes {REPOSITORY}:{tag}  {}  BuildKit registry cache (--cache-to type=registry), layers {}",
            format::short_digest(&cache.manifest.digest.to_string()),
            cache
                .layers
                .iter()
                .map(|l| format::bytes(l.blob.size))
                .collect::<Vec<_>>()
                .join(" + ")
        ));
        replay
            .run(&repo, &ui, cache.manifest.digest, tag.to_string())
            .await?;
        ui.spinner.inc(1);
    }
    let Replay {
        sequence,
        mut failures,
        soci_outputs,
        ..
    } = replay;

    ui.line("\nThe janitor's schedule (EventBridge rate rule), now:");
    ui.busy("cache-janitor: scheduled sweep");
    let line = match janitor
        .handle(scheduled_event(), &Invocation::default())
        .await
    {
        Ok(v) => describe_janitor(&v),
        Err(e) => {
            failures.push(format!("cache-janitor on the schedule: {e}"));
            format!("FAILED ({}): {e}", e.error_type())
        }
    };
    ui.line(format!(
        "    {:<18} {line}",
        FunctionName::CacheJanitor.binary()
    ));

    // 3. What the layout holds now.
    ui.busy("reading the results back from the layout");
    ui.line("\nStitched index:");
    match repo.get_manifest(VERSION).await {
        Ok(index) => {
            let summary = ManifestSummary::parse(VERSION, &index.bytes)?;
            let platforms: Vec<String> = summary
                .manifests
                .iter()
                .filter(|d| !is_attestation_descriptor(d))
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            ui.line(format!(
                "  {REPOSITORY}:{VERSION}  {}  {}  platforms {}",
                index.digest,
                index.media_type,
                platforms.join(", ")
            ));
        }
        Err(e) => {
            failures.push(format!("no stitched index: {e}"));
            ui.line(format!("  MISSING: {e}"));
        }
    }

    ui.line("\nSOCI indexes:");
    for (tag, outcome) in &soci_outputs {
        let output = outcome.output.as_deref().unwrap_or("?");
        ui.line(format!("  {REPOSITORY}:{tag}  {output}"));
        for p in &outcome.platforms {
            let Some(soci) = p.soci_index.as_deref() else {
                continue;
            };
            let soci_manifest = repo.get_manifest(soci).await?;
            let summary = ManifestSummary::parse(soci, &soci_manifest.bytes)?;
            let ztoc_bytes: u64 = summary.layers.iter().map(|l| l.size).sum();
            ui.line(format!(
                "    {:<12} SOCI index {}  {} B, {} ({}), {} not indexed",
                p.platform,
                format::short_digest(soci),
                soci_manifest.bytes.len(),
                format::count(summary.layers.len() as u64, "zTOC", "zTOCs"),
                format::bytes(ztoc_bytes),
                format::count(p.layers_skipped as u64, "layer", "layers"),
            ));
        }
    }

    let as_of: DateTime<Utc> = Utc::now() + chrono::Duration::days(SWEEP_AS_OF_DAYS);
    ui.busy("planning the scheduled sweep");
    ui.line(format!(
        "\nCleanup plan: the scheduled sweep as of {} ({SWEEP_AS_OF_DAYS} days from now, `afterpush cleanup plan --as-of +{SWEEP_AS_OF_DAYS}d`), DRY_RUN:",
        as_of.format("%Y-%m-%d %H:%M UTC")
    ));
    let policy = &janitor.settings.policy;
    let options = RunOptions {
        dry_run: true,
        now: as_of,
        repositories: Vec::new(),
        s3_caches: Vec::new(),
        repository_filter: Some(janitor.filters.clone()),
        deadline: None,
    };
    let report = cleanup::sweep(janitor.catalog.as_ref(), None, policy, &options).await?;
    // The report carries every decision, deletions first: the whole plan, with reasons.
    for r in &report.repositories {
        let decisions: Vec<_> = r.planned.iter().chain(&r.keeps).cloned().collect();
        for line in decisions_table(&r.repository, report.now, &decisions).lines() {
            ui.line(format!("  {line}"));
        }
        ui.line(format!(
            "  {}: delete {} of {} images, keep {}",
            r.repository,
            r.planned.len(),
            r.images,
            r.kept
        ));
    }
    ui.line(format!(
        "  sweep report {}: {} planned, {} deleted (dry run), {} reclaimable",
        report.run_id,
        report.planned_deletions,
        report.deleted,
        format::bytes(report.bytes_reclaimed)
    ));

    ui.spinner.finish_and_clear();
    ui.line(format!(
        "\n{} events replayed in {:.1} s.",
        sequence,
        started.elapsed().as_secs_f64()
    ));
    match &args.keep {
        Some(_) => ui.line(format!(
            "Kept. Try: skopeo inspect --raw oci:{}:{VERSION}-soci",
            dir.display()
        )),
        None => ui.line("(temporary layout removed; --keep DIR keeps it)"),
    }
    if !failures.is_empty() {
        bail!(
            "{} problem(s):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}
