//! In-memory ECS and Lambda behind the [`EcsApi`] and [`LambdaApi`] ports, with their real
//! page and batch limits (ListClusters/ListServices/ListTasks/ListTaskDefinitions 100,
//! DescribeServices 10, DescribeTasks 100, Lambda lists 50) and calls counted by
//! operation: the unit tests and the cleanup benchmark list workloads through them.

use super::ecs::{EcsApi, EcsService, EcsTask, EcsTaskDefinition};
use super::lambda::{LambdaAlias, LambdaApi, LambdaFunction, LambdaImage};
use super::workloads::InUseError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// An account's ECS and Lambda, in memory, counting calls by operation. Fill the
/// fields, then list through a [`SharedWorkloads`].
#[derive(Default)]
pub struct MemoryWorkloads {
    /// Cluster ARNs.
    pub clusters: Vec<String>,
    /// The services of each cluster (by cluster ARN).
    pub services: BTreeMap<String, Vec<EcsService>>,
    /// The running and pending tasks of each cluster (by cluster ARN).
    pub tasks: BTreeMap<String, Vec<EcsTask>>,
    /// ACTIVE task definitions by ARN.
    pub task_definitions: BTreeMap<String, EcsTaskDefinition>,
    /// Functions, as ListFunctions reports them.
    pub functions: Vec<LambdaFunction>,
    /// Each function's versions: (version, image URI), `$LATEST` included.
    pub versions: BTreeMap<String, Vec<(String, String)>>,
    /// Each function's aliases.
    pub aliases: BTreeMap<String, Vec<LambdaAlias>>,
    /// A page size for every listing instead of the services' own (1: every listing has to
    /// follow its tokens).
    pub page_size: Option<usize>,
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

/// One [`MemoryWorkloads`] shared by the two ports of a `Workloads`.
#[derive(Clone)]
pub struct SharedWorkloads(pub Arc<MemoryWorkloads>);

fn page<T: Clone>(items: &[T], token: Option<String>, size: usize) -> (Vec<T>, Option<String>) {
    let start: usize = token.map_or(0, |t| t.parse().unwrap_or(usize::MAX));
    let start = start.min(items.len());
    let end = (start + size).min(items.len());
    (
        items[start..end].to_vec(),
        (end < items.len()).then(|| end.to_string()),
    )
}

fn over_limit(operation: &'static str, n: usize, max: usize) -> Result<(), InUseError> {
    if n > max {
        return Err(InUseError {
            service: "ECS",
            operation,
            message: format!("{n} ids, at most {max}"),
            retryable: false,
        });
    }
    Ok(())
}

fn not_found(service: &'static str, operation: &'static str, what: &str) -> InUseError {
    InUseError {
        service,
        operation,
        message: format!("{what} not found"),
        retryable: false,
    }
}

impl MemoryWorkloads {
    fn count(&self, operation: &'static str) {
        *self.calls.lock().unwrap().entry(operation).or_default() += 1;
    }
    fn size(&self, service_page: usize) -> usize {
        self.page_size.unwrap_or(service_page)
    }
    /// Every call made so far.
    pub fn total_calls(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }
    /// The calls made so far to `operation`.
    pub fn calls(&self, operation: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .get(operation)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl EcsApi for SharedWorkloads {
    async fn list_clusters(
        &self,
        next: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), InUseError> {
        self.0.count("ListClusters");
        Ok(page(&self.0.clusters, next, self.0.size(100)))
    }
    async fn list_services(
        &self,
        cluster: &str,
        next: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), InUseError> {
        self.0.count("ListServices");
        let names: Vec<String> = self
            .0
            .services
            .get(cluster)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|s| s.name.clone())
            .collect();
        Ok(page(&names, next, self.0.size(100)))
    }
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<EcsService>, InUseError> {
        self.0.count("DescribeServices");
        over_limit("DescribeServices", services.len(), 10)?;
        Ok(self
            .0
            .services
            .get(cluster)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|s| services.contains(&s.name))
            .cloned()
            .collect())
    }
    async fn list_tasks(
        &self,
        cluster: &str,
        next: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), InUseError> {
        self.0.count("ListTasks");
        let arns: Vec<String> = self
            .0
            .tasks
            .get(cluster)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|t| t.arn.clone())
            .collect();
        Ok(page(&arns, next, self.0.size(100)))
    }
    async fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> Result<Vec<EcsTask>, InUseError> {
        self.0.count("DescribeTasks");
        over_limit("DescribeTasks", tasks.len(), 100)?;
        Ok(self
            .0
            .tasks
            .get(cluster)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|t| tasks.contains(&t.arn))
            .cloned()
            .collect())
    }
    async fn list_task_definitions(
        &self,
        next: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), InUseError> {
        self.0.count("ListTaskDefinitions");
        let arns: Vec<String> = self.0.task_definitions.keys().cloned().collect();
        Ok(page(&arns, next, self.0.size(100)))
    }
    async fn describe_task_definition(&self, arn: &str) -> Result<EcsTaskDefinition, InUseError> {
        self.0.count("DescribeTaskDefinition");
        self.0
            .task_definitions
            .get(arn)
            .cloned()
            .ok_or_else(|| not_found("ECS", "DescribeTaskDefinition", arn))
    }
}

#[async_trait::async_trait]
impl LambdaApi for SharedWorkloads {
    async fn list_functions(
        &self,
        marker: Option<String>,
    ) -> Result<(Vec<LambdaFunction>, Option<String>), InUseError> {
        self.0.count("ListFunctions");
        Ok(page(&self.0.functions, marker, self.0.size(50)))
    }
    async fn list_versions(
        &self,
        function: &str,
        marker: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), InUseError> {
        self.0.count("ListVersionsByFunction");
        let names: Vec<String> = self
            .0
            .versions
            .get(function)
            .ok_or_else(|| not_found("Lambda", "ListVersionsByFunction", function))?
            .iter()
            .map(|(v, _)| v.clone())
            .collect();
        Ok(page(&names, marker, self.0.size(50)))
    }
    async fn list_aliases(
        &self,
        function: &str,
        marker: Option<String>,
    ) -> Result<(Vec<LambdaAlias>, Option<String>), InUseError> {
        self.0.count("ListAliases");
        Ok(page(
            self.0.aliases.get(function).map_or(&[][..], Vec::as_slice),
            marker,
            self.0.size(50),
        ))
    }
    async fn get_function_image(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<LambdaImage, InUseError> {
        self.0.count("GetFunction");
        let uri = self
            .0
            .versions
            .get(function)
            .ok_or_else(|| not_found("Lambda", "GetFunction", function))?
            .iter()
            .find(|(v, _)| v == qualifier)
            .map(|(_, u)| u.clone());
        Ok(LambdaImage {
            image_uri: uri.clone(),
            resolved_image_uri: uri,
        })
    }
}
