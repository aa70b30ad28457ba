//! The `cache-janitor` handler: its settings (`CLEANUP_POLICY`, `DRY_RUN`, the report
//! bucket), the trigger it runs for, the run itself ([`crate::cleanup`]) and the upload
//! of the run's report. A scheduled sweep that fans out per repository, and each
//! repository's part of it, are in [`super::janitor_fan_out`].

use super::function::Function;
use super::handlers::{
    by_retryability, client_settings, deadline_margin, push_filters, s3_client, skip, trigger,
};
use super::janitor_fan_out::{self, JanitorParts};
pub use super::janitor_settings::{FanOutMode, JanitorSettings};
use super::outputs::{FunctionName, JanitorOutput};
use super::{HandlerError, Invocation, Repositories};
use crate::catalog::ecr::manifest_cache::{ManifestCache, S3ManifestStore, MANIFEST_PREFIX};
use crate::catalog::ecr::EcrCatalog;
use crate::catalog::layout::LayoutCatalog;
use crate::catalog::{ApiErrorKind, Catalog};
use crate::cleanup::{on_push, sweep, JanitorError, PushedImage, Report, RunOptions};
use crate::deadline::Deadline;
use crate::events::{self, PushDecision, Trigger};
use crate::filters::RepositoryTagFilters;
use crate::metrics;
use crate::queue::WorkQueue;
use serde_json::Value;
use std::time::Duration;

/// What the `cache-janitor` function needs.
pub struct CacheJanitor {
    /// The cleanup policy, `DRY_RUN` and where reports go.
    pub settings: JanitorSettings,
    /// `REPOSITORY_TAG_FILTERS`: the pushes to act on, and the repositories a sweep visits.
    pub filters: RepositoryTagFilters,
    /// `SOCI_TAG_SUFFIX`: tags ending with it are the indexer's output, skipped.
    pub soci_tag_suffix: String,
    /// What the janitor lists and deletes: ECR, or an OCI layout.
    pub catalog: Box<dyn Catalog>,
    /// For S3 BuildKit caches and reports; `None` for a layout.
    pub s3: Option<aws_sdk_s3::Client>,
    /// How long before the invocation deadline no delete is issued any more.
    pub deadline_margin: Duration,
    /// The janitor's own work queue when its scheduled sweep fans out per repository
    /// (`JANITOR_FAN_OUT`, `JANITOR_QUEUE_URL`); `None`: one invocation sweeps all.
    pub queue: Option<Box<dyn WorkQueue>>,
}

impl CacheJanitor {
    /// Settings and repositories from the environment.
    pub async fn from_env() -> Result<Self, HandlerError> {
        Self::with_repositories(Repositories::from_env()?).await
    }

    /// Settings from the environment; an OCI layout is cleaned through its own catalog,
    /// a registry through ECR's API.
    pub async fn with_repositories(repositories: Repositories) -> Result<Self, HandlerError> {
        let (filters, soci_tag_suffix) = push_filters()?;
        let settings = JanitorSettings::from_env().map_err(HandlerError::non_retryable)?;
        let (catalog, s3, queue): (Box<dyn Catalog>, _, _) = match repositories {
            Repositories::Layout(dir) => (
                Box::new(
                    LayoutCatalog::open(&dir)
                        .map_err(HandlerError::non_retryable)?
                        .for_every_repository(),
                ),
                None,
                None,
            ),
            Repositories::Registry(_) => {
                let sdk = crate::aws_clients::load_sdk_config().await;
                let s3 = s3_client(&sdk)?;
                let mut catalog = EcrCatalog::with_settings_and_consumers(
                    &sdk,
                    &client_settings()?,
                    &settings.consumers,
                );
                // Each manifest is read from ECR once and kept in the report bucket: a
                // read counts as a pull, which `unused_for` rules must not see.
                if let Some(bucket) = &settings.report_bucket {
                    catalog = catalog.with_manifest_cache(ManifestCache::new(
                        S3ManifestStore::new(s3.clone(), bucket, MANIFEST_PREFIX),
                    ));
                }
                let queue = match settings
                    .fan_out_queue_url()
                    .map_err(HandlerError::non_retryable)?
                {
                    Some(url) => Some(janitor_fan_out::janitor_queue(&sdk, url)?),
                    None => None,
                };
                (Box::new(catalog), Some(s3), queue)
            }
        };
        Ok(Self {
            settings,
            filters,
            soci_tag_suffix,
            catalog,
            s3,
            deadline_margin: deadline_margin()?,
            queue,
        })
    }

    /// Prunes what a cache push superseded, evaluates the repository of a push that can
    /// set off an expire rule, or sweeps on schedule; never deleting what ECS or Lambda use.
    /// Deletes stop a margin before the deadline; the report says what was left, and the
    /// next run plans again from what is there.
    pub async fn handle(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<JanitorOutput, HandlerError> {
        let trigger = trigger(payload)?;
        invocation.check_origin(&trigger)?;
        let event = match events::janitor_decision(&trigger, &self.filters, &self.soci_tag_suffix) {
            events::JanitorDecision::AfterPush(decision @ PushDecision::Skip { .. }) => {
                return Ok(JanitorOutput {
                    function: FunctionName::CacheJanitor,
                    decision: Some(skip(FunctionName::CacheJanitor, &decision)),
                    trigger: None,
                    report: None,
                    fan_out: None,
                })
            }
            events::JanitorDecision::Sweep { .. } if self.queue.is_some() => {
                return self.parts().fan_out(&trigger, invocation).await;
            }
            events::JanitorDecision::RepositorySweep { .. } => {
                return self.parts().sweep_one(&trigger, invocation).await;
            }
            events::JanitorDecision::Sweep { .. }
            | events::JanitorDecision::AfterPush(PushDecision::Work { .. }) => {
                JanitorEvent::from_trigger(&trigger)
            }
        };
        let report = handle_within(
            self.catalog.as_ref(),
            self.s3.as_ref(),
            &self.settings,
            &self.filters,
            event,
            invocation.stop(self.deadline_margin),
        )
        .await
        .inspect_err(|_| metrics::run_failed())
        .map_err(|e| by_retryability(e.is_retryable(), e))?;
        metrics::cleanup_report(&report);
        Ok(JanitorOutput {
            function: FunctionName::CacheJanitor,
            decision: None,
            trigger: Some(trigger.kind().to_string()),
            report: Some(report),
            fan_out: None,
        })
    }
}

impl CacheJanitor {
    /// What a fanned-out run takes of the janitor.
    fn parts(&self) -> JanitorParts<'_> {
        JanitorParts {
            catalog: self.catalog.as_ref(),
            s3: self.s3.as_ref(),
            queue: self.queue.as_deref(),
            settings: &self.settings,
            filters: &self.filters,
            deadline_margin: self.deadline_margin,
        }
    }
}

impl Function for CacheJanitor {
    const NAME: FunctionName = FunctionName::CacheJanitor;
    type Output = JanitorOutput;

    async fn from_env() -> Result<Self, HandlerError> {
        CacheJanitor::from_env().await
    }

    async fn handle(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<JanitorOutput, HandlerError> {
        CacheJanitor::handle(self, payload, invocation).await
    }

    fn deadline_margin(&self) -> Duration {
        self.deadline_margin
    }
}

/// What triggers the janitor.
#[derive(Debug, Clone)]
pub enum JanitorEvent {
    /// A successful push (from an `ECR Image Action` event).
    Push(PushedImage),
    /// The EventBridge schedule (or a manual run).
    Scheduled,
    /// One repository of a sweep that fanned out.
    RepositorySweep(crate::events::RepositorySweep),
}

impl JanitorEvent {
    /// The run a trigger parsed by [`Trigger::from_value`] calls for: an `ECR Image
    /// Action` is a push, the schedule a sweep. Whether a push is work at all (filters,
    /// the loop guard) is [`crate::events::janitor_decision`]'s call, made before this.
    pub fn from_trigger(trigger: &Trigger) -> Self {
        match trigger {
            Trigger::EcrImageAction(event) => JanitorEvent::Push(PushedImage {
                repository: event.detail.repository_name.clone(),
                tag: event.detail.tag().map(str::to_string),
                manifest_media_type: event.detail.manifest_media_type.clone(),
                artifact_media_type: event.detail.artifact_media_type.clone(),
            }),
            Trigger::Scheduled(_) => JanitorEvent::Scheduled,
            Trigger::JanitorRepositorySweep(event) => {
                JanitorEvent::RepositorySweep(event.detail.clone())
            }
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
        JanitorEvent::Push(pushed) => on_push(catalog, &settings.policy, pushed, &options).await?,
        JanitorEvent::Scheduled => sweep(catalog, s3, &settings.policy, &options).await?,
        JanitorEvent::RepositorySweep(detail) => {
            // Its part and the gathered report go to the run's own keys, not to a
            // report of their own.
            let (swept, _) = janitor_fan_out::sweep_one(
                catalog,
                s3,
                settings,
                repository_filter,
                detail,
                options.deadline,
            )
            .await?;
            if let Some(b) = &swept.part.blocked {
                return Err(JanitorError::Blocked {
                    reason: format!("{}: {}", detail.repository, b.reason),
                    retryable: b.retryable,
                });
            }
            return Ok(swept.part);
        }
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
        assert!(!s.policy.protect.inspector);
        let s = settings(&[("CLEANUP_POLICY", POLICY), ("INSPECTOR_IN_USE", "true")]).unwrap();
        assert!(s.policy.protect.inspector);
        let err = settings(&[("CLEANUP_POLICY", POLICY), ("INSPECTOR_IN_USE", "sure")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("setting INSPECTOR_IN_USE"), "{err}");
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
            matches!(janitor_event(push).unwrap(), JanitorEvent::Push(d) if d.repository == "app")
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

    fn home() -> Invocation {
        Invocation {
            home: Some(super::super::Home {
                account: "123456789012".into(),
                region: "us-east-1".into(),
            }),
            ..Invocation::default()
        }
    }

    fn schedule(account: &str, region: &str) -> serde_json::Value {
        serde_json::json!({"detail-type": "Scheduled Event", "source": "aws.events",
            "account": account, "region": region, "detail": {}})
    }

    #[test]
    fn a_fan_out_needs_the_report_bucket() {
        let with = |vars: &[(&str, &str)]| {
            let s = settings(vars).unwrap();
            s.fan_out_queue_url().map(|u| u.map(str::to_string))
        };
        let queue = ("JANITOR_QUEUE_URL", "https://sqs/q.fifo");
        let bucket = ("REPORT_BUCKET", "r");
        let policy = ("CLEANUP_POLICY", POLICY);
        assert_eq!(
            with(&[policy, queue, bucket]).unwrap().as_deref(),
            Some("https://sqs/q.fifo")
        );
        assert_eq!(
            with(&[policy, bucket]).unwrap(),
            None,
            "no queue: the sweep runs whole"
        );
        assert_eq!(
            with(&[policy, queue, bucket, ("JANITOR_FAN_OUT", "off")]).unwrap(),
            None
        );
        let err = with(&[policy, queue]).unwrap_err().to_string();
        assert!(
            err.starts_with("setting REPORT_BUCKET: JANITOR_QUEUE_URL is set"),
            "{err}"
        );
        assert!(with(&[policy, queue, ("JANITOR_FAN_OUT", "off")])
            .unwrap()
            .is_none());
        let err = settings(&[policy, ("JANITOR_FAN_OUT", "yes")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("setting JANITOR_FAN_OUT"), "{err}");
    }

    /// An ECR with one 30-day-old image in `app`, and a policy that expires it.
    fn one_old_image() -> (crate::catalog::ecr::MemoryEcr, &'static str) {
        use crate::catalog::ecr::MemoryEcr;
        let ecr = MemoryEcr::new();
        ecr.put(
            "app",
            crate::catalog::ecr::month_old_image(),
            b"{}".to_vec(),
        );
        let policy = "repositories: ['*']\nrules: [{name: old, select: {kind: image}, action: expire}]\nprotect: {ecs: false, lambda: false}\n";
        (ecr, policy)
    }

    #[tokio::test]
    async fn a_repository_sweep_without_the_report_bucket_is_refused_and_deletes_nothing() {
        use crate::catalog::ecr::EcrCatalog;
        let (ecr, policy) = one_old_image();
        let mut settings = settings(&[("CLEANUP_POLICY", policy), ("DRY_RUN", "false")]).unwrap();
        settings.report_bucket = None;
        let janitor = CacheJanitor {
            settings,
            filters: RepositoryTagFilters::default(),
            soci_tag_suffix: "-soci".into(),
            catalog: Box::new(EcrCatalog::new(ecr)),
            s3: None,
            deadline_margin: Duration::from_secs(30),
            queue: None,
        };
        let event = serde_json::json!({"detail-type": "Janitor Repository Sweep",
            "source": "dev.afterpush", "account": "123456789012", "region": "us-east-1",
            "detail": {"run-id": "20261207T030000Z-0123abcd", "repository": "app",
                "repositories": 1}});
        let err = janitor.handle(event, &home()).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(
            err.to_string()
                .contains("setting REPORT_BUCKET: a per-repository sweep needs the report bucket"),
            "{err}"
        );
        assert_eq!(janitor.catalog.list_images("app").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_event_for_another_account_or_region_is_refused_and_deletes_nothing() {
        use crate::catalog::ecr::EcrCatalog;
        let (ecr, policy) = one_old_image();
        let janitor = CacheJanitor {
            settings: JanitorSettings {
                policy: crate::cleanup::policy::Policy::parse(policy).unwrap(),
                dry_run: false,
                report_bucket: None,
                report_prefix: "cache-janitor/".into(),
                consumers: Default::default(),
                fan_out: FanOutMode::Off,
                queue_url: None,
            },
            filters: RepositoryTagFilters::default(),
            soci_tag_suffix: "-soci".into(),
            catalog: Box::new(EcrCatalog::new(ecr)),
            s3: None,
            deadline_margin: Duration::from_secs(30),
            queue: None,
        };
        for (account, region) in [
            ("999999999999", "eu-west-1"),
            ("999999999999", "us-east-1"),
            ("123456789012", "eu-west-1"),
        ] {
            let err = janitor
                .handle(schedule(account, region), &home())
                .await
                .unwrap_err();
            assert!(
                !err.is_retryable()
                    && err.to_string().contains(account)
                    && err.to_string().contains(region),
                "{err}"
            );
            assert_eq!(janitor.catalog.list_images("app").await.unwrap().len(), 1);
        }
        // Its own account and region: the same sweep deletes the image.
        let out = janitor
            .handle(schedule("123456789012", "us-east-1"), &home())
            .await
            .unwrap();
        assert_eq!(out.report.unwrap().deleted, 1);
        assert!(janitor.catalog.list_images("app").await.unwrap().is_empty());
    }
}
