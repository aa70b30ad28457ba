//! Keeps moto's ECR in step with the real registry, for tests that run the product
//! against both: the registry holds the blobs and takes every write (the functions reach
//! it through `AFTERPUSH_REGISTRY_ENDPOINT`), while moto's ECR answers ECR's API
//! (DescribeImages, BatchGetImage), which the reconciler surveys through. moto's ECR
//! holds no blobs, and nothing the functions write to the registry reaches it by
//! itself: a test mirrors after each step that wrote, so the next survey sees it.
//!
//! [`mirror_repository`] puts every manifest the registry's tags reach into ECR with
//! PutImage, with the exact bytes, media type and tag: the tagged manifests, the
//! children of image indexes and the SOCI index manifests a SOCI-enabled index names in
//! its annotations (these two untagged, as ECR keeps them after a push). What ECR
//! already holds under the same digest and tag is not put again (ECR refuses that with
//! ImageAlreadyExistsException); a tag the registry moved is put onto its new manifest
//! (moto correction 6 then leaves the old one untagged, as ECR does). Images the
//! registry no longer names are left in ECR: the survey reads tagged images only.

use afterpush::oci::{annotation, ManifestSummary, Sha256Digest};
use afterpush::registry::{Manifest, Repository};
use std::collections::{BTreeMap, BTreeSet};

/// What one mirror pass put into ECR.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// PutImage calls with a tag.
    pub tagged: usize,
    /// PutImage calls without a tag (index children, SOCI index manifests).
    pub untagged: usize,
}

/// Creates ECR repository `name` unless it exists.
pub async fn ensure_ecr_repository(ecr: &aws_sdk_ecr::Client, name: &str) {
    let exists = ecr
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
        .is_ok();
    if !exists {
        super::create_ecr_repository(ecr, name).await;
    }
}

/// The manifests `manifest` names that ECR keeps as images of their own: the children
/// of an index, and the SOCI index manifests a SOCI-enabled index names.
fn named_by(manifest: &Manifest) -> Vec<Sha256Digest> {
    let summary = ManifestSummary::parse(&manifest.digest.to_string(), &manifest.bytes)
        .unwrap_or_else(|e| panic!("manifest {}: {e}", manifest.digest));
    let mut out = vec![];
    for d in &summary.manifests {
        out.push(d.digest.parse().expect("a child digest"));
        if let Some(soci) = d.annotations.get(annotation::SOCI_INDEX_DIGEST) {
            out.push(soci.parse().expect("a SOCI index digest"));
        }
    }
    out
}

/// Mirrors registry repository `registry_repo` into ECR repository `repository`
/// (created when missing); returns what was put.
pub async fn mirror_repository(
    registry_repo: &dyn Repository,
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
) -> Mirrored {
    ensure_ecr_repository(ecr, repository).await;
    let in_ecr = super::ecr_image_tags(ecr, repository).await;
    // Each manifest the tags reach, with the tags naming it.
    let mut manifests: BTreeMap<Sha256Digest, (Manifest, BTreeSet<String>)> = BTreeMap::new();
    let mut todo: Vec<(String, Option<String>)> = registry_repo
        .list_tags()
        .await
        .unwrap_or_else(|e| panic!("tags of {repository} in the registry: {e}"))
        .into_iter()
        .map(|t| (t.clone(), Some(t)))
        .collect();
    while let Some((reference, tag)) = todo.pop() {
        let manifest = registry_repo
            .get_manifest(&reference)
            .await
            .unwrap_or_else(|e| panic!("{repository}:{reference} in the registry: {e}"));
        let digest = manifest.digest.clone();
        let first_visit = !manifests.contains_key(&digest);
        let entry = manifests
            .entry(digest)
            .or_insert_with(|| (manifest.clone(), BTreeSet::new()));
        entry.1.extend(tag);
        if first_visit {
            todo.extend(
                named_by(&manifest)
                    .into_iter()
                    .map(|d| (d.to_string(), None)),
            );
        }
    }
    let mut mirrored = Mirrored::default();
    for (digest, (manifest, tags)) in &manifests {
        let held = in_ecr.get(&digest.to_string());
        let missing: Vec<Option<&String>> = match held {
            None if tags.is_empty() => vec![None],
            None => tags.iter().map(Some).collect(),
            Some(held) => tags
                .iter()
                .filter(|t| !held.contains(*t))
                .map(Some)
                .collect(),
        };
        for tag in missing {
            put(ecr, repository, manifest, tag.map(String::as_str)).await;
            match tag {
                Some(_) => mirrored.tagged += 1,
                None => mirrored.untagged += 1,
            }
        }
    }
    mirrored
}

async fn put(ecr: &aws_sdk_ecr::Client, repository: &str, manifest: &Manifest, tag: Option<&str>) {
    let body = std::str::from_utf8(&manifest.bytes).expect("a JSON manifest");
    let digest = Some(&manifest.digest);
    super::put_image(ecr, repository, body, &manifest.media_type, tag, digest).await;
}
