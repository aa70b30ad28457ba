//! What kind of failure an AWS SDK call ended in, and whether a later run may succeed.
//!
//! The kind comes from what the SDK types say, never from the wording of a message: the
//! error variant ([`SdkError`]: timeout, dispatch failure, service error), the modeled
//! retry kind of the operation error ([`ProvideErrorKind`]), its error code
//! ([`ProvideErrorMetadata::code`], compared with the SDK's own lists of throttling and
//! transient codes) and the HTTP status. Throttling, 5xx and timeouts are retryable;
//! access denied, not found and validation errors are not.
//!
//! The SDK has already retried the retryable kinds (its standard retry mode, with the
//! attempts each client is built with) before an error gets here; nothing in afterpush
//! retries an SDK call again. A retryable kind tells the caller that a later run may
//! succeed, so the function reports the failure as `Retryable`.

use aws_config::retry::{ErrorKind, ProvideErrorKind};
use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use serde::{Deserialize, Serialize};

/// What an AWS API call failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiErrorKind {
    /// The service asked the caller to slow down (429, `ThrottlingException`, ...).
    Throttled,
    /// A server error (5xx), a timeout or a failed connection.
    Transient,
    /// The caller may not do this (403, `AccessDeniedException`, ...).
    AccessDenied,
    /// What the call names does not exist (404, `RepositoryNotFoundException`, ...).
    NotFound,
    /// The request was refused as invalid (400, `ValidationException`, ...).
    Invalid,
    /// Any other failure: a client error the kinds above do not name, or a request the
    /// SDK could not build.
    Other,
}

impl ApiErrorKind {
    /// True for throttling, 5xx and timeouts: a later run may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ApiErrorKind::Throttled | ApiErrorKind::Transient)
    }

    /// The kind of a modeled error from its code and HTTP status (`None` when unknown):
    /// the SDK's throttling and transient codes first, then the status, then the codes
    /// AWS services use for access, existence and validation errors.
    pub fn from_code_and_status(code: Option<&str>, status: Option<u16>) -> Self {
        if let Some(code) = code {
            if THROTTLING_ERRORS.contains(&code) {
                return ApiErrorKind::Throttled;
            }
            if TRANSIENT_ERRORS.contains(&code) {
                return ApiErrorKind::Transient;
            }
        }
        match status {
            Some(429) => return ApiErrorKind::Throttled,
            Some(s) if (500..600).contains(&s) => return ApiErrorKind::Transient,
            _ => {}
        }
        match code {
            Some(
                "AccessDenied"
                | "AccessDeniedException"
                | "UnauthorizedOperation"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "InvalidClientTokenId"
                | "ExpiredTokenException"
                | "ExpiredToken",
            ) => return ApiErrorKind::AccessDenied,
            Some(c)
                if c.ends_with("NotFoundException")
                    || c.ends_with("NotFound")
                    || c.starts_with("NoSuch") =>
            {
                return ApiErrorKind::NotFound
            }
            Some(
                "ValidationException"
                | "InvalidParameterException"
                | "InvalidParameterValueException"
                | "InvalidRequest"
                | "InvalidArgument"
                | "SerializationException"
                | "ClientException",
            ) => return ApiErrorKind::Invalid,
            _ => {}
        }
        match status {
            Some(403) => ApiErrorKind::AccessDenied,
            Some(404) => ApiErrorKind::NotFound,
            Some(400) => ApiErrorKind::Invalid,
            _ => ApiErrorKind::Other,
        }
    }

    /// The kind of an SDK call's failure (any AWS SDK crate: they share [`SdkError`]).
    pub fn of_sdk_error<E>(err: &SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + ProvideErrorKind,
    {
        match err {
            SdkError::TimeoutError(_) => ApiErrorKind::Transient,
            // A user error is a request the HTTP client refused to send: it fails again.
            SdkError::DispatchFailure(f) if f.is_user() => ApiErrorKind::Other,
            SdkError::DispatchFailure(_) => ApiErrorKind::Transient,
            // A response that could not be read (cut short, not what the service sends).
            SdkError::ResponseError(r) => {
                let status = r.raw().status().as_u16();
                if (400..500).contains(&status) {
                    Self::from_code_and_status(None, Some(status))
                } else {
                    ApiErrorKind::Transient
                }
            }
            SdkError::ServiceError(ctx) => {
                match ctx.err().retryable_error_kind() {
                    Some(ErrorKind::ThrottlingError) => return ApiErrorKind::Throttled,
                    Some(ErrorKind::TransientError | ErrorKind::ServerError) => {
                        return ApiErrorKind::Transient
                    }
                    _ => {}
                }
                let code = ProvideErrorMetadata::code(ctx.err());
                Self::from_code_and_status(code, Some(ctx.raw().status().as_u16()))
            }
            // ConstructionFailure (the SDK could not build the request) and future kinds.
            _ => ApiErrorKind::Other,
        }
    }
}

/// An AWS SDK call's failure as afterpush reports it: its kind and the SDK's error with
/// its context (the service's code and message, or the timeout or connection failure).
/// The one conversion of every SDK crate's errors (they share [`SdkError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkFailure {
    /// What the call failed with.
    pub kind: ApiErrorKind,
    /// The error as the SDK describes it, with its sources.
    pub message: String,
}

impl SdkFailure {
    /// The kind and description of `err`.
    pub fn of<E>(err: &SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + ProvideErrorKind + std::error::Error + Send + Sync + 'static,
    {
        SdkFailure {
            kind: ApiErrorKind::of_sdk_error(err),
            message: aws_sdk_ecr::error::DisplayErrorContext(err).to_string(),
        }
    }
}

impl std::fmt::Display for ApiErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApiErrorKind::Throttled => "throttled",
            ApiErrorKind::Transient => "transient",
            ApiErrorKind::AccessDenied => "access denied",
            ApiErrorKind::NotFound => "not found",
            ApiErrorKind::Invalid => "invalid request",
            ApiErrorKind::Other => "other",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecr::error::ErrorMetadata;
    use aws_sdk_ecr::operation::describe_images::DescribeImagesError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    /// A DescribeImages service error as the SDK builds it from a response.
    fn service_error(status: u16, code: &str) -> SdkError<DescribeImagesError> {
        let raw = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        let err = DescribeImagesError::generic(ErrorMetadata::builder().code(code).build());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn modeled_errors_get_their_kind_and_only_throttling_and_5xx_are_retryable() {
        for (status, code, kind) in [
            (400, "ThrottlingException", ApiErrorKind::Throttled),
            (400, "TooManyRequestsException", ApiErrorKind::Throttled),
            (429, "Whatever", ApiErrorKind::Throttled),
            (500, "ServerException", ApiErrorKind::Transient),
            (503, "ServiceUnavailable", ApiErrorKind::Transient),
            (400, "RequestTimeoutException", ApiErrorKind::Transient),
            (400, "AccessDeniedException", ApiErrorKind::AccessDenied),
            (403, "SomethingElse", ApiErrorKind::AccessDenied),
            (400, "RepositoryNotFoundException", ApiErrorKind::NotFound),
            (404, "NoSuchBucket", ApiErrorKind::NotFound),
            (400, "ValidationException", ApiErrorKind::Invalid),
            (400, "InvalidParameterException", ApiErrorKind::Invalid),
            (409, "RepositoryNotEmptyException", ApiErrorKind::Other),
        ] {
            let got = ApiErrorKind::of_sdk_error(&service_error(status, code));
            assert_eq!(got, kind, "{status} {code}");
            assert_eq!(
                got.is_retryable(),
                matches!(kind, ApiErrorKind::Throttled | ApiErrorKind::Transient),
                "{status} {code}"
            );
        }
    }

    #[test]
    fn timeouts_are_transient_and_unbuildable_requests_are_not() {
        let timeout: SdkError<DescribeImagesError> = SdkError::timeout_error("read timed out");
        assert_eq!(
            ApiErrorKind::of_sdk_error(&timeout),
            ApiErrorKind::Transient
        );
        let unbuildable: SdkError<DescribeImagesError> =
            SdkError::construction_failure("missing repositoryName");
        assert_eq!(
            ApiErrorKind::of_sdk_error(&unbuildable),
            ApiErrorKind::Other
        );
        assert!(!ApiErrorKind::Other.is_retryable());
    }
}
