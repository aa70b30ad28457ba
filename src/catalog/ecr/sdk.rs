//! [`EcrApi`] over aws-sdk-ecr: the production adapter of the ECR catalog.

use super::DESCRIBE_PAGE;
use super::{EcrApi, EcrApiError, EcrCatalog, FetchedManifest, ImageDetail, ImageFailure};
use crate::aws_clients::{ClientSettings, ClientSettingsError};
use crate::catalog::aws_error::SdkFailure;
use crate::oci::media;
use chrono::{DateTime, Utc};

/// [`EcrApi`] over aws-sdk-ecr.
#[derive(Clone)]
pub struct SdkEcr {
    client: aws_sdk_ecr::Client,
}

impl SdkEcr {
    /// An adapter over a client as it is built (its retry config is the only retry
    /// layer of the calls: the catalog does not call again).
    pub fn new(client: aws_sdk_ecr::Client) -> Self {
        Self { client }
    }

    /// A client from the shared config with the catalog's retries and timeouts
    /// ([`ClientSettings`]): BatchDeleteImage and DescribeImages are throttled under
    /// sweeps of many repositories, and the SDK's retry is the one retry layer of these
    /// calls (it backs off with jitter and shares one retry quota per client, which a
    /// loop of ours around it would multiply).
    pub fn from_sdk_config(config: &aws_config::SdkConfig, settings: &ClientSettings) -> Self {
        Self::new(settings.ecr(config))
    }
}

impl SdkEcr {
    /// GetLifecyclePolicy: the repository's lifecycle policy text (`lifecyclePolicyText`),
    /// `None` when it has none.
    pub async fn lifecycle_policy_text(
        &self,
        repository: &str,
    ) -> Result<Option<String>, EcrApiError> {
        match self
            .client
            .get_lifecycle_policy()
            .repository_name(repository)
            .send()
            .await
        {
            Ok(out) => Ok(out.lifecycle_policy_text().map(str::to_string)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_lifecycle_policy_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }
}

fn smithy_time(t: &aws_sdk_ecr::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn sdk_error<E>(err: aws_sdk_ecr::error::SdkError<E>) -> EcrApiError
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata
        + aws_config::retry::ProvideErrorKind
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    let SdkFailure { kind, message } = SdkFailure::of(&err);
    EcrApiError { kind, message }
}

fn sdk_failures(failures: &[aws_sdk_ecr::types::ImageFailure]) -> Vec<ImageFailure> {
    failures
        .iter()
        .map(|f| ImageFailure {
            digest: f
                .image_id()
                .and_then(|i| i.image_digest())
                .unwrap_or_default()
                .to_string(),
            code: f
                .failure_code()
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            message: f.failure_reason().unwrap_or_default().to_string(),
        })
        .collect()
}

fn image_ids(digests: &[String]) -> Vec<aws_sdk_ecr::types::ImageIdentifier> {
    digests
        .iter()
        .map(|d| {
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(d)
                .build()
        })
        .collect()
}

#[async_trait::async_trait]
impl EcrApi for SdkEcr {
    async fn describe_repositories(
        &self,
        next_token: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), EcrApiError> {
        let out = self
            .client
            .describe_repositories()
            .max_results(DESCRIBE_PAGE)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(sdk_error)?;
        let names = out
            .repositories()
            .iter()
            .filter_map(|r| r.repository_name().map(str::to_string))
            .collect();
        Ok((names, out.next_token().map(str::to_string)))
    }

    async fn describe_images(
        &self,
        repository: &str,
        next_token: Option<String>,
    ) -> Result<(Vec<ImageDetail>, Option<String>), EcrApiError> {
        let out = self
            .client
            .describe_images()
            .repository_name(repository)
            .max_results(DESCRIBE_PAGE)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(sdk_error)?;
        let details = out
            .image_details()
            .iter()
            .map(|d| ImageDetail {
                digest: d.image_digest().unwrap_or_default().to_string(),
                tags: d.image_tags().to_vec(),
                pushed_at: d.image_pushed_at().and_then(smithy_time),
                last_pulled_at: d.last_recorded_pull_time().and_then(smithy_time),
                manifest_media_type: d.image_manifest_media_type().map(str::to_string),
                artifact_media_type: d.artifact_media_type().map(str::to_string),
                subject: d.subject_manifest_digest().map(str::to_string),
                size_bytes: d.image_size_in_bytes().unwrap_or(0).max(0) as u64,
            })
            .collect();
        Ok((details, out.next_token().map(str::to_string)))
    }

    async fn batch_get_image(
        &self,
        repository: &str,
        digests: &[String],
    ) -> Result<(Vec<FetchedManifest>, Vec<ImageFailure>), EcrApiError> {
        let mut call = self
            .client
            .batch_get_image()
            .repository_name(repository)
            .set_image_ids(Some(image_ids(digests)));
        // Without every type ECR may convert a manifest (changing its digest) or refuse it.
        for mt in media::MANIFEST_TYPES {
            call = call.accepted_media_types(mt);
        }
        let out = call.send().await.map_err(sdk_error)?;
        let manifests = out
            .images()
            .iter()
            .filter_map(|img| {
                Some(FetchedManifest {
                    digest: img.image_id()?.image_digest()?.to_string(),
                    bytes: img.image_manifest()?.as_bytes().to_vec(),
                    media_type: img.image_manifest_media_type().map(str::to_string),
                })
            })
            .collect();
        Ok((manifests, sdk_failures(out.failures())))
    }

    async fn batch_delete_image(
        &self,
        repository: &str,
        digests: &[String],
    ) -> Result<(Vec<String>, Vec<ImageFailure>), EcrApiError> {
        let out = self
            .client
            .batch_delete_image()
            .repository_name(repository)
            .set_image_ids(Some(image_ids(digests)))
            .send()
            .await
            .map_err(sdk_error)?;
        let deleted = out
            .image_ids()
            .iter()
            .filter_map(|i| i.image_digest().map(str::to_string))
            .collect();
        Ok((deleted, sdk_failures(out.failures())))
    }
}

impl EcrCatalog<SdkEcr> {
    /// From the shared AWS config (`AWS_ENDPOINT_URL` honoured by aws-config), with the
    /// same account's ECS and Lambda as the source of images in use, and the clients'
    /// default retries and timeouts.
    pub fn from_sdk_config(config: &aws_config::SdkConfig) -> Self {
        Self::with_settings(config, &ClientSettings::default())
    }

    /// As [`Self::from_sdk_config`], with the clients' timeouts from the environment
    /// ([`ClientSettings::from_env`]): what the janitor and the CLI use.
    pub fn from_sdk_config_and_env(
        config: &aws_config::SdkConfig,
    ) -> Result<Self, ClientSettingsError> {
        Ok(Self::with_settings(config, &ClientSettings::from_env()?))
    }

    /// As [`Self::from_sdk_config`], with `settings`. The catalog and its workload
    /// listings share one `Paging`: the deadline a run sets stops both.
    pub fn with_settings(config: &aws_config::SdkConfig, settings: &ClientSettings) -> Self {
        Self::with_settings_and_consumers(
            config,
            settings,
            &crate::catalog::consumer_accounts::ConsumerAccounts::default(),
        )
    }
}
