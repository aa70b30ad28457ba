//! The workloads of an account (ECS, Lambda) and the images they hold: the port
//! cleanup lists them through ([`InUseSource`]), the references it returns
//! ([`InUseRef`], [`EcrImageRef`]), and the adapter over the ECS and Lambda ports
//! ([`super::account_workloads::Workloads`]). Only references to the collecting account's own registry in its region
//! are kept ([`own_registry_ref`]). What cleanup does with them (an image in use is kept)
//! lives in `cleanup::in_use`.

use crate::catalog::aws_error::SdkFailure;
use crate::catalog::paginate::PagingError;
#[cfg(doc)]
use crate::catalog::ApiErrorKind;
use crate::oci::Sha256Digest;
use crate::registry::ecr::parse_registry_host;
use aws_config::retry::ProvideErrorKind;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use serde::Serialize;

/// The window by default: an image Inspector saw in use within it is kept.
pub const DEFAULT_INSPECTOR_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

/// Task-definition revisions of each family kept for rollbacks, unless the policy says.
pub const DEFAULT_TASK_DEFINITION_REVISIONS: usize = 5;

/// Which workloads protect their images (the policy's `protect`). Everything is on
/// unless the policy turns it off by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protect {
    /// Running and pending tasks, services' deployments, the latest task-definition revisions.
    pub ecs: bool,
    /// Image-packaged functions: `$LATEST`, every published version, every alias.
    pub lambda: bool,
    /// The latest N ACTIVE revisions of each task-definition family.
    pub task_definition_revisions: usize,
    /// Images Amazon Inspector saw in use by ECS tasks or EKS pods (opt-in).
    pub inspector: bool,
    /// How far back an image Inspector saw in use stays protected.
    #[serde(serialize_with = "as_policy_duration")]
    pub inspector_window: std::time::Duration,
}

/// A window as policies write it (`30d`).
fn as_policy_duration<S: serde::Serializer>(
    d: &std::time::Duration,
    s: S,
) -> Result<S::Ok, S::Error> {
    let d = chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX);
    s.serialize_str(&crate::format::duration(d))
}

impl Default for Protect {
    fn default() -> Self {
        Protect {
            ecs: true,
            lambda: true,
            task_definition_revisions: DEFAULT_TASK_DEFINITION_REVISIONS,
            inspector: false,
            inspector_window: DEFAULT_INSPECTOR_WINDOW,
        }
    }
}

impl Protect {
    /// True when ECS, Lambda or Inspector protects images, i.e. the images in use must be listed.
    pub fn any(&self) -> bool {
        self.ecs || self.lambda || self.inspector
    }
}

/// What an ECR image reference names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A tag: protects the digest the tag names when the repository is planned.
    Tag(String),
    /// A digest: protects that manifest.
    Digest(Sha256Digest),
}

/// A reference to an image in an ECR registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct EcrImageRef {
    /// The registry's AWS account id.
    pub account: String,
    /// The registry's region.
    pub region: String,
    /// The repository name.
    pub repository: String,
    /// The tag or digest it names.
    pub target: Target,
}

impl EcrImageRef {
    /// Parses `<account>.dkr.ecr.<region>.amazonaws.com/repo[:tag][@sha256:…]` (no tag
    /// and no digest: `latest`, as a pull would). `None` for any other registry, or a
    /// reference that does not parse.
    pub fn parse(uri: &str) -> Option<Self> {
        let (host, path) = uri.split_once('/')?;
        let registry = parse_registry_host(host)?;
        let (name, target) = match path.split_once('@') {
            Some((name, digest)) => {
                // `repo:tag@digest` pulls by digest: the tag is only informative.
                let name = match name.rsplit_once(':') {
                    Some((n, _)) => n,
                    None => name,
                };
                (name, Target::Digest(digest.parse().ok()?))
            }
            None => match path.rsplit_once(':') {
                Some((name, tag)) if !tag.is_empty() && !tag.contains('/') => {
                    (name, Target::Tag(tag.to_string()))
                }
                _ => (path, Target::Tag("latest".into())),
            },
        };
        if name.is_empty() {
            return None;
        }
        Some(EcrImageRef {
            account: registry.account,
            region: registry.region,
            repository: name.to_string(),
            target,
        })
    }

    /// The same repository, pinned to `digest`.
    pub fn with_digest(mut self, digest: Sha256Digest) -> Self {
        self.target = Target::Digest(digest);
        self
    }
}

/// One image reference a workload holds, and who holds it (`ecs service web/api, task def web:42`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct InUseRef {
    /// The image referenced.
    pub image: EcrImageRef,
    /// Who holds it, for plans and reports (`ecs service web/api, task def web:42`, `lambda fn resize:3`).
    pub user: String,
}

/// The account and region of an ARN (`arn:aws:ecs:us-east-1:123456789012:cluster/web`).
pub fn arn_account_region(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (_arn, _partition, _service) = (parts.next()?, parts.next()?, parts.next()?);
    let region = parts.next()?;
    let account = parts.next()?;
    Some((account, region))
}

/// The reference `uri` held by the resource `owner_arn`, when it names an image of the
/// owner's own ECR registry (same account, same region, any of the registry's host
/// forms); `Ok(None)` for every other image (Docker Hub, another account's or region's
/// registry). A reference that names the owner's registry but does not parse (a bad
/// digest, an empty repository, a host form not known here) is an error: the image it
/// means cannot be told, so it must block deletions rather than be dropped as foreign.
pub fn own_registry_ref(uri: &str, owner_arn: &str) -> Result<Option<EcrImageRef>, String> {
    let (account, region) = arn_account_region(owner_arn)
        .ok_or_else(|| format!("{owner_arn:?} is not an ARN, so its registry is unknown"))?;
    let host = uri.split_once('/').map_or(uri, |(h, _)| h);
    match parse_registry_host(host) {
        Some(r) if r.account == account && r.region == region => match EcrImageRef::parse(uri) {
            Some(image) => Ok(Some(image)),
            None => Err(format!(
                "{uri:?} (held by {owner_arn}) names this account's registry but is not a valid image reference"
            )),
        },
        Some(_) => Ok(None),
        None if names_account_registry(host, account) => Err(format!(
            "{uri:?} (held by {owner_arn}) names account {account}'s ECR registry in a host form afterpush does not know"
        )),
        None => Ok(None),
    }
}

/// True for a host that starts with `account` and looks like an ECR registry
/// (`<account>.dkr…`), in whatever form.
fn names_account_registry(host: &str, account: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.strip_prefix(account)
        .and_then(|r| r.strip_prefix('.'))
        .is_some_and(|r| r.starts_with("dkr") || r.contains("ecr"))
}

/// Which registry's images a listing keeps references to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryScope<'a> {
    /// The registry of the account and region each workload runs in (the home listing).
    Own,
    /// One registry: a consumer account's workloads, pulling from the central registry.
    Of {
        /// The registry's account.
        account: &'a str,
        /// The registry's region.
        region: &'a str,
    },
}

impl RegistryScope<'_> {
    /// The reference `uri` held by the resource `owner_arn`, when it names an image of
    /// this scope's registry; an error for a reference that names that registry but
    /// does not parse (as [`own_registry_ref`]).
    pub fn reference(&self, uri: &str, owner_arn: &str) -> Result<Option<EcrImageRef>, String> {
        let (account, region) = match self {
            RegistryScope::Own => return own_registry_ref(uri, owner_arn),
            RegistryScope::Of { account, region } => (*account, *region),
        };
        let host = uri.split_once('/').map_or(uri, |(h, _)| h);
        match parse_registry_host(host) {
            Some(r) if r.account == account && r.region == region => match EcrImageRef::parse(uri)
            {
                Some(image) => Ok(Some(image)),
                None => Err(format!(
                    "{uri:?} (held by {owner_arn}) names the registry of {account} in {region} but is not a valid image reference"
                )),
            },
            Some(_) => Ok(None),
            None if names_account_registry(host, account) => Err(format!(
                "{uri:?} (held by {owner_arn}) names account {account}'s ECR registry in a host form afterpush does not know"
            )),
            None => Ok(None),
        }
    }
}

/// Why the images in use could not be listed: the run deletes nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[error("listing images in use: {service} {operation} failed: {message}")]
pub struct InUseError {
    /// `ECS` or `Lambda`.
    pub service: &'static str,
    /// The API operation that failed (`ListTasks`, `GetFunction`...).
    pub operation: &'static str,
    /// The error the call returned.
    pub message: String,
    /// Throttling, 5xx, timeouts: a later run may succeed.
    pub retryable: bool,
}

/// An AWS SDK call failure as an [`InUseError`]: throttling, 5xx, timeouts and
/// connection failures are retryable, the rest (access denied, not found, validation)
/// are not (see [`ApiErrorKind::of_sdk_error`]).
impl InUseError {
    /// The failure of a call to `service` `operation` (any SDK crate).
    pub fn sdk<E>(service: &'static str, operation: &'static str, err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + ProvideErrorKind + std::error::Error + Send + Sync + 'static,
    {
        let failure = SdkFailure::of(&err);
        InUseError {
            service,
            operation,
            retryable: failure.kind.is_retryable(),
            message: failure.message,
        }
    }
}

/// A listing stopped by its guard (a repeated token, the page cap, the deadline).
impl From<PagingError> for InUseError {
    fn from(e: PagingError) -> Self {
        let (service, operation) = match &e {
            PagingError::RepeatedToken {
                service, operation, ..
            }
            | PagingError::TooManyPages {
                service, operation, ..
            }
            | PagingError::DeadlinePassed {
                service, operation, ..
            } => (*service, *operation),
        };
        InUseError {
            service,
            operation,
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
}

/// Lists the image references of the workloads `protect` names.
#[async_trait::async_trait]
pub trait InUseSource: Send + Sync {
    /// Lists the references the workloads hold; `Err` when any listing fails (the run then deletes nothing).
    async fn collect(&self, protect: &Protect) -> Result<Vec<InUseRef>, InUseError>;
}

/// A source with no workloads: an OCI image layout on disk, which no ECS task or Lambda
/// function can pull from.
pub struct NoWorkloads;

#[async_trait::async_trait]
impl InUseSource for NoWorkloads {
    async fn collect(&self, _protect: &Protect) -> Result<Vec<InUseRef>, InUseError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    #[test]
    fn parses_ecr_references_and_ignores_others() {
        let d = Sha256Digest::of(b"x");
        let r = EcrImageRef::parse(&format!("{HOST}/team/app:v1")).unwrap();
        assert_eq!(
            (r.account.as_str(), r.region.as_str(), r.repository.as_str()),
            ("123456789012", "us-east-1", "team/app")
        );
        assert_eq!(r.target, Target::Tag("v1".into()));
        let r = EcrImageRef::parse(&format!("{HOST}/app:v1@{d}")).unwrap();
        assert_eq!(
            (r.repository.as_str(), r.target),
            ("app", Target::Digest(d))
        );
        let r = EcrImageRef::parse(&format!("{HOST}/app")).unwrap();
        assert_eq!(r.target, Target::Tag("latest".into()));
        for other in [
            "nginx:latest",
            "public.ecr.aws/docker/library/nginx:1",
            "ghcr.io/o/app:v1",
            &format!("{HOST}/app@sha256:short"),
            &format!("{HOST}/"),
        ] {
            assert_eq!(EcrImageRef::parse(other), None, "{other}");
        }
    }

    #[test]
    fn only_the_owners_registry_counts() {
        let arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3";
        let own = |uri: &str| own_registry_ref(uri, arn);
        assert!(own(&format!("{HOST}/app:v1")).unwrap().is_some());
        assert!(own("210987654321.dkr.ecr.us-east-1.amazonaws.com/app:v1")
            .unwrap()
            .is_none());
        assert!(own("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:v1")
            .unwrap()
            .is_none());
        assert!(own("nginx").unwrap().is_none());
        assert!(
            own("210987654321.dkr.ecr.us-east-1.amazonaws.com/app@sha256:short")
                .unwrap()
                .is_none()
        );
    }

    /// The dual-stack host of the owner's registry protects its images, by tag, digest
    /// and tag@digest; a reference to the owner's registry that does not parse is an
    /// error, never "another registry".
    #[test]
    fn dual_stack_references_count_and_unparsable_own_ones_are_errors() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:resize";
        let d = Sha256Digest::of(b"x");
        for host in [
            "123456789012.dkr-ecr.us-east-1.on.aws",
            "123456789012.dkr-ecr-fips.us-east-1.on.aws",
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com:443",
        ] {
            for (uri, target) in [
                (format!("{host}/team/app:v1"), Target::Tag("v1".into())),
                (format!("{host}/team/app@{d}"), Target::Digest(d.clone())),
                (format!("{host}/team/app:v1@{d}"), Target::Digest(d.clone())),
            ] {
                let r = own_registry_ref(&uri, arn).unwrap().expect(&uri);
                assert_eq!(
                    (r.repository.as_str(), r.target),
                    ("team/app", target),
                    "{uri}"
                );
            }
        }
        for bad in [
            format!("{HOST}/app@sha256:short"),
            format!("{HOST}/"),
            "123456789012.dkr-ecr.us-east-1.on.aws/app@sha256:nothex".into(),
            "123456789012.dkr-ecr.us-east-1.on.example/app:v1".into(),
        ] {
            let err = own_registry_ref(&bad, arn).unwrap_err();
            assert!(err.contains(&bad), "{err}");
        }
        assert!(own_registry_ref(&format!("{HOST}/app:v1"), "not-an-arn").is_err());
    }

    #[test]
    fn a_consumers_references_count_only_for_the_central_registry() {
        let scope = RegistryScope::Of {
            account: "123456789012",
            region: "us-east-1",
        };
        // Held by a resource of account 222222222222: its own registry does not count.
        let arn = "arn:aws:ecs:eu-west-1:222222222222:task-definition/web:3";
        let r = scope
            .reference(&format!("{HOST}/app:v1"), arn)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.account.as_str(), r.repository.as_str()),
            ("123456789012", "app")
        );
        for other in [
            "222222222222.dkr.ecr.eu-west-1.amazonaws.com/app:v1",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:v1",
            "nginx",
        ] {
            assert_eq!(scope.reference(other, arn), Ok(None), "{other}");
        }
        assert!(scope
            .reference(&format!("{HOST}/app@sha256:short"), arn)
            .unwrap_err()
            .contains("not a valid image reference"));
    }
}
