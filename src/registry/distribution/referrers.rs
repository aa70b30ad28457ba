//! OCI 1.1 referrers: the `/v2/<name>/referrers/<digest>` API where the registry has it,
//! else the referrers tag schema (an OCI index tagged `sha256-<hex>` listing the
//! manifests whose `subject` is that digest). Debian's docker-registry (distribution 2.8)
//! has no API, ECR has it.

use super::client::Req;
use super::pages::Pages;
use super::response::Subject;
use super::DistributionRepository;
use crate::oci::{media, DescriptorSummary, ManifestSummary, Sha256Digest};
use crate::registry::{Manifest, RegistryError, Repository, Result};
use reqwest::header::ACCEPT;
use reqwest::Method;
use serde_json::{json, Value};

/// The fallback tag of a subject: `sha256-<hex>`.
pub fn fallback_tag(subject: &Sha256Digest) -> String {
    format!("sha256-{}", subject.hex())
}

impl DistributionRepository {
    /// Referrers of `digest`, optionally only those of `artifact_type`.
    pub(crate) async fn list_referrers(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<DescriptorSummary>> {
        let all = match self.referrers_api(digest, artifact_type).await? {
            Some(list) => list,
            None => self.referrers_from_tag(digest).await?.unwrap_or_default(),
        };
        Ok(all
            .into_iter()
            .filter(|d| artifact_type.is_none() || d.artifact_type.as_deref() == artifact_type)
            .collect())
    }

    /// `None` when the registry has no referrers API (it answers 404). Pages linked
    /// with `Link: rel="next"` are followed, within the bounds of [`Pages`].
    async fn referrers_api(
        &self,
        digest: &Sha256Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<DescriptorSummary>>> {
        let mut first = self.url(&format!("referrers/{digest}"))?;
        if let Some(t) = artifact_type {
            first.query_pairs_mut().append_pair("artifactType", t);
        }
        let what = format!("referrers index of {digest} in {}", self.location());
        let mut pages = Pages::new(what.clone(), first);
        let mut all = Vec::new();
        while let Some(url) = pages.next_url()? {
            let req = Req::new(
                Method::GET,
                url.clone(),
                vec![super::auth::repository_scope(self.name(), false)],
                Subject {
                    what: format!("referrers of {digest}"),
                    location: self.location(),
                },
            )
            .header(ACCEPT, media::OCI_INDEX)?;
            // Each page is an index: at most a manifest's size, and within the budget
            // of the whole list.
            let limit = crate::registry::MAX_MANIFEST_SIZE.min(pages.byte_budget());
            let result = self
                .client
                .execute_small(&req, limit, |size| {
                    if size > crate::registry::MAX_MANIFEST_SIZE {
                        RegistryError::ManifestTooLarge {
                            what: what.clone(),
                            size,
                        }
                    } else {
                        pages.too_many_bytes(size)
                    }
                })
                .await;
            let (headers, body) = match result {
                Ok((_, headers, body)) => (headers, body),
                Err(e) if e.is_not_found() && pages.on_first_page() => return Ok(None),
                Err(e) => return Err(e),
            };
            let page = ManifestSummary::parse(&what, &body)?.manifests;
            pages.add_page(&url, &headers, body.len(), page.len())?;
            all.extend(page);
        }
        Ok(Some(all))
    }

    /// The referrers tag schema index, `None` when the tag does not exist.
    async fn referrers_from_tag(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<Vec<DescriptorSummary>>> {
        match self.get_manifest(&fallback_tag(digest)).await {
            Ok(index) => {
                let what = format!(
                    "referrers tag {} in {}",
                    fallback_tag(digest),
                    self.location()
                );
                Ok(Some(ManifestSummary::parse(&what, &index.bytes)?.manifests))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Pushes a manifest that has a `subject` (by digest) and, when the registry did not
    /// acknowledge the subject (no `OCI-Subject` header: no referrers API), adds it to the
    /// `sha256-<hex>` tag index of the subject. Idempotent: an entry already listed is not
    /// added twice.
    ///
    /// Two writers updating the same fallback index at once can lose an entry (the tag
    /// schema has no compare-and-swap); afterpush's handlers write one referrer per
    /// subject and event, and a re-run repairs the index.
    pub async fn push_referrer(&self, manifest: &Manifest) -> Result<()> {
        let what = format!("referrer {} for {}", manifest.digest, self.location());
        let summary = ManifestSummary::parse(&what, &manifest.bytes)?;
        let subject = summary
            .subject
            .as_ref()
            .ok_or_else(|| RegistryError::Invalid {
                location: what.clone(),
                message: "manifest has no subject".into(),
            })?;
        let subject_digest: Sha256Digest = subject.digest.parse()?;
        let acknowledged = self.put_manifest_reporting_subject(manifest, None).await?;
        if acknowledged {
            return Ok(());
        }
        // A registry with the API but without the header still lists it: check first.
        if self.referrers_api(&subject_digest, None).await?.is_some() {
            return Ok(());
        }
        let tag = fallback_tag(&subject_digest);
        let mut index: Value = match self.get_manifest(&tag).await {
            Ok(existing) => {
                serde_json::from_slice(&existing.bytes).map_err(|e| RegistryError::Invalid {
                    location: format!("{}:{tag}", self.location()),
                    message: format!("referrers tag index is not JSON: {e}"),
                })?
            }
            Err(e) if e.is_not_found() => {
                json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": []})
            }
            Err(e) => return Err(e),
        };
        let entries = index
            .get_mut("manifests")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| RegistryError::Invalid {
                location: format!("{}:{tag}", self.location()),
                message: "referrers tag index has no manifests array".into(),
            })?;
        let digest = manifest.digest.to_string();
        if entries
            .iter()
            .any(|e| e.get("digest").and_then(Value::as_str) == Some(digest.as_str()))
        {
            return Ok(());
        }
        let mut entry = json!({
            "mediaType": manifest.media_type,
            "digest": digest,
            "size": manifest.bytes.len(),
        });
        if let Some(t) = summary.artifact_type() {
            entry["artifactType"] = json!(t);
        }
        if !summary.annotations.is_empty() {
            entry["annotations"] = json!(summary.annotations);
        }
        entries.push(entry);
        let bytes = serde_json::to_vec(&index).map_err(|e| RegistryError::Invalid {
            location: format!("{}:{tag}", self.location()),
            message: format!("cannot serialise the referrers index: {e}"),
        })?;
        self.put_manifest(&Manifest::new(media::OCI_INDEX, bytes), Some(&tag))
            .await
    }
}
