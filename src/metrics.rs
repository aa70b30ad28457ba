//! CloudWatch metrics of the three functions, written as Embedded Metric Format (EMF)
//! JSON lines on stdout: in Lambda, CloudWatch Logs turns each line into metric data
//! points, with no `PutMetricData` call and no extra permission.
//!
//! The `metrics` crate is the facade and `metrics_cloudwatch_embedded` the recorder. The
//! Lambda binaries install the recorder once per cold start ([`Emitter::install`]) and
//! flush it after every invocation ([`Emitter::flush`]); the functions' code records
//! through the one-line helpers below. The CLI installs no recorder, so the same calls
//! are no-ops there and its stdout carries only its results.
//!
//! Names and dimensions live here and nowhere else (`template.yaml`'s dashboard and the
//! README list the same names). Namespace [`NAMESPACE`]; every data point has the
//! dimension [`DIM_FUNCTION`] (the Lambda function's name, as in `AWS/Lambda`), plus:
//! - [`DIM_REPOSITORY`] only on the metrics of one image or one repository the function
//!   worked on, i.e. after the event passed `REPOSITORY_TAG_FILTERS` (or, for the
//!   janitor, was selected by the cleanup policy): repository names are the one open
//!   dimension, and pushes to repositories outside the filters never create a series;
//! - [`DIM_REASON`] only on [`names::IMAGES_SKIPPED`], from the fixed set of skip codes
//!   ([`SkipReason::code`](crate::events::SkipReason::code), the indexer's
//!   [`SociOutcome::skip_code`](crate::soci::SociOutcome::skip_code), [`STITCH_IGNORED`]),
//!   never with a repository.

use crate::cleanup::Report;
use crate::soci::build::LayerResult;
use crate::soci::SociOutcome;
use crate::stitch::StitchOutcome;
use ::metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use std::io::Write;

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "afterpush";

/// The function's name (`AWS_LAMBDA_FUNCTION_NAME`, else the binary's name).
pub const DIM_FUNCTION: &str = "FunctionName";
/// The ECR repository an image metric is about.
pub const DIM_REPOSITORY: &str = "Repository";
/// Why an event or image was skipped (a fixed set of codes).
pub const DIM_REASON: &str = "Reason";

/// The skip code of a push the stitcher ignores (not a per-arch tag, or the target tag).
pub const STITCH_IGNORED: &str = "not-an-arch-tag";

/// The metric names.
pub mod names {
    /// Images that got SOCI indexes (indexer; per repository).
    pub const IMAGES_INDEXED: &str = "ImagesIndexed";
    /// Events or images left alone, by [`DIM_REASON`](super::DIM_REASON) (every function).
    pub const IMAGES_SKIPPED: &str = "ImagesSkipped";
    /// Images whose indexing or stitching failed (indexer, stitcher; per repository).
    pub const IMAGES_FAILED: &str = "ImagesFailed";
    /// Layers whose zTOC was built in this invocation (indexer; per repository).
    pub const LAYERS_INDEXED: &str = "LayersIndexed";
    /// Layers whose zTOC came from the zTOC cache (indexer; per repository).
    pub const LAYERS_FROM_CACHE: &str = "LayersFromCache";
    /// Compressed layer bytes read from the registry (indexer; per repository).
    pub const BYTES_READ: &str = "BytesRead";
    /// Bytes of the zTOCs the image's SOCI indexes list (indexer; per repository).
    pub const ZTOC_BYTES: &str = "ZtocBytes";
    /// Wall time of one indexed image (indexer; per repository).
    pub const SECONDS_PER_IMAGE: &str = "SecondsPerImage";
    /// Multi-arch indexes written (stitcher; per repository).
    pub const INDEXES_STITCHED: &str = "IndexesStitched";
    /// Stitches that would have been written (stitcher dry run; per repository).
    pub const INDEXES_STITCHED_DRY_RUN: &str = "IndexesStitchedDryRun";
    /// Target tags that already were the stitched index (stitcher; per repository).
    pub const INDEXES_UNCHANGED: &str = "IndexesUnchanged";
    /// Pushes that left a multi-arch tag waiting for a missing platform (stitcher).
    pub const STITCH_WAITING: &str = "StitchWaiting";
    /// Images the cleanup plan deletes (janitor; per repository; dry runs too).
    pub const IMAGES_PLANNED: &str = "ImagesPlanned";
    /// Images deleted (janitor; per repository).
    pub const IMAGES_DELETED: &str = "ImagesDeleted";
    /// Deletions ECR refused (janitor; per repository).
    pub const DELETES_FAILED: &str = "DeletesFailed";
    /// Bytes of the images deleted (janitor; per repository; not in dry runs).
    pub const BYTES_RECLAIMED: &str = "BytesReclaimed";
    /// BuildKit S3 cache objects deleted (janitor).
    pub const S3_OBJECTS_SWEPT: &str = "S3ObjectsSwept";
    /// Runs that deleted nothing because the images in use could not be listed, or that
    /// the invocation deadline stopped before they were done (janitor).
    pub const RUNS_BLOCKED: &str = "RunsBlocked";
    /// Janitor runs that ended in an error (janitor).
    pub const RUNS_FAILED: &str = "RunsFailed";
    /// Events a function could not act on: not a trigger it knows, or not one it takes
    /// (every function; no repository, since the event may not name one).
    pub const EVENTS_REJECTED: &str = "EventsRejected";
    /// Pieces of work (an index to build, a tag to stitch) a reconcile run found
    /// (reconciler).
    pub const RECONCILE_WORK_FOUND: &str = "ReconcileWorkFound";
    /// Pieces of work a reconcile run sent to the queues (reconciler, `enqueue` mode).
    pub const RECONCILE_ENQUEUED: &str = "ReconcileEnqueued";
    /// Images and per-arch groups a reconcile run found already as the settings want
    /// them (reconciler).
    pub const RECONCILE_ALREADY_DONE: &str = "ReconcileAlreadyDone";
    /// Repositories whose survey failed in a reconcile run (reconciler).
    pub const RECONCILE_REPOSITORIES_FAILED: &str = "ReconcileRepositoriesFailed";
}
use names::*;

/// Every metric name with its unit (for the recorder, the docs and the tests).
pub const METRICS: &[(&str, Unit)] = &[
    (IMAGES_INDEXED, Unit::Count),
    (IMAGES_SKIPPED, Unit::Count),
    (IMAGES_FAILED, Unit::Count),
    (LAYERS_INDEXED, Unit::Count),
    (LAYERS_FROM_CACHE, Unit::Count),
    (BYTES_READ, Unit::Bytes),
    (ZTOC_BYTES, Unit::Bytes),
    (SECONDS_PER_IMAGE, Unit::Seconds),
    (INDEXES_STITCHED, Unit::Count),
    (INDEXES_STITCHED_DRY_RUN, Unit::Count),
    (INDEXES_UNCHANGED, Unit::Count),
    (STITCH_WAITING, Unit::Count),
    (IMAGES_PLANNED, Unit::Count),
    (IMAGES_DELETED, Unit::Count),
    (DELETES_FAILED, Unit::Count),
    (BYTES_RECLAIMED, Unit::Bytes),
    (S3_OBJECTS_SWEPT, Unit::Count),
    (RUNS_BLOCKED, Unit::Count),
    (RUNS_FAILED, Unit::Count),
    (EVENTS_REJECTED, Unit::Count),
    (RECONCILE_WORK_FOUND, Unit::Count),
    (RECONCILE_ENQUEUED, Unit::Count),
    (RECONCILE_ALREADY_DONE, Unit::Count),
    (RECONCILE_REPOSITORIES_FAILED, Unit::Count),
];

fn per_repository(name: &'static str, repository: &str, value: u64) {
    counter!(name, DIM_REPOSITORY => repository.to_string()).increment(value);
}

/// An event or image skipped, with its code (from a fixed set: never free text).
pub fn skipped(reason_code: &str) {
    counter!(IMAGES_SKIPPED, DIM_REASON => reason_code.to_string()).increment(1);
}

/// Indexing or stitching an image of `repository` failed: the repository could not be
/// opened, the work failed, or its result could not be committed.
pub fn failed(repository: &str) {
    per_repository(IMAGES_FAILED, repository, 1);
}

/// An event the function could not act on.
pub fn rejected() {
    counter!(EVENTS_REJECTED).increment(1);
}

/// A janitor run that ended in an error.
pub fn run_failed() {
    counter!(RUNS_FAILED).increment(1);
}

/// What the indexer did with an image of `repository`.
pub fn soci_outcome(repository: &str, outcome: &SociOutcome) {
    if let Some(code) = &outcome.skip_code {
        return skipped(code);
    }
    let layers = outcome.platforms.iter().flat_map(|p| &p.layers);
    let (mut built, mut cached, mut ztoc_bytes) = (0, 0, 0);
    for layer in layers {
        if let LayerResult::Indexed {
            entry, from_cache, ..
        } = &layer.result
        {
            if *from_cache {
                cached += 1;
            } else {
                built += 1;
            }
            ztoc_bytes += entry.ztoc_size;
        }
    }
    per_repository(IMAGES_INDEXED, repository, 1);
    per_repository(LAYERS_INDEXED, repository, built);
    per_repository(LAYERS_FROM_CACHE, repository, cached);
    per_repository(BYTES_READ, repository, outcome.bytes_read);
    per_repository(ZTOC_BYTES, repository, ztoc_bytes);
    histogram!(SECONDS_PER_IMAGE, DIM_REPOSITORY => repository.to_string()).record(outcome.seconds);
}

/// What the stitcher did after a push to `repository`.
pub fn stitch_outcome(repository: &str, outcome: &StitchOutcome) {
    let name = match outcome {
        StitchOutcome::Ignored { .. } => return skipped(STITCH_IGNORED),
        StitchOutcome::Incomplete { .. } => STITCH_WAITING,
        StitchOutcome::Unchanged { .. } => INDEXES_UNCHANGED,
        StitchOutcome::Written { .. } => INDEXES_STITCHED,
        StitchOutcome::WouldWrite { .. } => INDEXES_STITCHED_DRY_RUN,
    };
    per_repository(name, repository, 1);
}

/// What a janitor run planned, deleted and swept.
pub fn cleanup_report(report: &Report) {
    for repo in &report.repositories {
        let name = repo.repository.as_str();
        per_repository(IMAGES_PLANNED, name, repo.planned.len() as u64);
        per_repository(IMAGES_DELETED, name, repo.deleted.len() as u64);
        per_repository(DELETES_FAILED, name, repo.failed.len() as u64);
        if !repo.dry_run {
            per_repository(BYTES_RECLAIMED, name, repo.bytes_reclaimed);
        }
    }
    let swept = report.s3_caches.iter().map(|c| c.deleted.len() as u64);
    counter!(S3_OBJECTS_SWEPT).increment(swept.sum());
    if report.blocked.is_some() || report.stopped_by_deadline {
        counter!(RUNS_BLOCKED).increment(1);
    }
}

/// One reconcile run: the work it found, what it sent to the queues, the images and
/// groups already as the settings want them, and the repositories whose survey failed.
pub fn reconcile_run(found: u64, enqueued: u64, already_done: u64, failed_repositories: u64) {
    counter!(RECONCILE_WORK_FOUND).increment(found);
    counter!(RECONCILE_ENQUEUED).increment(enqueued);
    counter!(RECONCILE_ALREADY_DONE).increment(already_done);
    counter!(RECONCILE_REPOSITORIES_FAILED).increment(failed_repositories);
}

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("metrics recorder: {0}")]
pub struct InstallError(String);

/// The installed EMF recorder of a Lambda function.
pub struct Emitter {
    collector: &'static metrics_cloudwatch_embedded::Collector,
}

impl Emitter {
    /// Installs the process-wide recorder, with [`DIM_FUNCTION`] from
    /// `AWS_LAMBDA_FUNCTION_NAME` (or `binary` outside Lambda). Once per process.
    pub fn install(binary: &str) -> Result<Self, InstallError> {
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| binary.to_string());
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            .with_dimension(DIM_FUNCTION, function)
            .init()
            .map_err(|e| InstallError(e.to_string()))?;
        for (name, unit) in METRICS {
            if *name == SECONDS_PER_IMAGE {
                describe_histogram!(*name, *unit, "");
            } else {
                describe_counter!(*name, *unit, "");
            }
        }
        Ok(Self { collector })
    }

    /// Writes what was recorded since the last flush as EMF lines to stdout, in one
    /// write so that no log line lands inside a metric line. A failed write is logged:
    /// metrics never fail an invocation.
    pub fn flush(&self) {
        if let Err(e) = self.flush_to(std::io::stdout().lock()) {
            tracing::warn!(error = %e, "could not write the metrics");
        }
    }

    /// What [`Emitter::flush`] writes, to `out` (one `write_all`).
    pub fn flush_to(&self, mut out: impl Write) -> std::io::Result<()> {
        let mut lines = Vec::new();
        self.collector.flush(&mut lines)?;
        out.write_all(&lines)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Sha256Digest;
    use crate::soci::build::LayerOutcome;
    use crate::soci::index::ZtocEntry;
    use crate::soci::PlatformReport;
    use serde_json::Value;
    use std::sync::{Mutex, MutexGuard, OnceLock};

    /// The recorder is process-wide and a flush takes every value recorded so far: the
    /// tests take turns, and each uses repositories of its own.
    fn recorder() -> (MutexGuard<'static, ()>, &'static Emitter) {
        static TURN: Mutex<()> = Mutex::new(());
        static EMITTER: OnceLock<Emitter> = OnceLock::new();
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        (
            turn,
            EMITTER.get_or_init(|| Emitter::install("unit-test").unwrap()),
        )
    }

    fn flushed(emitter: &Emitter) -> Vec<Value> {
        let mut out = Vec::new();
        emitter.flush_to(&mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `(metric, value, unit)` of the documents whose dimensions are exactly
    /// `FunctionName` plus `dims`.
    fn points(docs: &[Value], dims: &[(&str, &str)]) -> Vec<(String, Value, String)> {
        let mut wanted: Vec<(String, String)> = dims
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([(DIM_FUNCTION.to_string(), "unit-test".to_string())])
            .collect();
        wanted.sort();
        let mut out = vec![];
        for doc in docs {
            let directive = &doc["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], NAMESPACE, "{doc}");
            let mut have: Vec<(String, String)> = directive["Dimensions"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .map(|n| (n.clone(), doc[&n].as_str().unwrap().to_string()))
                .collect();
            have.sort();
            if have != wanted {
                continue;
            }
            for m in directive["Metrics"].as_array().unwrap() {
                let name = m["Name"].as_str().unwrap().to_string();
                let unit = m["Unit"].as_str().unwrap_or("").to_string();
                out.push((name.clone(), doc[&name].clone(), unit));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn layer(ztoc_size: u64, from_cache: bool) -> LayerOutcome {
        let digest = Sha256Digest::of(&ztoc_size.to_be_bytes());
        LayerOutcome {
            layer: digest.clone(),
            media_type: crate::oci::media::OCI_LAYER_GZIP.to_string(),
            size: 1000,
            result: LayerResult::Indexed {
                entry: ZtocEntry {
                    ztoc_digest: digest.clone(),
                    ztoc_size,
                    layer_digest: digest,
                    layer_media_type: crate::oci::media::OCI_LAYER_GZIP.to_string(),
                    span_size: 1 << 22,
                    disable_xattrs: false,
                },
                from_cache,
                bytes_read: if from_cache { 0 } else { 1000 },
                files: 1,
            },
        }
    }

    fn outcome(layers: Vec<LayerOutcome>, skip_code: Option<&'static str>) -> SociOutcome {
        SociOutcome {
            repository: "r".into(),
            source: "sha256:00".into(),
            skipped: skip_code.map(|c| format!("because {c}")),
            skip_code: skip_code.map(Into::into),
            output: None,
            tag: None,
            platforms: vec![PlatformReport {
                platform: "linux/amd64".into(),
                manifest: "sha256:00".into(),
                rewritten_manifest: None,
                soci_index: None,
                soci_index_size: None,
                ztocs: layers.len(),
                ztocs_from_cache: 0,
                layers_skipped: 0,
                bytes_read: 2000,
                layers,
            }],
            bytes_read: 2000,
            seconds: 1.5,
        }
    }

    fn point(name: &str, value: Value, unit: &str) -> (String, Value, String) {
        (name.to_string(), value, unit.to_string())
    }

    #[test]
    fn an_indexed_image_reports_its_layers_bytes_and_time_per_repository() {
        let (_turn, emitter) = recorder();
        let layers = vec![layer(100, false), layer(200, false), layer(300, true)];
        soci_outcome("unit/indexed", &outcome(layers, None));
        let docs = flushed(emitter);
        assert_eq!(
            points(&docs, &[(DIM_REPOSITORY, "unit/indexed")]),
            vec![
                point(BYTES_READ, 2000.into(), "Bytes"),
                point(IMAGES_INDEXED, 1.into(), "Count"),
                point(LAYERS_FROM_CACHE, 1.into(), "Count"),
                point(LAYERS_INDEXED, 2.into(), "Count"),
                point(SECONDS_PER_IMAGE, serde_json::json!([1.5]), "Seconds"),
                point(ZTOC_BYTES, 600.into(), "Bytes"),
            ],
            "{docs:?}"
        );
        // A flush takes the values: the next one has nothing of this image.
        let docs = flushed(emitter);
        assert!(points(&docs, &[(DIM_REPOSITORY, "unit/indexed")]).is_empty());
    }

    #[test]
    fn skips_are_counted_by_code_and_never_name_the_repository() {
        let (_turn, emitter) = recorder();
        soci_outcome("unit/skipped", &outcome(vec![], Some("already-indexed")));
        let ignored = StitchOutcome::Ignored {
            tag: "latest".into(),
            reason: "not per-arch".into(),
        };
        stitch_outcome("unit/skipped", &ignored);
        let docs = flushed(emitter);
        assert!(points(&docs, &[(DIM_REPOSITORY, "unit/skipped")]).is_empty());
        for code in ["already-indexed", STITCH_IGNORED] {
            assert_eq!(
                points(&docs, &[(DIM_REASON, code)]),
                vec![point(IMAGES_SKIPPED, 1.into(), "Count")],
                "{docs:?}"
            );
        }
    }

    #[test]
    fn stitch_outcomes_and_failures_count_per_repository() {
        let (_turn, emitter) = recorder();
        let waiting = StitchOutcome::Incomplete {
            target: "1.2".into(),
            present: vec!["linux/amd64".into()],
            missing: vec!["linux/arm64 (1.2-arm64)".into()],
        };
        stitch_outcome("unit/stitch", &waiting);
        stitch_outcome("unit/stitch", &waiting);
        failed("unit/stitch");
        let docs = flushed(emitter);
        assert_eq!(
            points(&docs, &[(DIM_REPOSITORY, "unit/stitch")]),
            vec![
                point(IMAGES_FAILED, 1.into(), "Count"),
                point(STITCH_WAITING, 2.into(), "Count"),
            ],
            "{docs:?}"
        );
    }

    #[test]
    fn a_janitor_run_the_deadline_stopped_counts_as_blocked() {
        let (_turn, emitter) = recorder();
        let report: Report = serde_json::from_value(serde_json::json!({
            "run_id": "20261207T000000Z-00000000", "trigger": "sweep", "dry_run": false,
            "now": "2026-12-07T00:00:00Z", "started_at": "2026-12-07T00:00:00Z",
            "finished_at": "2026-12-07T00:00:01Z", "in_use_references": 0,
            "repositories": [], "s3_caches": [], "errors": ["ECR DescribeRepositories: deadline"],
            "planned_deletions": 0, "deleted": 0, "failed": 0, "bytes_reclaimed": 0,
            "stopped_by_max_deletions": false, "stopped_by_deadline": true, "s3_caches_left": []
        }))
        .unwrap();
        cleanup_report(&report);
        let docs = flushed(emitter);
        assert!(
            points(&docs, &[]).contains(&point(RUNS_BLOCKED, 1.into(), "Count")),
            "{docs:?}"
        );
    }

    #[test]
    fn a_reconcile_run_reports_found_enqueued_done_and_failed() {
        let (_turn, emitter) = recorder();
        reconcile_run(14, 13, 35, 1);
        let docs = flushed(emitter);
        let got = points(&docs, &[]);
        for expected in [
            point(RECONCILE_WORK_FOUND, 14.into(), "Count"),
            point(RECONCILE_ENQUEUED, 13.into(), "Count"),
            point(RECONCILE_ALREADY_DONE, 35.into(), "Count"),
            point(RECONCILE_REPOSITORIES_FAILED, 1.into(), "Count"),
        ] {
            assert!(got.contains(&expected), "{expected:?} not in {docs:?}");
        }
    }

    #[test]
    fn metric_names_are_unique() {
        let names: std::collections::BTreeSet<&str> = METRICS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), METRICS.len());
    }
}
