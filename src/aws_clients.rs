//! The one place every AWS SDK client of the crate is built (ECR, ECS, Lambda, S3, SQS;
//! the registry's ECR token client included): the standard retry mode with more attempts
//! (ECR and ECS throttle sweeps of many repositories; the SDK's retry is the only retry
//! layer of these calls), and an operation and an attempt timeout, so that a call that
//! never answers fails instead of holding a function until Lambda kills it.
//!
//! At the crate root, below `registry` and `catalog`, so that both build their clients
//! here. The timeouts come from the environment ([`ENV_OPERATION_TIMEOUT`],
//! [`ENV_ATTEMPT_TIMEOUT`]); inside Lambda the invocation deadline cuts every catalog
//! listing shorter still (see [`crate::catalog::paginate::Paging`]).

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::SdkConfig;
use std::time::Duration;

/// The default AWS configuration chain (region, credentials, `AWS_ENDPOINT_URL`).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// The default AWS configuration chain with `region` in place of the configured one.
pub async fn load_sdk_config_in(region: &str) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .load()
        .await
}

/// `AFTERPUSH_AWS_OPERATION_TIMEOUT`: the longest one AWS call may take, its retries
/// included (a duration: `2m`, `90s`).
pub const ENV_OPERATION_TIMEOUT: &str = "AFTERPUSH_AWS_OPERATION_TIMEOUT";
/// `AFTERPUSH_AWS_ATTEMPT_TIMEOUT`: the longest one attempt of an AWS call may take.
pub const ENV_ATTEMPT_TIMEOUT: &str = "AFTERPUSH_AWS_ATTEMPT_TIMEOUT";

/// Default operation timeout: room for 8 attempts with the SDK's backoff.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Default attempt timeout: a DescribeImages page of 1000 answers in well under a second.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts per call in the SDK's standard retry mode.
pub const MAX_ATTEMPTS: u32 = 8;

/// An unusable timeout setting, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {0}")]
pub struct ClientSettingsError(pub String);

/// How the catalog's AWS clients retry and time out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    /// Attempts per call (standard retry mode).
    pub max_attempts: u32,
    /// The longest one call may take, retries included.
    pub operation_timeout: Duration,
    /// The longest one attempt may take.
    pub attempt_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            max_attempts: MAX_ATTEMPTS,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }
}

impl ClientSettings {
    /// The defaults, with the timeouts the environment sets; an unreadable value is an
    /// error naming the variable.
    pub fn from_env() -> Result<Self, ClientSettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`Self::from_env`], reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ClientSettingsError> {
        let read = |var: &str, default: Duration| -> Result<Duration, String> {
            match get(var).as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => match humantime::parse_duration(v) {
                    Ok(d) if !d.is_zero() => Ok(d),
                    Ok(_) => Err(format!("{var}={v:?}: a timeout must be longer than zero")),
                    Err(e) => Err(format!("{var}={v:?}: expected a duration, e.g. 30s: {e}")),
                },
            }
        };
        let settings = ClientSettings {
            operation_timeout: read(ENV_OPERATION_TIMEOUT, DEFAULT_OPERATION_TIMEOUT)
                .map_err(ClientSettingsError)?,
            attempt_timeout: read(ENV_ATTEMPT_TIMEOUT, DEFAULT_ATTEMPT_TIMEOUT)
                .map_err(ClientSettingsError)?,
            ..Default::default()
        };
        if settings.attempt_timeout > settings.operation_timeout {
            return Err(ClientSettingsError(format!(
                "{ENV_ATTEMPT_TIMEOUT} ({}) is longer than {ENV_OPERATION_TIMEOUT} ({})",
                humantime::format_duration(settings.attempt_timeout),
                humantime::format_duration(settings.operation_timeout)
            )));
        }
        Ok(settings)
    }

    /// The standard retry mode with [`Self::max_attempts`].
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard().with_max_attempts(self.max_attempts)
    }

    /// The operation and attempt timeouts.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .operation_timeout(self.operation_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .build()
    }

    /// An ECR client.
    pub fn ecr(&self, sdk: &SdkConfig) -> aws_sdk_ecr::Client {
        aws_sdk_ecr::Client::from_conf(
            aws_sdk_ecr::config::Builder::from(sdk)
                .retry_config(self.retry_config())
                .timeout_config(self.timeout_config())
                .build(),
        )
    }

    /// An ECS client.
    pub fn ecs(&self, sdk: &SdkConfig) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::config::Builder::from(sdk)
                .retry_config(self.retry_config())
                .timeout_config(self.timeout_config())
                .build(),
        )
    }

    /// An Inspector client.
    pub fn inspector(&self, sdk: &SdkConfig) -> aws_sdk_inspector2::Client {
        aws_sdk_inspector2::Client::from_conf(
            aws_sdk_inspector2::config::Builder::from(sdk)
                .retry_config(self.retry_config())
                .timeout_config(self.timeout_config())
                .build(),
        )
    }

    /// A Lambda client.
    pub fn lambda(&self, sdk: &SdkConfig) -> aws_sdk_lambda::Client {
        aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(sdk)
                .retry_config(self.retry_config())
                .timeout_config(self.timeout_config())
                .build(),
        )
    }

    /// An STS client (AssumeRole into consumer accounts, GetCallerIdentity).
    pub fn sts(&self, sdk: &SdkConfig) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(sdk)
                .retry_config(self.retry_config())
                .timeout_config(self.timeout_config())
                .build(),
        )
    }

    /// An SQS client (the functions' work queues and their dead-letter queue).
    pub fn sqs(&self, sdk: &SdkConfig) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(sdk)
                .retry_config(self.retry_config())
                .timeout_config(self.timeout_config())
                .build(),
        )
    }

    /// An S3 client; `path_style` for endpoints other than AWS's (moto, S3-compatible
    /// stores) and buckets with dots in their names.
    pub fn s3(&self, sdk: &SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(sdk)
                .retry_config(self.retry_config())
                .timeout_config(self.timeout_config())
                .force_path_style(path_style)
                .build(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_carries_the_retry_and_timeout_settings() {
        let settings = ClientSettings {
            max_attempts: 3,
            operation_timeout: Duration::from_secs(9),
            attempt_timeout: Duration::from_secs(4),
        };
        let sdk = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let check = |retry: Option<&RetryConfig>, timeout: Option<&TimeoutConfig>| {
            assert_eq!(retry.map(|r| r.max_attempts()), Some(3));
            let t = timeout.expect("a timeout config");
            assert_eq!(t.operation_timeout(), Some(Duration::from_secs(9)));
            assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(4)));
        };
        let c = settings.ecr(&sdk);
        check(c.config().retry_config(), c.config().timeout_config());
        let c = settings.ecs(&sdk);
        check(c.config().retry_config(), c.config().timeout_config());
        let c = settings.lambda(&sdk);
        check(c.config().retry_config(), c.config().timeout_config());
        let c = settings.s3(&sdk, true);
        check(c.config().retry_config(), c.config().timeout_config());
        let c = settings.sqs(&sdk);
        check(c.config().retry_config(), c.config().timeout_config());
    }

    #[test]
    fn timeouts_come_from_the_environment_and_bad_values_are_named() {
        let none = ClientSettings::from_lookup(|_| None).unwrap();
        assert_eq!(none, ClientSettings::default());
        let set = ClientSettings::from_lookup(|k| {
            Some(
                if k == ENV_OPERATION_TIMEOUT {
                    "45s"
                } else {
                    "5s"
                }
                .into(),
            )
        })
        .unwrap();
        assert_eq!(set.operation_timeout, Duration::from_secs(45));
        assert_eq!(set.attempt_timeout, Duration::from_secs(5));
        let t = set.timeout_config();
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(45)));
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(5)));
        for (var, value) in [
            (ENV_OPERATION_TIMEOUT, "soon"),
            (ENV_ATTEMPT_TIMEOUT, "0s"),
            (ENV_ATTEMPT_TIMEOUT, "1h"),
        ] {
            let err =
                ClientSettings::from_lookup(|k| (k == var).then(|| value.to_string())).unwrap_err();
            assert!(err.to_string().contains(var), "{err}");
        }
    }
}
