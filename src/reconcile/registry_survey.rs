//! The survey of a whole ECR registry: every repository `REPOSITORY_TAG_FILTERS` can
//! select, each surveyed through ECR's API ([`EcrApiRepository`]), a few at a time.
//!
//! - DescribeRepositories (all pages) lists the repositories; they are surveyed in name
//!   order, so that a survey cut short can say where the next one starts.
//! - A repository whose survey fails is recorded with its error, and the others go on.
//! - With a deadline, no repository is started once it has come. The result then holds
//!   `resume_after`, the last repository whose survey is finished (every one before it
//!   is too); the next invocation passes it as `start_after`. This is how a registry too
//!   large for one 15-minute invocation is surveyed over several.
//!
//! Throttling: every ECR call goes through the SDK client's retries, the one retry layer
//! ([`crate::aws_clients`]). [`survey_ecr_client`] builds that client in the adaptive
//! retry mode rather than the standard one: a survey sends DescribeImages and
//! BatchGetImage calls back to back from several repositories at once, and after a
//! throttle the adaptive mode slows every request of the client (a client-side token
//! bucket), where the standard mode only delays the retry of the throttled call while
//! the others keep the rate that was throttled.

use super::ecr_listing::{EcrApiRepository, EcrCalls};
use super::event::EventOrigin;
use super::survey::{survey, Survey};
use super::{ReconcileError, ReconcileSettings};
use crate::aws_clients::ClientSettings;
use crate::catalog::ecr::{EcrApi, EcrApiError, SdkEcr};
use crate::catalog::paginate::{Paging, PagingError};
use crate::deadline::Deadline;
use crate::registry::{RegistryError, Repository};
use futures::StreamExt;
use serde::Serialize;
use std::sync::Arc;

/// Repositories surveyed at once by default: enough to overlap the calls' latency,
/// few enough to stay well under ECR's rates (see docs/benchmarks.md).
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Opens the distribution client of a repository (its blobs: image configs).
pub type OpenInner = dyn Fn(&str) -> Result<Arc<dyn Repository>, RegistryError> + Send + Sync;

/// How to run a registry survey.
#[derive(Debug, Clone)]
pub struct RegistrySurveyOptions {
    /// Start after this repository (a previous invocation's `resume_after`).
    pub start_after: Option<String>,
    /// Start no repository once this has come.
    pub deadline: Option<Deadline>,
    /// Repositories surveyed at once (at least 1).
    pub concurrency: usize,
}

impl Default for RegistrySurveyOptions {
    fn default() -> Self {
        Self {
            start_after: None,
            deadline: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// A repository whose survey failed, named, with the error.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryFailure {
    /// The repository.
    pub repository: String,
    /// What failed, with its causes.
    pub error: String,
    /// Whether a later survey may succeed (throttling, a 5xx, a timeout).
    pub retryable: bool,
}

/// What a registry survey found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegistrySurvey {
    /// Repositories DescribeRepositories listed.
    pub listed: usize,
    /// Of those, the ones `REPOSITORY_TAG_FILTERS` can select (after `start_after`).
    pub selected: usize,
    /// The surveys of the repositories surveyed, in name order.
    pub surveys: Vec<Survey>,
    /// The repositories whose survey failed.
    pub failures: Vec<RepositoryFailure>,
    /// True when every selected repository was surveyed (or failed).
    pub complete: bool,
    /// When not complete: the last repository done (every one before it is too); the
    /// next invocation starts after it. `None` with `complete == false`: nothing was
    /// done, start where this one started.
    pub resume_after: Option<String>,
    /// The ECR calls made.
    pub calls: EcrCalls,
}

/// An ECR client for a registry survey: the crate's timeouts and attempts, in the
/// adaptive retry mode (see the module documentation for why).
pub fn survey_ecr_client(sdk: &aws_config::SdkConfig, settings: &ClientSettings) -> SdkEcr {
    let retry = aws_config::retry::RetryConfig::adaptive().with_max_attempts(settings.max_attempts);
    SdkEcr::new(aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(sdk)
            .retry_config(retry)
            .timeout_config(settings.timeout_config())
            .build(),
    ))
}

enum ListError {
    Api(EcrApiError),
    Paging(PagingError),
}

impl From<PagingError> for ListError {
    fn from(e: PagingError) -> Self {
        ListError::Paging(e)
    }
}

/// Surveys every repository of the registry behind `api` that `settings.filters` can
/// select, opening each one's blobs with `open_inner`. Fails only when the repositories
/// cannot be listed; a repository that fails is in [`RegistrySurvey::failures`].
pub async fn survey_ecr_registry<A: EcrApi + ?Sized + 'static>(
    api: Arc<A>,
    open_inner: &OpenInner,
    origin: &EventOrigin,
    settings: &ReconcileSettings,
    options: &RegistrySurveyOptions,
) -> Result<RegistrySurvey, ReconcileError> {
    let paging = Paging::default();
    paging.set_deadline(options.deadline.clone());
    let mut calls = EcrCalls::default();
    let mut names: Vec<String> = paging
        .all("ECR", "DescribeRepositories", |token| {
            calls.describe_repositories += 1;
            let api = api.clone();
            async move {
                api.describe_repositories(token)
                    .await
                    .map_err(ListError::Api)
            }
        })
        .await
        .map_err(|e| {
            let (message, retryable) = match e {
                ListError::Api(e) => (e.message, e.kind.is_retryable()),
                ListError::Paging(e) => (e.to_string(), e.is_retryable()),
            };
            RegistryError::Transport {
                url: "ECR DescribeRepositories".into(),
                message,
                retryable,
            }
        })?;
    names.sort();
    names.dedup();
    let listed = names.len();
    let selected: Vec<String> = names
        .into_iter()
        .filter(|n| settings.filters.matches_repository(n))
        .filter(|n| options.start_after.as_ref().is_none_or(|after| n > after))
        .collect();
    let deadline_passed = || options.deadline.as_ref().is_some_and(Deadline::has_passed);

    let results: Vec<(String, Result<Survey, ReconcileError>, EcrCalls)> =
        futures::stream::iter(selected.iter())
            .take_while(|_| std::future::ready(!deadline_passed()))
            .map(|name| {
                let (api, paging) = (api.clone(), paging.clone());
                async move {
                    let repo = match open_inner(name) {
                        Ok(inner) => EcrApiRepository::new(api, name, inner).with_paging(paging),
                        Err(e) => return (name.clone(), Err(e.into()), EcrCalls::default()),
                    };
                    let result = survey(&repo, name, origin, settings, None).await;
                    (name.clone(), result, repo.calls())
                }
            })
            .buffered(options.concurrency.max(1))
            .collect()
            .await;

    let mut out = RegistrySurvey {
        listed,
        selected: selected.len(),
        complete: results.len() == selected.len(),
        calls,
        ..RegistrySurvey::default()
    };
    let mut last_done = None;
    for (name, result, repo_calls) in results {
        out.calls += repo_calls;
        match result {
            Ok(survey) => out.surveys.push(survey),
            Err(e) => {
                let retryable = match &e {
                    ReconcileError::Registry(r) => r.is_retryable(),
                    _ => false,
                };
                // Cut off by the deadline rather than failed: the next invocation
                // starts with it, and with the ones after it.
                if retryable && deadline_passed() {
                    out.complete = false;
                    break;
                }
                out.failures.push(RepositoryFailure {
                    repository: name.clone(),
                    error: crate::format::cause_chain(&e),
                    retryable,
                });
            }
        }
        last_done = Some(name);
    }
    if !out.complete {
        out.resume_after = last_done.or_else(|| options.start_after.clone());
    }
    Ok(out)
}
