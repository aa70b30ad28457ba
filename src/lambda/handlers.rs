//! The three Lambda handlers as library structs. The binaries in `functions/` wrap
//! them in the `lambda_runtime` loop; `afterpush invoke` and the demo call them
//! in-process, so every path runs the same code.
//!
//! Each handler: parse the trigger, decide (with the skip reason logged), open the
//! repository the event names, call the library, and return a JSON outcome. Errors say
//! whether a retry can help ([`HandlerError`]): EventBridge and async invokes retry on
//! failure, which must not happen for bad input.
//!
//! An [`Invocation`] carries Lambda's deadline: the indexer starts no layer it cannot
//! finish before it and the janitor issues no delete after it, each
//! `AFTERPUSH_DEADLINE_MARGIN` early (see [`crate::deadline`]).

use super::function::Function;
use super::outputs::{DecisionRecord, FunctionName, IndexerOutput, PushOutput, StitcherOutput};
use super::{HandlerError, Invocation};
use crate::aws_clients::{load_sdk_config, ClientSettings};
use crate::deadline;
use crate::events::{self, PushDecision, Trigger};
use crate::filters::RepositoryTagFilters;
use crate::metrics;
use crate::registry::distribution::{with_deadline, RegistryClients, RegistrySettings};
use crate::registry::layout::LayoutRepository;
use crate::registry::{ecr, Repository};
use crate::settings::{self, ProcessEnv};
use crate::soci::{self, LayerTimeBudget, NoZtocCache, S3ZtocCache, SociSettings, ZtocCache};
use crate::stitch::{self, StitchSettings};
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `AFTERPUSH_LAYOUT`: an OCI image layout directory that stands for every repository
/// named in events (local runs and the demo, no registry and no cloud).
pub const ENV_LAYOUT: &str = "AFTERPUSH_LAYOUT";

/// `AFTERPUSH_DEADLINE_MARGIN`, read at cold start; a bad value fails it, named.
pub(super) fn deadline_margin() -> Result<Duration, HandlerError> {
    deadline::margin_from_env().map_err(HandlerError::non_retryable)
}

/// Where the repositories named in events live.
#[derive(Debug, Clone)]
pub enum Repositories {
    /// The account's ECR registry (`<account>.dkr.ecr.<region>.amazonaws.com`, from the
    /// event), or wherever `AFTERPUSH_REGISTRY_ENDPOINT` sends registry traffic. The
    /// clients (connections, ECR token) are kept from one event to the next.
    Registry(Arc<RegistryClients>),
    /// One OCI image layout for every repository.
    Layout(PathBuf),
}

impl Repositories {
    /// `AFTERPUSH_LAYOUT` when set, else the registry settings from the environment.
    pub fn from_env() -> Result<Self, HandlerError> {
        match std::env::var(ENV_LAYOUT) {
            Ok(dir) if !dir.is_empty() => Ok(Repositories::Layout(dir.into())),
            _ => Ok(Repositories::Registry(Arc::new(
                RegistryClients::new(
                    RegistrySettings::from_env().map_err(HandlerError::non_retryable)?,
                )
                .map_err(HandlerError::non_retryable)?,
            ))),
        }
    }

    /// Opens the repository an ECR event is about; a failure counts as a failed image of
    /// that repository.
    pub fn open(
        &self,
        event: &events::EcrImageActionEvent,
    ) -> Result<Box<dyn Repository>, HandlerError> {
        self.open_repository(event)
            .inspect_err(|_| metrics::failed(&event.detail.repository_name))
    }

    fn open_repository(
        &self,
        event: &events::EcrImageActionEvent,
    ) -> Result<Box<dyn Repository>, HandlerError> {
        let name = &event.detail.repository_name;
        match self {
            Repositories::Layout(dir) => Ok(Box::new(
                LayoutRepository::open(dir).map_err(HandlerError::non_retryable)?,
            )),
            Repositories::Registry(clients) => {
                let (Some(account), Some(region)) =
                    (event.account.as_deref(), event.region.as_deref())
                else {
                    return Err(HandlerError::non_retryable(format!(
                        "event for repository {name} has no account or region"
                    )));
                };
                let host = ecr::registry_host(account, region);
                Ok(Box::new(
                    clients
                        .repository(&host, name)
                        .map_err(HandlerError::non_retryable)?,
                ))
            }
        }
    }
}

/// The trigger an event is, counted as rejected when it is none.
pub(super) fn trigger(payload: Value) -> Result<Trigger, HandlerError> {
    Trigger::from_value(payload)
        .inspect_err(|_| metrics::rejected())
        .map_err(HandlerError::from)
}

/// The ECR Image Action event a push-driven function takes; any other trigger (the
/// schedule) is a non-retryable error naming the function, counted as rejected.
fn ecr_image_action(
    function: FunctionName,
    payload: Value,
    invocation: &Invocation,
) -> Result<events::EcrImageActionEvent, HandlerError> {
    let trigger = trigger(payload)?;
    invocation.check_origin(&trigger)?;
    match trigger {
        Trigger::EcrImageAction(event) => Ok(event),
        other => {
            metrics::rejected();
            Err(HandlerError::non_retryable(format!(
                "{function} takes ECR Image Action events, not {}",
                other.kind()
            )))
        }
    }
}

/// Logs and counts a skip; what the handler reports for it.
pub(super) fn skip(function: FunctionName, decision: &PushDecision) -> DecisionRecord {
    let record = DecisionRecord::from(decision);
    tracing::info!(%function, decision = ?record, "skipped");
    if let Some(reason) = decision.skip_reason() {
        metrics::skipped(reason.code());
    }
    record
}

/// A push-driven function's skip.
fn skipped<O>(function: FunctionName, decision: &PushDecision) -> PushOutput<O> {
    PushOutput {
        function,
        decision: skip(function, decision),
        outcome: None,
    }
}

pub(super) fn push_filters() -> Result<(RepositoryTagFilters, String), HandlerError> {
    let env = ProcessEnv;
    Ok((
        settings::value_or_default(&env, settings::REPOSITORY_TAG_FILTERS).parse()?,
        settings::value_or_default(&env, settings::SOCI_TAG_SUFFIX),
    ))
}

/// S3 clients use path-style addressing: it works with every endpoint (moto included)
/// and with bucket names that contain dots. Retries and timeouts as every AWS client's
/// ([`ClientSettings::from_env`]); an unreadable timeout fails the cold start, named.
pub(super) fn s3_client(sdk: &aws_config::SdkConfig) -> Result<aws_sdk_s3::Client, HandlerError> {
    Ok(client_settings()?.s3(sdk, true))
}

/// The AWS clients' retry and timeout settings from the environment.
pub(super) fn client_settings() -> Result<ClientSettings, HandlerError> {
    ClientSettings::from_env().map_err(HandlerError::non_retryable)
}

/// The stitcher has no `AFTERPUSH_DEADLINE_MARGIN` of its own: a few seconds are enough to
/// return an error after its last registry request.
const STITCHER_DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// Runs a handler's registry `work` with every registry retry in it bounded by the
/// invocation ([`with_deadline`]): no retry starts whose backoff would end past the
/// deadline less half the `margin`. Half: the other half of the margin is where the
/// indexer pushes its index after the last layer, with retries; what is left returns the
/// (retryable) error before Lambda ends the invocation. No deadline (the CLI), no bound.
pub(super) async fn registry_work_within<F: Future>(
    invocation: &Invocation,
    margin: Duration,
    work: F,
) -> F::Output {
    match invocation.stop(margin / 2) {
        Some(stop) => with_deadline(Instant::now() + stop.remaining(), work).await,
        None => work.await,
    }
}

/// A library error as a handler error, retryable when the library says a later
/// attempt can succeed (throttling, 5xx, resets).
pub(super) fn by_retryability<E: std::error::Error + Send + Sync + 'static>(
    retryable: bool,
    e: E,
) -> HandlerError {
    if retryable {
        HandlerError::retryable(e)
    } else {
        HandlerError::non_retryable(e)
    }
}

/// Makes the repository's writes visible (an archive commits here), logs the outcome and
/// wraps it with the decision that led to it. Only then is the outcome counted
/// (`record`): an image whose index never became visible is a failed one.
async fn finish<O: serde::Serialize>(
    function: FunctionName,
    repo: &dyn Repository,
    detail: &events::EcrImageAction,
    decision: &PushDecision,
    outcome: O,
    record: impl FnOnce(&str, &O),
) -> Result<PushOutput<O>, HandlerError> {
    if let Err(e) = repo.commit().await {
        metrics::failed(&detail.repository_name);
        return Err(HandlerError::retryable(e));
    }
    record(&detail.repository_name, &outcome);
    let logged = serde_json::to_string(&outcome).map_err(HandlerError::non_retryable)?;
    tracing::info!(%function, image = %detail.label(), outcome = %logged, "done");
    Ok(PushOutput {
        function,
        decision: decision.into(),
        outcome: Some(outcome),
    })
}

/// What the `soci-indexer` function needs, built once per cold start.
pub struct SociIndexer {
    /// The indexer's settings, from its environment variables.
    pub settings: SociSettings,
    /// `REPOSITORY_TAG_FILTERS`: the pushes to index.
    pub filters: RepositoryTagFilters,
    /// Where the repositories named in events live.
    pub repositories: Repositories,
    /// Built zTOCs kept across images and attempts (S3), or none.
    pub cache: Box<dyn ZtocCache>,
    /// How long before the invocation deadline no layer is started any more.
    pub deadline_margin: Duration,
}

impl SociIndexer {
    /// Settings and repositories from the environment.
    pub async fn from_env() -> Result<Self, HandlerError> {
        Self::with_repositories(Repositories::from_env()?).await
    }

    /// Settings from the environment, repositories as given.
    pub async fn with_repositories(repositories: Repositories) -> Result<Self, HandlerError> {
        let settings = SociSettings::from_env().map_err(HandlerError::non_retryable)?;
        let (filters, _) = push_filters()?;
        let cache: Box<dyn ZtocCache> = match &settings.ztoc_cache_bucket {
            Some(bucket) => Box::new(S3ZtocCache::new(
                s3_client(&load_sdk_config().await)?,
                bucket,
                &settings.ztoc_cache_prefix,
            )),
            None => Box::new(NoZtocCache),
        };
        Ok(Self {
            settings,
            filters,
            repositories,
            cache,
            deadline_margin: deadline_margin()?,
        })
    }

    /// Builds SOCI indexes for a pushed image, starting no layer it has no time for
    /// (then the error is retryable and the finished zTOCs are in the cache).
    pub async fn handle(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<IndexerOutput, HandlerError> {
        let event = ecr_image_action(FunctionName::SociIndexer, payload, invocation)?;
        let decision =
            events::soci_push_decision(&event.detail, &self.filters, &self.settings.tag_suffix)
                .skipping_per_arch_tags(self.settings.skip_arch_tags.as_ref());
        let PushDecision::Work { tag, digest, .. } = &decision else {
            return Ok(skipped(FunctionName::SociIndexer, &decision));
        };
        let repo = self.repositories.open(&event)?;
        let budget = invocation
            .stop(self.deadline_margin)
            .map(|d| LayerTimeBudget::new(d, self.settings.layer_throughput));
        let work = async {
            let outcome = soci::create_soci_within(
                repo.as_ref(),
                &digest.to_string(),
                Some(tag),
                &self.settings,
                self.cache.as_ref(),
                None,
                budget.as_ref(),
            )
            .await
            .inspect_err(|_| metrics::failed(&event.detail.repository_name))
            .map_err(|e| by_retryability(e.is_retryable(), e))?;
            finish(
                FunctionName::SociIndexer,
                repo.as_ref(),
                &event.detail,
                &decision,
                outcome,
                metrics::soci_outcome,
            )
            .await
        };
        registry_work_within(invocation, self.deadline_margin, work).await
    }
}

/// What the `manifest-stitcher` function needs.
pub struct ManifestStitcher {
    /// The stitcher's settings (`ARCH_TAG_TEMPLATE`, `REQUIRED_PLATFORMS`, ...).
    pub settings: StitchSettings,
    /// `REPOSITORY_TAG_FILTERS`: the pushes to stitch.
    pub filters: RepositoryTagFilters,
    /// `SOCI_TAG_SUFFIX`: tags ending with it are the indexer's output, skipped.
    pub soci_tag_suffix: String,
    /// Where the repositories named in events live.
    pub repositories: Repositories,
}

impl ManifestStitcher {
    /// Settings and repositories from the environment.
    pub fn from_env() -> Result<Self, HandlerError> {
        Self::with_repositories(Repositories::from_env()?)
    }

    /// Settings from the environment, repositories as given.
    pub fn with_repositories(repositories: Repositories) -> Result<Self, HandlerError> {
        let (filters, soci_tag_suffix) = push_filters()?;
        Ok(Self {
            settings: StitchSettings::from_env().map_err(HandlerError::non_retryable)?,
            filters,
            soci_tag_suffix,
            repositories,
        })
    }

    /// Stitches the per-arch tags of the pushed tag's base tag. The work is a few small
    /// requests and writing the stitched tag is its single last step; their retries stop
    /// at the invocation deadline (`registry_work_within`).
    pub async fn handle(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<StitcherOutput, HandlerError> {
        let event = ecr_image_action(FunctionName::ManifestStitcher, payload, invocation)?;
        let decision =
            events::stitch_push_decision(&event.detail, &self.filters, &self.soci_tag_suffix);
        let PushDecision::Work { tag, .. } = &decision else {
            return Ok(skipped(FunctionName::ManifestStitcher, &decision));
        };
        let repo = self.repositories.open(&event)?;
        let work = async {
            let outcome = stitch::handle_push(repo.as_ref(), tag, &self.settings)
                .await
                .inspect_err(|_| metrics::failed(&event.detail.repository_name))
                .map_err(|e| by_retryability(e.is_retryable(), e))?;
            finish(
                FunctionName::ManifestStitcher,
                repo.as_ref(),
                &event.detail,
                &decision,
                outcome,
                metrics::stitch_outcome,
            )
            .await
        };
        registry_work_within(invocation, STITCHER_DEADLINE_MARGIN, work).await
    }
}

impl Function for SociIndexer {
    const NAME: FunctionName = FunctionName::SociIndexer;
    type Output = IndexerOutput;

    async fn from_env() -> Result<Self, HandlerError> {
        SociIndexer::from_env().await
    }

    async fn handle(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<IndexerOutput, HandlerError> {
        SociIndexer::handle(self, payload, invocation).await
    }

    fn deadline_margin(&self) -> Duration {
        self.deadline_margin
    }
}

impl Function for ManifestStitcher {
    const NAME: FunctionName = FunctionName::ManifestStitcher;
    type Output = StitcherOutput;

    async fn from_env() -> Result<Self, HandlerError> {
        ManifestStitcher::from_env()
    }

    async fn handle(
        &self,
        payload: Value,
        invocation: &Invocation,
    ) -> Result<StitcherOutput, HandlerError> {
        ManifestStitcher::handle(self, payload, invocation).await
    }

    fn deadline_margin(&self) -> Duration {
        STITCHER_DEADLINE_MARGIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::Home;

    fn push_from(account: &str, region: &str) -> Value {
        serde_json::json!({"detail-type": "ECR Image Action", "source": "aws.ecr",
            "account": account, "region": region, "detail": {
            "result": "SUCCESS", "repository-name": "app", "action-type": "PUSH",
            "image-tag": "1.2-arm64", "manifest-media-type": crate::oci::media::OCI_MANIFEST,
            "artifact-media-type": crate::oci::media::OCI_CONFIG,
            "image-digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}})
    }

    /// Issue 21 item 8: the functions' S3 client (zTOC cache, S3 caches, reports) has the
    /// operation and attempt timeouts and the retry mode of every AWS client.
    #[test]
    fn the_functions_s3_client_has_the_aws_client_timeouts() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let client = s3_client(&sdk).unwrap();
        let expected = ClientSettings::from_env().unwrap();
        let timeouts = client.config().timeout_config().expect("timeouts");
        assert_eq!(
            timeouts.operation_timeout(),
            Some(expected.operation_timeout)
        );
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(expected.attempt_timeout)
        );
        assert_eq!(
            client.config().retry_config().map(|r| r.max_attempts()),
            Some(expected.max_attempts)
        );
    }

    #[tokio::test]
    async fn the_indexer_and_stitcher_refuse_events_for_another_account_or_region() {
        let home = Invocation {
            home: Some(Home {
                account: "123456789012".into(),
                region: "us-east-1".into(),
            }),
            ..Invocation::default()
        };
        // A layout that does not exist: acting on the event at all would fail otherwise.
        let nowhere = Repositories::Layout("/nonexistent/afterpush-layout".into());
        let indexer = SociIndexer {
            settings: SociSettings::default(),
            filters: RepositoryTagFilters::default(),
            repositories: nowhere.clone(),
            cache: Box::new(NoZtocCache),
            deadline_margin: Duration::from_secs(30),
        };
        let stitcher = ManifestStitcher {
            settings: StitchSettings::default(),
            filters: RepositoryTagFilters::default(),
            soci_tag_suffix: "-soci".into(),
            repositories: nowhere,
        };
        for (account, region) in [("999999999999", "eu-west-1"), ("999999999999", "us-east-1")] {
            let event = push_from(account, region);
            let errors = [
                indexer.handle(event.clone(), &home).await.unwrap_err(),
                stitcher.handle(event, &home).await.unwrap_err(),
            ];
            for err in errors {
                assert!(!err.is_retryable(), "{err}");
                assert!(
                    err.to_string()
                        .contains(&format!("for account {account} in {region}")),
                    "{err}"
                );
            }
        }
    }
}
