//! The synthetic `ECR Image Action` push event of one piece of work: what ECR would have
//! sent for the push of that tag, so the indexer's and the stitcher's own decision code
//! runs on it exactly as on a real push (filters, own-output and skip rules included).

use super::ReconcileError;
use crate::events::{EcrImageActionEvent, Trigger};
use crate::oci::{ManifestSummary, Sha256Digest};
use crate::registry::Manifest;
use chrono::Utc;
use serde_json::json;

/// Where the repository lives, for the event's `account` and `region` (ECR hosts only:
/// the handlers open `<account>.dkr.ecr.<region>.amazonaws.com/<repository>` from them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventOrigin {
    /// The AWS account id, for an ECR registry.
    pub account: Option<String>,
    /// The AWS region, for an ECR registry.
    pub region: Option<String>,
}

impl EventOrigin {
    /// Account and region of an ECR registry host; none for any other host or a layout.
    pub fn of_host(host: Option<&str>) -> Self {
        match host.and_then(crate::registry::ecr::parse_registry_host) {
            Some(ecr) => Self {
                account: Some(ecr.account),
                region: Some(ecr.region),
            },
            None => Self::default(),
        }
    }
}

/// A UUID-shaped id that depends only on the repository, tag and digest, so the same
/// piece of work always gets the same id (a deduplication key for a queue).
pub fn work_id(repository: &str, tag: &str, digest: &Sha256Digest) -> String {
    let h = Sha256Digest::of(format!("{repository}:{tag}@{digest}").as_bytes()).hex();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The push event ECR raises when `manifest` is pushed to `repository` as `tag`: the
/// media types come from the stored manifest, as ECR takes them (`artifact-media-type`
/// is the config media type; indexes have none). Parsed by [`Trigger::from_value`], the
/// parser the handlers use, so it is valid for them by construction.
pub fn push_event(
    repository: &str,
    tag: &str,
    manifest: &Manifest,
    origin: &EventOrigin,
) -> Result<EcrImageActionEvent, ReconcileError> {
    let what = format!("{repository}:{tag}@{}", manifest.digest);
    let summary = ManifestSummary::parse(&what, &manifest.bytes)
        .map_err(crate::registry::RegistryError::from)?;
    let mut detail = json!({
        "result": "SUCCESS",
        "repository-name": repository,
        "image-digest": manifest.digest.to_string(),
        "action-type": "PUSH",
        "image-tag": tag,
        "manifest-media-type": summary.effective_media_type(Some(&manifest.media_type)),
    });
    if let Some(config) = &summary.config {
        detail["artifact-media-type"] = json!(config.media_type);
    }
    let mut event = json!({
        "version": "0",
        "id": work_id(repository, tag, &manifest.digest),
        "detail-type": crate::events::ECR_IMAGE_ACTION,
        "source": crate::events::ECR_SOURCE,
        "time": Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "resources": [],
        "detail": detail,
    });
    if let Some(account) = &origin.account {
        event["account"] = json!(account);
    }
    if let Some(region) = &origin.region {
        event["region"] = json!(region);
    }
    match Trigger::from_value(event) {
        Ok(Trigger::EcrImageAction(event)) => Ok(event),
        Ok(other) => Err(ReconcileError::Event(format!(
            "{what}: built a {} event instead of a push",
            other.kind()
        ))),
        Err(e) => Err(ReconcileError::Event(format!("{what}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::soci_push_decision;
    use crate::filters::RepositoryTagFilters;
    use crate::oci::media;

    #[test]
    fn the_event_is_what_the_indexer_decides_on() {
        let config = Sha256Digest::of(b"{}");
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config}","size":2}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG
        );
        let manifest = Manifest::new(media::OCI_MANIFEST, bytes.into_bytes());
        let origin = EventOrigin::of_host(Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        let event = push_event("app", "1.2", &manifest, &origin).unwrap();
        assert_eq!(event.account.as_deref(), Some("123456789012"));
        assert_eq!(event.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            event.detail.artifact_media_type.as_deref(),
            Some(media::OCI_CONFIG)
        );
        assert_eq!(
            event.id.as_deref(),
            Some(work_id("app", "1.2", &manifest.digest).as_str())
        );
        let decision = soci_push_decision(&event.detail, &RepositoryTagFilters::default(), "-soci");
        assert!(decision.is_work(), "{decision:?}");
        let own = push_event("app", "1.2-soci", &manifest, &EventOrigin::default()).unwrap();
        assert_eq!(own.account, None);
        assert_eq!(
            soci_push_decision(&own.detail, &RepositoryTagFilters::default(), "-soci")
                .skip_reason()
                .map(|r| r.code()),
            Some("own-output")
        );
    }
}
