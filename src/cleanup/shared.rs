//! Shared repositories: a repository whose policy, or whose registry's policy, lets
//! another principal pull (`ecr:BatchGetImage`). A consumer the in-use listing covers
//! (the registry's own account, an account of `CONSUMER_ACCOUNTS`) is seen like home;
//! any other (an organisation, `*`, an account not listed, a principal no account can be
//! told from, a policy that cannot be read) is *uncovered*: every image there that a
//! workload could be running is kept — every image, index and unknown artifact, and
//! every tagged manifest, with what they need through the planner's closure — unless
//! the policy accepts that risk by name (`protect.accept_uncovered`).

use crate::catalog::repository_policy::{
    pull_grantees, Grantee, PolicyReadError, PolicyText, RepositoryPolicies,
};
use crate::catalog::{Catalog, ImageRecord};
use crate::oci::{ArtifactKind, Sha256Digest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The images of a repository that ECS or Lambda use, each with who uses it
/// (`cleanup::in_use::InUse::protected`).
pub type InUseMap = BTreeMap<Sha256Digest, Vec<String>>;

/// Consumers the janitor cannot scan whose risk the policy accepts, by name: every
/// uncovered consumer of these repositories, and these accounts wherever they are granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AcceptUncovered {
    /// Repository names (exact: no patterns).
    pub repositories: Vec<String>,
    /// 12-digit account ids.
    pub accounts: Vec<String>,
}

impl AcceptUncovered {
    fn accepts(&self, repository: &str, grantee: &Grantee) -> bool {
        self.repositories.iter().any(|r| r == repository)
            || matches!(grantee, Grantee::Account(a) if self.accounts.contains(a))
    }
}

/// Which policy grants the pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantedBy {
    /// The repository's own policy.
    RepositoryPolicy,
    /// The registry's policy.
    RegistryPolicy,
}

impl std::fmt::Display for GrantedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GrantedBy::RepositoryPolicy => "repository policy",
            GrantedBy::RegistryPolicy => "registry policy",
        })
    }
}

/// Whether the janitor sees a consumer's workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coverage {
    /// A consumer account the in-use listing covers.
    Covered,
    /// Not covered, but the policy accepts the risk by name: its images are not kept for it.
    Accepted,
    /// Not covered: every image it could be running is kept.
    Uncovered,
}

/// One principal, other than the registry's account, that may pull a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    /// Who (`account 222222222222`, `organization o-abc123`, `anyone (Principal "*")`).
    pub principal: String,
    /// The policy that grants it.
    pub granted_by: GrantedBy,
    /// Whether its workloads are seen.
    pub coverage: Coverage,
}

/// A repository other principals may pull, and what the janitor makes of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRepository {
    /// The repository.
    pub repository: String,
    /// Every consumer besides the registry's own account.
    pub consumers: Vec<Consumer>,
}

impl SharedRepository {
    /// The consumers whose images are kept: neither covered nor accepted.
    pub fn uncovered(&self) -> impl Iterator<Item = &Consumer> {
        self.consumers
            .iter()
            .filter(|c| c.coverage == Coverage::Uncovered)
    }
}

/// The registry's policy, read once per run.
pub struct RegistryPolicy(Result<Option<PolicyText>, PolicyReadError>);

/// Reads the registry's policy when the catalog has policies (and the run protects
/// images in use at all).
pub async fn registry_policy(catalog: &dyn Catalog) -> Option<RegistryPolicy> {
    let policies = catalog.repository_policies()?;
    let read = policies.registry_policy().await;
    if let Err(e) = &read {
        tracing::error!(error = %e, "registry policy unreadable: shared with an unknown consumer");
    }
    Some(RegistryPolicy(read))
}

/// The grantees of a policy read (`Unknown` when it could not be read or parsed).
fn grantees_of(
    read: &Result<Option<PolicyText>, PolicyReadError>,
    repository_arn: impl Fn(&str) -> Option<String>,
) -> Vec<Grantee> {
    match read {
        Ok(None) => Vec::new(),
        Err(e) => vec![Grantee::Unknown(format!("the policy cannot be read: {e}"))],
        Ok(Some(p)) => {
            let home = &p.registry_id;
            match pull_grantees(&p.text, repository_arn(home).as_deref()) {
                Ok(g) => g
                    .into_iter()
                    .filter(|g| !matches!(g, Grantee::Account(a) if a == home))
                    .collect(),
                Err(e) => vec![Grantee::Unknown(format!(
                    "the policy cannot be parsed: {e}"
                ))],
            }
        }
    }
}

fn repository_arn(region: &str, account: &str, repository: &str) -> String {
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    format!("arn:{partition}:ecr:{region}:{account}:repository/{repository}")
}

/// Who else may pull `repository`, each classified; `None` when nobody else may (or the
/// catalog has no policies).
pub async fn repository_sharing(
    catalog: &dyn Catalog,
    registry: Option<&RegistryPolicy>,
    repository: &str,
    accept: &AcceptUncovered,
) -> Option<SharedRepository> {
    let policies: &dyn RepositoryPolicies = catalog.repository_policies()?;
    let read = policies.repository_policy(repository).await;
    let mut found: Vec<(Grantee, GrantedBy)> = grantees_of(&read, |_| None)
        .into_iter()
        .map(|g| (g, GrantedBy::RepositoryPolicy))
        .collect();
    if let Some(RegistryPolicy(read)) = registry {
        let region = policies.region();
        found.extend(
            grantees_of(read, |home| Some(repository_arn(&region, home, repository)))
                .into_iter()
                .map(|g| (g, GrantedBy::RegistryPolicy)),
        );
    }
    if found.is_empty() {
        return None;
    }
    let covered = policies.consumer_accounts();
    let consumers = found
        .into_iter()
        .map(|(grantee, granted_by)| {
            let coverage = match &grantee {
                Grantee::Account(a) if covered.contains(a) => Coverage::Covered,
                g if accept.accepts(repository, g) => Coverage::Accepted,
                _ => Coverage::Uncovered,
            };
            Consumer {
                principal: grantee.to_string(),
                granted_by,
                coverage,
            }
        })
        .collect();
    Some(SharedRepository {
        repository: repository.to_string(),
        consumers,
    })
}

/// True for a manifest a workload could be running: an image, an index, an unknown
/// artifact, or anything tagged (a tag is what deployments name).
fn could_be_running(image: &ImageRecord) -> bool {
    matches!(
        image.kind,
        ArtifactKind::Image | ArtifactKind::Index | ArtifactKind::Other
    ) || !image.tags.is_empty()
}

/// Adds to `protected` every image of `images` an uncovered consumer of `shared` could
/// be running, naming the consumers; the planner's closure keeps what they need.
pub fn keep_for_uncovered(
    shared: &SharedRepository,
    images: &[ImageRecord],
    protected: &mut InUseMap,
) {
    let users: Vec<String> = shared
        .uncovered()
        .map(|c| {
            format!(
                "may be run by {} (granted by the {}), whose workloads are not listed",
                c.principal, c.granted_by
            )
        })
        .collect();
    if users.is_empty() {
        return;
    }
    for im in images.iter().filter(|im| could_be_running(im)) {
        let entry = protected.entry(im.digest.clone()).or_default();
        for u in &users {
            if !entry.contains(u) {
                entry.push(u.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::repository_policy::PolicyReadError;
    use crate::catalog::ApiErrorKind;

    fn text(doc: &str) -> Result<Option<PolicyText>, PolicyReadError> {
        Ok(Some(PolicyText {
            registry_id: "111111111111".into(),
            text: doc.into(),
        }))
    }

    #[test]
    fn the_home_account_is_no_consumer_and_failures_are_unknown_consumers() {
        let doc = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111111111111:root","222222222222"]},"Action":"ecr:*"}]}"#;
        assert_eq!(
            grantees_of(&text(doc), |_| None),
            [Grantee::Account("222222222222".into())]
        );
        let unparsable = grantees_of(&text("{"), |_| None);
        assert!(
            matches!(&unparsable[..], [Grantee::Unknown(w)] if w.starts_with("the policy cannot be parsed")),
            "{unparsable:?}"
        );
        let denied = Err(PolicyReadError {
            operation: "GetRepositoryPolicy",
            message: "AccessDeniedException".into(),
            kind: ApiErrorKind::AccessDenied,
        });
        let unreadable = grantees_of(&denied, |_| None);
        assert!(
            matches!(&unreadable[..], [Grantee::Unknown(w)] if w.contains("GetRepositoryPolicy failed")),
            "{unreadable:?}"
        );
        assert!(grantees_of(&Ok(None), |_| None).is_empty());
    }

    #[test]
    fn uncovered_consumers_keep_what_could_be_running_and_accepted_ones_do_not() {
        let now = chrono::Utc::now();
        let tagged = ImageRecord::named("tagged", &["v1"], now);
        let untagged = ImageRecord::named("untagged", &[], now);
        let mut cache = ImageRecord::named("cache", &[], now);
        cache.kind = ArtifactKind::BuildkitCache;
        let mut tagged_cache = ImageRecord::named("tagged-cache", &["cache-main"], now);
        tagged_cache.kind = ArtifactKind::BuildkitCache;
        let images = [tagged, untagged, cache, tagged_cache];
        let consumer = |coverage| Consumer {
            principal: "organization o-abc123".into(),
            granted_by: GrantedBy::RepositoryPolicy,
            coverage,
        };
        let mut protected = InUseMap::new();
        let accepted = SharedRepository {
            repository: "app".into(),
            consumers: vec![consumer(Coverage::Accepted), consumer(Coverage::Covered)],
        };
        keep_for_uncovered(&accepted, &images, &mut protected);
        assert!(protected.is_empty());
        let uncovered = SharedRepository {
            repository: "app".into(),
            consumers: vec![consumer(Coverage::Uncovered)],
        };
        keep_for_uncovered(&uncovered, &images, &mut protected);
        let kept: Vec<&str> = ["tagged", "untagged", "tagged-cache"].to_vec();
        assert_eq!(protected.len(), kept.len());
        for name in kept {
            assert_eq!(
                protected[&crate::oci::Sha256Digest::of(name.as_bytes())],
                ["may be run by organization o-abc123 (granted by the repository policy), whose workloads are not listed"]
            );
        }
    }

    #[test]
    fn acceptance_is_by_exact_name() {
        let accept = AcceptUncovered {
            repositories: vec!["legacy".into()],
            accounts: vec!["333333333333".into()],
        };
        assert!(accept.accepts("legacy", &Grantee::Anyone));
        assert!(!accept.accepts("legacy-2", &Grantee::Anyone));
        assert!(accept.accepts("app", &Grantee::Account("333333333333".into())));
        assert!(!accept.accepts("app", &Grantee::Organization("o-abc123".into())));
        assert_eq!(
            repository_arn("cn-north-1", "111111111111", "team/app"),
            "arn:aws-cn:ecr:cn-north-1:111111111111:repository/team/app"
        );
    }
}
