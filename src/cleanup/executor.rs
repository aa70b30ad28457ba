//! Carries out a [`Plan`]: nothing in a dry run; otherwise BatchDeleteImage calls of at
//! most 100 digests, wave by wave (an index before its entries, a referrer before its
//! subject), skipping any image whose predecessor failed to go. Per-image failures and
//! failed calls are recorded, never fatal. Under a deadline no call starts after it: the
//! images not yet attempted are reported as left, for the next run to plan again.

use super::planner::{ImageDecision, Plan, RuleCount};
use crate::catalog::{Catalog, DeleteFailure, DELETE_BATCH};
use crate::deadline::Deadline;
use crate::oci::Sha256Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// What happened in one repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepositoryReport {
    /// The repository's name.
    pub repository: String,
    /// How many images the plan considered.
    pub images: usize,
    /// True when nothing was deleted on purpose.
    pub dry_run: bool,
    /// The plan's deletions, in order, with rule and reason.
    pub planned: Vec<ImageDecision>,
    /// Deleted for real (empty in a dry run).
    pub deleted: Vec<Sha256Digest>,
    /// The images that could not be deleted, with ECR's failure code and message (`CallFailed` when the whole call failed).
    pub failed: Vec<DeleteFailure>,
    /// How many images are kept.
    pub kept: usize,
    /// What is kept, with rule and reason ("why is this still here?").
    pub keeps: Vec<ImageDecision>,
    /// Bytes of the planned deletions (dry run) or of the actual ones.
    pub bytes_reclaimed: u64,
    /// True when the plan stopped at the policy's `max_deletions`.
    pub stopped_by_max_deletions: bool,
    /// The invocation's deadline came before every planned deletion was attempted (or,
    /// with nothing planned, before the repository was looked at).
    pub stopped_by_deadline: bool,
    /// Planned deletions not attempted because of the deadline; the next run plans
    /// them again.
    pub left: Vec<Sha256Digest>,
    /// BatchDeleteImage calls made.
    pub delete_calls: usize,
    /// Per rule: images matched and expired (from the plan).
    pub rules: Vec<RuleCount>,
}

/// Executes `plan` against `catalog`; `dry_run` deletes nothing. With a `deadline`, no
/// delete call starts once it has passed.
pub async fn execute(
    catalog: &dyn Catalog,
    plan: &Plan,
    dry_run: bool,
    deadline: Option<&Deadline>,
) -> RepositoryReport {
    let planned: Vec<ImageDecision> = plan.deleted().cloned().collect();
    let mut report = RepositoryReport {
        repository: plan.repository.clone(),
        images: plan.decisions.len(),
        dry_run,
        kept: plan.decisions.len() - planned.len(),
        keeps: plan.kept().cloned().collect(),
        bytes_reclaimed: if dry_run { plan.bytes_reclaimed } else { 0 },
        stopped_by_max_deletions: plan.stopped_by_max_deletions,
        stopped_by_deadline: false,
        left: Vec::new(),
        planned,
        deleted: Vec::new(),
        failed: Vec::new(),
        delete_calls: 0,
        rules: plan.rules.clone(),
    };
    if dry_run {
        return report;
    }
    let mut waves: BTreeMap<usize, Vec<&ImageDecision>> = BTreeMap::new();
    for d in &report.planned {
        waves.entry(d.wave).or_default().push(d);
    }
    let mut not_deleted: HashSet<Sha256Digest> = HashSet::new();
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    let mut calls = 0;
    let mut bytes = 0;
    let mut left = Vec::new();
    for (_, wave) in waves {
        if !left.is_empty() {
            left.extend(wave.iter().map(|d| d.digest.clone()));
            continue;
        }
        let mut ready = Vec::new();
        for d in wave {
            if let Some(blocker) = d.after.iter().find(|a| not_deleted.contains(*a)) {
                // Deleting it now would break an image that is still there.
                failed.push(DeleteFailure {
                    digest: d.digest.clone(),
                    code: "Skipped".into(),
                    message: format!("{blocker} was not deleted"),
                });
                not_deleted.insert(d.digest.clone());
            } else {
                ready.push(d);
            }
        }
        for batch in ready.chunks(DELETE_BATCH) {
            let digests: Vec<Sha256Digest> = batch.iter().map(|d| d.digest.clone()).collect();
            if !left.is_empty() || deadline.is_some_and(Deadline::has_passed) {
                left.extend(digests);
                continue;
            }
            calls += 1;
            match catalog.delete_images(&plan.repository, &digests).await {
                Ok(outcome) => {
                    // BatchDeleteImage: every id not listed in `failures` was deleted.
                    // (moto omits untagged images from `imageIds`; real ECR lists them.)
                    let failed_here: HashSet<&Sha256Digest> =
                        outcome.failed.iter().map(|f| &f.digest).collect();
                    for d in batch {
                        if failed_here.contains(&d.digest) {
                            not_deleted.insert(d.digest.clone());
                        } else {
                            bytes += d.size_bytes;
                            deleted.push(d.digest.clone());
                        }
                    }
                    failed.extend(outcome.failed);
                }
                Err(e) => {
                    tracing::warn!(repository = %plan.repository, error = %e, "delete batch failed");
                    for d in batch {
                        not_deleted.insert(d.digest.clone());
                        failed.push(DeleteFailure {
                            digest: d.digest.clone(),
                            code: "CallFailed".into(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
    }
    if !left.is_empty() {
        tracing::warn!(repository = %plan.repository, left = left.len(), "deadline near: deletions left for the next run");
        report.stopped_by_deadline = true;
    }
    report.left = left;
    report.deleted = deleted;
    report.failed = failed;
    report.delete_calls = calls;
    report.bytes_reclaimed = bytes;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ecr::{
        seeded_manifest, CountingEcr, EcrApi, EcrApiError, EcrCatalog, FetchedManifest,
        ImageDetail, ImageFailure, MemoryEcr,
    };
    use crate::cleanup::planner::{plan, Snapshot};
    use crate::cleanup::policy::Policy;
    use crate::oci::media;
    use chrono::{Duration, Utc};

    /// Refuses to delete one digest. A stand-in for ECR's per-image failures
    /// (`ImageReferencedByManifestList`, ...), which moto never produces.
    struct Refusing {
        inner: CountingEcr<MemoryEcr>,
        refuse: String,
    }

    #[async_trait::async_trait]
    impl EcrApi for Refusing {
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
        ) -> Result<(Vec<ImageDetail>, Option<String>), EcrApiError> {
            self.inner.describe_images(r, t).await
        }
        async fn batch_get_image(
            &self,
            r: &str,
            d: &[String],
        ) -> Result<(Vec<FetchedManifest>, Vec<ImageFailure>), EcrApiError> {
            self.inner.batch_get_image(r, d).await
        }
        async fn batch_delete_image(
            &self,
            r: &str,
            d: &[String],
        ) -> Result<(Vec<String>, Vec<ImageFailure>), EcrApiError> {
            let allowed: Vec<String> = d.iter().filter(|x| **x != self.refuse).cloned().collect();
            let (deleted, mut failed) = self.inner.batch_delete_image(r, &allowed).await?;
            if allowed.len() < d.len() {
                failed.push(ImageFailure {
                    digest: self.refuse.clone(),
                    code: "ImageReferencedByManifestList".into(),
                    message: "refused".into(),
                });
            }
            Ok((deleted, failed))
        }
    }

    fn manifest(seed: &str) -> Vec<u8> {
        seeded_manifest(seed, media::OCI_CONFIG, "")
    }

    #[tokio::test]
    async fn a_failed_index_keeps_its_children_and_the_run_goes_on() {
        let ecr = MemoryEcr::new();
        let old = Some(Utc::now() - Duration::days(30));
        let detail = |tags: Vec<String>, mt: &str, artifact: Option<&str>| ImageDetail {
            tags,
            pushed_at: old,
            manifest_media_type: Some(mt.into()),
            artifact_media_type: artifact.map(str::to_string),
            size_bytes: 7,
            ..Default::default()
        };
        let mut indexes = Vec::new();
        let mut children = Vec::new();
        for i in 0..2 {
            let child = manifest(&format!("child {i}"));
            let child_d = Sha256Digest::of(&child);
            ecr.put(
                "app",
                detail(vec![], media::OCI_MANIFEST, Some(media::OCI_CONFIG)),
                child,
            );
            let index = format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{child_d}","size":1}}]}}"#,
                media::OCI_INDEX,
                media::OCI_MANIFEST
            )
            .into_bytes();
            indexes.push(Sha256Digest::of(&index));
            children.push(child_d);
            ecr.put("app", detail(vec![], media::OCI_INDEX, None), index);
        }
        let catalog = EcrCatalog::new(Refusing {
            inner: CountingEcr::new(ecr),
            refuse: indexes[0].to_string(),
        });
        let images = catalog.list_images("app").await.unwrap();
        let policy = Policy::parse("repositories: ['*']\nrules: [{name: old, select: {untagged: true}, action: expire, when: {older_than: 7d}}]").unwrap();
        let p = plan(
            &Snapshot {
                repository: "app".into(),
                images,
            },
            &policy,
            Utc::now(),
        );
        assert_eq!(p.deletions, 4);

        let dry = execute(&catalog, &p, true, None).await;
        assert!(dry.deleted.is_empty() && dry.delete_calls == 0);
        assert_eq!(catalog.api().inner.inner.len("app"), 4);

        let report = execute(&catalog, &p, false, None).await;
        let mut deleted = report.deleted.clone();
        deleted.sort();
        let mut expected = vec![indexes[1].clone(), children[1].clone()];
        expected.sort();
        assert_eq!(deleted, expected);
        let codes: Vec<(&Sha256Digest, &str)> = report
            .failed
            .iter()
            .map(|f| (&f.digest, f.code.as_str()))
            .collect();
        assert!(
            codes.contains(&(&indexes[0], "ImageReferencedByManifestList")),
            "{codes:?}"
        );
        assert!(codes.contains(&(&children[0], "Skipped")), "{codes:?}");
        assert_eq!(report.bytes_reclaimed, 14);
        // Two waves: the indexes, then the children.
        assert_eq!(report.delete_calls, 2);
        assert_eq!(catalog.api().inner.inner.len("app"), 2);
    }
}
