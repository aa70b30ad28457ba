//! Mark and sweep over an S3 BuildKit cache.
//!
//! Cache manifests (`manifests/<name>`) are rewritten on every export, so their
//! LastModified is "last used": those not kept by name and older than
//! `expire_unused_for` expire. Every blob named by a remaining manifest is marked (any
//! `sha256:<hex>` string in it counts — unknown fields can only keep more). Blobs under
//! `blobs/` that are unmarked and older than `blob_grace` are deleted.
//!
//! Safe against a build writing meanwhile: its new blobs are young; BuildKit refreshes
//! reused blobs older than 24 h by copying them onto themselves; and the manifests are
//! listed again after the blobs, so a manifest written during the run marks its blobs.

use super::policy::S3CachePolicy;
use crate::catalog::s3cache::{CacheObject, ObjectFailure, S3Cache};
use crate::catalog::CatalogError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const MANIFESTS: &str = "manifests/";
const BLOBS: &str = "blobs/";

/// The decisions for one S3 cache.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct S3GcPlan {
    /// The cache's `s3://bucket/prefix/`.
    pub uri: String,
    /// Expired manifests with the reason.
    pub expired_manifests: Vec<(String, String)>,
    /// Manifests kept (names relative to the cache prefix), those written during the run included.
    pub kept_manifests: Vec<String>,
    /// Blobs to delete (names relative to the cache prefix).
    pub dead_blobs: Vec<String>,
    /// Blobs a kept manifest references.
    pub live_blobs: usize,
    /// Unreferenced, but younger than `blob_grace`.
    pub young_blobs: usize,
    /// Bytes of the dead blobs (expired manifests are not counted).
    pub bytes_reclaimed: u64,
}

/// What happened to one S3 cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3CacheReport {
    /// True when nothing was deleted on purpose.
    pub dry_run: bool,
    /// What was decided.
    pub plan: S3GcPlan,
    /// Objects deleted (empty in a dry run), manifests first.
    pub deleted: Vec<String>,
    /// Objects S3 did not delete, with its reason.
    pub failed: Vec<ObjectFailure>,
}

fn digest_re() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new("sha256:[0-9a-f]{64}").expect("static regex"))
}

/// Every `sha256:<hex>` a cache manifest mentions.
pub fn referenced_blobs(manifest: &[u8]) -> BTreeSet<String> {
    digest_re()
        .find_iter(&String::from_utf8_lossy(manifest))
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Which manifests expire (pure). Returns (expired with reason, kept).
pub fn expire_manifests(
    policy: &S3CachePolicy,
    manifests: &[CacheObject],
    now: DateTime<Utc>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut expired = Vec::new();
    let mut kept = Vec::new();
    for m in manifests {
        let Some(name) = m.name.strip_prefix(MANIFESTS) else {
            continue;
        };
        let unused = now - m.last_modified;
        let keep_by_name = policy.keep.iter().any(|p| p.matches(name));
        match policy.expire_unused_for {
            Some(limit) if !keep_by_name && unused > limit => expired.push((
                m.name.clone(),
                format!(
                    "not written for {} (> {})",
                    crate::format::duration(unused),
                    crate::format::duration(limit)
                ),
            )),
            _ => kept.push(m.name.clone()),
        }
    }
    (expired, kept)
}

/// The sweep (pure): blobs under `blobs/` not in `marked` and older than the grace.
pub fn sweep_blobs(
    policy: &S3CachePolicy,
    blobs: &[CacheObject],
    marked: &BTreeSet<String>,
    now: DateTime<Utc>,
    plan: &mut S3GcPlan,
) {
    for b in blobs {
        let Some(digest) = b.name.strip_prefix(BLOBS) else {
            continue;
        };
        // Only objects named like BuildKit blobs are ever candidates.
        if !digest_re().is_match(digest) || digest.len() != 71 {
            continue;
        }
        if marked.contains(digest) {
            plan.live_blobs += 1;
        } else if now - b.last_modified < policy.blob_grace {
            plan.young_blobs += 1;
        } else {
            plan.dead_blobs.push(b.name.clone());
            plan.bytes_reclaimed += b.size;
        }
    }
}

/// Runs the mark and sweep over one cache; `dry_run` deletes nothing.
pub async fn collect(
    cache: &S3Cache,
    policy: &S3CachePolicy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<S3CacheReport, CatalogError> {
    let manifests = cache.list(MANIFESTS).await?;
    let (expired, kept) = expire_manifests(policy, &manifests, now);
    let mut marked = BTreeSet::new();
    for m in manifests.iter().filter(|m| kept.contains(&m.name)) {
        marked.extend(referenced_blobs(&cache.get(&m.name).await?));
    }
    let blobs = cache.list(BLOBS).await?;
    // Manifests written since the first listing (a build finishing meanwhile) mark too,
    // and one rewritten since it was found expired is in use again.
    let first: BTreeMap<&str, DateTime<Utc>> = manifests
        .iter()
        .map(|m| (m.name.as_str(), m.last_modified))
        .collect();
    let mut expired = expired;
    let mut kept = kept;
    for m in cache.list(MANIFESTS).await? {
        if first.get(m.name.as_str()) == Some(&m.last_modified) {
            continue;
        }
        marked.extend(referenced_blobs(&cache.get(&m.name).await?));
        expired.retain(|(n, _)| *n != m.name);
        if !kept.contains(&m.name) {
            kept.push(m.name.clone());
        }
    }
    let mut plan = S3GcPlan {
        uri: cache.uri.to_string(),
        expired_manifests: expired,
        kept_manifests: kept,
        ..Default::default()
    };
    sweep_blobs(policy, &blobs, &marked, now, &mut plan);
    let mut report = S3CacheReport {
        dry_run,
        plan,
        deleted: Vec::new(),
        failed: Vec::new(),
    };
    if dry_run {
        return Ok(report);
    }
    // Manifests first: a blob is never gone while a manifest still names it.
    let names: Vec<String> = report
        .plan
        .expired_manifests
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let (deleted, failed) = cache.delete(&names).await?;
    report.deleted.extend(deleted);
    report.failed.extend(failed);
    let (deleted, failed) = cache.delete(&report.plan.dead_blobs).await?;
    report.deleted.extend(deleted);
    report.failed.extend(failed);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::policy::Policy;
    use chrono::Duration;

    fn obj(name: &str, age_h: i64, now: DateTime<Utc>) -> CacheObject {
        CacheObject {
            name: name.into(),
            last_modified: now - Duration::hours(age_h),
            size: 10,
        }
    }

    #[test]
    fn expires_by_name_and_age_and_sweeps_only_old_unreferenced_blobs() {
        let policy = Policy::parse(
            "repositories: ['*']\ns3_caches: [{uri: 's3://b/p/', keep: [main], expire_unused_for: 14d, blob_grace: 24h}]",
        )
        .unwrap()
        .s3_caches
        .remove(0);
        let now = Utc::now();
        let manifests = [
            obj("manifests/main", 24 * 30, now),
            obj("manifests/feature-old", 24 * 15, now),
            obj("manifests/feature-new", 24 * 13, now),
        ];
        let (expired, kept) = expire_manifests(&policy, &manifests, now);
        assert_eq!(
            expired.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["manifests/feature-old"]
        );
        assert_eq!(kept, ["manifests/main", "manifests/feature-new"]);
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let marked: BTreeSet<String> = referenced_blobs(
            format!(
                r#"{{"layers":[{{"blob":"{}"}},{{"blob":"{}"}}]}}"#,
                d('a'),
                d('b')
            )
            .as_bytes(),
        );
        let blobs = [
            obj(&format!("blobs/{}", d('a')), 100, now),
            obj(&format!("blobs/{}", d('c')), 100, now),
            obj(&format!("blobs/{}", d('e')), 2, now),
            obj("blobs/not-a-digest", 100, now),
        ];
        let mut plan = S3GcPlan::default();
        sweep_blobs(&policy, &blobs, &marked, now, &mut plan);
        assert_eq!(plan.dead_blobs, [format!("blobs/{}", d('c'))]);
        assert_eq!((plan.live_blobs, plan.young_blobs), (1, 1));
    }
}
