//! Carries out a [`Plan`]: nothing in a dry run; otherwise BatchDeleteImage calls of at
//! most 100 digests, wave by wave (an index before its entries, a referrer before its
//! subject), skipping any image whose predecessor failed to go. Per-image failures and
//! failed calls are recorded, never fatal.

use super::planner::{Decision, Plan};
use crate::catalog::{Catalog, DeleteFailure, DELETE_BATCH};
use crate::oci::Sha256Digest;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// What happened in one repository.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryReport {
    pub repository: String,
    pub images: usize,
    pub dry_run: bool,
    /// The plan's deletions, in order, with rule and reason.
    pub planned: Vec<Decision>,
    /// Deleted for real (empty in a dry run).
    pub deleted: Vec<Sha256Digest>,
    pub failed: Vec<DeleteFailure>,
    pub kept: usize,
    /// Bytes of the planned deletions (dry run) or of the actual ones.
    pub bytes_reclaimed: u64,
    pub stopped_by_max_deletions: bool,
    /// BatchDeleteImage calls made.
    pub delete_calls: usize,
}

/// Executes `plan` against `catalog`; `dry_run` deletes nothing.
pub async fn execute(catalog: &dyn Catalog, plan: &Plan, dry_run: bool) -> RepositoryReport {
    let planned: Vec<Decision> = plan.deleted().cloned().collect();
    let mut report = RepositoryReport {
        repository: plan.repository.clone(),
        images: plan.decisions.len(),
        dry_run,
        kept: plan.decisions.len() - planned.len(),
        bytes_reclaimed: if dry_run { plan.bytes_reclaimed } else { 0 },
        stopped_by_max_deletions: plan.stopped_by_max_deletions,
        planned,
        deleted: Vec::new(),
        failed: Vec::new(),
        delete_calls: 0,
    };
    if dry_run {
        return report;
    }
    let mut waves: BTreeMap<usize, Vec<&Decision>> = BTreeMap::new();
    for d in &report.planned {
        waves.entry(d.wave).or_default().push(d);
    }
    let mut not_deleted: HashSet<Sha256Digest> = HashSet::new();
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    let mut calls = 0;
    let mut bytes = 0;
    for (_, wave) in waves {
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
    report.deleted = deleted;
    report.failed = failed;
    report.delete_calls = calls;
    report.bytes_reclaimed = bytes;
    report
}
