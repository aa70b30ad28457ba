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
        (crate::registry::ecr::is_account_id(account)
            && crate::registry::ecr::is_region_name(region))
        .then(|| Home {
            account: account.to_string(),
            region: region.to_string(),
        })
    }
}

/// `AWS_SAM_LOCAL`: `true` in the containers of `sam local invoke` and `sam local
/// start-lambda`.
pub const ENV_SAM_LOCAL: &str = "AWS_SAM_LOCAL";

/// `AFTERPUSH_LOCAL_ACCOUNT_ID`: under `sam local` only, the account the function takes
/// as its own in place of the emulator's placeholder.
pub const ENV_LOCAL_ACCOUNT_ID: &str = "AFTERPUSH_LOCAL_ACCOUNT_ID";

/// The account of every function ARN the Lambda Runtime Interface Emulator (`sam
/// local`) makes up.
pub const SAM_LOCAL_PLACEHOLDER_ACCOUNT: &str = "012345678912";

impl Home {
    /// The function's own account and region, from its ARN. Under `sam local`
    /// (`AWS_SAM_LOCAL=true`) the ARN names the emulator's placeholder account, which no
    /// event names; there `ENV_LOCAL_ACCOUNT_ID`, when set, is the account instead.
    /// Nowhere else is that variable read: in Lambda the ARN's account always decides.
    /// A bad value is an error naming the variable.
    pub fn of_function(
        arn: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let Some(home) = Self::from_function_arn(arn) else {
            return Ok(None);
        };
        let sam_local = get(ENV_SAM_LOCAL).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if !sam_local || home.account != SAM_LOCAL_PLACEHOLDER_ACCOUNT {
            return Ok(Some(home));
        }
        match get(ENV_LOCAL_ACCOUNT_ID).as_deref().map(str::trim) {
            None | Some("") => Ok(Some(home)),
            Some(account) if crate::registry::ecr::is_account_id(account) => Ok(Some(Home {
                account: account.to_string(),
                ..home
            })),
            Some(other) => Err(format!(
                "setting {ENV_LOCAL_ACCOUNT_ID}: {other:?} is not a 12-digit account id"
            )),
        }
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
    /// the invoked function's ARN (see [`Home::of_function`] for `sam local`).
    pub fn from_context(context: &lambda_runtime::Context) -> Result<Self, HandlerError> {
        Ok(Self {
            home: Home::of_function(&context.invoked_function_arn, |k| std::env::var(k).ok())
                .map_err(HandlerError::non_retryable)?,
            ..Self::with_deadline_ms(context.deadline)
        })
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

    fn home_of(arn: &str, vars: &[(&str, &str)]) -> Result<Option<Home>, String> {
        Home::of_function(arn, |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn under_sam_local_the_local_account_replaces_the_emulators_placeholder() {
        let emulator = "arn:aws:lambda:us-east-1:012345678912:function:soci-indexer";
        let moto = Some(Home {
            account: "123456789012".into(),
            region: "us-east-1".into(),
        });
        let placeholder = Some(Home {
            account: "012345678912".into(),
            region: "us-east-1".into(),
        });
        let local = [
            (ENV_SAM_LOCAL, "true"),
            (ENV_LOCAL_ACCOUNT_ID, "123456789012"),
        ];
        assert_eq!(home_of(emulator, &local), Ok(moto.clone()));
        // Without the variable, or outside sam local, the ARN decides.
        assert_eq!(
            home_of(emulator, &[(ENV_SAM_LOCAL, "true")]),
            Ok(placeholder.clone())
        );
        assert_eq!(
            home_of(emulator, &[(ENV_LOCAL_ACCOUNT_ID, "123456789012")]),
            Ok(placeholder)
        );
        // In Lambda (a real account in the ARN) the variable changes nothing, even with
        // AWS_SAM_LOCAL set by mistake.
        let real = "arn:aws:lambda:eu-west-1:444455556666:function:soci-indexer";
        assert_eq!(
            home_of(real, &local),
            Ok(Some(Home {
                account: "444455556666".into(),
                region: "eu-west-1".into()
            }))
        );
        let err = home_of(
            emulator,
            &[(ENV_SAM_LOCAL, "true"), (ENV_LOCAL_ACCOUNT_ID, "moto")],
        )
        .unwrap_err();
        assert!(
            err.contains(ENV_LOCAL_ACCOUNT_ID) && err.contains("moto"),
            "{err}"
        );
    }
}
