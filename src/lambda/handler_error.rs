//! The error a function handler returns, and how Lambda sees it.
//!
//! EventBridge invokes Lambda asynchronously: once Lambda has queued the event, a
//! *function* error is retried by Lambda's async-invoke settings (`EventInvokeConfig`:
//! `MaximumRetryAttempts`, then the on-failure destination), not by the rule target's
//! `RetryPolicy` (which only covers delivery). Lambda does not look at the error type
//! itself, so the retry decision is made visible instead: `errorType` is `Retryable` or
//! `NonRetryable` in the runtime's error response, in the logs and in the on-failure
//! destination record, where an operator (or a redrive script) can tell a throttled
//! registry from an event that will never succeed.

use crate::format::cause_chain;
use lambda_runtime::Diagnostic;
use std::error::Error as StdError;

/// `errorType` of an error worth retrying (throttling, timeouts, 5xx).
pub const RETRYABLE: &str = "Retryable";
/// `errorType` of an error that a retry cannot fix (bad event, bad settings, policy).
pub const NON_RETRYABLE: &str = "NonRetryable";

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A handler failure with a retryable flag.
#[derive(Debug, thiserror::Error)]
// The message already holds the whole cause chain, so the inner error is deliberately
// not `Error::source()` (a field named `source` would be, to thiserror): chain printers
// such as anyhow's `{:#}` would print it twice. `inner()` reaches it.
#[error("{}", cause_chain(.inner.as_ref()))]
pub struct HandlerError {
    retryable: bool,
    inner: BoxError,
}

impl HandlerError {
    /// A transient failure: the same event may succeed later.
    pub fn retryable(error: impl Into<BoxError>) -> Self {
        Self {
            retryable: true,
            inner: error.into(),
        }
    }

    /// A permanent failure: retrying the same event fails the same way.
    pub fn non_retryable(error: impl Into<BoxError>) -> Self {
        Self {
            retryable: false,
            inner: error.into(),
        }
    }

    /// True when the same event may succeed on a later attempt.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// `Retryable` or `NonRetryable`.
    pub fn error_type(&self) -> &'static str {
        if self.retryable {
            RETRYABLE
        } else {
            NON_RETRYABLE
        }
    }

    /// The underlying error.
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.inner.as_ref()
    }
}

/// A malformed or unsupported event never becomes valid by retrying.
impl From<crate::events::EventError> for HandlerError {
    fn from(error: crate::events::EventError) -> Self {
        Self::non_retryable(error)
    }
}

/// Bad settings need a redeploy, not a retry.
impl From<crate::settings::SettingsError> for HandlerError {
    fn from(error: crate::settings::SettingsError) -> Self {
        Self::non_retryable(error)
    }
}

impl From<crate::filters::FilterError> for HandlerError {
    fn from(error: crate::filters::FilterError) -> Self {
        Self::non_retryable(error)
    }
}

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Diagnostic {
        Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("pushing the SOCI index for app:1.2.3")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn diagnostic_says_whether_to_retry_and_keeps_the_cause_chain() {
        let err = HandlerError::retryable(Outer(std::io::Error::other("registry returned 503")));
        assert!(err.is_retryable());
        let d: Diagnostic = err.into();
        assert_eq!(d.error_type, "Retryable");
        assert_eq!(
            d.error_message,
            "pushing the SOCI index for app:1.2.3: registry returned 503"
        );

        let bad = crate::events::Trigger::from_slice(
            br#"{"source":"aws.s3","detail-type":"Object Created"}"#,
        )
        .unwrap_err();
        let d: Diagnostic = HandlerError::from(bad).into();
        assert_eq!(d.error_type, "NonRetryable");
        assert!(d.error_message.contains("aws.s3"), "{}", d.error_message);
    }
}
