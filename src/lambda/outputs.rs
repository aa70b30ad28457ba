//! What the handlers return: typed values, serialised only at the boundary (the Lambda
//! runtime, `afterpush invoke`), and read back as the same types by the demo and tests.

use crate::cleanup::Report;
use crate::events::PushDecision;
use crate::oci::Sha256Digest;
use crate::soci::SociOutcome;
use crate::stitch::StitchOutcome;
use serde::{Deserialize, Serialize};

/// The three Lambda functions: [`crate::settings::Function`], the one place that names
/// them (`binary()`); serialised as that name.
pub use crate::settings::Function as FunctionName;

impl Serialize for FunctionName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.binary())
    }
}

impl<'de> Deserialize<'de> for FunctionName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        FunctionName::ALL
            .into_iter()
            .find(|f| f.binary() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown function {name:?}")))
    }
}

/// A push decision as the handlers report it: `{"decision":"work","repository",..}` or
/// `{"decision":"skip","code",..,"reason",..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum DecisionRecord {
    /// The push is work.
    Work {
        /// The repository pushed to.
        repository: String,
        /// The pushed tag.
        tag: String,
        /// The pushed manifest's digest.
        digest: Sha256Digest,
    },
    /// The push is skipped.
    Skip {
        /// The skip reason's stable code (`own-output`, `filtered-out`, ...).
        code: String,
        /// The reason, for people.
        reason: String,
    },
}

impl From<&PushDecision> for DecisionRecord {
    fn from(decision: &PushDecision) -> Self {
        match decision {
            PushDecision::Work {
                repository,
                tag,
                digest,
            } => DecisionRecord::Work {
                repository: repository.clone(),
                tag: tag.clone(),
                digest: digest.clone(),
            },
            PushDecision::Skip { reason } => DecisionRecord::Skip {
                code: reason.code().to_string(),
                reason: reason.to_string(),
            },
        }
    }
}

impl DecisionRecord {
    /// `(code, reason)` of a skip.
    pub fn skip(&self) -> Option<(&str, &str)> {
        match self {
            DecisionRecord::Skip { code, reason } => Some((code, reason)),
            DecisionRecord::Work { .. } => None,
        }
    }
}

/// What a push-driven function returns: the decision, and the outcome when it worked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushOutput<O> {
    /// The function that handled the event.
    pub function: FunctionName,
    /// What the event was to it.
    pub decision: DecisionRecord,
    /// What it did (absent for a skip).
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub outcome: Option<O>,
}

/// The `soci-indexer`'s output.
pub type IndexerOutput = PushOutput<SociOutcome>;
/// The `manifest-stitcher`'s output.
pub type StitcherOutput = PushOutput<StitchOutcome>;

/// The `cache-janitor`'s output: a skipped push (`decision`), or a run (`trigger` and
/// `report`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JanitorOutput {
    /// Always `cache-janitor`.
    pub function: FunctionName,
    /// Why a push was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRecord>,
    /// `ecr-image-action` or `scheduled`, for a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The run's report (a fanned-out sweep: the S3 caches' part, or the repository's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// A sweep that fans out: the run, and what this invocation wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<Box<FanOutOutput>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_round_trip() {
        for f in FunctionName::ALL {
            let v = serde_json::to_value(f).unwrap();
            assert_eq!(v, f.binary());
            assert_eq!(serde_json::from_value::<FunctionName>(v).unwrap(), f);
        }
        assert!(serde_json::from_value::<FunctionName>("indexer".into()).is_err());
    }

    #[test]
    fn decisions_serialise_as_push_decision_does() {
        let skip = PushDecision::Skip {
            reason: crate::events::SkipReason::Untagged,
        };
        assert_eq!(
            serde_json::to_value(DecisionRecord::from(&skip)).unwrap(),
            serde_json::to_value(&skip).unwrap()
        );
        let work = PushDecision::Work {
            repository: "app".into(),
            tag: "1.0".into(),
            digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
                .parse()
                .unwrap(),
        };
        let record = serde_json::to_value(DecisionRecord::from(&work)).unwrap();
        assert_eq!(record, serde_json::to_value(&work).unwrap());
        assert_eq!(
            serde_json::from_value::<DecisionRecord>(record).unwrap(),
            DecisionRecord::from(&work)
        );
    }
}

/// What a fan-out invocation, or a per-repository one, adds to the janitor's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FanOutOutput {
    /// The fanned-out run.
    pub run_id: String,
    /// The run's repositories.
    pub repositories: usize,
    /// The repository this invocation swept (a per-repository run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Messages the queue accepted (the fan-out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_sent: Option<usize>,
    /// The object this invocation wrote: the manifest, or the repository's part.
    pub written: String,
    /// The gathered report, when this invocation wrote it (every part was there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gathered: Option<String>,
}
