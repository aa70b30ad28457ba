//! The cache janitor's side of a sweep that fans out per repository
//! ([`crate::cleanup::fan_out`]): when it is on (`JANITOR_FAN_OUT`, `JANITOR_QUEUE_URL`),
//! what the schedule's invocation and each `Janitor Repository Sweep` invocation do,
//! and what they return.
//!
//! Both keep the run's objects in the report bucket: without `REPORT_BUCKET` there is
//! no manifest to check a message against and nowhere to gather the parts, so a
//! fan-out is refused at the cold start and a per-repository event is refused when it
//! comes (the janitor has no local report directory to use instead).

use super::handlers::by_retryability;
use super::janitor_settings::JanitorSettings;
use super::outputs::{FanOutOutput, FunctionName, JanitorOutput};
use super::{HandlerError, Invocation};
use crate::catalog::Catalog;
use crate::cleanup::fan_out::{self, FanOutSettings, Origin, RepositorySwept, Started};
use crate::cleanup::run_store::S3RunStore;
use crate::cleanup::JanitorError;
use crate::deadline::Deadline;
use crate::events::{RepositorySweep, ScheduledEvent, Trigger};
use crate::filters::RepositoryTagFilters;
use crate::metrics;
use crate::queue::{SqsQueues, Target, WorkQueue};
use crate::settings::REPORT_BUCKET;

fn settings_of<'a>(
    settings: &'a JanitorSettings,
    filters: &'a RepositoryTagFilters,
) -> FanOutSettings<'a> {
    FanOutSettings {
        policy: &settings.policy,
        dry_run: settings.dry_run,
        repository_filter: filters,
        prefix: &settings.report_prefix,
    }
}

fn store(
    settings: &JanitorSettings,
    s3: Option<&aws_sdk_s3::Client>,
    what: &str,
) -> Result<S3RunStore, JanitorError> {
    match (&settings.report_bucket, s3) {
        (Some(bucket), Some(client)) => Ok(S3RunStore::new(client.clone(), bucket)),
        _ => Err(JanitorError::Settings {
            var: REPORT_BUCKET,
            message: format!(
                "{what} needs the report bucket (its run's manifest and parts are kept \
                 there), and this janitor has none"
            ),
        }),
    }
}

/// The schedule's invocation when the sweep fans out: run id from the event (the same
/// event again is the same run), messages naming the event's account and region (or
/// the function's own, `home`).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    catalog: &dyn Catalog,
    s3: Option<&aws_sdk_s3::Client>,
    queue: &dyn WorkQueue,
    settings: &JanitorSettings,
    filters: &RepositoryTagFilters,
    event: &ScheduledEvent,
    home: Option<&super::Home>,
    deadline: Option<Deadline>,
) -> Result<(Started, FanOutOutput), JanitorError> {
    let store = store(settings, s3, "a sweep that fans out")?;
    let run_id = fan_out::run_id_for(
        event.time.unwrap_or_else(chrono::Utc::now),
        event.id.as_deref(),
    );
    let origin = Origin {
        account: event
            .account
            .clone()
            .or_else(|| home.map(|h| h.account.clone())),
        region: event
            .region
            .clone()
            .or_else(|| home.map(|h| h.region.clone())),
    };
    let started = fan_out::start(
        catalog,
        s3,
        &store,
        queue,
        settings_of(settings, filters),
        &run_id,
        &origin,
        deadline,
    )
    .await?;
    let output = FanOutOutput {
        run_id,
        repositories: started.manifest.repositories.len(),
        repository: None,
        messages_sent: Some(started.sent.total_sent()),
        written: started.manifest_location.clone(),
        gathered: started
            .report
            .as_ref()
            .map(|_| store_location(&store, &settings.report_prefix, &started.manifest.run_id)),
    };
    Ok((started, output))
}

fn store_location(store: &S3RunStore, prefix: &str, run_id: &str) -> String {
    use crate::cleanup::run_store::RunStore;
    store.location(&fan_out::RunKeys::new(prefix, run_id).report())
}

/// A `Janitor Repository Sweep` invocation: that repository swept, its part written,
/// the run gathered when it was the last.
pub async fn sweep_one(
    catalog: &dyn Catalog,
    s3: Option<&aws_sdk_s3::Client>,
    settings: &JanitorSettings,
    filters: &RepositoryTagFilters,
    detail: &RepositorySweep,
    deadline: Option<Deadline>,
) -> Result<(RepositorySwept, FanOutOutput), JanitorError> {
    let store = store(settings, s3, "a per-repository sweep")?;
    let swept = fan_out::sweep_repository(
        catalog,
        &store,
        settings_of(settings, filters),
        &detail.run_id,
        &detail.repository,
        detail.repositories,
        deadline,
    )
    .await?;
    let output = FanOutOutput {
        run_id: detail.run_id.clone(),
        repositories: detail.repositories,
        repository: Some(detail.repository.clone()),
        messages_sent: None,
        written: swept.part_location.clone(),
        gathered: swept
            .report
            .as_ref()
            .map(|_| store_location(&store, &settings.report_prefix, &detail.run_id)),
    };
    Ok((swept, output))
}

/// What a fanned-out run needs of the janitor.
pub(super) struct JanitorParts<'a> {
    pub catalog: &'a dyn Catalog,
    pub s3: Option<&'a aws_sdk_s3::Client>,
    pub queue: Option<&'a dyn WorkQueue>,
    pub settings: &'a JanitorSettings,
    pub filters: &'a RepositoryTagFilters,
    pub deadline_margin: std::time::Duration,
}

impl JanitorParts<'_> {
    /// The schedule, fanned out: the run's manifest, a message per repository, the S3
    /// caches' part (the output's `report`).
    pub(super) async fn fan_out(
        &self,
        trigger: &Trigger,
        invocation: &Invocation,
    ) -> Result<JanitorOutput, HandlerError> {
        let (Trigger::Scheduled(event), Some(queue)) = (trigger, self.queue) else {
            return Err(HandlerError::non_retryable(format!(
                "a {} event does not fan out",
                trigger.kind()
            )));
        };
        let (started, fan_out) = start(
            self.catalog,
            self.s3,
            queue,
            self.settings,
            self.filters,
            event,
            invocation.home.as_ref(),
            invocation.stop(self.deadline_margin),
        )
        .await
        .inspect_err(|_| metrics::run_failed())
        .map_err(|e| by_retryability(e.is_retryable(), e))?;
        tracing::info!(fan_out = ?fan_out, "scheduled sweep fanned out");
        if let Some(part) = &started.s3_caches {
            // A part written by an earlier delivery of the event was counted then.
            if !started.s3_caches_again {
                metrics::cleanup_report(part);
            }
            // As a whole sweep's: the part is out, the invocation fails so that the
            // schedule's event is retried (the same run: its messages are not sent twice).
            if let Some(b) = &part.blocked {
                let what = format!("the S3 caches of run {}", fan_out.run_id);
                return Err(blocked_part(&what, &b.reason, b.retryable));
            }
        }
        Ok(JanitorOutput {
            function: FunctionName::CacheJanitor,
            decision: None,
            trigger: Some(trigger.kind().to_string()),
            report: started.s3_caches,
            fan_out: Some(Box::new(fan_out)),
        })
    }

    /// One repository of a fanned-out sweep. A part that deleted nothing (blocked) is
    /// written and gathered, then fails the invocation, so that its message is
    /// retried and, failing again, ends in the dead-letter queue.
    pub(super) async fn sweep_one(
        &self,
        trigger: &Trigger,
        invocation: &Invocation,
    ) -> Result<JanitorOutput, HandlerError> {
        let Trigger::JanitorRepositorySweep(event) = trigger else {
            return Err(HandlerError::non_retryable(format!(
                "a {} event is no repository's sweep",
                trigger.kind()
            )));
        };
        let (swept, fan_out) = sweep_one(
            self.catalog,
            self.s3,
            self.settings,
            self.filters,
            &event.detail,
            invocation.stop(self.deadline_margin),
        )
        .await
        .inspect_err(|_| metrics::run_failed())
        .map_err(|e| by_retryability(e.is_retryable(), e))?;
        if !swept.again {
            metrics::cleanup_report(&swept.part);
        }
        tracing::info!(summary = %swept.part.summary(), fan_out = ?fan_out, "repository swept");
        if let Some(b) = &swept.part.blocked {
            return Err(blocked_part(
                &event.detail.repository,
                &b.reason,
                b.retryable,
            ));
        }
        Ok(JanitorOutput {
            function: FunctionName::CacheJanitor,
            decision: None,
            trigger: Some(trigger.kind().to_string()),
            report: Some(swept.part),
            fan_out: Some(Box::new(fan_out)),
        })
    }
}

/// The janitor's work queue at `url` (`JANITOR_QUEUE_URL`), through an SQS client with
/// every AWS client's retries and timeouts.
pub(super) fn janitor_queue(
    sdk: &aws_config::SdkConfig,
    url: &str,
) -> Result<Box<dyn WorkQueue>, HandlerError> {
    let client = super::handlers::client_settings()?.sqs(sdk);
    Ok(Box::new(SqsQueues::new(
        client,
        std::collections::BTreeMap::from([(Target::Janitor, url.to_string())]),
    )))
}

/// The error of a part that deleted nothing (`what` was blocked for `reason`), counted
/// as a whole sweep's blocked run is: the run failed.
fn blocked_part(what: &str, reason: &str, retryable: bool) -> HandlerError {
    let e = JanitorError::Blocked {
        reason: format!("{what}: {reason}"),
        retryable,
    };
    metrics::run_failed();
    by_retryability(e.is_retryable(), e)
}
