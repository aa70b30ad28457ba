//! Images in use that no workload API lists (EKS pods, ECS tasks in accounts the janitor
//! cannot read), as Amazon Inspector sees them: its coverage of ECR images
//! (`ListCoverage`, resource type `AWS_ECR_CONTAINER_IMAGE`) reports per image how many
//! ECS tasks and EKS pods use it (`inUseCount`) and when one last did (`lastInUseAt`).
//! With a delegated administrator the coverage spans the organisation.
//!
//! Opt-in (`protect.inspector`): [`InspectorInUse`] keeps every image in use now or within
//! the window. Inspector must scan ECR for the answer to mean anything, so the account's
//! ECR scan state is read first (`BatchGetAccountStatus`); anything but `ENABLED`, or a
//! refused call, is an [`InUseError`] and the run deletes nothing.

use crate::aws_clients::ClientSettings;
use crate::catalog::paginate::Paging;
use crate::catalog::workloads::{EcrImageRef, InUseError, InUseRef, InUseSource, Protect, Target};
use aws_sdk_inspector2::types::{CoverageFilterCriteria, CoverageStringComparison};
use aws_sdk_inspector2::types::{CoverageStringFilter, CoveredResource};
use chrono::{DateTime, Utc};

pub use crate::catalog::workloads::DEFAULT_INSPECTOR_WINDOW;

/// ListCoverage returns at most 200 resources per page.
pub const COVERAGE_PAGE: i32 = 200;

/// One ECR image in Inspector's coverage, reduced to what cleanup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoveredImage {
    /// `resourceId`: `arn:aws:ecr:<region>:<account>:repository/<name>/sha256:<hex>`.
    pub resource_id: String,
    /// `resourceMetadata.ecrImage.inUseCount`: ECS tasks and EKS pods using it now.
    pub in_use_count: i64,
    /// `resourceMetadata.ecrImage.lastInUseAt`.
    pub last_in_use_at: Option<DateTime<Utc>>,
}

/// The caller's account as BatchGetAccountStatus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountScanStatus {
    /// The caller's account id.
    pub account: String,
    /// `resourceState.ecr.status` (`ENABLED`, `DISABLED`, ...).
    pub ecr: Option<String>,
}

/// The two Inspector calls the source makes.
#[async_trait::async_trait]
pub trait InspectorApi: Send + Sync {
    /// BatchGetAccountStatus for the caller's account; `None` when the answer names no
    /// account.
    async fn account_status(&self) -> Result<Option<AccountScanStatus>, InUseError>;
    /// ListCoverage of the ECR images of `account` (a delegated administrator sees the
    /// organisation's; the janitor cleans only its own registry): one page and the next
    /// token.
    async fn list_ecr_coverage(
        &self,
        account: &str,
        next_token: Option<String>,
    ) -> Result<(Vec<CoveredImage>, Option<String>), InUseError>;
}

/// [`InspectorApi`] over aws-sdk-inspector2.
#[derive(Clone)]
pub struct SdkInspector {
    client: aws_sdk_inspector2::Client,
    page_size: i32,
}

impl SdkInspector {
    /// An adapter over a client built with the catalog's retries and timeouts.
    pub fn from_sdk_config(config: &aws_config::SdkConfig, settings: &ClientSettings) -> Self {
        Self::new(settings.inspector(config))
    }

    /// An adapter over `client`, asking for full pages.
    pub fn new(client: aws_sdk_inspector2::Client) -> Self {
        Self {
            client,
            page_size: COVERAGE_PAGE,
        }
    }

    /// The same, asking for pages of `size` (tests follow tokens with small pages).
    pub fn with_page_size(mut self, size: i32) -> Self {
        self.page_size = size;
        self
    }
}

fn smithy_time(t: &aws_sdk_inspector2::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn covered_image(r: &CoveredResource) -> CoveredImage {
    let image = r.resource_metadata().and_then(|m| m.ecr_image());
    CoveredImage {
        resource_id: r.resource_id().to_string(),
        in_use_count: image.and_then(|i| i.in_use_count()).unwrap_or(0),
        last_in_use_at: image.and_then(|i| i.last_in_use_at()).and_then(smithy_time),
    }
}

#[async_trait::async_trait]
impl InspectorApi for SdkInspector {
    async fn account_status(&self) -> Result<Option<AccountScanStatus>, InUseError> {
        let out = self
            .client
            .batch_get_account_status()
            .send()
            .await
            .map_err(|e| InUseError::sdk("Inspector", "BatchGetAccountStatus", e))?;
        if let Some(f) = out.failed_accounts().first() {
            return Err(InUseError {
                service: "Inspector",
                operation: "BatchGetAccountStatus",
                message: format!(
                    "account {}: {} {}",
                    f.account_id(),
                    f.error_code().as_str(),
                    f.error_message()
                ),
                retryable: false,
            });
        }
        Ok(out.accounts().first().map(|a| AccountScanStatus {
            account: a.account_id().to_string(),
            ecr: a
                .resource_state()
                .and_then(|s| s.ecr())
                .map(|s| s.status().as_str().to_string()),
        }))
    }

    async fn list_ecr_coverage(
        &self,
        account: &str,
        next_token: Option<String>,
    ) -> Result<(Vec<CoveredImage>, Option<String>), InUseError> {
        let equals = |value: &str| {
            CoverageStringFilter::builder()
                .comparison(CoverageStringComparison::Equals)
                .value(value)
                .build()
                .map_err(|e| InUseError {
                    service: "Inspector",
                    operation: "ListCoverage",
                    message: e.to_string(),
                    retryable: false,
                })
        };
        let out = self
            .client
            .list_coverage()
            .max_results(self.page_size)
            .set_next_token(next_token)
            .filter_criteria(
                CoverageFilterCriteria::builder()
                    .resource_type(equals("AWS_ECR_CONTAINER_IMAGE")?)
                    .account_id(equals(account)?)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| InUseError::sdk("Inspector", "ListCoverage", e))?;
        let images = out.covered_resources().iter().map(covered_image).collect();
        Ok((images, out.next_token().map(str::to_string)))
    }
}

/// The ECR image an Inspector resource id names: `arn:aws:ecr:<region>:<account>:
/// repository/<name>/sha256:<hex>`; `None` for anything else.
pub fn ecr_image_of_resource(resource_id: &str) -> Option<EcrImageRef> {
    let mut parts = resource_id.splitn(6, ':');
    let (_arn, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    let (region, account, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if service != "ecr" {
        return None;
    }
    let path = rest.strip_prefix("repository/")?;
    let (repository, digest) = path.rsplit_once("/sha256")?;
    let digest = format!("sha256{digest}").parse().ok()?;
    (!repository.is_empty()).then(|| EcrImageRef {
        account: account.to_string(),
        region: region.to_string(),
        repository: repository.to_string(),
        target: Target::Digest(digest),
    })
}

/// The images Inspector saw in use within the window, as an [`InUseSource`]; it lists
/// nothing unless the policy turns `protect.inspector` on.
pub struct InspectorInUse<A> {
    api: A,
    paging: Paging,
    now: fn() -> DateTime<Utc>,
}

impl<A: InspectorApi> InspectorInUse<A> {
    /// Inspector through `api`, with the default page cap and the wall clock.
    pub fn new(api: A) -> Self {
        Self {
            api,
            paging: Paging::default(),
            now: Utc::now,
        }
    }

    /// The same, with its listing under `paging` (shared with the catalog's).
    pub fn with_paging(mut self, paging: Paging) -> Self {
        self.paging = paging;
        self
    }

    /// The same, with `now` as its clock (the window is measured back from it).
    pub fn with_clock(mut self, now: fn() -> DateTime<Utc>) -> Self {
        self.now = now;
        self
    }
}

#[async_trait::async_trait]
impl<A: InspectorApi> InUseSource for InspectorInUse<A> {
    async fn collect(&self, protect: &Protect) -> Result<Vec<InUseRef>, InUseError> {
        if !protect.inspector {
            return Ok(Vec::new());
        }
        let status = self.api.account_status().await?;
        let ecr = status.as_ref().and_then(|s| s.ecr.as_deref());
        let Some(account) = status
            .as_ref()
            .map(|s| s.account.as_str())
            .filter(|_| ecr == Some("ENABLED"))
        else {
            return Err(InUseError {
                service: "Inspector",
                operation: "BatchGetAccountStatus",
                message: format!(
                    "ECR scanning is {} in this account, so Inspector cannot tell which images \
                     are in use; enable it, or turn protect.inspector off",
                    ecr.unwrap_or("not reported")
                ),
                retryable: false,
            });
        };
        let covered = self
            .paging
            .all("Inspector", "ListCoverage", |token| {
                self.api.list_ecr_coverage(account, token)
            })
            .await?;
        let window =
            chrono::Duration::from_std(protect.inspector_window).unwrap_or(chrono::Duration::MAX);
        let since = (self.now)()
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut refs = Vec::new();
        for c in covered {
            let recent = c.last_in_use_at.is_some_and(|t| t >= since);
            if c.in_use_count <= 0 && !recent {
                continue;
            }
            let Some(image) =
                ecr_image_of_resource(&c.resource_id).filter(|i| i.account == account)
            else {
                continue;
            };
            let last = c
                .last_in_use_at
                .map_or("never".to_string(), |t| t.to_rfc3339());
            refs.push(InUseRef {
                image,
                user: format!(
                    "inspector: in use by {} ECS tasks or EKS pods, last in use {last}",
                    c.in_use_count
                ),
            });
        }
        Ok(refs)
    }
}

/// Two sources as one: the references of both; either failing fails the listing.
pub struct BothSources<A, B>(pub A, pub B);

#[async_trait::async_trait]
impl<A: InUseSource, B: InUseSource> InUseSource for BothSources<A, B> {
    async fn collect(&self, protect: &Protect) -> Result<Vec<InUseRef>, InUseError> {
        let mut refs = self.0.collect(protect).await?;
        refs.extend(self.1.collect(protect).await?);
        refs.sort();
        refs.dedup();
        Ok(refs)
    }
}

/// An in-memory Inspector for tests and benchmarks: a scan status and the coverage, in
/// pages of `page_size`, with every call counted.
#[cfg(any(test, feature = "test-util"))]
#[derive(Default)]
pub struct MemoryInspector {
    /// `resourceState.ecr.status` of account 123456789012 (`None`: the account is not
    /// in the answer).
    pub ecr_status: Option<String>,
    /// Refuse every call as access denied.
    pub denied: bool,
    /// The coverage.
    pub covered: Vec<CoveredImage>,
    /// Resources per page (0: all in one).
    pub page_size: usize,
    /// Calls made so far.
    pub calls: std::sync::atomic::AtomicUsize,
}

#[cfg(any(test, feature = "test-util"))]
impl MemoryInspector {
    fn call(&self, operation: &'static str) -> Result<(), InUseError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.denied {
            return Err(InUseError {
                service: "Inspector",
                operation,
                message: "AccessDeniedException: not authorized".into(),
                retryable: false,
            });
        }
        Ok(())
    }
}

#[cfg(any(test, feature = "test-util"))]
#[async_trait::async_trait]
impl InspectorApi for MemoryInspector {
    async fn account_status(&self) -> Result<Option<AccountScanStatus>, InUseError> {
        self.call("BatchGetAccountStatus")?;
        Ok(self.ecr_status.as_ref().map(|s| AccountScanStatus {
            account: "123456789012".into(),
            ecr: Some(s.clone()),
        }))
    }
    async fn list_ecr_coverage(
        &self,
        _account: &str,
        next_token: Option<String>,
    ) -> Result<(Vec<CoveredImage>, Option<String>), InUseError> {
        self.call("ListCoverage")?;
        let start: usize = next_token.map_or(0, |t| t.parse().unwrap_or(usize::MAX));
        let start = start.min(self.covered.len());
        let size = if self.page_size == 0 {
            self.covered.len()
        } else {
            self.page_size
        };
        let end = (start + size).min(self.covered.len());
        Ok((
            self.covered[start..end].to_vec(),
            (end < self.covered.len()).then(|| end.to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Sha256Digest;

    fn resource(repo: &str, seed: &str) -> String {
        format!(
            "arn:aws:ecr:us-east-1:123456789012:repository/{repo}/{}",
            Sha256Digest::of(seed.as_bytes())
        )
    }

    fn fixed_now() -> DateTime<Utc> {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    fn image(repo: &str, seed: &str, count: i64, last: Option<&str>) -> CoveredImage {
        CoveredImage {
            resource_id: resource(repo, seed),
            in_use_count: count,
            last_in_use_at: last.map(|t| t.parse().unwrap()),
        }
    }

    fn on() -> Protect {
        Protect {
            inspector: true,
            ..Protect::default()
        }
    }

    #[test]
    fn resource_ids_name_repository_and_digest() {
        let r = ecr_image_of_resource(&resource("team/app", "x")).unwrap();
        assert_eq!(
            (r.account.as_str(), r.region.as_str(), r.repository.as_str()),
            ("123456789012", "us-east-1", "team/app")
        );
        assert_eq!(r.target, Target::Digest(Sha256Digest::of(b"x")));
        for other in [
            "arn:aws:ecr:us-east-1:123456789012:repository/app",
            "arn:aws:ec2:us-east-1:123456789012:instance/i-1",
            "arn:aws:ecr:us-east-1:123456789012:repository//sha256:abc",
            "i-0123",
        ] {
            assert_eq!(ecr_image_of_resource(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn keeps_what_is_in_use_now_or_within_the_window_across_pages() {
        let api = MemoryInspector {
            ecr_status: Some("ENABLED".into()),
            covered: vec![
                image("app", "running", 3, Some("2026-11-30T12:00:00Z")),
                image("app", "recent", 0, Some("2026-11-10T00:00:00Z")),
                image("app", "old", 0, Some("2026-10-01T00:00:00Z")),
                image("app", "never", 0, None),
                // Another account's image (a delegated administrator sees them all).
                CoveredImage {
                    resource_id: resource("app", "elsewhere")
                        .replace("123456789012", "210987654321"),
                    in_use_count: 5,
                    last_in_use_at: None,
                },
            ],
            page_size: 1,
            ..Default::default()
        };
        let source = InspectorInUse::new(api).with_clock(fixed_now);
        let refs = source.collect(&on()).await.unwrap();
        let digests: Vec<Target> = refs.iter().map(|r| r.image.target.clone()).collect();
        assert_eq!(
            digests,
            [
                Target::Digest(Sha256Digest::of(b"running")),
                Target::Digest(Sha256Digest::of(b"recent"))
            ]
        );
        assert_eq!(
            refs[0].user,
            "inspector: in use by 3 ECS tasks or EKS pods, last in use 2026-11-30T12:00:00+00:00"
        );
        // Five one-resource pages and the status call.
        assert_eq!(
            source.api.calls.load(std::sync::atomic::Ordering::Relaxed),
            6
        );
        // A shorter window lets the recent one go.
        let short = Protect {
            inspector_window: std::time::Duration::from_secs(7 * 24 * 3600),
            ..on()
        };
        assert_eq!(source.collect(&short).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn off_by_default_and_calls_nothing() {
        let source = InspectorInUse::new(MemoryInspector::default());
        assert!(source
            .collect(&Protect::default())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            source.api.calls.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }

    #[tokio::test]
    async fn scanning_not_enabled_or_a_denied_call_fails_the_listing() {
        for (status, denied, expected) in [
            (Some("DISABLED"), false, "ECR scanning is DISABLED"),
            (None, false, "ECR scanning is not reported"),
            (Some("ENABLED"), true, "AccessDeniedException"),
        ] {
            let api = MemoryInspector {
                ecr_status: status.map(str::to_string),
                denied,
                covered: vec![image("app", "running", 1, None)],
                ..Default::default()
            };
            let err = InspectorInUse::new(api).collect(&on()).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert!(!err.retryable);
        }
    }
}
