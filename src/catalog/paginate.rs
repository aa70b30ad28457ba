//! The one way every paginated AWS listing of the catalog is followed (ECS, Lambda, ECR,
//! S3): page after page until the last, stopping with an error, never looping, when
//! the service hands back a token it already gave in this listing, when the listing
//! passes [`Paging::max_pages`], or when the invocation deadline comes.
//!
//! Written here rather than taken from the SDK's paginators because the listings go
//! through small per-page ports (`EcsApi`, `LambdaApi`, `EcrApi`) that the in-memory test
//! doubles implement too, and the SDK paginators only stop on a token repeated by the
//! very next page; a token cycle over several pages, a page cap and the deadline are
//! checked here for all of them at once.

use crate::deadline::Deadline;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Listings stop with [`PagingError::TooManyPages`] past this many pages (10 million
/// ECR images at 1000 a page, a million task definitions at 100).
pub const DEFAULT_MAX_PAGES: usize = 10_000;

/// Why a listing stopped before its last page. Any of these blocks the deletions that
/// depended on the listing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    /// The service returned a token it had already returned in this listing.
    #[error("{service} {operation}: page {page} returned the token {token:?} a second time; the listing stopped instead of looping")]
    RepeatedToken {
        /// `ECS`, `Lambda`, `ECR`, `S3`.
        service: &'static str,
        /// The operation (`ListClusters`, `DescribeImages`...).
        operation: &'static str,
        /// The page (1-based) that returned it.
        page: usize,
        /// The token, as the service sent it.
        token: String,
    },
    /// The listing did not end within the page cap.
    #[error("{service} {operation}: more than {max_pages} pages; the listing stopped")]
    TooManyPages {
        /// `ECS`, `Lambda`, `ECR`, `S3`.
        service: &'static str,
        /// The operation.
        operation: &'static str,
        /// The cap.
        max_pages: usize,
    },
    /// The invocation deadline came before the listing ended.
    #[error("{service} {operation}: the invocation deadline came after {pages} pages; the listing stopped")]
    DeadlinePassed {
        /// `ECS`, `Lambda`, `ECR`, `S3`.
        service: &'static str,
        /// The operation.
        operation: &'static str,
        /// The pages read before.
        pages: usize,
    },
}

impl PagingError {
    /// A listing cut by the deadline may complete in a later run; a token loop or a
    /// listing without end will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PagingError::DeadlinePassed { .. })
    }
}

/// The limits of every listing of one catalog: the page cap, and the deadline of the
/// invocation in progress (shared: the catalog and its workload listings read the one
/// the run sets).
#[derive(Debug, Clone)]
pub struct Paging {
    max_pages: usize,
    deadline: Arc<RwLock<Option<Deadline>>>,
}

impl Default for Paging {
    fn default() -> Self {
        Self::with_max_pages(DEFAULT_MAX_PAGES)
    }
}

impl Paging {
    /// Limits with `max_pages` pages per listing and no deadline.
    pub fn with_max_pages(max_pages: usize) -> Self {
        Self {
            max_pages,
            deadline: Arc::default(),
        }
    }

    /// The page cap.
    pub fn max_pages(&self) -> usize {
        self.max_pages
    }

    /// Sets (or clears) the deadline every listing sharing these limits stops at.
    pub fn set_deadline(&self, deadline: Option<Deadline>) {
        *self.deadline.write().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// The deadline in force, if any.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs one call of `service` `operation` within the deadline: a call still running
    /// when it comes is dropped and the listing fails with [`PagingError::DeadlinePassed`].
    pub async fn call<T, E, Fut>(
        &self,
        service: &'static str,
        operation: &'static str,
        pages: usize,
        call: Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
        E: From<PagingError>,
    {
        let passed = || PagingError::DeadlinePassed {
            service,
            operation,
            pages,
        };
        // Real time against the deadline's stop time: the deadline's own clock (which
        // tests step) decides when a run stops starting work; this bounds how long a
        // call already started may take.
        let Some(d) = self.deadline() else {
            return call.await;
        };
        let remaining = d
            .stop_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if remaining.is_zero() {
            return Err(passed().into());
        }
        match tokio::time::timeout(remaining, call).await {
            Ok(out) => out,
            Err(_) => Err(passed().into()),
        }
    }

    /// Every item of a listing: `page(token)` returns one page and the next token
    /// (`None` or empty on the last page).
    pub async fn all<T, E, F, Fut>(
        &self,
        service: &'static str,
        operation: &'static str,
        mut page: F,
    ) -> Result<Vec<T>, E>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: Future<Output = Result<(Vec<T>, Option<String>), E>>,
        E: From<PagingError>,
    {
        let mut out = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut token = None;
        for n in 1..=self.max_pages {
            let (items, next) = self.call(service, operation, n - 1, page(token)).await?;
            out.extend(items);
            match next {
                Some(t) if !t.is_empty() => {
                    if !seen.insert(t.clone()) {
                        return Err(PagingError::RepeatedToken {
                            service,
                            operation,
                            page: n,
                            token: t,
                        }
                        .into());
                    }
                    token = Some(t);
                }
                _ => return Ok(out),
            }
        }
        Err(PagingError::TooManyPages {
            service,
            operation,
            max_pages: self.max_pages,
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum E {
        Paging(PagingError),
    }
    impl From<PagingError> for E {
        fn from(e: PagingError) -> Self {
            E::Paging(e)
        }
    }

    /// Pages `0..n`, each with the token of `next(i)`.
    async fn list(
        paging: &Paging,
        next: impl Fn(usize) -> Option<String>,
        calls: &mut usize,
    ) -> Result<Vec<usize>, E> {
        paging
            .all("ECS", "ListClusters", |t: Option<String>| {
                *calls += 1;
                let i: usize = t.map_or(0, |t| t.trim_start_matches('t').parse().unwrap());
                let out = Ok((vec![i], next(i)));
                async move { out }
            })
            .await
    }

    #[tokio::test]
    async fn follows_tokens_to_the_last_page() {
        let mut calls = 0;
        let got = list(
            &Paging::default(),
            |i| (i < 4).then(|| format!("t{}", i + 1)),
            &mut calls,
        )
        .await;
        assert_eq!(got, Ok(vec![0, 1, 2, 3, 4]));
        assert_eq!(calls, 5);
    }

    #[tokio::test]
    async fn a_token_seen_before_stops_the_listing_even_pages_later() {
        // t1 -> t2 -> t1: a cycle of two pages, not the same token twice in a row.
        let mut calls = 0;
        let got = list(
            &Paging::default(),
            |i| Some(format!("t{}", if i == 2 { 1 } else { i + 1 })),
            &mut calls,
        )
        .await;
        assert_eq!(
            got,
            Err(E::Paging(PagingError::RepeatedToken {
                service: "ECS",
                operation: "ListClusters",
                page: 3,
                token: "t1".into()
            }))
        );
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn the_page_cap_stops_a_listing_without_end() {
        let mut calls = 0;
        let got = list(
            &Paging::with_max_pages(7),
            |i| Some(format!("t{}", i + 1)),
            &mut calls,
        )
        .await;
        assert!(
            matches!(
                got,
                Err(E::Paging(PagingError::TooManyPages { max_pages: 7, .. }))
            ),
            "{got:?}"
        );
        assert_eq!(calls, 7);
    }

    #[tokio::test]
    async fn a_passed_deadline_stops_before_the_next_page() {
        let paging = Paging::default();
        paging.set_deadline(Some(Deadline::new(
            SystemTime::now(),
            Duration::from_secs(1),
        )));
        let mut calls = 0;
        let got = list(&paging, |i| Some(format!("t{}", i + 1)), &mut calls).await;
        assert!(
            matches!(&got, Err(E::Paging(e @ PagingError::DeadlinePassed { pages: 0, .. })) if e.is_retryable()),
            "{got:?}"
        );
        assert_eq!(calls, 1, "the page future is built but never polled");
    }

    #[tokio::test]
    async fn a_call_that_never_answers_ends_at_the_deadline() {
        let paging = Paging::default();
        paging.set_deadline(Some(Deadline::new(
            SystemTime::now() + Duration::from_millis(300),
            Duration::ZERO,
        )));
        let got: Result<(), E> = paging
            .call("ECS", "ListTasks", 0, std::future::pending())
            .await;
        assert!(
            matches!(got, Err(E::Paging(PagingError::DeadlinePassed { .. }))),
            "{got:?}"
        );
    }
}
