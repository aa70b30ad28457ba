//! Amazon ECR as an OCI distribution registry: the registry host of an account and
//! region, and the Basic credentials `GetAuthorizationToken` hands out (cached until
//! shortly before they expire).

use crate::aws_clients::ClientSettings;
use crate::deadline::{system_clock, Clock};
use crate::registry::distribution::auth::{CredentialSource, Credentials};
use crate::registry::{RegistryError, Result};
use async_trait::async_trait;
use base64::Engine as _;
use std::time::{Duration, SystemTime};

/// A token is used until this long before it expires (ECR tokens live 12 hours).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// An ECR registry: account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    /// The AWS account id (the registry id).
    pub account: String,
    /// The AWS region.
    pub region: String,
}

impl EcrRegistry {
    /// `<account>.dkr.ecr.<region>.amazonaws.com` (`.amazonaws.com.cn` in China regions).
    pub fn host(&self) -> String {
        registry_host(&self.account, &self.region)
    }
}

/// The registry host of an account in a region.
pub fn registry_host(account: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("{account}.dkr.ecr.{region}.{suffix}")
}

/// An AWS account id: 12 ASCII digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The shape of AWS region names, not a list (new regions keep coming): two letters,
/// one or more lowercase words, a number from 1 with no leading zero, joined by dashes
/// (`us-east-1`, `cn-north-1`, `us-gov-west-1`, `eu-isoe-west-1`).
pub fn is_region_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [country, words @ .., number] = parts.as_slice() else {
        return false;
    };
    country.len() == 2
        && country.bytes().all(|b| b.is_ascii_lowercase())
        && !words.is_empty()
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.len() <= 2
        && !number.starts_with('0')
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Recognises an ECR private registry host, with or without a port, in every form
/// AWS's endpoint documentation gives for it:
///
/// | form                | host                                                     |
/// |---------------------|----------------------------------------------------------|
/// | IPv4                | `<account>.dkr.ecr.<region>.amazonaws.com`               |
/// | IPv4, FIPS          | `<account>.dkr.ecr-fips.<region>.amazonaws.com`          |
/// | IPv4, China         | `<account>.dkr.ecr.<region>.amazonaws.com.cn`            |
/// | dual-stack          | `<account>.dkr-ecr.<region>.on.aws`                      |
/// | dual-stack, FIPS    | `<account>.dkr-ecr-fips.<region>.on.aws`                 |
/// | dual-stack, China   | `<account>.dkr-ecr.<region>.on.amazonwebservices.com.cn` |
///
/// `None` for every other host.
pub fn parse_registry_host(host: &str) -> Option<EcrRegistry> {
    let host = strip_port(host)?.to_ascii_lowercase();
    let (rest, dual_stack) = if let Some(r) = host.strip_suffix(".amazonaws.com.cn") {
        (r, false)
    } else if let Some(r) = host.strip_suffix(".amazonaws.com") {
        (r, false)
    } else if let Some(r) = host.strip_suffix(".on.amazonwebservices.com.cn") {
        (r, true)
    } else if let Some(r) = host.strip_suffix(".on.aws") {
        (r, true)
    } else {
        return None;
    };
    let labels: Vec<&str> = rest.split('.').collect();
    let (account, region) = match (dual_stack, labels.as_slice()) {
        (false, [account, "dkr", "ecr" | "ecr-fips", region]) => (*account, *region),
        (true, [account, "dkr-ecr" | "dkr-ecr-fips", region]) => (*account, *region),
        _ => return None,
    };
    if !is_account_id(account)
        || region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return None;
    }
    Some(EcrRegistry {
        account: account.to_string(),
        region: region.to_string(),
    })
}

/// The host without its `:port` (`None` for a port that is not a number).
fn strip_port(host: &str) -> Option<&str> {
    match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => Some(h),
        Some(_) => None,
        None => Some(host),
    }
}

/// The AWS client settings from the environment, a bad one an authentication error.
fn settings_from_env() -> Result<ClientSettings> {
    ClientSettings::from_env().map_err(|e| RegistryError::Auth {
        registry: "ECR".into(),
        message: e.to_string(),
    })
}

/// Decodes an ECR authorization token: base64 of `AWS:<password>`.
pub fn decode_authorization_token(token: &str) -> Result<Credentials> {
    let bad = |why: &str| RegistryError::Auth {
        registry: "ECR".into(),
        message: format!("GetAuthorizationToken returned an unusable token: {why}"),
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| bad("not base64"))?;
    let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| bad("no ':' separator"))?;
    if user.is_empty() || password.is_empty() {
        return Err(bad("empty user or password"));
    }
    Ok(Credentials::new(user, password))
}

/// Until when a token expiring at `expires_at` may be reused, seen at `now`. `None` when
/// it is (nearly) expired already: use it for this request, do not cache it.
pub fn reuse_until(expires_at: SystemTime, now: SystemTime) -> Option<SystemTime> {
    let until = expires_at.checked_sub(REFRESH_MARGIN)?;
    (until > now).then_some(until)
}

/// Where raw tokens come from: `GetAuthorizationToken` in production; a seam for unit
/// tests of the cache.
#[async_trait]
pub trait AuthorizationTokenApi: Send + Sync + std::fmt::Debug {
    /// The base64 token and its expiry.
    async fn authorization_token(&self) -> Result<(String, Option<SystemTime>)>;
}

/// `GetAuthorizationToken` through aws-sdk-ecr.
#[derive(Debug, Clone)]
pub struct SdkTokenApi {
    client: aws_sdk_ecr::Client,
    registry_id: Option<String>,
}

#[async_trait]
impl AuthorizationTokenApi for SdkTokenApi {
    async fn authorization_token(&self) -> Result<(String, Option<SystemTime>)> {
        // No `registryIds`: deprecated, the token works for every registry the caller
        // may access. `registry_id` only names the registry in messages.
        let out = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| RegistryError::Auth {
                registry: self.registry_id.clone().unwrap_or_else(|| "ECR".into()),
                message: format!(
                    "GetAuthorizationToken failed: {}",
                    aws_sdk_ecr::error::DisplayErrorContext(&e)
                ),
            })?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| RegistryError::Auth {
                registry: self.registry_id.clone().unwrap_or_else(|| "ECR".into()),
                message: "GetAuthorizationToken returned no authorization data".into(),
            })?;
        let token = data.authorization_token().unwrap_or_default().to_string();
        let expires = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok());
        Ok((token, expires))
    }
}

/// Basic credentials for an ECR registry, from `GetAuthorizationToken`, cached until
/// [`REFRESH_MARGIN`] before expiry. One provider lives as long as its registry client
/// (for a Lambda function, its execution environment), so one token serves every event
/// of its 12 hours.
pub struct EcrTokenProvider {
    api: Box<dyn AuthorizationTokenApi>,
    cache: tokio::sync::Mutex<Option<(Credentials, SystemTime)>>,
    clock: Clock,
}

impl std::fmt::Debug for EcrTokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrTokenProvider")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl EcrTokenProvider {
    /// Through an SDK config (which honours `AWS_ENDPOINT_URL`, region and credentials),
    /// the ECR client retrying and timing out as `settings` say. `registry_id` is the
    /// account id of the registry (default: the caller's).
    pub fn new(
        sdk: &aws_config::SdkConfig,
        settings: &ClientSettings,
        registry_id: Option<String>,
    ) -> Self {
        Self::with_api(SdkTokenApi {
            client: settings.ecr(sdk),
            registry_id,
        })
    }

    /// For `registry` with the default AWS configuration chain and its region, the
    /// client's timeouts from the environment (an unreadable one is an error naming it).
    pub async fn for_registry(registry: &EcrRegistry) -> Result<Self> {
        let settings = settings_from_env()?;
        let sdk = crate::aws_clients::load_sdk_config_in(&registry.region).await;
        Ok(Self::new(&sdk, &settings, Some(registry.account.clone())))
    }

    /// With the default AWS configuration chain, for the caller's own registry.
    pub async fn from_env() -> Result<Self> {
        let settings = settings_from_env()?;
        let sdk = crate::aws_clients::load_sdk_config().await;
        Ok(Self::new(&sdk, &settings, None))
    }

    /// Over any [`AuthorizationTokenApi`] (tests pass their own).
    pub fn with_api(api: impl AuthorizationTokenApi + 'static) -> Self {
        Self::with_api_and_clock(api, system_clock())
    }

    /// With the time taken from `clock` (tests of the expiry logic).
    pub fn with_api_and_clock(api: impl AuthorizationTokenApi + 'static, clock: Clock) -> Self {
        Self {
            api: Box::new(api),
            cache: Default::default(),
            clock,
        }
    }
}

#[async_trait]
impl CredentialSource for EcrTokenProvider {
    async fn credentials(&self) -> Result<Credentials> {
        let mut cache = self.cache.lock().await;
        if let Some((creds, until)) = cache.as_ref() {
            if *until > (self.clock)() {
                return Ok(creds.clone());
            }
        }
        *cache = None;
        // A token that is expired on arrival (a wrong clock here or there) gets one more
        // fetch; the second is used as it is, so a registry that refuses it ends the
        // attempt with its 401 instead of a fetch loop.
        for attempt in 1..=2 {
            let (token, expires) = self.api.authorization_token().await?;
            let creds = decode_authorization_token(&token)?;
            let now = (self.clock)();
            // ECR always sends an expiry; without one, assume the documented 12 hours.
            let expires = expires.unwrap_or(now + Duration::from_secs(12 * 3600));
            if let Some(until) = reuse_until(expires, now) {
                *cache = Some((creds.clone(), until));
                return Ok(creds);
            }
            if expires > now {
                tracing::warn!(
                    "ECR authorization token expires too soon to be cached; fetching a new one per use"
                );
                return Ok(creds);
            }
            tracing::warn!(
                attempt,
                expires_at = ?expires,
                "GetAuthorizationToken returned a token that has already expired"
            );
            if attempt == 2 {
                return Ok(creds);
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn invalidate(&self) -> bool {
        self.cache.lock().await.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    #[test]
    fn hosts_round_trip_and_others_are_rejected() {
        let r = EcrRegistry {
            account: "123456789012".into(),
            region: "eu-west-1".into(),
        };
        assert_eq!(r.host(), "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(parse_registry_host(&r.host()), Some(r));
        assert_eq!(
            registry_host("123456789012", "cn-north-1"),
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert!(
            parse_registry_host("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com:443").is_some()
        );
        for other in [
            "ghcr.io",
            "127.0.0.1:5000",
            "12345.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.com",
            "public.ecr.aws",
            "123456789012.dkr.ecr..amazonaws.com",
        ] {
            assert_eq!(parse_registry_host(other), None, "{other}");
        }
    }

    #[test]
    fn token_decoding_names_the_problem() {
        let c = decode_authorization_token("QVdTOnNlY3JldA==").unwrap();
        assert_eq!(c, Credentials::new("AWS", "secret"));
        for bad in ["%%%", "bm9jb2xvbg==", "Og=="] {
            assert!(decode_authorization_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reuse_window_ends_five_minutes_early() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            reuse_until(now + Duration::from_secs(3600), now),
            Some(now + Duration::from_secs(3300))
        );
        assert_eq!(reuse_until(now + Duration::from_secs(200), now), None);
        assert_eq!(reuse_until(now - Duration::from_secs(200), now), None);
    }

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Duration,
    }

    #[async_trait]
    impl AuthorizationTokenApi for Counting {
        async fn authorization_token(&self) -> Result<(String, Option<SystemTime>)> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:pw{n}"));
            Ok((token, Some(SystemTime::now() + self.lifetime)))
        }
    }

    #[tokio::test]
    async fn tokens_are_cached_until_near_expiry() {
        let calls = Arc::new(AtomicUsize::new(0));
        let long = EcrTokenProvider::with_api(Counting {
            calls: calls.clone(),
            lifetime: Duration::from_secs(12 * 3600),
        });
        for _ in 0..3 {
            assert_eq!(
                long.credentials().await.unwrap(),
                Credentials::new("AWS", "pw0")
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A refused token is dropped: the next use fetches a new one.
        assert!(long.invalidate().await);
        assert!(!long.invalidate().await, "nothing left to drop");
        assert_eq!(
            long.credentials().await.unwrap(),
            Credentials::new("AWS", "pw1")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let calls = Arc::new(AtomicUsize::new(0));
        let short = EcrTokenProvider::with_api(Counting {
            calls: calls.clone(),
            lifetime: Duration::from_secs(60),
        });
        short.credentials().await.unwrap();
        assert_eq!(
            short.credentials().await.unwrap(),
            Credentials::new("AWS", "pw1")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Tokens that expire at a fixed time, counted; the time is the test's clock.
    #[derive(Debug)]
    struct ExpiringAt {
        calls: Arc<AtomicUsize>,
        expires_at: Arc<Mutex<SystemTime>>,
    }

    #[async_trait]
    impl AuthorizationTokenApi for ExpiringAt {
        async fn authorization_token(&self) -> Result<(String, Option<SystemTime>)> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:pw{n}"));
            Ok((token, Some(*self.expires_at.lock().unwrap())))
        }
    }

    #[tokio::test]
    async fn expiry_follows_the_injected_clock() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now = Arc::new(Mutex::new(start));
        let clock: Clock = {
            let now = now.clone();
            Arc::new(move || *now.lock().unwrap())
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let expires_at = Arc::new(Mutex::new(start + Duration::from_secs(12 * 3600)));
        let provider = EcrTokenProvider::with_api_and_clock(
            ExpiringAt {
                calls: calls.clone(),
                expires_at: expires_at.clone(),
            },
            clock,
        );
        let set = |t: SystemTime| *now.lock().unwrap() = t;
        let calls_now = || calls.load(Ordering::SeqCst);

        assert_eq!(
            provider.credentials().await.unwrap().password.expose(),
            "pw0"
        );
        // Reused up to the margin before expiry...
        set(start + Duration::from_secs(12 * 3600) - REFRESH_MARGIN - Duration::from_secs(1));
        assert_eq!(
            provider.credentials().await.unwrap().password.expose(),
            "pw0"
        );
        assert_eq!(calls_now(), 1);
        // ...and replaced from there on.
        set(start + Duration::from_secs(12 * 3600) - REFRESH_MARGIN);
        *expires_at.lock().unwrap() = start + Duration::from_secs(24 * 3600);
        assert_eq!(
            provider.credentials().await.unwrap().password.expose(),
            "pw1"
        );
        assert_eq!(calls_now(), 2);

        // A token already expired on arrival: one more fetch, then it is used as it is
        // (not cached), and no further fetch happens for this request.
        set(start + Duration::from_secs(30 * 3600));
        assert_eq!(
            provider.credentials().await.unwrap().password.expose(),
            "pw3"
        );
        assert_eq!(calls_now(), 4);
        assert!(
            !provider.invalidate().await,
            "an expired token is not cached"
        );
        // A fresh one on the retry is cached as usual.
        *expires_at.lock().unwrap() = start + Duration::from_secs(42 * 3600);
        assert_eq!(
            provider.credentials().await.unwrap().password.expose(),
            "pw4"
        );
        assert_eq!(
            provider.credentials().await.unwrap().password.expose(),
            "pw4"
        );
        assert_eq!(calls_now(), 5);
    }

    /// Registry hosts as AWS's ECR endpoint pages write them, one per form, and hosts
    /// that only look like them.
    #[test]
    fn every_documented_registry_host_form_is_recognised() {
        let ecr = |account: &str, region: &str| {
            Some(EcrRegistry {
                account: account.into(),
                region: region.into(),
            })
        };
        for (host, expected) in [
            // IPv4, and its FIPS form.
            (
                "111122223333.dkr.ecr.us-east-2.amazonaws.com",
                ecr("111122223333", "us-east-2"),
            ),
            (
                "111122223333.dkr.ecr-fips.us-west-2.amazonaws.com",
                ecr("111122223333", "us-west-2"),
            ),
            (
                "111122223333.dkr.ecr.us-gov-west-1.amazonaws.com",
                ecr("111122223333", "us-gov-west-1"),
            ),
            // China partition.
            (
                "111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn",
                ecr("111122223333", "cn-north-1"),
            ),
            (
                "111122223333.dkr.ecr.cn-northwest-1.amazonaws.com.cn",
                ecr("111122223333", "cn-northwest-1"),
            ),
            // Dual-stack (IPv4 and IPv6), and its FIPS form.
            (
                "111122223333.dkr-ecr.eu-central-1.on.aws",
                ecr("111122223333", "eu-central-1"),
            ),
            (
                "111122223333.dkr-ecr-fips.us-east-1.on.aws",
                ecr("111122223333", "us-east-1"),
            ),
            (
                "111122223333.dkr-ecr.us-gov-east-1.on.aws",
                ecr("111122223333", "us-gov-east-1"),
            ),
            // Dual-stack in the China partition.
            (
                "111122223333.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
                ecr("111122223333", "cn-north-1"),
            ),
            // Ports, and upper case as people type it.
            (
                "111122223333.dkr-ecr.ap-south-1.on.aws:443",
                ecr("111122223333", "ap-south-1"),
            ),
            (
                "111122223333.DKR.ECR.EU-WEST-1.AMAZONAWS.COM:443",
                ecr("111122223333", "eu-west-1"),
            ),
            // Not private registries, or not well formed.
            ("api.ecr.us-east-1.amazonaws.com", None),
            ("ecr.us-east-1.api.aws", None),
            ("public.ecr.aws", None),
            ("ecr-public.aws.com", None),
            ("111122223333.dkr.ecr.us-east-1.on.aws", None),
            ("111122223333.dkr-ecr.us-east-1.amazonaws.com", None),
            ("111122223333.dkr-ecr.us-east-1.on.aws.evil.com", None),
            ("111122223333.dkr-ecr..on.aws", None),
            ("11112222333.dkr-ecr.us-east-1.on.aws", None),
            ("111122223333.dkr-ecr.us-east-1.on.aws:https", None),
        ] {
            assert_eq!(parse_registry_host(host), expected, "{host}");
        }
    }

    proptest! {
        #[test]
        fn any_account_and_region_round_trip(account in "[0-9]{12}", region in "[a-z]{2}-[a-z]{4,9}-[1-9]") {
            let host = registry_host(&account, &region);
            prop_assert_eq!(parse_registry_host(&host), Some(EcrRegistry { account, region }));
        }
    }
}
