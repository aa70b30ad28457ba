//! The event the janitor sends itself when its scheduled sweep fans out: one
//! `Janitor Repository Sweep` per repository, through its work queue, each handled by
//! one invocation that sweeps that repository alone (see
//! [`crate::lambda::janitor_fan_out`]).
//!
//! It is EventBridge-shaped, like every other trigger, so the functions take it as they
//! take the others (directly, or as the body of an SQS record). Its detail is strict:
//! an unknown field is refused, the run id and the repository must be what the janitor
//! writes (both end up in S3 keys), and the count of repositories is at least 1.

use super::EventError;
use serde::{Deserialize, Serialize};

/// `source` of the events afterpush makes up for itself.
pub const AFTERPUSH_SOURCE: &str = "dev.afterpush";
/// `detail-type` of a per-repository sweep.
pub const JANITOR_REPOSITORY_SWEEP: &str = "Janitor Repository Sweep";

/// The `detail` of a `Janitor Repository Sweep` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RepositorySweep {
    /// The fanned-out run this repository belongs to (`YYYYMMDDTHHMMSSZ-xxxxxxxx`).
    pub run_id: String,
    /// The repository to sweep.
    pub repository: String,
    /// How many repositories the run has: the gathering waits for that many results.
    pub repositories: usize,
}

/// The EventBridge envelope of a per-repository sweep.
pub type RepositorySweepEvent = aws_lambda_events::eventbridge::EventBridgeEvent<RepositorySweep>;

/// True for a janitor run id: 8 digits, `T`, 6 digits, `Z`, `-`, 8 lowercase hex digits
/// (what [`crate::cleanup::Report`] gives a run).
pub fn is_run_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 25
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// The checks serde cannot express: the run id and the repository become parts of S3
/// keys and of the sweep's one repository, so each must be exactly what the janitor
/// sends.
pub(super) fn validate(detail: &RepositorySweep) -> Result<(), EventError> {
    if !is_run_id(&detail.run_id) {
        return Err(EventError::InvalidField {
            field: "detail.run-id",
            value: detail.run_id.clone(),
            problem: "expected a janitor run id such as 20261207T030000Z-0123abcd".into(),
        });
    }
    if !crate::registry::reference::is_valid_repository(&detail.repository) {
        return Err(EventError::InvalidField {
            field: "detail.repository",
            value: detail.repository.clone(),
            problem: "expected a repository name (lowercase path components)".into(),
        });
    }
    if detail.repositories == 0 {
        return Err(EventError::InvalidField {
            field: "detail.repositories",
            value: "0".into(),
            problem: "a run has at least 1 repository".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Trigger;
    use serde_json::json;

    fn sweep(detail: serde_json::Value) -> serde_json::Value {
        json!({"version":"0","id":"7f0e3c1a-0000-0000-0000-000000000001",
            "source":"dev.afterpush","detail-type":"Janitor Repository Sweep",
            "account":"123456789012","region":"us-east-1","time":"2026-12-07T03:00:00Z",
            "resources":[],"detail":detail})
    }

    fn valid() -> serde_json::Value {
        json!({"run-id":"20261207T030000Z-0123abcd","repository":"team/app","repositories":3})
    }

    #[test]
    fn parses_and_round_trips() {
        let v = sweep(valid());
        let t = Trigger::from_value(v.clone()).unwrap();
        assert_eq!(t.kind(), "janitor-repository-sweep");
        let Trigger::JanitorRepositorySweep(e) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(e.detail.repository, "team/app");
        assert_eq!(e.detail.repositories, 3);
        assert_eq!(t.origin(), (Some("123456789012"), Some("us-east-1")));
        assert!(t.ecr_detail().is_none());
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values_naming_the_field() {
        let mut extra = valid();
        extra["delete-everything"] = true.into();
        let err = Trigger::from_value(sweep(extra)).unwrap_err().to_string();
        assert!(
            err.contains("delete-everything") && err.contains("Janitor Repository Sweep"),
            "{err}"
        );
        for (field, value, expected) in [
            ("run-id", json!("../../x"), "detail.run-id"),
            (
                "run-id",
                json!("20261207T030000Z-0123ABCD"),
                "detail.run-id",
            ),
            ("run-id", json!(""), "detail.run-id"),
            ("repository", json!("App"), "detail.repository"),
            ("repository", json!("a//b"), "detail.repository"),
            ("repository", json!("../etc"), "detail.repository"),
            ("repositories", json!(0), "detail.repositories"),
            ("repositories", json!(-1), "detail.repositories"),
            ("repositories", json!("3"), "detail.repositories"),
        ] {
            let mut detail = valid();
            detail[field] = value.clone();
            let err = Trigger::from_value(sweep(detail)).unwrap_err().to_string();
            assert!(err.contains(expected), "{field}={value}: {err}");
        }
        let mut missing = valid();
        missing.as_object_mut().unwrap().remove("repository");
        let err = Trigger::from_value(sweep(missing)).unwrap_err().to_string();
        assert!(err.contains("repository"), "{err}");
        // The origin is checked as for every event.
        let mut v = sweep(valid());
        v["account"] = "1234".into();
        assert!(Trigger::from_value(v).is_err());
    }

    #[test]
    fn run_ids_are_what_reports_carry() {
        assert!(is_run_id("20261207T030000Z-0123abcd"));
        for bad in [
            "20261207T030000Z-0123abc",
            "20261207T030000Z_0123abcd",
            "2026120xT030000Z-0123abcd",
            "20261207T030000Z-0123abcg",
        ] {
            assert!(!is_run_id(bad), "{bad}");
        }
    }
}
