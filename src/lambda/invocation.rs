//! What the Lambda runtime tells a handler about one invocation: its deadline, and the
//! account and region the function runs in (from its ARN), which an event must name.

use super::HandlerError;
use crate::deadline::Deadline;
use crate::events::Trigger;
use crate::metrics;
use std::time::{Duration, SystemTime};

/// What the Lambda runtime tells a handler about one invocation.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// When Lambda ends the invocation; `None` (the CLI, the demo): no deadline.
    pub deadline: Option<SystemTime>,
    /// The account and region the function runs in; `None` (the CLI, the demo): the
    /// events are not checked against one.
    pub home: Option<Home>,
}

/// An AWS account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// The 12-digit account id.
    pub account: String,
    /// The region name.
    pub region: String,
}

impl Home {
    /// From a Lambda function ARN, `arn:<partition>:lambda:<region>:<account>:function:<name>[:qualifier]`.
    pub fn from_function_arn(arn: &str) -> Option<Self> {
        let mut parts = arn.split(':');
        let (Some("arn"), Some(_partition), Some("lambda"), Some(region), Some(account)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        (crate::events::is_account_id(account) && crate::events::is_region_name(region)).then(
            || Home {
                account: account.to_string(),
                region: region.to_string(),
            },
        )
    }
}

impl Invocation {
    /// From the runtime's deadline, in milliseconds since the epoch (`Context::deadline`).
    pub fn with_deadline_ms(deadline_ms: u64) -> Self {
        Self {
            deadline: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms)),
            home: None,
        }
    }

    /// From the runtime's context: the deadline, and the home account and region from
    /// the invoked function's ARN.
    pub fn from_context(context: &lambda_runtime::Context) -> Self {
        Self {
            home: Home::from_function_arn(&context.invoked_function_arn),
            ..Self::with_deadline_ms(context.deadline)
        }
    }

    /// The time to stop starting work: the deadline minus `margin`.
    pub(super) fn stop(&self, margin: Duration) -> Option<Deadline> {
        self.deadline.map(|d| Deadline::new(d, margin))
    }

    /// Refuses (non-retryable, counted as rejected) an event that names another
    /// account or region than the function's own, or none: a function acts only on its
    /// own account's registry.
    pub(super) fn check_origin(&self, trigger: &Trigger) -> Result<(), HandlerError> {
        let Some(home) = &self.home else {
            return Ok(());
        };
        let (account, region) = trigger.origin();
        if account == Some(home.account.as_str()) && region == Some(home.region.as_str()) {
            return Ok(());
        }
        metrics::rejected();
        Err(HandlerError::non_retryable(format!(
            "the {} event is for account {} in {}, but this function runs in account {} in {}: \
             refused",
            trigger.kind(),
            account.unwrap_or("(none)"),
            region.unwrap_or("(none)"),
            home.account,
            home.region
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_the_function_arn() {
        assert_eq!(
            Home::from_function_arn("arn:aws:lambda:us-east-1:123456789012:function:f"),
            Some(Home {
                account: "123456789012".into(),
                region: "us-east-1".into()
            })
        );
        assert!(Home::from_function_arn(
            "arn:aws-cn:lambda:cn-north-1:123456789012:function:f:live"
        )
        .is_some());
        assert_eq!(Home::from_function_arn(""), None);
        assert_eq!(Home::from_function_arn("arn:aws:s3:::bucket"), None);
    }
}
