//! The `reconciler` handler: on its schedule, surveys every repository of the
//! function's own ECR registry that `REPOSITORY_TAG_FILTERS` selects, through ECR's API
//! ([`crate::reconcile::survey_ecr_registry`]), with the indexer's and the stitcher's own
//! settings. `RECONCILE_MODE` says what follows:
//! - `dry` (the stack's default): the run reports the work it found (EMF metrics, a
//!   JSON report in the report bucket) and does nothing else: drift shows up without
//!   anything being built behind the team's back;
//! - `enqueue`: the work also goes to the indexer's and the stitcher's queues
//!   ([`crate::reconcile::fan_out`]), which their event source mappings drain;
//! - `off`: the run does nothing.
//!
//! A registry too large for one invocation is surveyed in parts: the survey starts no
//! repository once the deadline is near, and the report bucket keeps a cursor
//! (`reconciler/cursor.json`, the last repository surveyed) from which the next run goes
//! on. Without a report bucket every run starts from the first repository.

use super::function::Function;
use super::handlers::{client_settings, deadline_margin, s3_client, trigger};
use super::outputs::FunctionName;
use super::{HandlerError, Invocation, Repositories};
use crate::catalog::ecr::SdkEcr;
use crate::events::Trigger;
use crate::metrics;
use crate::queue::SqsQueues;
use crate::reconcile::fan_out::{self, EnqueueError};
use crate::reconcile::registry_survey::RegistrySurveyOptions;
use crate::reconcile::{
    survey_ecr_registry, CostModel, EventOrigin, Plan, ReconcileReport, ReconcileSettings,
};
use crate::registry::distribution::RegistryClients;
use crate::registry::{ecr, Repository};
use crate::settings::{self, ProcessEnv};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The prefix of everything the reconciler keeps in the report bucket.
pub const REPORT_PREFIX: &str = "reconciler/";
/// The cursor of a survey that stopped at its deadline.
pub const CURSOR_KEY: &str = "reconciler/cursor.json";
/// Repositories surveyed at once: each makes its own ECR and registry calls, and ECR's
/// API rates are per account and region, shared with everything else.
pub const SURVEY_CONCURRENCY: usize = 4;

/// `RECONCILE_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReconcileMode {
    /// Do nothing.
    Off,
    /// Survey and report.
    Dry,
    /// Survey, report and send the work to the queues.
    Enqueue,
}

impl ReconcileMode {
    /// The mode from the environment (`dry` when unset); another value is an error
    /// naming the variable.
    pub fn from_env() -> Result<Self, HandlerError> {
        Self::from_env_value(&settings::value_or_default(
            &ProcessEnv,
            settings::RECONCILE_MODE,
        ))
    }

    /// The mode `raw` names.
    fn from_env_value(raw: &str) -> Result<Self, HandlerError> {
        let choice = settings::parse_choice(
            settings::RECONCILE_MODE,
            raw,
            &[Self::Off.name(), Self::Dry.name(), Self::Enqueue.name()],
        )
        .map_err(HandlerError::non_retryable)?;
        Ok(match choice {
            "off" => Self::Off,
            "enqueue" => Self::Enqueue,
            _ => Self::Dry,
        })
    }

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Dry => "dry",
            Self::Enqueue => "enqueue",
        }
    }
}

/// What the reconciler returns.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcilerOutput {
    /// Always the reconciler.
    pub function: FunctionName,
    /// The mode it ran in.
    pub mode: ReconcileMode,
    /// The run's report (none when the mode is `off`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ReconcileReport>,
    /// Where the report was stored, `s3://bucket/key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_location: Option<String>,
}

/// Where a survey that stopped at its deadline goes on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Cursor {
    start_after: Option<String>,
}

/// What the `reconciler` function needs.
pub struct Reconciler {
    mode: ReconcileMode,
    settings: ReconcileSettings,
    ecr: Arc<SdkEcr>,
    registry: Arc<RegistryClients>,
    queue: Option<SqsQueues>,
    s3: Option<aws_sdk_s3::Client>,
    report_bucket: Option<String>,
    deadline_margin: Duration,
}

impl Reconciler {
    /// Settings and clients from the environment. The reconciler surveys ECR through its
    /// API, so an OCI layout (`AFTERPUSH_LAYOUT`) is refused: `afterpush reconcile oci:DIR`
    /// converges a layout.
    pub async fn from_env() -> Result<Self, HandlerError> {
        let mode = ReconcileMode::from_env()?;
        let registry = match Repositories::from_env()? {
            Repositories::Registry(clients) => clients,
            Repositories::Layout(dir) => {
                return Err(HandlerError::non_retryable(format!(
                    "the reconciler surveys ECR through its API, not the OCI layout {} \
                     (AFTERPUSH_LAYOUT): run `afterpush reconcile oci:{}` instead",
                    dir.display(),
                    dir.display()
                )))
            }
        };
        let settings = ReconcileSettings::from_env().map_err(HandlerError::non_retryable)?;
        let sdk = crate::aws_clients::load_sdk_config().await;
        let clients = client_settings()?;
        let queue = match mode {
            ReconcileMode::Enqueue => {
                let queue = SqsQueues::from_env(clients.sqs(&sdk));
                for target in [
                    crate::queue::Target::Indexer,
                    crate::queue::Target::Stitcher,
                ] {
                    queue.url(target).map_err(HandlerError::non_retryable)?;
                }
                Some(queue)
            }
            _ => None,
        };
        let report_bucket = Some(settings::value_or_default(
            &ProcessEnv,
            settings::REPORT_BUCKET,
        ))
        .filter(|b| !b.trim().is_empty());
        let s3 = match &report_bucket {
            Some(_) => Some(s3_client(&sdk)?),
            None => None,
        };
        Ok(Self {
            mode,
            settings,
            ecr: Arc::new(SdkEcr::new(clients.ecr(&sdk))),
            registry,
            queue,
            s3,
            report_bucket,
            deadline_margin: deadline_margin()?,
        })
    }

    /// Surveys the registry the scheduled event names (the function's own), reports,
    /// and in `enqueue` mode sends the work to the queues.
    pub async fn handle(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<ReconcilerOutput, HandlerError> {
        let trigger = trigger(payload)?;
        invocation.check_origin(&trigger)?;
        let Trigger::Scheduled(event) = &trigger else {
            metrics::rejected();
            return Err(HandlerError::non_retryable(format!(
                "the reconciler runs on its schedule, not on {} events",
                trigger.kind()
            )));
        };
        if self.mode == ReconcileMode::Off {
            return Ok(ReconcilerOutput {
                function: FunctionName::Reconciler,
                mode: self.mode,
                report: None,
                report_location: None,
            });
        }
        let (Some(account), Some(region)) = (event.account.clone(), event.region.clone()) else {
            metrics::rejected();
            return Err(HandlerError::non_retryable(
                "the scheduled event names no account or region: the reconciler surveys that \
                 account's registry",
            ));
        };
        let started_at = chrono::Utc::now();
        let run_id = event
            .id
            .clone()
            .unwrap_or_else(|| crate::events::synthetic_event_id(&started_at.to_rfc3339()));
        let start_after = self.read_cursor().await;
        let host = ecr::registry_host(&account, &region);
        let registry = self.registry.clone();
        let open_inner = move |name: &str| {
            registry
                .repository(&host, name)
                .map(|r| Arc::new(r) as Arc<dyn Repository>)
        };
        let origin = EventOrigin {
            account: Some(account.clone()),
            region: Some(region.clone()),
        };
        let options = RegistrySurveyOptions {
            start_after: start_after.clone(),
            deadline: invocation.stop(survey_margin(invocation, self.deadline_margin)),
            concurrency: SURVEY_CONCURRENCY,
            progress: None,
        };
        let mut survey = survey_ecr_registry(
            self.ecr.clone(),
            &open_inner,
            &origin,
            &self.settings,
            &options,
        )
        .await
        .map_err(|e| super::handlers::by_retryability(e.is_retryable(), e))?;
        // The surveys move into the plan (they hold every piece of work and its event:
        // 95,000 of them in the benchmark's registry), after the sends that read them.
        let surveys = std::mem::take(&mut survey.surveys);
        let mut send_error = None;
        let enqueued = match (&self.queue, self.mode) {
            (Some(queue), ReconcileMode::Enqueue) => {
                match fan_out::enqueue(queue, &surveys, &self.settings).await {
                    Ok(report) => Some(report),
                    Err(EnqueueError::Queue { error, report }) => {
                        send_error = Some(error);
                        Some(*report)
                    }
                    Err(e) => {
                        send_error = Some(crate::queue::QueueError {
                            message: e.to_string(),
                            retryable: false,
                        });
                        None
                    }
                }
            }
            _ => None,
        };
        let plan = Plan::new(surveys, CostModel::default());
        let report = ReconcileReport::new(
            run_id,
            self.mode.name(),
            started_at,
            start_after,
            &survey,
            &plan,
            enqueued,
        );
        tracing::info!(summary = %report.summary(), "reconciler report");
        metrics::reconcile_run(
            report.work_found as u64,
            report
                .enqueued
                .as_ref()
                .map_or(0, |e| e.total_sent() as u64),
            report.already_done as u64,
            report.failures.len() as u64,
        );
        let report_location = self.store(&report).await?;
        if let Some(e) = send_error {
            return Err(super::handlers::by_retryability(e.retryable, e));
        }
        Ok(ReconcilerOutput {
            function: FunctionName::Reconciler,
            mode: self.mode,
            report: Some(report),
            report_location,
        })
    }

    /// The previous run's cursor; none when there is no bucket, no cursor, or it cannot
    /// be read (then the survey starts from the first repository, which only costs time).
    async fn read_cursor(&self) -> Option<String> {
        let (Some(s3), Some(bucket)) = (&self.s3, &self.report_bucket) else {
            return None;
        };
        let object = match s3.get_object().bucket(bucket).key(CURSOR_KEY).send().await {
            Ok(object) => object,
            Err(e) => {
                let e = aws_sdk_s3::error::DisplayErrorContext(e);
                tracing::info!(error = %e, "no reconcile cursor: surveying from the start");
                return None;
            }
        };
        let bytes = object.body.collect().await.ok()?.into_bytes();
        match crate::strict_json::from_slice::<Cursor>(&bytes) {
            Ok(cursor) => cursor.start_after,
            Err(e) => {
                tracing::warn!(error = %e, key = CURSOR_KEY, "unreadable reconcile cursor: ignored");
                None
            }
        }
    }

    /// Stores the report and the cursor for the next run; returns where the report is.
    async fn store(&self, report: &ReconcileReport) -> Result<Option<String>, HandlerError> {
        let (Some(s3), Some(bucket)) = (&self.s3, &self.report_bucket) else {
            return Ok(None);
        };
        let key = format!(
            "{REPORT_PREFIX}{}/{}.json",
            report.started_at.format("%Y-%m-%d"),
            report.run_id
        );
        let body = serde_json::to_vec_pretty(report).map_err(HandlerError::non_retryable)?;
        put(s3, bucket, &key, body).await?;
        let cursor = Cursor {
            start_after: if report.complete {
                None
            } else {
                report.resume_after.clone()
            },
        };
        let body = serde_json::to_vec(&cursor).map_err(HandlerError::non_retryable)?;
        put(s3, bucket, CURSOR_KEY, body).await?;
        Ok(Some(format!("s3://{bucket}/{key}")))
    }
}

/// How long before the invocation's end the survey starts no more repositories: half of
/// the time left, and at least four deadline margins. The sends and the report come after
/// it, and sending is one SendMessageBatch call per ten pieces of work: 95,000 pieces
/// (the benchmark's registry) are 9,500 calls in sequence.
fn survey_margin(invocation: &Invocation, margin: Duration) -> Duration {
    let left = invocation
        .deadline
        .and_then(|d| d.duration_since(std::time::SystemTime::now()).ok())
        .unwrap_or_default();
    (left / 2).max(margin * 4)
}

async fn put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), HandlerError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .map(drop)
        .map_err(|e| {
            HandlerError::retryable(format!(
                "storing s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            ))
        })
}

impl Function for Reconciler {
    const NAME: FunctionName = FunctionName::Reconciler;
    type Output = ReconcilerOutput;

    fn from_env() -> impl std::future::Future<Output = Result<Self, HandlerError>> {
        Reconciler::from_env()
    }

    fn handle(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> impl std::future::Future<Output = Result<ReconcilerOutput, HandlerError>> {
        Reconciler::handle(self, payload, invocation)
    }

    fn deadline_margin(&self) -> Duration {
        self.deadline_margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_survey_leaves_half_the_time_for_the_sends() {
        let margin = Duration::from_secs(30);
        let in_15_min = Invocation {
            deadline: Some(std::time::SystemTime::now() + Duration::from_secs(900)),
            ..Invocation::default()
        };
        let m = survey_margin(&in_15_min, margin);
        assert!(
            m > Duration::from_secs(440) && m <= Duration::from_secs(450),
            "{m:?}"
        );
        let in_3_min = Invocation {
            deadline: Some(std::time::SystemTime::now() + Duration::from_secs(180)),
            ..Invocation::default()
        };
        assert_eq!(survey_margin(&in_3_min, margin), margin * 4);
        assert_eq!(survey_margin(&Invocation::default(), margin), margin * 4);
    }

    #[test]
    fn the_mode_is_read_by_its_parser() {
        let set = |v: &str| ReconcileMode::from_env_value(v);
        assert_eq!(set("dry").unwrap(), ReconcileMode::Dry);
        assert_eq!(set(" Enqueue ").unwrap(), ReconcileMode::Enqueue);
        assert_eq!(set("off").unwrap(), ReconcileMode::Off);
        assert_eq!(set("enqueue").unwrap(), ReconcileMode::Enqueue);
        let err = set("apply").unwrap_err().to_string();
        assert!(err.contains("RECONCILE_MODE"), "{err}");
    }
}
