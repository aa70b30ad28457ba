//! EventBridge events that trigger afterpush: ECR `ECR Image Action` pushes, the
//! janitor's schedule, and the per-repository sweeps its schedule fans out to
//! ([`janitor_sweep`]). The envelope is `aws_lambda_events`' `EventBridgeEvent<T>`; the ECR
//! detail (which that crate does not define) is typed here.
//!
//! - [`Trigger`] — any payload a function receives, parsed or rejected with an error that
//!   names the source and detail-type.
//! - [`decision`] — whether a push is work for the SOCI indexer, the stitcher, the janitor
//!   (the loop guard lives there: our own pushes are recognised and skipped).
//!
//! What the functions do with these events is in [`crate::lambda`].

pub mod decision;
pub mod janitor_sweep;

pub use decision::{
    janitor_decision, soci_push_decision, stitch_push_decision, JanitorDecision, PushDecision,
    SkipReason,
};
pub use janitor_sweep::{
    RepositorySweep, RepositorySweepEvent, AFTERPUSH_SOURCE, JANITOR_REPOSITORY_SWEEP,
};

use crate::oci::Sha256Digest;
use crate::registry::ecr::{is_account_id, is_region_name};
use serde::{Deserialize, Serialize};

/// `source` of ECR events.
pub const ECR_SOURCE: &str = "aws.ecr";
/// `detail-type` of ECR image push/delete events.
pub const ECR_IMAGE_ACTION: &str = "ECR Image Action";
/// `source` of EventBridge scheduled-rule events.
pub const SCHEDULE_SOURCE: &str = "aws.events";
/// `detail-type` of EventBridge scheduled-rule events.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// `action-type` of a push.
pub const ACTION_PUSH: &str = "PUSH";
/// `result` of a successful action.
pub const RESULT_SUCCESS: &str = "SUCCESS";

/// The `detail` of an `ECR Image Action` event (kebab-case fields, as ECR sends them).
/// The `detail` of an ECR "ECR Image Action" event (kebab-case fields, as ECR sends them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EcrImageAction {
    /// `SUCCESS` or `FAILURE`.
    pub result: String,
    /// The repository, without the registry host.
    pub repository_name: String,
    /// The pushed manifest's digest (`sha256:...`), as ECR reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// `PUSH`, `DELETE`, `UPDATE_STORAGE_CLASS`, ...
    pub action_type: String,
    /// Empty (or absent) for untagged pushes such as the children of an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    /// The pushed manifest's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_media_type: Option<String>,
    /// The config media type (artifact type) of the pushed manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_media_type: Option<String>,
}

impl EcrImageAction {
    /// The tag, or `None` for an untagged push (ECR sends `""`).
    pub fn tag(&self) -> Option<&str> {
        self.image_tag.as_deref().filter(|t| !t.is_empty())
    }

    /// True for a `PUSH` action.
    pub fn is_push(&self) -> bool {
        self.action_type == ACTION_PUSH
    }

    /// True when the action succeeded (`SUCCESS`).
    pub fn is_success(&self) -> bool {
        self.result == RESULT_SUCCESS
    }

    /// The pushed digest, parsed.
    pub fn digest(&self) -> Result<Sha256Digest, EventError> {
        let raw = self
            .image_digest
            .as_deref()
            .filter(|d| !d.is_empty())
            .ok_or(EventError::MissingField {
                field: "detail.image-digest",
            })?;
        raw.parse().map_err(|_| EventError::InvalidField {
            field: "detail.image-digest",
            value: raw.to_string(),
            problem: "expected sha256:<64 lowercase hex>".into(),
        })
    }

    /// A short `repository:tag@digest` label for logs.
    pub fn label(&self) -> String {
        let mut s = self.repository_name.clone();
        if let Some(tag) = self.tag() {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(d) = self.image_digest.as_deref().filter(|d| !d.is_empty()) {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// The EventBridge envelope of an ECR image action.
pub type EcrImageActionEvent = aws_lambda_events::eventbridge::EventBridgeEvent<EcrImageAction>;

/// An EventBridge scheduled-rule event (its `detail` is `{}`).
pub type ScheduledEvent = aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value>;

/// Why a payload is not a trigger afterpush understands.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The payload does not parse as JSON.
    #[error("the event is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The payload is not an EventBridge envelope.
    #[error(
        "the payload is not an EventBridge event: field {field:?} is missing or not a string \
         (afterpush functions take ECR \"ECR Image Action\", \"Scheduled Event\" and \
         \"Janitor Repository Sweep\" events)"
    )]
    NotEventBridge {
        /// The envelope field that is missing or not a string.
        field: &'static str,
    },
    /// An EventBridge event of a source or detail-type afterpush does not handle.
    #[error(
        "unsupported event: source {event_source:?}, detail-type {detail_type:?} (afterpush handles \
         source \"aws.ecr\" with detail-type \"ECR Image Action\", source \"aws.events\" \
         with detail-type \"Scheduled Event\", and source \"dev.afterpush\" with detail-type \
         \"Janitor Repository Sweep\")"
    )]
    Unsupported {
        /// The event's `source`.
        event_source: String,
        /// The event's `detail-type`.
        detail_type: String,
    },
    /// `path` names the offending field (`detail.repository-name`), `.` for the whole event.
    #[error("malformed {detail_type:?} event: field {path}: {error}")]
    Malformed {
        /// The event's `detail-type`.
        detail_type: String,
        /// The offending field's path.
        path: String,
        /// What serde found wrong there.
        #[source]
        error: serde_json::Error,
    },
    /// A field the function needs is absent or empty.
    #[error("malformed event: {field} is missing")]
    MissingField {
        /// The field's path (`detail.image-digest`).
        field: &'static str,
    },
    /// A field has a value the function cannot use.
    #[error("malformed event: {field} = {value:?}: {problem}")]
    InvalidField {
        /// The field's path.
        field: &'static str,
        /// The value as sent.
        value: String,
        /// Why it was refused.
        problem: String,
    },
}

/// Everything that can invoke an afterpush function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// An ECR push (or other image action), from EventBridge.
    EcrImageAction(EcrImageActionEvent),
    /// An EventBridge schedule (the janitor's sweep).
    Scheduled(ScheduledEvent),
    /// One repository of a janitor sweep that fanned out (from the janitor's queue).
    JanitorRepositorySweep(RepositorySweepEvent),
}

impl Trigger {
    /// Parses a Lambda payload.
    pub fn from_slice(payload: &[u8]) -> Result<Self, EventError> {
        let value: serde_json::Value =
            crate::strict_json::from_slice(payload).map_err(EventError::NotJson)?;
        Self::from_value(value)
    }

    /// Parses a Lambda payload already read as JSON: dispatches on `source` and
    /// `detail-type`, then checks the fields each kind needs.
    pub fn from_value(value: serde_json::Value) -> Result<Self, EventError> {
        let text = |field: &'static str| {
            value
                .get(field)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or(EventError::NotEventBridge { field })
        };
        let source = text("source")?;
        let detail_type = text("detail-type")?;
        // Deserialised through serde_path_to_error so the message names the bad field:
        // serde_json's own type errors do not.
        let malformed = |e: serde_path_to_error::Error<serde_json::Error>| EventError::Malformed {
            detail_type: detail_type.clone(),
            path: e.path().to_string(),
            error: e.into_inner(),
        };
        match (source.as_str(), detail_type.as_str()) {
            (ECR_SOURCE, ECR_IMAGE_ACTION) => {
                let event: EcrImageActionEvent =
                    serde_path_to_error::deserialize(value).map_err(malformed)?;
                validate_origin(event.account.as_deref(), event.region.as_deref())?;
                validate_ecr_detail(&event.detail)?;
                Ok(Trigger::EcrImageAction(event))
            }
            (SCHEDULE_SOURCE, SCHEDULED_EVENT) => {
                let event: ScheduledEvent =
                    serde_path_to_error::deserialize(value).map_err(malformed)?;
                validate_origin(event.account.as_deref(), event.region.as_deref())?;
                Ok(Trigger::Scheduled(event))
            }
            (AFTERPUSH_SOURCE, JANITOR_REPOSITORY_SWEEP) => {
                let event: RepositorySweepEvent =
                    serde_path_to_error::deserialize(value).map_err(malformed)?;
                validate_origin(event.account.as_deref(), event.region.as_deref())?;
                janitor_sweep::validate(&event.detail)?;
                Ok(Trigger::JanitorRepositorySweep(event))
            }
            _ => Err(EventError::Unsupported {
                event_source: source,
                detail_type,
            }),
        }
    }

    /// `ecr-image-action`, `scheduled` or `janitor-repository-sweep`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::EcrImageAction(_) => "ecr-image-action",
            Trigger::Scheduled(_) => "scheduled",
            Trigger::JanitorRepositorySweep(_) => "janitor-repository-sweep",
        }
    }

    /// The event's `account` and `region` (checked by [`Trigger::from_value`]).
    pub fn origin(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Trigger::EcrImageAction(e) => (e.account.as_deref(), e.region.as_deref()),
            Trigger::Scheduled(e) => (e.account.as_deref(), e.region.as_deref()),
            Trigger::JanitorRepositorySweep(e) => (e.account.as_deref(), e.region.as_deref()),
        }
    }

    /// The ECR detail, when this is an ECR event.
    pub fn ecr_detail(&self) -> Option<&EcrImageAction> {
        match self {
            Trigger::EcrImageAction(e) => Some(&e.detail),
            Trigger::Scheduled(_) | Trigger::JanitorRepositorySweep(_) => None,
        }
    }
}

/// `account` and `region` end up in the registry host
/// (`<account>.dkr.ecr.<region>.amazonaws.com`), so they must be what AWS sends: an
/// account id of 12 digits and a region name. Absent ones are left to the function that
/// needs them.
fn validate_origin(account: Option<&str>, region: Option<&str>) -> Result<(), EventError> {
    if let Some(account) = account.filter(|a| !is_account_id(a)) {
        return Err(EventError::InvalidField {
            field: "account",
            value: account.to_string(),
            problem: "expected an AWS account id of 12 digits".into(),
        });
    }
    if let Some(region) = region.filter(|r| !is_region_name(r)) {
        return Err(EventError::InvalidField {
            field: "region",
            value: region.to_string(),
            problem: "expected an AWS region name such as us-east-1".into(),
        });
    }
    Ok(())
}

/// The checks serde cannot express: a successful push must name a valid digest (every
/// job needs it, and a garbage digest must not reach a registry URL).
fn validate_ecr_detail(detail: &EcrImageAction) -> Result<(), EventError> {
    if detail.repository_name.trim().is_empty() {
        return Err(EventError::MissingField {
            field: "detail.repository-name",
        });
    }
    let has_digest = detail
        .image_digest
        .as_deref()
        .is_some_and(|d| !d.is_empty());
    if (detail.is_push() && detail.is_success()) || has_digest {
        detail.digest()?;
    }
    Ok(())
}

impl Serialize for Trigger {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Trigger::EcrImageAction(e) => e.serialize(s),
            Trigger::Scheduled(e) => e.serialize(s),
            Trigger::JanitorRepositorySweep(e) => e.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Trigger {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Trigger::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// A UUID-shaped id derived from `seed` alone, for the events afterpush makes up itself
/// (the demo's replay, reconcile's work): the same seed always gives the same id.
pub fn synthetic_event_id(seed: &str) -> String {
    let h = crate::oci::Sha256Digest::of(seed.as_bytes()).hex();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ecr(detail: serde_json::Value) -> serde_json::Value {
        json!({"version":"0","id":"e1","detail-type":"ECR Image Action","source":"aws.ecr",
               "account":"123456789012","time":"2026-11-22T10:00:00Z","region":"us-east-1",
               "resources":[],"detail":detail})
    }

    const DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn parses_an_ecr_push_and_round_trips() {
        let v = ecr(
            json!({"result":"SUCCESS","repository-name":"app","image-digest":DIGEST,
            "action-type":"PUSH","image-tag":"1.2.3",
            "manifest-media-type":"application/vnd.oci.image.manifest.v1+json",
            "artifact-media-type":"application/vnd.oci.image.config.v1+json"}),
        );
        let t = Trigger::from_value(v.clone()).unwrap();
        let detail = t.ecr_detail().unwrap();
        assert_eq!(detail.tag(), Some("1.2.3"));
        assert_eq!(detail.digest().unwrap().to_string(), DIGEST);
        assert_eq!(detail.label(), format!("app:1.2.3@{DIGEST}"));
        let again: Trigger = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(t, again);
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
    }

    #[test]
    fn rejects_other_events_naming_source_and_detail_type() {
        let v = json!({"source":"aws.ecr","detail-type":"ECR Image Scan","detail":{}});
        let err = Trigger::from_value(v).unwrap_err().to_string();
        assert!(
            err.contains("\"aws.ecr\"") && err.contains("\"ECR Image Scan\""),
            "{err}"
        );

        let err = Trigger::from_value(json!({"Records":[]}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"source\"") && err.contains("not an EventBridge event"),
            "{err}"
        );
        let err = Trigger::from_value(json!({"source":"aws.events"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"detail-type\""), "{err}");
        let err = Trigger::from_slice(b"{not json").unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn rejects_malformed_ecr_details_naming_the_field() {
        let err = Trigger::from_value(ecr(json!({"result":"SUCCESS","action-type":"PUSH"})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("repository-name"), "{err}");
        let err = Trigger::from_value(ecr(
            json!({"result":"SUCCESS","repository-name":"app","action-type":"PUSH","image-tag":"x"}),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("detail.image-digest is missing"), "{err}");
        let err = Trigger::from_value(ecr(json!({"result":"SUCCESS","repository-name":"app",
            "action-type":"PUSH","image-digest":"sha256:../../etc"})))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("detail.image-digest") && err.contains("../../etc"),
            "{err}"
        );
        // A failed push may carry no digest: that is a valid (skippable) event.
        let t = Trigger::from_value(ecr(
            json!({"result":"FAILURE","repository-name":"app","action-type":"PUSH","image-tag":"x"}),
        ))
        .unwrap();
        assert!(!t.ecr_detail().unwrap().is_success());
    }

    #[test]
    fn account_and_region_must_be_an_account_id_and_a_region_name() {
        let push = json!({"result":"SUCCESS","repository-name":"app","action-type":"PUSH",
            "image-digest":DIGEST,"image-tag":"1.2"});
        let with = |field: &str, value: &str| {
            let mut v = ecr(push.clone());
            v[field] = value.into();
            Trigger::from_value(v)
        };
        // The host `<account>.dkr.ecr.<region>.amazonaws.com` must not be steerable.
        for account in [
            "127.0.0.1:15003/blob/x",
            "12345678901",
            "1234567890123",
            "12345678901a",
            "",
        ] {
            let err = with("account", account).unwrap_err().to_string();
            assert!(
                err.contains("account") && err.contains("12 digits"),
                "{account:?}: {err}"
            );
        }
        for region in [
            "us-east-1",
            "cn-north-1",
            "us-gov-west-1",
            "eu-isoe-west-1",
            "ap-southeast-2",
        ] {
            assert!(with("region", region).is_ok(), "{region}");
        }
        for region in [
            "127.0.0.1:15003/x",
            "us-east-1.evil.example",
            "US-EAST-1",
            "us-east",
            "useast1",
            "us--1",
            "",
        ] {
            let err = with("region", region).unwrap_err().to_string();
            assert!(err.contains("region"), "{region:?}: {err}");
        }
        let mut schedule = json!({"detail-type":"Scheduled Event","source":"aws.events",
            "account":"127.0.0.1:1/x","region":"us-east-1","detail":{}});
        assert!(Trigger::from_value(schedule.clone()).is_err());
        schedule["account"] = "123456789012".into();
        assert!(Trigger::from_value(schedule).is_ok());
    }

    #[test]
    fn untagged_means_empty_or_absent_tag() {
        for tag in [json!(""), json!(null)] {
            let t = Trigger::from_value(ecr(json!({"result":"SUCCESS","repository-name":"app",
                "action-type":"PUSH","image-digest":DIGEST,"image-tag":tag})))
            .unwrap();
            assert_eq!(t.ecr_detail().unwrap().tag(), None);
        }
    }

    #[test]
    fn parses_the_schedule_event() {
        let v = json!({"version":"0","id":"s1","detail-type":"Scheduled Event","source":"aws.events",
            "account":"123456789012","time":"2026-11-22T03:00:00Z","region":"us-east-1",
            "resources":["arn:aws:events:us-east-1:123456789012:rule/afterpush-sweep"],"detail":{}});
        let t = Trigger::from_value(v).unwrap();
        assert_eq!(t.kind(), "scheduled");
        assert!(t.ecr_detail().is_none());
    }
}
