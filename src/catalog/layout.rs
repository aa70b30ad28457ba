//! A [`Catalog`] over an OCI image layout, so that cleanup plans run locally (the CLI,
//! `afterpush invoke`, the demo) on the same planner as ECR. The layout is one
//! repository, named after its directory. A layout records no push or pull times: a
//! manifest's push time is its blob file's modification time.

use super::{ApiErrorKind, Catalog, CatalogError, DeleteFailure, DeleteOutcome, ImageRecord};
use crate::oci::{ManifestSummary, Sha256Digest};
use crate::registry::layout::LayoutRepository;
use crate::registry::Repository;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

/// The images of one OCI image layout.
#[derive(Debug)]
pub struct LayoutCatalog {
    name: String,
    /// Answer to every repository name, as `Repositories::Layout` does for the other
    /// functions (an event for `app` must see the layout whatever its directory is called).
    every_name: bool,
    layout: LayoutRepository,
}

impl LayoutCatalog {
    /// The catalog of the layout at `dir`, which answers to the directory's name as its one repository.
    pub fn open(dir: &Path) -> Result<Self, crate::registry::RegistryError> {
        let layout = LayoutRepository::open(dir)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "layout".into());
        Ok(Self {
            name,
            every_name: false,
            layout,
        })
    }

    /// The same catalog answering to `name` instead of the directory's name (the demo's
    /// layout stands for repository `app`, wherever it lives).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same catalog answering to every repository name (a sweep, which names no
    /// repository, still lists the layout under its own name).
    pub fn for_every_repository(mut self) -> Self {
        self.every_name = true;
        self
    }

    fn answers_to(&self, repository: &str) -> bool {
        self.every_name || repository == self.name
    }

    /// The repository name this catalog answers to.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn api(
        &self,
        operation: &'static str,
        kind: ApiErrorKind,
        e: impl std::fmt::Display,
    ) -> CatalogError {
        CatalogError::Api {
            operation,
            repository: self.name.clone(),
            message: e.to_string(),
            kind,
        }
    }

    /// A local layout's error: missing content stays missing, and nothing else here is
    /// a call that a later run would see succeed.
    fn layout_error(
        &self,
        operation: &'static str,
        e: crate::registry::RegistryError,
    ) -> CatalogError {
        let kind = if e.is_not_found() {
            ApiErrorKind::NotFound
        } else {
            ApiErrorKind::Other
        };
        self.api(operation, kind, e)
    }
}

#[async_trait::async_trait]
impl Catalog for LayoutCatalog {
    async fn list_repositories(&self) -> Result<Vec<String>, CatalogError> {
        Ok(vec![self.name.clone()])
    }

    async fn list_images(&self, repository: &str) -> Result<Vec<ImageRecord>, CatalogError> {
        if !self.answers_to(repository) {
            return Ok(vec![]);
        }
        let mut tags: BTreeMap<Sha256Digest, Vec<String>> = BTreeMap::new();
        let mut queue = VecDeque::new();
        for (digest, tag) in self
            .layout
            .index_entries()
            .map_err(|e| self.layout_error("read index.json", e))?
        {
            tags.entry(digest.clone()).or_default().extend(tag);
            queue.push_back(digest);
        }
        // Every manifest reachable from index.json: the roots and their children.
        let mut records: BTreeMap<Sha256Digest, ImageRecord> = BTreeMap::new();
        while let Some(digest) = queue.pop_front() {
            if records.contains_key(&digest) {
                continue;
            }
            let manifest = self
                .layout
                .get_manifest(&digest.to_string())
                .await
                .map_err(|e| self.layout_error("read manifest", e))?;
            let summary =
                ManifestSummary::parse(&digest.to_string(), &manifest.bytes).map_err(|e| {
                    CatalogError::BadImage {
                        repository: self.name.clone(),
                        digest: digest.to_string(),
                        message: e.to_string(),
                    }
                })?;
            let children: Vec<Sha256Digest> = summary
                .manifests
                .iter()
                .filter_map(|d| d.digest.parse().ok())
                .collect();
            queue.extend(children.iter().cloned());
            let pushed_at: DateTime<Utc> = std::fs::metadata(self.layout.blob_path(&digest))
                .and_then(|m| m.modified())
                .map(DateTime::<Utc>::from)
                .map_err(|e| self.api("stat manifest blob", ApiErrorKind::Other, e))?;
            let size_bytes = manifest.bytes.len() as u64
                + summary.config.as_ref().map_or(0, |c| c.size)
                + summary.layers.iter().map(|l| l.size).sum::<u64>();
            records.insert(
                digest.clone(),
                ImageRecord {
                    digest: digest.clone(),
                    tags: tags.get(&digest).cloned().unwrap_or_default(),
                    pushed_at,
                    last_pulled_at: None,
                    manifest_media_type: summary
                        .effective_media_type(Some(&manifest.media_type))
                        .to_string(),
                    artifact_media_type: summary.artifact_type().map(str::to_string),
                    kind: summary.kind(Some(&manifest.media_type)),
                    subject: summary.subject.as_ref().and_then(|s| s.digest.parse().ok()),
                    children,
                    soci_index: summary
                        .annotations
                        .get(crate::oci::annotation::SOCI_INDEX_DIGEST)
                        .and_then(|d| d.parse().ok()),
                    size_bytes,
                },
            );
        }
        Ok(records.into_values().collect())
    }

    async fn delete_images(
        &self,
        repository: &str,
        digests: &[Sha256Digest],
    ) -> Result<DeleteOutcome, CatalogError> {
        let mut outcome = DeleteOutcome::default();
        for digest in digests {
            if !self.answers_to(repository) {
                outcome.failed.push(DeleteFailure {
                    digest: digest.clone(),
                    code: "RepositoryNotFound".into(),
                    message: format!("this layout is {}", self.name),
                });
                continue;
            }
            match self.layout.delete_manifest(digest).await {
                Ok(()) => outcome.deleted.push(digest.clone()),
                Err(e) => outcome.failed.push(DeleteFailure {
                    digest: digest.clone(),
                    code: "DeleteFailed".into(),
                    message: e.to_string(),
                }),
            }
        }
        Ok(outcome)
    }

    /// No ECS task or Lambda function pulls from a directory on disk.
    fn in_use(&self) -> Option<&dyn crate::catalog::workloads::InUseSource> {
        Some(&crate::catalog::workloads::NoWorkloads)
    }
}
