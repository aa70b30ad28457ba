//! The ECS images in use: what every running or pending task runs, what every service's
//! deployments run, and the latest N ACTIVE revisions of each task-definition family
//! (what a rollback would run).
//!
//! The calls go through the small [`EcsApi`] port ([`SdkEcs`] in production; the
//! benchmark counts calls through an in-memory one), at ECS's page and batch limits:
//! ListClusters/ListServices/ListTasks/ListTaskDefinitions 100 per page,
//! DescribeServices 10 names, DescribeTasks 100 ARNs, DescribeTaskDefinition one at a
//! time (each at most once per run).

use crate::aws_clients::ClientSettings;
use crate::catalog::paginate::Paging;
use crate::catalog::workloads::{InUseError, InUseRef, RegistryScope};
use crate::oci::Sha256Digest;
use std::collections::{BTreeMap, HashMap};

/// ListClusters, ListServices, ListTasks and ListTaskDefinitions return at most 100 per page.
pub const LIST_PAGE: i32 = 100;
/// DescribeServices takes at most 10 services.
pub const DESCRIBE_SERVICES_BATCH: usize = 10;
/// DescribeTasks takes at most 100 tasks.
pub const DESCRIBE_TASKS_BATCH: usize = 100;

/// A page of results and the token of the next one.
pub type Page<T> = (Vec<T>, Option<String>);

/// A service: its name and the task definitions it runs (its own, and those of its
/// PRIMARY and ACTIVE deployments: a rolling update runs both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsService {
    /// The service's name.
    pub name: String,
    /// Task-definition ARNs: the service's own, then those of its PRIMARY and ACTIVE deployments.
    pub task_definitions: Vec<String>,
}

/// A running or pending task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsTask {
    /// The task's ARN.
    pub arn: String,
    /// The ARN of the task definition it runs.
    pub task_definition: String,
    /// Its containers.
    pub containers: Vec<EcsContainer>,
}

/// A container of a task: the image it was started from and, once ECS resolved it, the
/// digest it pulled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsContainer {
    /// The container's name.
    pub name: String,
    /// The image reference it was started from, as written (maybe a tag).
    pub image: Option<String>,
    /// The digest ECS resolved the image to, once it did (`imageDigest`).
    pub image_digest: Option<String>,
}

/// A task definition's containers: (name, image).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsTaskDefinition {
    /// The task definition's ARN.
    pub arn: String,
    /// Each container's name and image reference.
    pub containers: Vec<(String, String)>,
}

/// The ECS calls the in-use listing makes.
#[async_trait::async_trait]
pub trait EcsApi: Send + Sync {
    /// One page of cluster ARNs (ListClusters).
    async fn list_clusters(&self, next: Option<String>) -> Result<Page<String>, InUseError>;
    /// One page of the service ARNs of `cluster` (ListServices).
    async fn list_services(
        &self,
        cluster: &str,
        next: Option<String>,
    ) -> Result<Page<String>, InUseError>;
    /// At most [`DESCRIBE_SERVICES_BATCH`] services.
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<EcsService>, InUseError>;
    /// Tasks whose desired status is RUNNING: running ones and those still pending.
    async fn list_tasks(
        &self,
        cluster: &str,
        next: Option<String>,
    ) -> Result<Page<String>, InUseError>;
    /// At most [`DESCRIBE_TASKS_BATCH`] tasks.
    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> Result<Vec<EcsTask>, InUseError>;
    /// ACTIVE task definitions (ARNs), every family.
    async fn list_task_definitions(&self, next: Option<String>)
        -> Result<Page<String>, InUseError>;
    /// One task definition's containers (DescribeTaskDefinition).
    async fn describe_task_definition(&self, arn: &str) -> Result<EcsTaskDefinition, InUseError>;
}

/// `family:revision` of a task-definition ARN (or of `family:revision` itself).
pub fn family_revision(arn: &str) -> Option<(&str, u64)> {
    let name = arn.rsplit_once("task-definition/").map_or(arn, |(_, n)| n);
    let (family, rev) = name.rsplit_once(':')?;
    Some((family, rev.parse().ok()?))
}

fn short_task_definition(arn: &str) -> String {
    match family_revision(arn) {
        Some((f, r)) => format!("{f}:{r}"),
        None => arn.to_string(),
    }
}

/// The last path segment of an ARN (`cluster/web` -> `web`, `task/web/abc` -> `abc`).
fn last_segment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// A reference to this account's registry that does not parse: the listing fails.
fn bad_reference(message: String) -> InUseError {
    InUseError {
        service: "ECS",
        operation: "image reference",
        message,
        retryable: false,
    }
}

/// Task definitions described once per run.
struct Definitions<'a, A: ?Sized> {
    api: &'a A,
    paging: &'a Paging,
    seen: HashMap<String, EcsTaskDefinition>,
}

impl<A: EcsApi + ?Sized> Definitions<'_, A> {
    async fn get(&mut self, arn: &str) -> Result<&EcsTaskDefinition, InUseError> {
        if !self.seen.contains_key(arn) {
            let def = self
                .paging
                .call(
                    "ECS",
                    "DescribeTaskDefinition",
                    0,
                    self.api.describe_task_definition(arn),
                )
                .await?;
            self.seen.insert(arn.to_string(), def);
        }
        Ok(&self.seen[arn])
    }
}

/// Every image reference ECS holds in this account and region, to its own registry.
pub async fn images_in_use<A: EcsApi + ?Sized>(
    api: &A,
    revisions: usize,
    paging: &Paging,
) -> Result<Vec<InUseRef>, InUseError> {
    images_in_use_of(api, revisions, paging, RegistryScope::Own).await
}

/// Every image reference ECS holds in this account and region, to the registry `scope` names.
pub async fn images_in_use_of<A: EcsApi + ?Sized>(
    api: &A,
    revisions: usize,
    paging: &Paging,
    scope: RegistryScope<'_>,
) -> Result<Vec<InUseRef>, InUseError> {
    let mut defs = Definitions {
        api,
        paging,
        seen: HashMap::new(),
    };
    let mut refs = Vec::new();
    let clusters = paging
        .all("ECS", "ListClusters", |t| api.list_clusters(t))
        .await?;
    for cluster in &clusters {
        let cluster_name = last_segment(cluster);
        let services = paging
            .all("ECS", "ListServices", |t| api.list_services(cluster, t))
            .await?;
        for batch in services.chunks(DESCRIBE_SERVICES_BATCH) {
            for service in paging
                .call(
                    "ECS",
                    "DescribeServices",
                    0,
                    api.describe_services(cluster, batch),
                )
                .await?
            {
                for td in &service.task_definitions {
                    let def = defs.get(td).await?;
                    let user = format!(
                        "ecs service {cluster_name}/{}, task def {}",
                        service.name,
                        short_task_definition(td)
                    );
                    for (_, image) in &def.containers {
                        if let Some(image) =
                            scope.reference(image, &def.arn).map_err(bad_reference)?
                        {
                            refs.push(InUseRef {
                                image,
                                user: user.clone(),
                            });
                        }
                    }
                }
            }
        }
        let tasks = paging
            .all("ECS", "ListTasks", |t| api.list_tasks(cluster, t))
            .await?;
        for batch in tasks.chunks(DESCRIBE_TASKS_BATCH) {
            for task in paging
                .call(
                    "ECS",
                    "DescribeTasks",
                    0,
                    api.describe_tasks(cluster, batch),
                )
                .await?
            {
                for c in &task.containers {
                    let user = format!(
                        "ecs task {cluster_name}/{} (container {})",
                        last_segment(&task.arn),
                        c.name
                    );
                    // What the container pulled is what a restart on the same host
                    // reuses; without a digest yet (pending), its task definition's image.
                    let images: Vec<String> = match &c.image {
                        Some(i) => vec![i.clone()],
                        None => {
                            let def = defs.get(&task.task_definition).await?;
                            let named: Vec<String> = def
                                .containers
                                .iter()
                                .filter(|(n, _)| *n == c.name)
                                .map(|(_, i)| i.clone())
                                .collect();
                            // A container its definition does not name: every image of
                            // the definition, rather than none.
                            if named.is_empty() {
                                def.containers.iter().map(|(_, i)| i.clone()).collect()
                            } else {
                                named
                            }
                        }
                    };
                    let digest: Option<Sha256Digest> =
                        c.image_digest.as_deref().and_then(|d| d.parse().ok());
                    for image in images {
                        if let Some(r) =
                            scope.reference(&image, &task.arn).map_err(bad_reference)?
                        {
                            let image = match &digest {
                                Some(d) => r.with_digest(d.clone()),
                                None => r,
                            };
                            refs.push(InUseRef {
                                image,
                                user: user.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    // Rollback targets: the newest `revisions` ACTIVE revisions of every family.
    let mut families: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for arn in paging
        .all("ECS", "ListTaskDefinitions", |t| {
            api.list_task_definitions(t)
        })
        .await?
    {
        if let Some((family, rev)) = family_revision(&arn) {
            families
                .entry(family.to_string())
                .or_default()
                .push((rev, arn.clone()));
        }
    }
    for (family, mut revs) in families {
        revs.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (rev, arn) in revs.into_iter().take(revisions) {
            let def = defs.get(&arn).await?;
            let user = format!("ecs task def {family}:{rev} (one of the {revisions} latest)");
            for (_, image) in &def.containers {
                if let Some(image) = scope.reference(image, &def.arn).map_err(bad_reference)? {
                    refs.push(InUseRef {
                        image,
                        user: user.clone(),
                    });
                }
            }
        }
    }
    Ok(refs)
}

/// [`EcsApi`] over aws-sdk-ecs.
#[derive(Clone)]
pub struct SdkEcs {
    client: aws_sdk_ecs::Client,
}

impl SdkEcs {
    /// The [`EcsApi`] of an ECS client.
    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        Self { client }
    }

    /// From the shared config, with the catalog's retries and timeouts.
    pub fn from_sdk_config(config: &aws_config::SdkConfig, settings: &ClientSettings) -> Self {
        Self::new(settings.ecs(config))
    }
}

/// Describe* failures other than MISSING (a task or service gone since it was listed)
/// leave something unseen: the listing fails.
fn describe_failures(
    operation: &'static str,
    failures: &[aws_sdk_ecs::types::Failure],
) -> Result<(), InUseError> {
    match failures
        .iter()
        .find(|f| f.reason().is_none_or(|r| r != "MISSING"))
    {
        Some(f) => Err(InUseError {
            service: "ECS",
            operation,
            message: format!(
                "{}: {} {}",
                f.arn().unwrap_or("?"),
                f.reason().unwrap_or("unknown reason"),
                f.detail().unwrap_or("")
            ),
            retryable: false,
        }),
        None => Ok(()),
    }
}

#[async_trait::async_trait]
impl EcsApi for SdkEcs {
    async fn list_clusters(&self, next: Option<String>) -> Result<Page<String>, InUseError> {
        let out = self
            .client
            .list_clusters()
            .max_results(LIST_PAGE)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| InUseError::sdk("ECS", "ListClusters", e))?;
        Ok((
            out.cluster_arns().to_vec(),
            out.next_token().map(str::to_string),
        ))
    }

    async fn list_services(
        &self,
        cluster: &str,
        next: Option<String>,
    ) -> Result<Page<String>, InUseError> {
        let out = self
            .client
            .list_services()
            .cluster(cluster)
            .max_results(LIST_PAGE)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| InUseError::sdk("ECS", "ListServices", e))?;
        Ok((
            out.service_arns().to_vec(),
            out.next_token().map(str::to_string),
        ))
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<EcsService>, InUseError> {
        let out = self
            .client
            .describe_services()
            .cluster(cluster)
            .set_services(Some(services.to_vec()))
            .send()
            .await
            .map_err(|e| InUseError::sdk("ECS", "DescribeServices", e))?;
        describe_failures("DescribeServices", out.failures())?;
        Ok(out
            .services()
            .iter()
            .map(|s| {
                let mut task_definitions: Vec<String> = s
                    .task_definition()
                    .map(str::to_string)
                    .into_iter()
                    .collect();
                for d in s.deployments() {
                    if matches!(d.status(), Some("PRIMARY" | "ACTIVE")) {
                        if let Some(td) = d.task_definition() {
                            if !task_definitions.iter().any(|t| t == td) {
                                task_definitions.push(td.to_string());
                            }
                        }
                    }
                }
                EcsService {
                    name: s.service_name().unwrap_or_default().to_string(),
                    task_definitions,
                }
            })
            .collect())
    }

    async fn list_tasks(
        &self,
        cluster: &str,
        next: Option<String>,
    ) -> Result<Page<String>, InUseError> {
        let out = self
            .client
            .list_tasks()
            .cluster(cluster)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .max_results(LIST_PAGE)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| InUseError::sdk("ECS", "ListTasks", e))?;
        Ok((
            out.task_arns().to_vec(),
            out.next_token().map(str::to_string),
        ))
    }

    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> Result<Vec<EcsTask>, InUseError> {
        let out = self
            .client
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(tasks.to_vec()))
            .send()
            .await
            .map_err(|e| InUseError::sdk("ECS", "DescribeTasks", e))?;
        describe_failures("DescribeTasks", out.failures())?;
        Ok(out
            .tasks()
            .iter()
            .map(|t| EcsTask {
                arn: t.task_arn().unwrap_or_default().to_string(),
                task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
                containers: t
                    .containers()
                    .iter()
                    .map(|c| EcsContainer {
                        name: c.name().unwrap_or_default().to_string(),
                        image: c.image().map(str::to_string),
                        image_digest: c.image_digest().map(str::to_string),
                    })
                    .collect(),
            })
            .collect())
    }

    async fn list_task_definitions(
        &self,
        next: Option<String>,
    ) -> Result<Page<String>, InUseError> {
        let out = self
            .client
            .list_task_definitions()
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .max_results(LIST_PAGE)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| InUseError::sdk("ECS", "ListTaskDefinitions", e))?;
        Ok((
            out.task_definition_arns().to_vec(),
            out.next_token().map(str::to_string),
        ))
    }

    async fn describe_task_definition(&self, arn: &str) -> Result<EcsTaskDefinition, InUseError> {
        let out = self
            .client
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| InUseError::sdk("ECS", "DescribeTaskDefinition", e))?;
        let def = out.task_definition().ok_or_else(|| InUseError {
            service: "ECS",
            operation: "DescribeTaskDefinition",
            message: format!("{arn}: no task definition in the answer"),
            retryable: false,
        })?;
        Ok(EcsTaskDefinition {
            arn: def.task_definition_arn().unwrap_or(arn).to_string(),
            containers: def
                .container_definitions()
                .iter()
                .filter_map(|c| {
                    Some((
                        c.name().unwrap_or_default().to_string(),
                        c.image()?.to_string(),
                    ))
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::memory_workloads::{MemoryWorkloads, SharedWorkloads};
    use crate::catalog::workloads::Target;
    use std::sync::Arc;

    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const ARN: &str = "arn:aws:ecs:us-east-1:123456789012";

    #[tokio::test]
    async fn follows_pages_prefers_pulled_digests_and_keeps_the_latest_revisions() {
        let digest = crate::oci::Sha256Digest::of(b"pulled");
        let cluster = format!("{ARN}:cluster/web");
        // One item per page, so that every listing has to follow its tokens.
        let mut api = MemoryWorkloads::default();
        api.page_size = Some(1);
        api.clusters = vec![cluster.clone()];
        api.services.insert(
            cluster.clone(),
            vec![EcsService {
                name: "api".into(),
                task_definitions: vec![format!("{ARN}:task-definition/api:2")],
            }],
        );
        for r in 1..=3 {
            let arn = format!("{ARN}:task-definition/api:{r}");
            api.task_definitions.insert(
                arn.clone(),
                EcsTaskDefinition {
                    arn,
                    containers: vec![("app".into(), format!("{HOST}/app:v{r}"))],
                },
            );
        }
        api.tasks.insert(
            cluster,
            vec![
                EcsTask {
                    arn: format!("{ARN}:task/web/pulled"),
                    task_definition: format!("{ARN}:task-definition/api:1"),
                    containers: vec![EcsContainer {
                        name: "app".into(),
                        image: Some(format!("{HOST}/app:v1")),
                        image_digest: Some(digest.to_string()),
                    }],
                },
                EcsTask {
                    arn: format!("{ARN}:task/web/pending"),
                    task_definition: format!("{ARN}:task-definition/api:1"),
                    containers: vec![EcsContainer {
                        name: "app".into(),
                        image: None,
                        image_digest: None,
                    }],
                },
            ],
        );
        let api = SharedWorkloads(Arc::new(api));
        let refs = images_in_use(&api, 2, &Paging::default()).await.unwrap();
        // Two tasks at one a page: the second page was read.
        assert_eq!(api.0.calls("ListTasks"), 2);
        let seen: Vec<(String, Target)> =
            refs.into_iter().map(|r| (r.user, r.image.target)).collect();
        assert_eq!(
            seen,
            [
                (
                    "ecs service web/api, task def api:2".to_string(),
                    Target::Tag("v2".into())
                ),
                (
                    "ecs task web/pulled (container app)".into(),
                    Target::Digest(digest)
                ),
                (
                    "ecs task web/pending (container app)".into(),
                    Target::Tag("v1".into())
                ),
                (
                    "ecs task def api:3 (one of the 2 latest)".into(),
                    Target::Tag("v3".into())
                ),
                (
                    "ecs task def api:2 (one of the 2 latest)".into(),
                    Target::Tag("v2".into())
                ),
            ]
        );
    }

    /// A task definition naming this account's registry with a reference that does not
    /// parse fails the listing (the run then deletes nothing) instead of being ignored.
    #[tokio::test]
    async fn an_unparsable_reference_to_the_own_registry_fails_the_listing() {
        let mut api = MemoryWorkloads::default();
        let arn = format!("{ARN}:task-definition/api:1");
        api.task_definitions.insert(
            arn.clone(),
            EcsTaskDefinition {
                arn,
                containers: vec![("app".into(), format!("{HOST}/app@sha256:short"))],
            },
        );
        let api = SharedWorkloads(Arc::new(api));
        let err = images_in_use(&api, 5, &Paging::default())
            .await
            .unwrap_err();
        assert_eq!(err.operation, "image reference");
        assert!(err.message.contains("app@sha256:short"), "{err}");
    }

    #[test]
    fn task_definition_names() {
        assert_eq!(
            family_revision("arn:aws:ecs:us-east-1:123456789012:task-definition/web:42"),
            Some(("web", 42))
        );
        assert_eq!(family_revision("web:7"), Some(("web", 7)));
        assert_eq!(family_revision("web"), None);
        assert_eq!(
            last_segment("arn:aws:ecs:us-east-1:123456789012:task/web/abc"),
            "abc"
        );
    }
}
