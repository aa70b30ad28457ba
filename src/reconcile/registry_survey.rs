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
//! ([`crate::aws_clients`], the same ECR client as cleanup's), in the standard mode: a throttled call is tried again after
//! an exponential backoff with jitter, within the client's retry quota. Not the adaptive
//! mode: after one throttle its client-side rate limiter starts from the rate it has
//! measured, which early in a survey is a few calls a second, and holds every later call
//! of the client to it. Measured with the first test of `tests/it/reconcile_throttling.rs`
//! (three repositories: nine requests, one DescribeImages and one BatchGetImage
//! throttled): 2.3 s in the standard mode, 44 s in the adaptive one. Four repositories
//! at a time keep the survey's own rate modest.

use super::ecr_listing::{EcrApiRepository, EcrCalls};
use super::event::EventOrigin;
use super::survey::{survey, Survey, SurveyProgress, SurveyStep};
use super::{ReconcileError, ReconcileSettings};
use crate::aws_clients::ClientSettings;
use crate::catalog::ecr::{EcrApi, EcrApiError, SdkEcr};
use crate::catalog::paginate::{Paging, PagingError};
use crate::deadline::Deadline;
use crate::registry::distribution::{DistributionRepository, RegistryClient, RegistrySettings};
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
#[derive(Clone)]
pub struct RegistrySurveyOptions {
    /// Start after this repository (a previous invocation's `resume_after`).
    pub start_after: Option<String>,
    /// Start no repository once this has come.
    pub deadline: Option<Deadline>,
    /// Repositories surveyed at once (at least 1).
    pub concurrency: usize,
    /// Told the number of repositories to survey, then each one surveyed (the CLI's bar).
    pub progress: Option<SurveyProgress>,
}

impl std::fmt::Debug for RegistrySurveyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySurveyOptions")
            .field("start_after", &self.start_after)
            .field("deadline", &self.deadline)
            .field("concurrency", &self.concurrency)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Default for RegistrySurveyOptions {
    fn default() -> Self {
        Self {
            start_after: None,
            deadline: None,
            concurrency: DEFAULT_CONCURRENCY,
            progress: None,
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
    if let Some(p) = &options.progress {
        p(SurveyStep::Listed {
            steps: selected.len() as u64,
        });
    }

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
                    if let Some(p) = &options.progress {
                        p(SurveyStep::Done { what: name.clone() });
                    }
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

/// Surveys the ECR registry `host` (`<account>.dkr.ecr.<region>.amazonaws.com`) as the
/// CLI does: ECR's API in the host's region (`AWS_ENDPOINT_URL` honoured) through
/// the crate's ECR client ([`ClientSettings::ecr`]), the configs through the registry under `registry` (one client,
/// its token cache shared by every repository), the events naming the host's account
/// and region.
pub async fn survey_ecr_registry_host(
    host: &str,
    registry: &RegistrySettings,
    settings: &ReconcileSettings,
    options: &RegistrySurveyOptions,
) -> Result<RegistrySurvey, ReconcileError> {
    let ecr = crate::registry::ecr::parse_registry_host(host).ok_or_else(|| {
        ReconcileError::Setting(format!(
            "{host:?} is not an ECR registry host (<account>.dkr.ecr.<region>.amazonaws.com)"
        ))
    })?;
    let client_settings =
        ClientSettings::from_env().map_err(|e| ReconcileError::Setting(e.to_string()))?;
    let sdk = crate::aws_clients::load_sdk_config_in(&ecr.region).await;
    let api = Arc::new(SdkEcr::new(client_settings.ecr(&sdk)));
    let client = Arc::new(RegistryClient::new(registry, host)?);
    let open = move |name: &str| -> Result<Arc<dyn Repository>, RegistryError> {
        Ok(Arc::new(DistributionRepository::new(client.clone(), name)?))
    };
    survey_ecr_registry(
        api,
        &open,
        &EventOrigin::of_host(Some(host)),
        settings,
        options,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ecr::{CountingEcr, MemoryEcr};
    use crate::deadline::Clock;
    use crate::filters::RepositoryTagFilters;
    use crate::reconcile::ecr_fixtures::{detail_of, image_manifest, push_configs, Reports};
    use crate::registry::layout::LayoutRepository;
    use crate::registry::BlobRef;
    use crate::soci::SociSettings;
    use crate::stitch::StitchSettings;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, SystemTime};

    fn settings(filters: &str) -> ReconcileSettings {
        ReconcileSettings::new(
            SociSettings::default(),
            StitchSettings::default(),
            RepositoryTagFilters::parse(filters).unwrap(),
        )
        .unwrap()
    }

    /// `repositories` of `images` single-platform images each, their configs in one
    /// layout that every repository's blobs are opened on.
    async fn registry(
        repositories: &[&str],
        images: usize,
    ) -> (tempfile::TempDir, Arc<LayoutRepository>, MemoryEcr, BlobRef) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Arc::new(LayoutRepository::open_or_create(dir.path().join("b")).unwrap());
        let (amd64, _) = push_configs(layout.as_ref()).await;
        let ecr = MemoryEcr::new();
        let big = SociSettings::default().min_layer_size;
        for r in repositories {
            for i in 0..images {
                let m = image_manifest(&format!("{r} {i}"), &amd64, &[big]);
                ecr.put(
                    r,
                    detail_of(&[format!("v{i}")], &m.bytes, Reports::Ecr),
                    m.bytes.to_vec(),
                );
            }
        }
        (dir, layout, ecr, amd64)
    }

    fn opener(layout: Arc<LayoutRepository>) -> Box<OpenInner> {
        Box::new(move |_| Ok(layout.clone() as Arc<dyn Repository>))
    }

    fn names(s: &RegistrySurvey) -> Vec<&str> {
        s.surveys.iter().map(|s| s.repository.as_str()).collect()
    }

    #[tokio::test]
    async fn progress_is_told_the_repositories_then_each_one_surveyed() {
        let (_dir, layout, ecr, _) = registry(&["a", "b", "skip/me"], 3).await;
        let steps = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = steps.clone();
        let progress: SurveyProgress = Arc::new(move |step| {
            seen.lock().unwrap().push(match step {
                SurveyStep::Listed { steps } => format!("listed {steps}"),
                SurveyStep::Done { what } => format!("done {what}"),
            })
        });
        let out = survey_ecr_registry(
            Arc::new(ecr),
            opener(layout).as_ref(),
            &EventOrigin::default(),
            &settings("a:*,b:*"),
            &RegistrySurveyOptions {
                progress: Some(progress),
                concurrency: 1,
                ..RegistrySurveyOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(names(&out), ["a", "b"]);
        assert_eq!(*steps.lock().unwrap(), ["listed 2", "done a", "done b"]);
    }

    #[tokio::test]
    async fn every_selected_repository_is_surveyed_and_one_failing_stops_no_other() {
        let (_dir, layout, ecr, _) = registry(&["a", "b", "c", "d", "skip/me"], 150).await;
        // `c` names a config the blob store lacks: its survey fails.
        let missing = BlobRef {
            media_type: crate::oci::media::OCI_CONFIG.into(),
            digest: crate::oci::Sha256Digest::of(b"no such config"),
            size: 14,
        };
        let broken = image_manifest("broken", &missing, &[1]);
        ecr.put(
            "c",
            detail_of(&["broken".into()], &broken.bytes, Reports::Ecr),
            broken.bytes.to_vec(),
        );
        let api = Arc::new(CountingEcr::new(ecr));
        let out = survey_ecr_registry(
            api.clone(),
            opener(layout).as_ref(),
            &EventOrigin::default(),
            &settings("a:*,b:*,c:*,d:*"),
            &RegistrySurveyOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(names(&out), ["a", "b", "d"]);
        assert_eq!((out.listed, out.selected), (5, 4));
        assert_eq!(out.failures.len(), 1, "{:?}", out.failures);
        assert_eq!(out.failures[0].repository, "c");
        assert!(
            out.failures[0].error.contains("no such config")
                || out.failures[0].error.contains(&missing.digest.to_string()),
            "{}",
            out.failures[0].error
        );
        assert!(out.complete && out.resume_after.is_none());
        for s in &out.surveys {
            assert_eq!(s.work.len(), 150, "{}", s.repository);
        }
        // 150 images: one DescribeImages page and two batches per repository; the
        // repository the filters leave out costs nothing.
        let counted = &api.counts;
        assert_eq!(out.calls.describe_repositories, 1);
        assert_eq!(out.calls.describe_images, 4);
        assert_eq!(
            out.calls.describe_images,
            counted.describe_images.load(Ordering::Relaxed)
        );
        assert_eq!(
            out.calls.batch_get_image,
            counted.batch_get_image.load(Ordering::Relaxed)
        );
        assert_eq!(out.calls.batch_get_image, 3 * 2 + 2);
    }

    /// A clock that moves `step` forward each time it is read.
    fn stepping_clock(start: SystemTime, step: Duration) -> Clock {
        let reads = AtomicU32::new(0);
        Arc::new(move || start + step * reads.fetch_add(1, Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_deadline_stops_new_repositories_and_the_next_run_resumes_after_the_last_done() {
        let repositories = ["r0", "r1", "r2", "r3", "r4", "r5", "r6"];
        let (_dir, layout, ecr, _) = registry(&repositories, 3).await;
        let api = Arc::new(ecr);
        let open = opener(layout);
        let origin = EventOrigin::default();
        let settings = settings("*:*");
        let mut surveyed = vec![];
        let mut start_after = None;
        let mut runs = 0;
        loop {
            runs += 1;
            assert!(runs <= 4, "no progress: {surveyed:?}");
            // Each run's clock reads 0, 25, 50 and then 75 minutes: the deadline
            // (60 minutes) passes at the fourth check, so three repositories are
            // started per run.
            let now = SystemTime::now();
            let deadline = Deadline::with_clock(
                now + Duration::from_secs(3600),
                Duration::ZERO,
                stepping_clock(now, Duration::from_secs(1500)),
            );
            let out = survey_ecr_registry(
                api.clone(),
                open.as_ref(),
                &origin,
                &settings,
                &RegistrySurveyOptions {
                    start_after: start_after.clone(),
                    deadline: Some(deadline),
                    concurrency: 1,
                    progress: None,
                },
            )
            .await
            .unwrap();
            assert!(out.failures.is_empty(), "{:?}", out.failures);
            surveyed.extend(names(&out).into_iter().map(str::to_string));
            if out.complete {
                assert_eq!(out.resume_after, None);
                break;
            }
            assert_eq!(out.surveys.len(), 3);
            assert_eq!(out.resume_after.as_deref(), names(&out).last().copied());
            start_after = out.resume_after;
        }
        assert_eq!(
            surveyed, repositories,
            "each repository surveyed once, in order"
        );
        assert_eq!(runs, 3);
    }

    #[tokio::test]
    async fn a_deadline_already_passed_starts_nothing_and_resumes_where_it_started() {
        let (_dir, layout, ecr, _) = registry(&["a", "b"], 1).await;
        let out = survey_ecr_registry(
            Arc::new(ecr),
            opener(layout).as_ref(),
            &EventOrigin::default(),
            &settings("*:*"),
            &RegistrySurveyOptions {
                start_after: Some("a".into()),
                deadline: Some(Deadline::with_clock(
                    SystemTime::now() + Duration::from_secs(3600),
                    Duration::ZERO,
                    stepping_clock(
                        SystemTime::now() + Duration::from_secs(7200),
                        Duration::ZERO,
                    ),
                )),
                concurrency: 4,
                progress: None,
            },
        )
        .await
        .unwrap();
        assert!(out.surveys.is_empty());
        assert_eq!(out.selected, 1);
        assert!(!out.complete);
        assert_eq!(out.resume_after.as_deref(), Some("a"));
    }

    /// Throttles the first DescribeImages of repository `b`, as ECR past the SDK's
    /// retries.
    struct ThrottlesB {
        inner: MemoryEcr,
        throttled: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl EcrApi for ThrottlesB {
        async fn describe_repositories(
            &self,
            t: Option<String>,
        ) -> Result<(Vec<String>, Option<String>), EcrApiError> {
            self.inner.describe_repositories(t).await
        }
        async fn describe_images(
            &self,
            r: &str,
            t: Option<String>,
        ) -> Result<(Vec<crate::catalog::ecr::ImageDetail>, Option<String>), EcrApiError> {
            if r == "b" && !self.throttled.swap(true, Ordering::SeqCst) {
                return Err(EcrApiError {
                    message: "ThrottlingException: Rate exceeded".into(),
                    kind: crate::catalog::ApiErrorKind::Throttled,
                });
            }
            self.inner.describe_images(r, t).await
        }
        async fn batch_get_image(
            &self,
            r: &str,
            d: &[String],
        ) -> Result<
            (
                Vec<crate::catalog::ecr::FetchedManifest>,
                Vec<crate::catalog::ecr::ImageFailure>,
            ),
            EcrApiError,
        > {
            self.inner.batch_get_image(r, d).await
        }
        async fn batch_delete_image(
            &self,
            r: &str,
            d: &[String],
        ) -> Result<(Vec<String>, Vec<crate::catalog::ecr::ImageFailure>), EcrApiError> {
            self.inner.batch_delete_image(r, d).await
        }
    }

    /// A retryable failure once the deadline has come is the deadline's doing: the
    /// repository is not done, and the next run starts with it (and redoes the ones
    /// after it). Without a deadline it is a failure like any other, marked retryable.
    #[tokio::test]
    async fn a_repository_throttled_after_the_deadline_is_where_the_next_run_starts() {
        let (_dir, layout, ecr, _) = registry(&["a", "b", "c"], 2).await;
        let api = Arc::new(ThrottlesB {
            inner: ecr,
            throttled: Default::default(),
        });
        let open = opener(layout);
        let now = SystemTime::now();
        // Reads at 0, 25 and 50 minutes start a, b and c; the check of b's failure
        // reads 75 minutes, past the 60-minute deadline.
        let deadline = Deadline::with_clock(
            now + Duration::from_secs(3600),
            Duration::ZERO,
            stepping_clock(now, Duration::from_secs(1500)),
        );
        let run = |deadline: Option<Deadline>, start_after: Option<String>| {
            let (api, open) = (api.clone(), &open);
            async move {
                survey_ecr_registry(
                    api,
                    open.as_ref(),
                    &EventOrigin::default(),
                    &settings("*:*"),
                    &RegistrySurveyOptions {
                        start_after,
                        deadline,
                        concurrency: 1,
                        progress: None,
                    },
                )
                .await
                .unwrap()
            }
        };
        let first = run(Some(deadline), None).await;
        assert_eq!(names(&first), ["a"]);
        assert!(first.failures.is_empty(), "{:?}", first.failures);
        assert!(!first.complete);
        assert_eq!(first.resume_after.as_deref(), Some("a"));
        let second = run(None, first.resume_after).await;
        assert_eq!(names(&second), ["b", "c"]);
        assert!(second.complete);

        // Without a deadline the throttled repository is a named, retryable failure.
        let (_dir, layout, ecr, _) = registry(&["a", "b", "c"], 2).await;
        let again = Arc::new(ThrottlesB {
            inner: ecr,
            throttled: Default::default(),
        });
        let out = survey_ecr_registry(
            again,
            opener(layout).as_ref(),
            &EventOrigin::default(),
            &settings("*:*"),
            &RegistrySurveyOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(names(&out), ["a", "c"]);
        assert_eq!(out.failures.len(), 1);
        assert_eq!(out.failures[0].repository, "b");
        assert!(out.failures[0].retryable);
        assert!(
            out.failures[0].error.contains("ThrottlingException"),
            "{}",
            out.failures[0].error
        );
        assert!(out.complete);
    }
}
