//! The images other accounts use: the accounts (and regions) that consume this registry
//! (`CONSUMER_ACCOUNTS`), the read-only role the janitor assumes in each
//! (`IN_USE_READER_ROLE`, `infra/in-use-reader.yaml`), and [`AccountsInUse`], the
//! in-use source that lists ECS and Lambda at home and in every consumer account with the
//! same calls and the same fail-closed rule: any failure, in any account, is an error.
//!
//! The role is assumed with an explicit STS `AssumeRole` call (aws-sdk-sts) rather than a
//! lazy credentials provider, so that a refused role fails as itself (`STS AssumeRole
//! failed: … AccessDenied`) and not as the first ECS call's credentials error.

use crate::aws_clients::{ClientSettings, ClientSettingsError};
use crate::catalog::account_workloads::Workloads;
use crate::catalog::ecr::{EcrCatalog, SdkEcr};
use crate::catalog::ecs::SdkEcs;
use crate::catalog::inspector::{BothSources, InspectorInUse, SdkInspector};
use crate::catalog::lambda::SdkLambda;
use crate::catalog::paginate::Paging;
use crate::catalog::repository_policy::SdkRepositoryPolicies;
use crate::catalog::workloads::{InUseError, InUseRef, InUseSource, Protect, RegistryScope};
use crate::registry::ecr::{is_account_id, is_region_name};
use crate::settings::{
    SettingsError, CONSUMER_ACCOUNTS, IN_USE_READER_EXTERNAL_ID, IN_USE_READER_ROLE,
};

/// The role name `infra/in-use-reader.yaml` creates unless told otherwise.
pub const DEFAULT_READER_ROLE: &str = "afterpush-in-use-reader";

/// The session name the janitor's assumed sessions carry (seen in the consumer's CloudTrail).
pub const SESSION_NAME: &str = "afterpush-janitor";

/// One account that runs this registry's images, and the regions it runs them in
/// (empty: the registry's region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerAccount {
    /// The 12-digit account id.
    pub account: String,
    /// The regions whose ECS and Lambda are listed; empty for the registry's region.
    pub regions: Vec<String>,
}

/// `CONSUMER_ACCOUNTS` and `IN_USE_READER_ROLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerAccounts {
    /// The accounts, in the order given.
    pub accounts: Vec<ConsumerAccount>,
    /// The reader role's name in every one of them.
    pub role_name: String,
    /// The `sts:ExternalId` passed to AssumeRole (`IN_USE_READER_EXTERNAL_ID`), when the
    /// reader roles require one.
    pub external_id: Option<String>,
}

impl Default for ConsumerAccounts {
    fn default() -> Self {
        ConsumerAccounts {
            accounts: Vec::new(),
            role_name: DEFAULT_READER_ROLE.into(),
            external_id: None,
        }
    }
}

impl ConsumerAccounts {
    /// The same accounts, their reader roles assumed with `IN_USE_READER_EXTERNAL_ID`
    /// (blank: none). STS takes 2 to 1,224 of A-Z a-z 0-9 and `+=,.@:/-`; anything else
    /// is refused here, naming the variable, rather than by every AssumeRole.
    pub fn with_external_id(mut self, raw: &str) -> Result<Self, SettingsError> {
        let id = raw.trim();
        if id.is_empty() {
            self.external_id = None;
            return Ok(self);
        }
        let valid = (2..=1224).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b));
        if !valid {
            return Err(SettingsError::new(
                IN_USE_READER_EXTERNAL_ID,
                raw,
                "expected 2 to 1224 of A-Z a-z 0-9 _ + = , . @ : / -",
            ));
        }
        self.external_id = Some(id.to_string());
        Ok(self)
    }

    /// Parses `CONSUMER_ACCOUNTS` (`account[:region,...]` entries, comma-separated: a
    /// bare region after `account:region` adds a region to that account, e.g.
    /// `222222222222:eu-west-1,us-east-1,333333333333`) and `IN_USE_READER_ROLE`
    /// (blank: [`DEFAULT_READER_ROLE`]). Errors name the variable and the entry.
    pub fn parse(accounts: &str, role_name: &str) -> Result<Self, SettingsError> {
        let role = role_name.trim();
        let role_name = if role.is_empty() {
            DEFAULT_READER_ROLE.to_string()
        } else if role.len() <= 64
            && role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            role.to_string()
        } else {
            return Err(SettingsError::new(
                IN_USE_READER_ROLE,
                role_name,
                "expected an IAM role name (1 to 64 of A-Z a-z 0-9 + = , . @ _ -)",
            ));
        };
        let mut out: Vec<ConsumerAccount> = Vec::new();
        // The account a bare region belongs to: the last one given with a region.
        let mut open: Option<usize> = None;
        for entry in accounts.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |problem: String| SettingsError::new(CONSUMER_ACCOUNTS, accounts, problem);
            let (account, region) = match entry.split_once(':') {
                Some((a, r)) => (Some(a.trim()), Some(r.trim())),
                None if is_account_id(entry) => (Some(entry), None),
                None => (None, Some(entry)),
            };
            if let Some(r) = region {
                if !is_region_name(r) {
                    return Err(bad(format!(
                        "{entry:?}: {r:?} is not a region (expected account[:region,...], \
                         e.g. 222222222222:eu-west-1,us-east-1,333333333333)"
                    )));
                }
            }
            match account {
                Some(a) => {
                    if !is_account_id(a) {
                        return Err(bad(format!(
                            "{entry:?}: {a:?} is not a 12-digit account id"
                        )));
                    }
                    let at = match out.iter().position(|c| c.account == a) {
                        Some(at) => at,
                        None => {
                            out.push(ConsumerAccount {
                                account: a.to_string(),
                                regions: Vec::new(),
                            });
                            out.len() - 1
                        }
                    };
                    if let Some(r) = region {
                        if !out[at].regions.iter().any(|x| x == r) {
                            out[at].regions.push(r.to_string());
                        }
                    }
                    open = region.map(|_| at);
                }
                None => {
                    let (Some(at), Some(r)) = (open, region) else {
                        return Err(bad(format!(
                            "{entry:?}: a region must follow an account:region entry"
                        )));
                    };
                    if !out[at].regions.iter().any(|x| x == r) {
                        out[at].regions.push(r.to_string());
                    }
                }
            }
        }
        Ok(ConsumerAccounts {
            accounts: out,
            role_name,
            external_id: None,
        })
    }

    /// The account ids.
    pub fn account_ids(&self) -> Vec<String> {
        self.accounts.iter().map(|a| a.account.clone()).collect()
    }
}

/// The partition of a region, for role ARNs.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// `user in account` (and the region, when it is not the registry's).
fn in_account(user: &str, account: &str, region: &str, registry_region: &str) -> String {
    if region == registry_region {
        format!("{user} in {account}")
    } else {
        format!("{user} in {account} ({region})")
    }
}

/// An error in another account, with the account (and region) it happened in.
fn in_account_error(mut e: InUseError, account: &str, region: Option<&str>) -> InUseError {
    e.message = match region {
        Some(r) => format!("in account {account} ({r}): {}", e.message),
        None => format!("in account {account}: {}", e.message),
    };
    e
}

/// The registry the in-use references must name: this account's, in this region.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registry {
    account: String,
    region: String,
}

/// ECS and Lambda at home and in every consumer account.
pub struct AccountsInUse {
    home: Box<dyn InUseSource>,
    config: aws_config::SdkConfig,
    settings: ClientSettings,
    paging: Paging,
    sts: aws_sdk_sts::Client,
    consumers: ConsumerAccounts,
}

impl AccountsInUse {
    /// Home's workloads through `home`; the consumers' through their reader roles,
    /// assumed with the credentials of `config`, with clients built as `settings` says and
    /// listings under `paging` (shared with the catalog's: the run's deadline stops them).
    pub fn new(
        config: &aws_config::SdkConfig,
        settings: &ClientSettings,
        paging: Paging,
        home: impl InUseSource + 'static,
        consumers: &ConsumerAccounts,
    ) -> Self {
        AccountsInUse {
            home: Box::new(home),
            config: config.clone(),
            settings: *settings,
            paging,
            sts: settings.sts(config),
            consumers: consumers.clone(),
        }
    }

    fn sts_error<E>(
        operation: &'static str,
        what: String,
        err: aws_sdk_sts::error::SdkError<E>,
    ) -> InUseError
    where
        E: aws_sdk_sts::error::ProvideErrorMetadata
            + aws_config::retry::ProvideErrorKind
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let mut e = InUseError::sdk("STS", operation, err);
        e.message = format!("{what}: {}", e.message);
        e
    }

    /// The registry's account (the caller's: the catalog lists its own registry).
    async fn registry(&self) -> Result<Registry, InUseError> {
        let region = self
            .config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let out = self.sts.get_caller_identity().send().await.map_err(|e| {
            Self::sts_error("GetCallerIdentity", "the registry's account".into(), e)
        })?;
        Ok(Registry {
            account: out.account().unwrap_or_default().to_string(),
            region,
        })
    }

    /// One consumer account: assume its reader role, then list ECS and Lambda in each of
    /// its regions. Every failure is returned (each names the account).
    async fn consumer(
        &self,
        consumer: &ConsumerAccount,
        registry: &Registry,
        protect: &Protect,
    ) -> Result<Vec<InUseRef>, Vec<InUseError>> {
        let account = consumer.account.as_str();
        let role_arn = format!(
            "arn:{}:iam::{account}:role/{}",
            partition(&registry.region),
            self.consumers.role_name
        );
        let assumed = self
            .sts
            .assume_role()
            .role_arn(&role_arn)
            .role_session_name(SESSION_NAME)
            .set_external_id(self.consumers.external_id.clone())
            .send()
            .await
            .map_err(|e| {
                vec![Self::sts_error(
                    "AssumeRole",
                    format!("account {account}: role {role_arn}"),
                    e,
                )]
            })?;
        let Some(c) = assumed.credentials() else {
            return Err(vec![InUseError {
                service: "STS",
                operation: "AssumeRole",
                message: format!(
                    "account {account}: role {role_arn}: no credentials in the answer"
                ),
                retryable: false,
            }]);
        };
        let credentials = aws_sdk_ecs::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            std::time::SystemTime::try_from(*c.expiration()).ok(),
            "afterpush-in-use-reader",
        );
        let regions = if consumer.regions.is_empty() {
            vec![registry.region.clone()]
        } else {
            consumer.regions.clone()
        };
        let scope = RegistryScope::Of {
            account: &registry.account,
            region: &registry.region,
        };
        let mut refs = Vec::new();
        let mut errors = Vec::new();
        for region in &regions {
            let config = self
                .config
                .to_builder()
                .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                    credentials.clone(),
                ))
                .region(aws_config::Region::new(region.clone()))
                .build();
            let listed = async {
                let mut found = Vec::new();
                if protect.ecs {
                    found.extend(
                        crate::catalog::ecs::images_in_use_of(
                            &SdkEcs::from_sdk_config(&config, &self.settings),
                            protect.task_definition_revisions,
                            &self.paging,
                            scope,
                        )
                        .await?,
                    );
                }
                if protect.lambda {
                    found.extend(
                        crate::catalog::lambda::images_in_use_of(
                            &SdkLambda::from_sdk_config(&config, &self.settings),
                            &self.paging,
                            scope,
                        )
                        .await?,
                    );
                }
                Ok::<_, InUseError>(found)
            };
            match listed.await {
                Ok(found) => refs.extend(found.into_iter().map(|mut r| {
                    r.user = in_account(&r.user, account, region, &registry.region);
                    r
                })),
                Err(e) => errors.push(in_account_error(e, account, Some(region))),
            }
        }
        if errors.is_empty() {
            Ok(refs)
        } else {
            Err(errors)
        }
    }
}

/// Several failures as one: the first's service and operation, every message.
fn combined(mut errors: Vec<InUseError>) -> InUseError {
    let retryable = errors.iter().all(|e| e.retryable);
    let mut first = errors.remove(0);
    for e in errors {
        first.message.push_str(&format!("; and {e}"));
    }
    first.retryable = retryable;
    first
}

#[async_trait::async_trait]
impl InUseSource for AccountsInUse {
    async fn collect(&self, protect: &Protect) -> Result<Vec<InUseRef>, InUseError> {
        let mut errors = Vec::new();
        let mut refs = Vec::new();
        match self.home.collect(protect).await {
            // Home references name this registry: its account is the workload's.
            Ok(home) => refs.extend(home.into_iter().map(|mut r| {
                r.user = format!("{} in {}", r.user, r.image.account);
                r
            })),
            Err(e) => errors.push(e),
        }
        if !self.consumers.accounts.is_empty() && protect.any() {
            match self.registry().await {
                Err(e) => errors.push(e),
                Ok(registry) => {
                    let listings = futures::future::join_all(
                        self.consumers
                            .accounts
                            .iter()
                            .map(|c| self.consumer(c, &registry, protect)),
                    )
                    .await;
                    for listed in listings {
                        match listed {
                            Ok(found) => refs.extend(found),
                            Err(e) => errors.extend(e),
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(combined(errors));
        }
        refs.sort();
        refs.dedup();
        Ok(refs)
    }
}

impl EcrCatalog<SdkEcr> {
    /// ECR from the shared AWS config, with the images in use listed at home and in the
    /// `consumers` accounts, and the repository and registry policies read to find
    /// consumers the listing does not cover; clients as `settings` says. The catalog and
    /// every workload listing share one [`Paging`].
    pub fn with_settings_and_consumers(
        config: &aws_config::SdkConfig,
        settings: &ClientSettings,
        consumers: &ConsumerAccounts,
    ) -> Self {
        let paging = Paging::default();
        let home = Workloads::new(
            SdkEcs::from_sdk_config(config, settings),
            SdkLambda::from_sdk_config(config, settings),
        )
        .with_paging(paging.clone());
        // Lists nothing unless the policy turns `protect.inspector` on.
        let inspector = InspectorInUse::new(SdkInspector::from_sdk_config(config, settings))
            .with_paging(paging.clone());
        EcrCatalog::new(SdkEcr::from_sdk_config(config, settings))
            .with_paging(paging.clone())
            .with_in_use(BothSources(
                AccountsInUse::new(config, settings, paging, home, consumers),
                inspector,
            ))
            .with_repository_policies(SdkRepositoryPolicies::from_sdk_config(
                config,
                settings,
                consumers.account_ids(),
            ))
    }

    /// As [`Self::with_settings_and_consumers`] with the default client settings.
    pub fn from_sdk_config_with_consumers(
        config: &aws_config::SdkConfig,
        consumers: &ConsumerAccounts,
    ) -> Self {
        Self::with_settings_and_consumers(config, &ClientSettings::default(), consumers)
    }

    /// As [`Self::with_settings_and_consumers`] with the client settings of the
    /// environment ([`ClientSettings::from_env`]): what the janitor uses.
    pub fn from_sdk_config_env_and_consumers(
        config: &aws_config::SdkConfig,
        consumers: &ConsumerAccounts,
    ) -> Result<Self, ClientSettingsError> {
        Ok(Self::with_settings_and_consumers(
            config,
            &ClientSettings::from_env()?,
            consumers,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(a: &str, regions: &[&str]) -> ConsumerAccount {
        ConsumerAccount {
            account: a.into(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn the_external_id_is_checked_as_sts_takes_it() {
        let with = |raw: &str| ConsumerAccounts::default().with_external_id(raw);
        assert_eq!(with("").unwrap().external_id, None);
        assert_eq!(with("  ").unwrap().external_id, None);
        assert_eq!(
            with(" org-7f3a:afterpush ").unwrap().external_id.as_deref(),
            Some("org-7f3a:afterpush")
        );
        for bad in ["x", "has space", "quote\"", &"a".repeat(1225)] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.name, IN_USE_READER_EXTERNAL_ID, "{bad}");
        }
    }

    #[test]
    fn parses_accounts_with_their_regions() {
        let c = ConsumerAccounts::parse(
            " 222222222222:eu-west-1, us-east-1,333333333333,444444444444:us-gov-west-1",
            "",
        )
        .unwrap();
        assert_eq!(
            c.accounts,
            [
                account("222222222222", &["eu-west-1", "us-east-1"]),
                account("333333333333", &[]),
                account("444444444444", &["us-gov-west-1"]),
            ]
        );
        assert_eq!(c.role_name, DEFAULT_READER_ROLE);
        assert_eq!(
            ConsumerAccounts::parse("", " ").unwrap(),
            ConsumerAccounts::default()
        );
        assert_eq!(
            ConsumerAccounts::parse("222222222222", "reader")
                .unwrap()
                .role_name,
            "reader"
        );
        // The same account twice: one entry, regions merged.
        let c =
            ConsumerAccounts::parse("222222222222:eu-west-1,222222222222:us-east-1", "").unwrap();
        assert_eq!(
            c.accounts,
            [account("222222222222", &["eu-west-1", "us-east-1"])]
        );
    }

    #[test]
    fn bad_entries_name_the_variable_and_the_entry() {
        for (accounts, role, var, needle) in [
            ("22222222222", "", CONSUMER_ACCOUNTS, "\"22222222222\""),
            ("222222222222:mars-1", "", CONSUMER_ACCOUNTS, "mars-1"),
            ("eu-west-1", "", CONSUMER_ACCOUNTS, "must follow"),
            (
                "333333333333,eu-west-1",
                "",
                CONSUMER_ACCOUNTS,
                "must follow",
            ),
            ("abc:eu-west-1", "", CONSUMER_ACCOUNTS, "12-digit"),
            (
                "222222222222",
                "team/reader",
                IN_USE_READER_ROLE,
                "role name",
            ),
        ] {
            let err = ConsumerAccounts::parse(accounts, role).unwrap_err();
            assert_eq!(err.name, var, "{accounts} {role}");
            let text = err.to_string();
            assert!(text.contains(var) && text.contains(needle), "{text}");
        }
    }

    #[test]
    fn regions() {
        for r in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-5",
        ] {
            assert!(is_region_name(r), "{r}");
        }
        for r in [
            "us-east",
            "useast1",
            "us-east-0",
            "US-EAST-1",
            "u-east-1",
            "us--1",
        ] {
            assert!(!is_region_name(r), "{r}");
        }
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("eu-west-1"), "aws");
    }
}
