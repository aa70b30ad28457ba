//! EventBridge events that trigger afterpush: ECR `ECR Image Action` pushes and the
//! janitor's schedule. The envelope is `aws_lambda_events`' `EventBridgeEvent<T>`; the ECR
//! detail (which that crate does not define) is typed here.

use serde::{Deserialize, Serialize};

/// `detail-type` of ECR image push/delete events.
pub const ECR_IMAGE_ACTION: &str = "ECR Image Action";

/// The `detail` of an `ECR Image Action` event (kebab-case fields, as ECR sends them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EcrImageAction {
    /// `SUCCESS` or `FAILURE`.
    pub result: String,
    pub repository_name: String,
    #[serde(default)]
    pub image_digest: Option<String>,
    /// `PUSH`, `DELETE`, `UPDATE_STORAGE_CLASS`, ...
    pub action_type: String,
    /// Empty (or absent) for untagged pushes such as the children of an index.
    #[serde(default)]
    pub image_tag: Option<String>,
    #[serde(default)]
    pub manifest_media_type: Option<String>,
    /// The config media type (artifact type) of the pushed manifest.
    #[serde(default)]
    pub artifact_media_type: Option<String>,
}

/// The EventBridge envelope of an ECR image action.
pub type EcrImageActionEvent = aws_lambda_events::eventbridge::EventBridgeEvent<EcrImageAction>;
