//! Referrers in a layout, which has no referrers API: found by scanning `index.json`
//! (see `dir.rs` for how referrers get their entries) and the `sha256-<hex>` tag schema.

use super::dir::{entry_digest, entry_media_type, entry_tag, LayoutRepository};
use crate::oci::{media, DescriptorSummary, Sha256Digest};
use crate::registry::Result;
use std::collections::{BTreeSet, HashMap};

impl LayoutRepository {
    /// The referrers of each of `digests`, from one scan of `index.json`: each entry's
    /// manifest is read once whatever the number of digests (asking one digest at a
    /// time re-read every entry, the tagged index with its thousands of children
    /// included, for each of them).
    pub(super) fn referrers_sync(
        &self,
        digests: &[Sha256Digest],
        artifact_type: Option<&str>,
    ) -> Result<Vec<Vec<DescriptorSummary>>> {
        // A digest asked for twice gets its answer twice.
        let mut positions: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, d) in digests.iter().enumerate() {
            positions.entry(d.to_string()).or_default().push(i);
        }
        let mut found: Vec<Vec<DescriptorSummary>> = vec![Vec::new(); digests.len()];
        let mut seen: Vec<BTreeSet<Sha256Digest>> = vec![BTreeSet::new(); digests.len()];
        let entries = self.entries()?;
        let mut read = BTreeSet::new();
        for entry in &entries {
            let Some(d) = entry_digest(entry) else {
                continue;
            };
            if !read.insert(d.clone()) {
                continue;
            }
            let mt = entry_media_type(entry).unwrap_or_default();
            if !(media::is_image_manifest(mt) || media::is_index(mt)) {
                continue;
            }
            let (bytes, summary) = match self.read_manifest_blob(&d.to_string(), &d) {
                Ok(x) => x,
                // A dangling or broken entry is not a referrer; resolving it reports it.
                Err(_) => continue,
            };
            let Some(at) = summary
                .subject
                .as_ref()
                .and_then(|s| positions.get(s.digest.as_str()))
            else {
                continue;
            };
            for &i in at {
                seen[i].insert(d.clone());
                found[i].push(DescriptorSummary {
                    media_type: summary.effective_media_type(Some(mt)).to_string(),
                    digest: d.to_string(),
                    size: bytes.len() as u64,
                    artifact_type: summary.artifact_type().map(str::to_string),
                    annotations: summary.annotations.clone(),
                    platform: None,
                });
            }
        }
        // The referrers tag schema: `sha256-<hex>` tags an index listing the referrers
        // (the last entry of a tag wins, as for every tag).
        let mut tagged: HashMap<&str, Sha256Digest> = HashMap::new();
        for entry in &entries {
            if let (Some(tag), Some(d)) = (entry_tag(entry), entry_digest(entry)) {
                tagged.insert(tag, d);
            }
        }
        for (i, digest) in digests.iter().enumerate() {
            let schema_tag = format!("sha256-{}", digest.hex());
            if let Some(d) = tagged.get(schema_tag.as_str()) {
                let (_, summary) = self.read_manifest_blob(&schema_tag, d)?;
                for desc in summary.manifests {
                    if seen[i].insert(desc.digest.parse()?) {
                        found[i].push(desc);
                    }
                }
            }
        }
        for list in &mut found {
            if let Some(at) = artifact_type {
                list.retain(|d| d.artifact_type.as_deref() == Some(at));
            }
            list.sort_by(|a, b| a.digest.cmp(&b.digest));
        }
        Ok(found)
    }
}
