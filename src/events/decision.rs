//! Whether an event is work for a function, decided from the event alone (cheap: no
//! registry call). What is SOCI output is the SOCI module's knowledge
//! ([`crate::soci::is_soci_index_type`], and [`crate::soci::is_our_soci_output`] for the
//! checks that need the manifest); what is a per-arch tag the stitcher's
//! ([`crate::stitch::PerArchTag`]).
//!
//! Every PutImage afterpush does raises another push event, so each function recognises
//! what it and its siblings push and skips it: loops are impossible by construction, not
//! by rate limits. Every skip carries a [`SkipReason`] that the handler logs.

use super::{EcrImageAction, ScheduledEvent, Trigger};
use crate::filters::RepositoryTagFilters;
use crate::oci::{media, Sha256Digest};
use crate::soci;
use crate::stitch::{ArchTagTemplate, PerArchTag};
use chrono::{DateTime, Utc};
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use std::fmt;

/// What a function should do with an ECR push event: work on a tag, or skip it (and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushDecision {
    /// Act on `repository:tag` (`digest` is what the tag pointed to when pushed).
    Work {
        /// The repository pushed to.
        repository: String,
        /// The pushed tag.
        tag: String,
        /// The pushed manifest's digest.
        digest: Sha256Digest,
    },
    /// Do nothing, for this reason (logged).
    Skip {
        /// Why the event is not work.
        reason: SkipReason,
    },
}

impl PushDecision {
    /// True for [`PushDecision::Work`].
    pub fn is_work(&self) -> bool {
        matches!(self, PushDecision::Work { .. })
    }

    /// The skip reason, if this is a skip.
    pub fn skip_reason(&self) -> Option<&SkipReason> {
        match self {
            PushDecision::Skip { reason } => Some(reason),
            PushDecision::Work { .. } => None,
        }
    }

    /// The indexer's `SOCI_SKIP_ARCH_TAGS`: work on a tag that `template` matches becomes
    /// a [`SkipReason::PerArchTag`] skip, leaving the SOCI index to the stitched tag.
    /// `None` (the default) changes nothing.
    pub fn skipping_per_arch_tags(self, template: Option<&ArchTagTemplate>) -> PushDecision {
        let per_arch = match (&self, template) {
            (PushDecision::Work { tag, .. }, Some(template)) => PerArchTag::of(tag, template),
            _ => None,
        };
        match per_arch {
            Some(per_arch) => PushDecision::Skip {
                reason: SkipReason::PerArchTag(per_arch),
            },
            None => self,
        }
    }
}

/// `{"decision":"work","repository":..,"tag":..,"digest":..}` or
/// `{"decision":"skip","code":"untagged","reason":"untagged push ..."}`.
impl Serialize for PushDecision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PushDecision::Work {
                repository,
                tag,
                digest,
            } => {
                let mut st = s.serialize_struct("PushDecision", 4)?;
                st.serialize_field("decision", "work")?;
                st.serialize_field("repository", repository)?;
                st.serialize_field("tag", tag)?;
                st.serialize_field("digest", digest)?;
                st.end()
            }
            PushDecision::Skip { reason } => {
                let mut st = s.serialize_struct("PushDecision", 3)?;
                st.serialize_field("decision", "skip")?;
                st.serialize_field("code", reason.code())?;
                st.serialize_field("reason", &reason.to_string())?;
                st.end()
            }
        }
    }
}

/// Why an event is not work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `action-type` is not PUSH (DELETE, UPDATE_STORAGE_CLASS, ...).
    NotAPush {
        /// The event's `action-type`.
        action_type: String,
    },
    /// `result` is not SUCCESS.
    NotSuccessful {
        /// The event's `result` (`FAILURE`).
        result: String,
    },
    /// No tag: a child of an index (the index's own push event follows) or a push by digest.
    Untagged,
    /// `REPOSITORY_TAG_FILTERS` does not select this pair.
    FilteredOut {
        /// The pushed repository.
        repository: String,
        /// The pushed tag.
        tag: String,
    },
    /// Something afterpush itself pushed (the loop guard).
    OwnOutput {
        /// How it was recognised (a tag suffix, an artifact type, an annotation).
        why: String,
    },
    /// Not a runnable image: a BuildKit cache, an attestation, a signature, ...
    NotAnImage {
        /// What it is instead, from its media or artifact type.
        what: String,
    },
    /// A cosign-style `sha256-<hex>[.sig|.att|.sbom]` tag or a referrers fallback tag.
    ReferrerTag {
        /// The pushed tag.
        tag: String,
    },
    /// A per-arch tag, left to the stitched index (`SOCI_SKIP_ARCH_TAGS`).
    PerArchTag(PerArchTag),
}

impl SkipReason {
    /// A stable kebab-case code for metrics and tests.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::NotAPush { .. } => "not-a-push",
            SkipReason::NotSuccessful { .. } => "not-successful",
            SkipReason::Untagged => "untagged",
            SkipReason::FilteredOut { .. } => "filtered-out",
            SkipReason::OwnOutput { .. } => "own-output",
            SkipReason::NotAnImage { .. } => "not-an-image",
            SkipReason::ReferrerTag { .. } => "referrer-tag",
            SkipReason::PerArchTag(_) => "per-arch-tag",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotAPush { action_type } => {
                write!(f, "action-type is {action_type:?}, not PUSH")
            }
            SkipReason::NotSuccessful { result } => {
                write!(f, "result is {result:?}, not SUCCESS")
            }
            SkipReason::Untagged => f.write_str(
                "untagged push (an index child or a push by digest; the tag's own event follows)",
            ),
            SkipReason::FilteredOut { repository, tag } => {
                write!(
                    f,
                    "{repository}:{tag} is not selected by REPOSITORY_TAG_FILTERS"
                )
            }
            SkipReason::OwnOutput { why } => write!(f, "afterpush's own output: {why}"),
            SkipReason::NotAnImage { what } => write!(f, "not a runnable image: {what}"),
            SkipReason::ReferrerTag { tag } => write!(
                f,
                "tag {tag:?} is a signature/attestation/referrers tag (sha256-<hex>...)"
            ),
            SkipReason::PerArchTag(per_arch) => per_arch.fmt(f),
        }
    }
}

/// The SOCI indexer's decision for an ECR image action.
///
/// Skips, in order: non-PUSH, non-SUCCESS, SOCI artifacts and `<tag><soci_tag_suffix>`
/// (our own output, even untagged), untagged pushes, referrer/signature tags, non-image
/// artifacts (BuildKit cache, in-toto, cosign, notation, other config types), and pairs
/// `filters` does not select. The manifest-level guard is
/// [`crate::soci::is_our_soci_output`].
pub fn soci_push_decision(
    detail: &EcrImageAction,
    filters: &RepositoryTagFilters,
    soci_tag_suffix: &str,
) -> PushDecision {
    decide(detail, filters, soci_tag_suffix, ArtifactCheck::ImagesOnly)
}

/// The manifest stitcher's decision: a successful push of a tagged image (or of a
/// per-arch index, as buildx pushes with provenance) that `filters` selects and that is
/// not a SOCI output. Whether the tag matches `ARCH_TAG_TEMPLATE` is the stitcher's own
/// check (`crate::stitch`).
pub fn stitch_push_decision(
    detail: &EcrImageAction,
    filters: &RepositoryTagFilters,
    soci_tag_suffix: &str,
) -> PushDecision {
    decide(detail, filters, soci_tag_suffix, ArtifactCheck::ImagesOnly)
}

/// What the cache janitor does for a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JanitorDecision {
    /// Scheduled: sweep every selected repository with every rule.
    Sweep {
        /// The schedule's `time`, when the event carries one.
        scheduled_at: Option<DateTime<Utc>>,
    },
    /// A tag was pushed: prune what that push superseded (the cleanup policy decides
    /// whether the tag is a cache tag).
    AfterPush(PushDecision),
    /// One repository of a sweep that fanned out: sweep it, then gather the run.
    RepositorySweep {
        /// The fanned-out run.
        run_id: String,
        /// The repository to sweep.
        repository: String,
    },
}

/// `{"action":"sweep","scheduled-at":..}`, `{"action":"repository-sweep","run-id":..,
/// "repository":..}` or `{"action":"after-push", ...decision fields}`.
impl Serialize for JanitorDecision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            JanitorDecision::Sweep { scheduled_at } => {
                let mut st = s.serialize_struct("JanitorDecision", 2)?;
                st.serialize_field("action", "sweep")?;
                st.serialize_field("scheduled-at", scheduled_at)?;
                st.end()
            }
            JanitorDecision::RepositorySweep { run_id, repository } => {
                let mut st = s.serialize_struct("JanitorDecision", 3)?;
                st.serialize_field("action", "repository-sweep")?;
                st.serialize_field("run-id", run_id)?;
                st.serialize_field("repository", repository)?;
                st.end()
            }
            JanitorDecision::AfterPush(decision) => {
                let mut value =
                    serde_json::to_value(decision).map_err(serde::ser::Error::custom)?;
                if let Some(map) = value.as_object_mut() {
                    map.insert("action".into(), "after-push".into());
                }
                value.serialize(s)
            }
        }
    }
}

/// The cache janitor's decision: a schedule is a sweep; a push is work when it is a
/// successful, tagged push selected by `filters` that is not a SOCI output. BuildKit cache
/// manifests are exactly what the janitor is for, so artifact types are not filtered.
pub fn janitor_decision(
    trigger: &Trigger,
    filters: &RepositoryTagFilters,
    soci_tag_suffix: &str,
) -> JanitorDecision {
    match trigger {
        Trigger::Scheduled(ScheduledEvent { time, .. }) => JanitorDecision::Sweep {
            scheduled_at: *time,
        },
        Trigger::EcrImageAction(event) => JanitorDecision::AfterPush(decide(
            &event.detail,
            filters,
            soci_tag_suffix,
            ArtifactCheck::Any,
        )),
        Trigger::JanitorRepositorySweep(event) => JanitorDecision::RepositorySweep {
            run_id: event.detail.run_id.clone(),
            repository: event.detail.repository.clone(),
        },
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ArtifactCheck {
    ImagesOnly,
    Any,
}

fn decide(
    detail: &EcrImageAction,
    filters: &RepositoryTagFilters,
    soci_tag_suffix: &str,
    artifacts: ArtifactCheck,
) -> PushDecision {
    match checks(detail, filters, soci_tag_suffix, artifacts) {
        Ok(work) => work,
        Err(reason) => PushDecision::Skip { reason },
    }
}

fn checks(
    detail: &EcrImageAction,
    filters: &RepositoryTagFilters,
    soci_tag_suffix: &str,
    artifacts: ArtifactCheck,
) -> Result<PushDecision, SkipReason> {
    if !detail.is_push() {
        return Err(SkipReason::NotAPush {
            action_type: detail.action_type.clone(),
        });
    }
    if !detail.is_success() {
        return Err(SkipReason::NotSuccessful {
            result: detail.result.clone(),
        });
    }
    let artifact = detail.artifact_media_type.as_deref().unwrap_or("");
    if soci::is_soci_index_type(artifact) {
        return Err(SkipReason::OwnOutput {
            why: format!("artifact-media-type {artifact} is a SOCI index"),
        });
    }
    let tag = detail.tag().ok_or(SkipReason::Untagged)?;
    if !soci_tag_suffix.is_empty() && tag.ends_with(soci_tag_suffix) {
        return Err(SkipReason::OwnOutput {
            why: format!("tag {tag:?} ends with the SOCI tag suffix {soci_tag_suffix:?}"),
        });
    }
    if is_referrer_tag(tag) {
        return Err(SkipReason::ReferrerTag {
            tag: tag.to_string(),
        });
    }
    if artifacts == ArtifactCheck::ImagesOnly {
        if let Some(what) = not_an_image(detail) {
            return Err(SkipReason::NotAnImage { what });
        }
    }
    if !filters.matches(&detail.repository_name, tag) {
        return Err(SkipReason::FilteredOut {
            repository: detail.repository_name.clone(),
            tag: tag.to_string(),
        });
    }
    // Trigger::from_value guarantees a valid digest on a successful push; a detail built
    // by hand without one is still refused rather than acted on.
    let digest = detail.digest().map_err(|e| SkipReason::NotAnImage {
        what: format!("event without a usable image digest ({e})"),
    })?;
    Ok(PushDecision::Work {
        repository: detail.repository_name.clone(),
        tag: tag.to_string(),
        digest,
    })
}

/// cosign's `sha256-<hex>.sig|.att|.sbom` tags and the OCI referrers tag schema
/// `sha256-<hex>` (used for SOCI v1 and attestations where the referrers API is missing).
fn is_referrer_tag(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix("sha256-") else {
        return false;
    };
    let (hex, suffix) = rest.split_at(rest.len().min(64));
    hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(suffix, "" | ".sig" | ".att" | ".sbom")
}

/// Why the event's media types say this is not a runnable image or image index.
fn not_an_image(detail: &EcrImageAction) -> Option<String> {
    if let Some(mt) = detail
        .manifest_media_type
        .as_deref()
        .filter(|m| !m.is_empty())
    {
        if !media::MANIFEST_TYPES.contains(&mt) {
            return Some(format!("manifest-media-type {mt}"));
        }
    }
    let artifact = detail.artifact_media_type.as_deref().unwrap_or("");
    let kind = match artifact {
        // ECR leaves it out (or empty) for indexes; image configs are what we want.
        "" | media::OCI_CONFIG | media::DOCKER_CONFIG => return None,
        media::BUILDKIT_CACHE_CONFIG => "BuildKit cache",
        a if a.contains("in-toto") => "attestation",
        a if a == media::COSIGN_SIGNATURE
            || a == media::COSIGN_ARTIFACT_SIG
            || a.starts_with(media::NOTARY_SIGNATURE) =>
        {
            "signature"
        }
        _ => "artifact",
    };
    Some(format!("{kind} (artifact-media-type {artifact})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn push(repository: &str, tag: &str, artifact: &str) -> EcrImageAction {
        EcrImageAction {
            result: "SUCCESS".into(),
            repository_name: repository.into(),
            image_digest: Some(DIGEST.into()),
            action_type: "PUSH".into(),
            image_tag: Some(tag.into()),
            manifest_media_type: Some(media::OCI_MANIFEST.into()),
            artifact_media_type: Some(artifact.into()),
        }
    }

    #[test]
    fn skipping_per_arch_tags_only_touches_work_on_matching_tags() {
        let all = RepositoryTagFilters::default();
        let template = ArchTagTemplate::parse(ArchTagTemplate::DEFAULT).unwrap();
        let decide =
            |tag: &str| soci_push_decision(&push("app", tag, media::OCI_CONFIG), &all, "-soci");
        let skipped = decide("1.2-arm64").skipping_per_arch_tags(Some(&template));
        assert_eq!(code(&skipped), "per-arch-tag");
        assert!(skipped
            .skip_reason()
            .unwrap()
            .to_string()
            .contains("{tag}-{arch}"));
        assert_eq!(
            code(&decide("1.2").skipping_per_arch_tags(Some(&template))),
            "work"
        );
        assert_eq!(
            code(&decide("1.2-arm64").skipping_per_arch_tags(None)),
            "work"
        );
        // An earlier skip keeps its own reason.
        let own = decide("1.2-arm64-soci").skipping_per_arch_tags(Some(&template));
        assert_eq!(code(&own), "own-output");
    }

    fn code(d: &PushDecision) -> &'static str {
        d.skip_reason().map_or("work", SkipReason::code)
    }

    #[test]
    fn soci_decisions_cover_every_skip() {
        let all = RepositoryTagFilters::default();
        let soci = |d: &EcrImageAction| code(&soci_push_decision(d, &all, "-soci"));
        let image = push("app", "1.2.3", media::OCI_CONFIG);
        assert_eq!(
            soci_push_decision(&image, &all, "-soci"),
            PushDecision::Work {
                repository: "app".into(),
                tag: "1.2.3".into(),
                digest: DIGEST.parse().unwrap()
            }
        );
        assert_eq!(
            soci(&EcrImageAction {
                action_type: "DELETE".into(),
                ..image.clone()
            }),
            "not-a-push"
        );
        assert_eq!(
            soci(&EcrImageAction {
                result: "FAILURE".into(),
                ..image.clone()
            }),
            "not-successful"
        );
        assert_eq!(
            soci(&EcrImageAction {
                image_tag: Some(String::new()),
                ..image.clone()
            }),
            "untagged"
        );
        assert_eq!(
            soci(&EcrImageAction {
                image_tag: None,
                ..image.clone()
            }),
            "untagged"
        );
        assert_eq!(
            soci(&push("app", "1.2.3-soci", media::OCI_CONFIG)),
            "own-output"
        );
        assert_eq!(soci(&push("app", "", media::SOCI_INDEX_V2)), "own-output");
        assert_eq!(soci(&push("app", "x", media::SOCI_INDEX_V1)), "own-output");
        assert_eq!(
            soci(&push("app", "cache-main", media::BUILDKIT_CACHE_CONFIG)),
            "not-an-image"
        );
        assert_eq!(soci(&push("app", "att", media::IN_TOTO)), "not-an-image");
        assert_eq!(
            soci(&push("app", "sig", media::COSIGN_SIGNATURE)),
            "not-an-image"
        );
        assert_eq!(
            soci(&push("app", "n", "application/vnd.cncf.notary.signature")),
            "not-an-image"
        );
        assert_eq!(
            soci(&push(
                "app",
                "chart",
                "application/vnd.cncf.helm.config.v1+json"
            )),
            "not-an-image"
        );
        let sig_tag = format!("sha256-{}.sig", &DIGEST[7..]);
        assert_eq!(
            soci(&push("app", &sig_tag, media::OCI_CONFIG)),
            "referrer-tag"
        );
        assert_eq!(
            soci(&push("app", &sig_tag[..71], media::OCI_CONFIG)),
            "referrer-tag"
        );
        // Looks like it, but is not 64 hex digits: an ordinary tag.
        assert_eq!(soci(&push("app", "sha256-abc", media::OCI_CONFIG)), "work");
        let index = EcrImageAction {
            manifest_media_type: Some(media::OCI_INDEX.into()),
            artifact_media_type: None,
            ..image.clone()
        };
        assert_eq!(soci(&index), "work");
        let only_prod = RepositoryTagFilters::parse("prod-*:*").unwrap();
        let d = soci_push_decision(&image, &only_prod, "-soci");
        assert_eq!(code(&d), "filtered-out");
        assert!(d.skip_reason().unwrap().to_string().contains("app:1.2.3"));
        // An empty suffix (tag mode none/in-place) disables the suffix check only.
        assert_eq!(
            code(&soci_push_decision(
                &push("app", "1-soci", media::OCI_CONFIG),
                &all,
                ""
            )),
            "work"
        );
    }

    #[test]
    fn janitor_takes_cache_pushes_and_schedules() {
        let all = RepositoryTagFilters::default();
        let cache = push("app", "cache-main", media::BUILDKIT_CACHE_CONFIG);
        let trigger = Trigger::EcrImageAction(
            serde_json::from_value(serde_json::json!({"detail-type":"ECR Image Action","source":"aws.ecr","detail":cache})).unwrap(),
        );
        let d = janitor_decision(&trigger, &all, "-soci");
        assert!(matches!(&d, JanitorDecision::AfterPush(w) if w.is_work()));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["action"], "after-push");
        assert_eq!(v["decision"], "work");
        assert_eq!(v["tag"], "cache-main");
        let schedule = Trigger::from_value(serde_json::json!({"detail-type":"Scheduled Event",
            "source":"aws.events","time":"2026-11-22T03:00:00Z","detail":{}}))
        .unwrap();
        let d = janitor_decision(&schedule, &all, "-soci");
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"action":"sweep","scheduled-at":"2026-11-22T03:00:00Z"})
        );
        let one = Trigger::from_value(serde_json::json!({"detail-type":"Janitor Repository Sweep",
            "source":"dev.afterpush","detail":{"run-id":"20261207T030000Z-0123abcd",
            "repository":"app","repositories":2}}))
        .unwrap();
        assert_eq!(
            serde_json::to_value(janitor_decision(&one, &all, "-soci")).unwrap(),
            serde_json::json!({"action":"repository-sweep","run-id":"20261207T030000Z-0123abcd",
                "repository":"app"})
        );
    }

    #[test]
    fn stitcher_skips_non_images() {
        let all = RepositoryTagFilters::default();
        let arch = push("app", "1.2.3-arm64", media::DOCKER_CONFIG);
        assert_eq!(code(&stitch_push_decision(&arch, &all, "-soci")), "work");
        let cache = push("app", "cache-main", media::BUILDKIT_CACHE_CONFIG);
        assert_eq!(
            code(&stitch_push_decision(&cache, &all, "-soci")),
            "not-an-image"
        );
    }

    #[test]
    fn skip_serialises_with_code_and_message() {
        let d = PushDecision::Skip {
            reason: SkipReason::Untagged,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["decision"], "skip");
        assert_eq!(v["code"], "untagged");
        assert!(v["reason"].as_str().unwrap().contains("untagged push"));
    }

    proptest! {
        /// The loop guard: whatever the repository, tag, filters, a tag carrying the SOCI
        /// suffix or a SOCI artifact type is never work, for any function.
        #[test]
        fn soci_outputs_are_never_work(
            repository in "[a-z][a-z0-9/-]{0,20}",
            tag in "[A-Za-z0-9_.-]{1,30}",
            suffix in "-[a-z]{1,6}",
            v2 in any::<bool>(),
        ) {
            let all = RepositoryTagFilters::default();
            let tagged = push(&repository, &format!("{tag}{suffix}"), media::OCI_CONFIG);
            let artifact = push(&repository, &tag, if v2 { media::SOCI_INDEX_V2 } else { media::SOCI_INDEX_V1 });
            for d in [&tagged, &artifact] {
                prop_assert!(!soci_push_decision(d, &all, &suffix).is_work());
                prop_assert!(!stitch_push_decision(d, &all, &suffix).is_work());
                let t = Trigger::EcrImageAction(serde_json::from_value(serde_json::json!(
                    {"detail-type":"ECR Image Action","source":"aws.ecr","detail":d})).unwrap());
                let JanitorDecision::AfterPush(j) = janitor_decision(&t, &all, &suffix) else {
                    panic!("a push is never a sweep")
                };
                prop_assert!(!j.is_work());
            }
        }

        /// Work always names exactly the event's repository, tag and digest.
        #[test]
        fn work_echoes_the_event(repository in "[a-z][a-z0-9/-]{0,20}", tag in "[A-Za-z0-9_][A-Za-z0-9_.]{0,30}") {
            let d = soci_push_decision(&push(&repository, &tag, media::OCI_CONFIG), &RepositoryTagFilters::default(), "-soci");
            prop_assert_eq!(d, PushDecision::Work { repository, tag, digest: DIGEST.parse().unwrap() });
        }
    }
}
