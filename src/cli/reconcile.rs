//! `afterpush reconcile REPOSITORY...`: survey repositories for the SOCI indexes and
//! stitched tags the current settings call for, print the plan (the default, a dry
//! run), and with `--apply` do the work in-process, or with `--enqueue` send it to the
//! functions' queues. `afterpush reconcile --redrive` lists the functions' dead-letter
//! queue, and with `--yes` sends its messages back to the queues they came from.

use crate::format::printable;
use crate::queue::{self, redrive, SqsDeadLetters, SqsQueues};
use crate::reconcile::{
    self, apply::ItemStatus, CostModel, EventOrigin, Plan, ReconcileSettings, Survey,
    SurveyProgress, WorkKind,
};
use crate::registry::open::{open_repository, OpenSettings};
use crate::registry::{ImageRef, Location, Repository};
use crate::soci::{self, NoZtocCache, ProgressEvent, S3ZtocCache, ZtocCache};
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::sync::Arc;

/// `afterpush reconcile`: the repositories, and what to do with the plan.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The repositories: `oci:DIR`, `oci-archive:FILE`, `docker://HOST/REPO` or
    /// `HOST/REPO` (a tag in it is ignored). Settings come from the functions'
    /// variables (SPAN_SIZE, MIN_LAYER_SIZE, REPOSITORY_TAG_FILTERS, ...).
    #[arg(required_unless_present_any = ["redrive", "all_repositories"])]
    pub repositories: Vec<String>,
    /// Survey every repository of this ECR registry
    /// (`<account>.dkr.ecr.<region>.amazonaws.com`) that REPOSITORY_TAG_FILTERS can
    /// select, through ECR's API (DescribeRepositories, DescribeImages, BatchGetImage;
    /// AWS credentials and AWS_ENDPOINT_URL as for the AWS CLI), image configs through
    /// the registry (AFTERPUSH_REGISTRY_*). Prints the plan, or with --enqueue sends the
    /// work to the functions' queues; no --apply.
    #[arg(long, value_name = "REGISTRY", conflicts_with_all = ["repositories", "apply", "repository_name", "redrive"])]
    pub all_repositories: Option<String>,
    /// Do the work: build the SOCI indexes and write the stitched tags the plan lists.
    #[arg(long, conflicts_with = "dry_run")]
    pub apply: bool,
    /// Print the plan and change nothing (the default).
    #[arg(long)]
    pub dry_run: bool,
    /// Send the work to the functions' queues (INDEXER_QUEUE_URL, STITCHER_QUEUE_URL)
    /// instead of doing it here; registries only (a layout is reconciled with --apply).
    #[arg(long, conflicts_with_all = ["apply", "dry_run"])]
    pub enqueue: bool,
    /// List the messages of the functions' dead-letter queue (DEAD_LETTER_QUEUE_URL);
    /// with --yes, send them back to the queues they came from.
    #[arg(long, conflicts_with_all = ["repositories", "apply", "dry_run", "enqueue", "repository_name"])]
    pub redrive: bool,
    /// With --redrive: move the messages (after a listing without it).
    #[arg(long)]
    pub yes: bool,
    /// Print the plan (and what --apply did or --enqueue sent), or the dead letters, as JSON.
    #[arg(long)]
    pub json: bool,
    /// The repository name a layout or archive stands for, in events and
    /// REPOSITORY_TAG_FILTERS (default: its file name). Only with one repository.
    #[arg(long)]
    pub repository_name: Option<String>,
    /// The indexer's memory in MiB, for the cost estimate (the template's IndexerMemorySize).
    #[arg(long, default_value_t = 2048)]
    pub memory: u64,
    /// Indexing throughput for the estimate, bytes per second (`224MB`, `200MiB` or bytes);
    /// default: the README's measured 224.1 MB/s.
    #[arg(long, value_parser = parse_throughput)]
    pub throughput: Option<u64>,
    /// USD per GB-second of Lambda compute, for the estimate (default: arm64 list price).
    #[arg(long)]
    pub usd_per_gb_second: Option<f64>,
}

fn parse_throughput(s: &str) -> Result<u64, String> {
    match crate::settings::parse_size("--throughput", s) {
        Ok(0) => Err("a throughput of 0 bytes per second estimates nothing".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.problem),
    }
}

struct Target {
    repo: Box<dyn Repository>,
    name: String,
    origin: EventOrigin,
}

async fn open(reference: &str, name: Option<&str>) -> anyhow::Result<Target> {
    let r: ImageRef = reference
        .parse()
        .with_context(|| format!("repository reference {reference:?}"))?;
    let (default_name, host) = match &r.location {
        Location::Layout(path) | Location::Archive(path) => (
            path.file_stem()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "layout".into()),
            None,
        ),
        Location::Registry { host, repository } => {
            if name.is_some() {
                bail!("--repository-name is for layouts and archives; {reference} names its repository");
            }
            (repository.clone(), Some(host.as_str()))
        }
    };
    // Never created: a reconcile of a repository that is not there is a mistake.
    let repo = open_repository(&r, &OpenSettings::from_env()?)
        .await
        .with_context(|| format!("opening {reference}"))?;
    Ok(Target {
        repo,
        name: name.map(str::to_string).unwrap_or(default_name),
        origin: EventOrigin::of_host(host),
    })
}

/// A bar over the survey's steps; hidden when stderr is not a terminal.
fn survey_progress(name: &str) -> (ProgressBar, SurveyProgress) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:.bold} surveying [{bar:30}] {pos}/{len} {wide_msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(printable(name).to_string());
    let b = bar.clone();
    let progress: SurveyProgress = Arc::new(move |step| match step {
        reconcile::survey::SurveyStep::Listed { steps } => b.set_length(steps),
        reconcile::survey::SurveyStep::Done { what } => {
            b.set_message(printable(&what).to_string());
            b.inc(1);
        }
    });
    (bar, progress)
}

/// A bar over the layer bytes the indexer reads; hidden when stderr is not a terminal.
fn bytes_progress(total: u64) -> (ProgressBar, soci::Progress) {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("indexing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let b = bar.clone();
    let progress: soci::Progress = Arc::new(move |event| {
        if let ProgressEvent::LayerBytes { bytes, .. } = event {
            b.inc(bytes);
        }
    });
    (bar, progress)
}

async fn ztoc_cache(settings: &ReconcileSettings) -> anyhow::Result<Box<dyn ZtocCache>> {
    Ok(match &settings.soci.ztoc_cache_bucket {
        Some(bucket) => {
            let sdk = crate::aws_clients::load_sdk_config().await;
            let s3 = crate::aws_clients::ClientSettings::from_env()?.s3(&sdk, true);
            Box::new(S3ZtocCache::new(
                s3,
                bucket,
                &settings.soci.ztoc_cache_prefix,
            ))
        }
        None => Box::new(NoZtocCache),
    })
}

/// Runs `afterpush reconcile`.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    if args.redrive {
        return run_redrive(args.yes, args.json).await;
    }
    // Checked here: clap counts a flag left at its default as present for `requires`.
    if args.yes {
        bail!("--yes confirms --redrive; reconcile --apply or --enqueue need no confirmation");
    }
    if args.enqueue {
        refuse_layouts(&args.repositories)?;
    }
    if args.repository_name.is_some() && args.repositories.len() > 1 {
        bail!(
            "--repository-name names one repository; {} were given",
            args.repositories.len()
        );
    }
    let settings = ReconcileSettings::from_env()?;
    let mut model = CostModel {
        memory_mib: args.memory,
        ..CostModel::default()
    };
    if let Some(t) = args.throughput {
        model.throughput = t as f64;
        model.throughput_source = "--throughput".into();
    }
    if let Some(p) = args.usd_per_gb_second {
        model.usd_per_gb_second = p;
    }
    if let Some(host) = &args.all_repositories {
        return survey_all_repositories(host, &settings, model, args.enqueue, args.json).await;
    }
    let mut targets = vec![];
    let mut surveys = vec![];
    for reference in &args.repositories {
        let target = open(reference, args.repository_name.as_deref()).await?;
        let (bar, progress) = survey_progress(&target.name);
        let survey = reconcile::survey(
            target.repo.as_ref(),
            &target.name,
            &target.origin,
            &settings,
            Some(progress),
        )
        .await
        .with_context(|| format!("surveying {reference}"));
        bar.finish_and_clear();
        surveys.push(survey?);
        targets.push(target);
    }
    let plan = Plan::new(surveys, model);
    if args.enqueue {
        return run_enqueue(&plan, &settings, args.json).await;
    }
    if !args.apply {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", render_plan(&plan));
            if !plan.is_empty() {
                eprintln!("dry run: nothing was changed; --apply does the work");
            }
        }
        return Ok(());
    }
    let cache = ztoc_cache(&settings).await?;
    let mut reports = vec![];
    for (target, repo_plan) in targets.iter().zip(&plan.repositories) {
        let survey: &Survey = &repo_plan.survey;
        let (bar, progress) = bytes_progress(repo_plan.totals.bytes);
        let b = bar.clone();
        let json = args.json;
        let on_item = move |r: &reconcile::ItemResult| {
            if !json {
                b.suspend(|| {
                    eprintln!(
                        "{:<6} {}:{} {:?}: {}",
                        match r.kind {
                            WorkKind::Index => "index",
                            WorkKind::Stitch => "stitch",
                        },
                        printable(&survey.repository),
                        printable(&r.tag),
                        r.status,
                        printable(&r.detail)
                    )
                });
            }
        };
        let report = reconcile::apply(
            target.repo.as_ref(),
            survey,
            &settings,
            cache.as_ref(),
            Some(progress),
            Some(&on_item),
        )
        .await;
        bar.finish_and_clear();
        if report.count(ItemStatus::Failed) > 0 {
            super::discard_after_failure(target.repo.as_ref()).await;
        }
        reports.push(report);
    }
    let failed: usize = reports.iter().map(|r| r.count(ItemStatus::Failed)).sum();
    let done: usize = reports.iter().map(|r| r.count(ItemStatus::Done)).sum();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "plan": plan, "applied": reports }))?
        );
    } else {
        print!("{}", render_plan(&plan));
        println!("applied: {done} done, {failed} failed");
    }
    if failed > 0 {
        bail!(
            "{failed} piece(s) of work failed (listed above); run reconcile again to finish them"
        );
    }
    Ok(())
}

/// `--all-repositories`: the survey of a whole ECR registry, its plan, the repositories
/// that failed (named; the command fails after printing the rest) and the ECR calls;
/// with `enqueue`, the work of the repositories surveyed is sent to the queues.
async fn survey_all_repositories(
    host: &str,
    settings: &ReconcileSettings,
    model: CostModel,
    enqueue: bool,
    json: bool,
) -> anyhow::Result<()> {
    let (bar, progress) = survey_progress(host);
    let options = reconcile::registry_survey::RegistrySurveyOptions {
        progress: Some(progress),
        ..Default::default()
    };
    let out = reconcile::registry_survey::survey_ecr_registry_host(
        host,
        &OpenSettings::from_env()?.registry,
        settings,
        &options,
    )
    .await
    .with_context(|| format!("surveying the repositories of {host}"));
    bar.finish_and_clear();
    let out = out?;
    let failures = out.failures.clone();
    let calls = out.calls;
    let plan = Plan::new(out.surveys, model);
    if enqueue {
        // The work of the repositories surveyed goes out; the failed ones are named after.
        run_enqueue(&plan, settings, json).await?;
        for f in &failures {
            let (repository, error) = (printable(&f.repository), printable(&f.error));
            eprintln!("{repository}: survey failed, nothing sent for it: {error}");
        }
    } else if json {
        let all = serde_json::json!({ "plan": plan, "failures": failures, "calls": calls });
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", render_plan(&plan));
        for f in &failures {
            println!(
                "{}: survey failed: {}",
                printable(&f.repository),
                printable(&f.error)
            );
        }
    }
    eprintln!(
        "{} of {} repositories surveyed: ECR calls: {} DescribeRepositories, {} DescribeImages, {} BatchGetImage for {} reads",
        plan.repositories.len(),
        out.listed,
        calls.describe_repositories,
        calls.describe_images,
        calls.batch_get_image,
        calls.reads
    );
    if !failures.is_empty() {
        let names: Vec<&str> = failures.iter().map(|f| f.repository.as_str()).collect();
        bail!("the survey of {} failed (listed above)", names.join(", "));
    }
    Ok(())
}

/// `--enqueue` is for registries: the functions read the images from ECR, and a layout
/// or archive on this machine is out of their reach.
fn refuse_layouts(references: &[String]) -> anyhow::Result<()> {
    for reference in references {
        let r: ImageRef = reference
            .parse()
            .with_context(|| format!("repository reference {reference:?}"))?;
        if matches!(r.location, Location::Layout(_) | Location::Archive(_)) {
            bail!(
                "--enqueue sends work to the functions, which cannot read {reference}: a layout \
                 or archive is reconciled in-process with --apply"
            );
        }
    }
    Ok(())
}

/// An SQS client with the shared retries and timeouts (`AWS_ENDPOINT_URL` honoured).
async fn sqs_client() -> anyhow::Result<aws_sdk_sqs::Client> {
    let sdk = crate::aws_clients::load_sdk_config().await;
    Ok(crate::aws_clients::ClientSettings::from_env()?.sqs(&sdk))
}

/// `--enqueue`: the plan's work sent to the functions' queues.
async fn run_enqueue(plan: &Plan, settings: &ReconcileSettings, json: bool) -> anyhow::Result<()> {
    let queues = SqsQueues::from_env(sqs_client().await?);
    let surveys: Vec<Survey> = plan.repositories.iter().map(|r| r.survey.clone()).collect();
    // Every queue the work needs is named before anything is sent: a missing variable
    // found halfway would leave the work half sent.
    for survey in &surveys {
        for work in &survey.work {
            queues.url(reconcile::fan_out::target_of(work.kind))?;
        }
    }
    let total: usize = surveys.iter().map(|s| s.work.len()).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("enqueueing [{bar:30}] {pos}/{len} messages")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let b = bar.clone();
    let progress = move |n: usize| b.set_position(n as u64);
    let outcome =
        reconcile::fan_out::enqueue_with_progress(&queues, &surveys, settings, Some(&progress))
            .await;
    bar.finish_and_clear();
    let (report, error) = match outcome {
        Ok(report) => (report, None),
        Err(reconcile::EnqueueError::Queue { error, report }) => (*report, Some(error)),
        Err(e) => return Err(e.into()),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "plan": plan, "enqueued": report }))?
        );
    } else {
        print!("{}", render_plan(plan));
        print!("{}", render_enqueued(&report, &queues));
    }
    if let Some(error) = error {
        bail!(
            "{error}; run reconcile --enqueue again to send the rest (within five minutes the \
             queues drop what they already have; after that the functions skip work done)"
        );
    }
    if !report.failed.is_empty() {
        bail!(
            "{} not sent (listed above); run reconcile --enqueue again to send them",
            crate::format::count(report.failed.len() as u64, "message was", "messages were")
        );
    }
    Ok(())
}

/// What `--enqueue` sent, per queue, and every message it could not send.
pub fn render_enqueued(report: &reconcile::EnqueueReport, queues: &dyn queue::WorkQueue) -> String {
    let mut out = String::new();
    for failed in &report.failed {
        let _ = writeln!(
            out,
            "not sent: {} {}:{}: {}",
            failed.target.name(),
            printable(&failed.repository),
            printable(&failed.tag),
            printable(&failed.reason)
        );
    }
    let mut sent: Vec<String> = report
        .sent
        .iter()
        .map(|(target, n)| format!("{n} to {} ({})", target.name(), queues.queue_of(*target)))
        .collect();
    if sent.is_empty() {
        sent.push("nothing".into());
    }
    let after: usize = report.repositories.iter().map(|r| r.after_stitch).sum();
    let _ = writeln!(
        out,
        "enqueued: {} in {}; {} not sent",
        sent.join(", "),
        crate::format::count(
            report.batch_calls,
            "SendMessageBatch call",
            "SendMessageBatch calls"
        ),
        report.failed.len()
    );
    if after > 0 {
        let _ = writeln!(
            out,
            "the indexing after {} starts with the stitcher's push of the index",
            crate::format::count(after as u64, "stitch", "stitches")
        );
    }
    out
}

/// `--redrive`: the dead-letter queue listed, and with `apply` moved back.
async fn run_redrive(apply: bool, json: bool) -> anyhow::Result<()> {
    let client = sqs_client().await?;
    let dead = SqsDeadLetters::from_env(client.clone())?;
    let queues = SqsQueues::from_env(client);
    let (mut report, error) = match redrive::redrive(&dead, &queues, apply).await {
        Ok(report) => (report, None),
        Err(e) => (*e.report, Some(e.error)),
    };
    // A listing hid what it showed; visible again, the messages can be moved at once
    // (and the ones a move left behind can be looked at again).
    let mut hidden = 0;
    for m in &report.messages {
        if !matches!(m.outcome, redrive::Outcome::Moved { .. }) {
            if let Err(e) = dead.release(&m.receipt_handle).await {
                hidden += 1;
                eprintln!("message {} stays hidden: {e}", printable(&m.message_id));
            }
        }
    }
    if hidden == 0 {
        report.visibility_seconds = 0;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_redrive(&report));
    }
    if let Some(error) = error {
        bail!("{error}");
    }
    if report.left() > 0 {
        bail!(
            "{} left in {} (listed above)",
            crate::format::count(report.left() as u64, "message", "messages"),
            report.dead_letter_queue
        );
    }
    Ok(())
}

/// One line per dead letter, then what was done.
pub fn render_redrive(report: &redrive::RedriveReport) -> String {
    let mut out = String::new();
    for m in &report.messages {
        let outcome = match &m.outcome {
            redrive::Outcome::Listed => String::new(),
            redrive::Outcome::Moved { queue, .. } => format!(": sent back to {queue}"),
            redrive::Outcome::Left { reason } => format!(": left: {}", printable(reason)),
        };
        let _ = writeln!(
            out,
            "{:<8} {} (group {}, received {}x, message {}){outcome}",
            printable(m.target.as_deref().unwrap_or("?")),
            printable(&m.summary),
            printable(m.group_id.as_deref().unwrap_or("none")),
            m.receive_count,
            printable(&m.message_id),
        );
    }
    let queue = &report.dead_letter_queue;
    if report.messages.is_empty() {
        let _ = writeln!(out, "no messages in {queue}");
        return out;
    }
    if report.applied {
        let _ = writeln!(
            out,
            "moved {} back, {} left in {queue}",
            report.moved(),
            report.left()
        );
    } else {
        let _ = write!(
            out,
            "{} in {queue}; --redrive --yes sends them back to their queues",
            crate::format::count(report.messages.len() as u64, "message", "messages"),
        );
        if report.visibility_seconds > 0 {
            let _ = write!(
                out,
                " (listed ones are hidden for {} s)",
                report.visibility_seconds
            );
        }
        out.push('\n');
    }
    if report.stopped == redrive::Stop::RoundCap {
        let _ = writeln!(
            out,
            "stopped after {} receives: more messages may be left; run again",
            report.rounds
        );
    }
    out
}

/// The work, one line each, then the table per repository and in total, then the
/// assumptions of the estimate.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    for r in &plan.repositories {
        for work in &r.survey.work {
            work_line(&mut out, &r.survey.repository, work, "");
            if let Some(then) = &work.then {
                work_line(&mut out, &r.survey.repository, then, "  then ");
            }
        }
        for problem in &r.survey.problems {
            let _ = writeln!(
                out,
                "{}: problem: {}",
                printable(&r.survey.repository),
                printable(problem)
            );
        }
    }
    if plan.is_empty() {
        out.push_str("nothing to do\n");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<24} {:>6} {:>7} {:>8} {:>7} {:>11} {:>9} {:>10}  already done",
        "repository", "tags", "images", "stitches", "layers", "bytes", "Lambda-s", "cost USD"
    );
    for r in &plan.repositories {
        let s = &r.survey;
        let mut done = format!(
            "{} indexed, {} nothing to index, {} stitched",
            s.indexed, s.nothing_to_index, s.stitched
        );
        if !s.waiting.is_empty() {
            let _ = write!(done, ", {} waiting for platforms", s.waiting.len());
        }
        table_row(&mut out, &s.repository, Some(s.tags), &r.totals, &done);
    }
    table_row(&mut out, "total", None, &plan.total, "");
    let m = &plan.cost_model;
    let _ = writeln!(
        out,
        "\nestimate at {:.1} MB/s ({}), {} MiB, {} USD per GB-second, {} USD per million requests; \
         layer bytes counted per image, as without a zTOC cache",
        m.throughput / 1e6,
        m.throughput_source,
        m.memory_mib,
        m.usd_per_gb_second,
        m.usd_per_million_requests
    );
    out
}

fn work_line(out: &mut String, repository: &str, work: &reconcile::Work, prefix: &str) {
    let (what, size) = match work.kind {
        WorkKind::Index => (
            "index ",
            format!(
                " ({}, {})",
                crate::format::count(work.layers as u64, "layer", "layers"),
                crate::format::bytes(work.bytes)
            ),
        ),
        WorkKind::Stitch => ("stitch", String::new()),
    };
    let _ = writeln!(
        out,
        "{prefix}{what} {}:{}{size}: {}",
        printable(repository),
        printable(&work.tag),
        printable(&work.reason)
    );
}

fn table_row(out: &mut String, name: &str, tags: Option<usize>, t: &reconcile::Totals, done: &str) {
    let _ = writeln!(
        out,
        "{:<24} {:>6} {:>7} {:>8} {:>7} {:>11} {:>9.2} {:>10.6}  {done}",
        printable(name),
        tags.map(|n| n.to_string()).unwrap_or_default(),
        t.images,
        t.stitches,
        t.layers,
        crate::format::bytes(t.bytes),
        t.lambda_seconds,
        t.cost_usd,
    );
}
