//! The Lambda images in use: for every image-packaged function, the image of `$LATEST`,
//! of each published version, named by the aliases pointing at it.
//!
//! ListFunctions reports the package type but not the image: GetFunction does
//! (`Code.ResolvedImageUri`, the digest the function was deployed from; `Code.ImageUri`
//! as written). The calls go through the [`LambdaApi`] port ([`SdkLambda`] in production);
//! ListFunctions, ListVersionsByFunction and ListAliases return at most 50 per page.

use crate::aws_clients::ClientSettings;
use crate::catalog::paginate::Paging;
use crate::catalog::workloads::{InUseError, InUseRef, RegistryScope};
use std::collections::BTreeMap;

/// ListFunctions, ListVersionsByFunction and ListAliases return at most 50 per page.
pub const LIST_PAGE: i32 = 50;

/// A page of results and the marker of the next one.
pub type Page<T> = (Vec<T>, Option<String>);

/// A function as ListFunctions reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LambdaFunction {
    /// The function's name.
    pub name: String,
    /// The function's ARN (its account and region decide which registry counts as its own).
    pub arn: String,
    /// `Image` or `Zip`.
    pub package_type: Option<String>,
}

/// An alias and the version it points at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LambdaAlias {
    /// The alias's name.
    pub name: String,
    /// The version it points at.
    pub version: String,
}

/// GetFunction's `Code` for an image function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LambdaImage {
    /// `ImageUri`: the image as the function was given it (maybe by tag).
    pub image_uri: Option<String>,
    /// `ResolvedImageUri`: the digest the version runs, when Lambda reports it.
    pub resolved_image_uri: Option<String>,
}

/// The Lambda calls the in-use listing makes.
#[async_trait::async_trait]
pub trait LambdaApi: Send + Sync {
    /// One page of the account's functions in this region (ListFunctions).
    async fn list_functions(
        &self,
        marker: Option<String>,
    ) -> Result<Page<LambdaFunction>, InUseError>;
    /// Version names: `$LATEST`, `1`, `2`, …
    async fn list_versions(
        &self,
        function: &str,
        marker: Option<String>,
    ) -> Result<Page<String>, InUseError>;
    /// One page of the aliases of `function` (ListAliases).
    async fn list_aliases(
        &self,
        function: &str,
        marker: Option<String>,
    ) -> Result<Page<LambdaAlias>, InUseError>;
    /// The image code of one version of `function` (GetFunction with `qualifier`).
    async fn get_function_image(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<LambdaImage, InUseError>;
}

/// Every image reference an image-packaged function holds, to its own account's registry.
pub async fn images_in_use<A: LambdaApi + ?Sized>(
    api: &A,
    paging: &Paging,
) -> Result<Vec<InUseRef>, InUseError> {
    images_in_use_of(api, paging, RegistryScope::Own).await
}

/// Every image reference an image-packaged function holds, to the registry `scope` names.
pub async fn images_in_use_of<A: LambdaApi + ?Sized>(
    api: &A,
    paging: &Paging,
    scope: RegistryScope<'_>,
) -> Result<Vec<InUseRef>, InUseError> {
    let mut refs = Vec::new();
    let functions = paging
        .all("Lambda", "ListFunctions", |m| api.list_functions(m))
        .await?;
    for f in functions
        .iter()
        .filter(|f| f.package_type.as_deref() == Some("Image"))
    {
        let versions = paging
            .all("Lambda", "ListVersionsByFunction", |m| {
                api.list_versions(&f.name, m)
            })
            .await?;
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in paging
            .all("Lambda", "ListAliases", |m| api.list_aliases(&f.name, m))
            .await?
        {
            aliases.entry(a.version).or_default().push(a.name);
        }
        for version in &versions {
            let code = paging
                .call(
                    "Lambda",
                    "GetFunction",
                    0,
                    api.get_function_image(&f.name, version),
                )
                .await?;
            // The resolved digest is what the version runs; the written URI (maybe a
            // tag) only when Lambda did not report it.
            let Some(uri) = code.resolved_image_uri.or(code.image_uri) else {
                continue;
            };
            let own = scope
                .reference(&uri, &f.arn)
                .map_err(|message| InUseError {
                    service: "Lambda",
                    operation: "image reference",
                    message,
                    retryable: false,
                })?;
            let Some(image) = own else {
                continue;
            };
            let mut users = vec![if version == "$LATEST" {
                format!("lambda fn {}", f.name)
            } else {
                format!("lambda fn {}:{version}", f.name)
            }];
            for alias in aliases.get(version).into_iter().flatten() {
                users.push(format!("lambda fn {}:{alias}", f.name));
            }
            for user in users {
                refs.push(InUseRef {
                    image: image.clone(),
                    user,
                });
            }
        }
    }
    Ok(refs)
}

/// [`LambdaApi`] over aws-sdk-lambda.
#[derive(Clone)]
pub struct SdkLambda {
    client: aws_sdk_lambda::Client,
}

impl SdkLambda {
    /// The [`LambdaApi`] of a Lambda client.
    pub fn new(client: aws_sdk_lambda::Client) -> Self {
        Self { client }
    }

    /// From the shared config, with the catalog's retries and timeouts.
    pub fn from_sdk_config(config: &aws_config::SdkConfig, settings: &ClientSettings) -> Self {
        Self::new(settings.lambda(config))
    }
}

#[async_trait::async_trait]
impl LambdaApi for SdkLambda {
    async fn list_functions(
        &self,
        marker: Option<String>,
    ) -> Result<Page<LambdaFunction>, InUseError> {
        let out = self
            .client
            .list_functions()
            .max_items(LIST_PAGE)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| InUseError::sdk("Lambda", "ListFunctions", e))?;
        Ok((
            out.functions()
                .iter()
                .map(|f| LambdaFunction {
                    name: f.function_name().unwrap_or_default().to_string(),
                    arn: f.function_arn().unwrap_or_default().to_string(),
                    package_type: f.package_type().map(|p| p.as_str().to_string()),
                })
                .collect(),
            out.next_marker().map(str::to_string),
        ))
    }

    async fn list_versions(
        &self,
        function: &str,
        marker: Option<String>,
    ) -> Result<Page<String>, InUseError> {
        let out = self
            .client
            .list_versions_by_function()
            .function_name(function)
            .max_items(LIST_PAGE)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| InUseError::sdk("Lambda", "ListVersionsByFunction", e))?;
        Ok((
            out.versions()
                .iter()
                .filter_map(|v| v.version().map(str::to_string))
                .collect(),
            out.next_marker().map(str::to_string),
        ))
    }

    async fn list_aliases(
        &self,
        function: &str,
        marker: Option<String>,
    ) -> Result<Page<LambdaAlias>, InUseError> {
        let out = self
            .client
            .list_aliases()
            .function_name(function)
            .max_items(LIST_PAGE)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| InUseError::sdk("Lambda", "ListAliases", e))?;
        Ok((
            out.aliases()
                .iter()
                .filter_map(|a| {
                    Some(LambdaAlias {
                        name: a.name()?.to_string(),
                        version: a.function_version()?.to_string(),
                    })
                })
                .collect(),
            out.next_marker().map(str::to_string),
        ))
    }

    async fn get_function_image(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<LambdaImage, InUseError> {
        let out = self
            .client
            .get_function()
            .function_name(function)
            .qualifier(qualifier)
            .send()
            .await
            .map_err(|e| InUseError::sdk("Lambda", "GetFunction", e))?;
        let code = out.code();
        Ok(LambdaImage {
            image_uri: code.and_then(|c| c.image_uri()).map(str::to_string),
            resolved_image_uri: code
                .and_then(|c| c.resolved_image_uri())
                .map(str::to_string),
        })
    }
}
