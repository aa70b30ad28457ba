//! Other accounts on one `moto_server`: IAM roles created in an account by moto's
//! `x-moto-account-id` header (setup only), and SDK configs for an account reached the
//! way the janitor reaches it, through `sts:AssumeRole` (moto keeps each assumed account's
//! resources apart).

use super::TestMoto;

/// Creates IAM role `name` in `account` (trusting anyone: moto evaluates no trust
/// policy) and returns its ARN.
pub async fn iam_role_in(moto: &TestMoto, account: &str, name: &str) -> String {
    iam_role_with_trust(moto, account, name, "{}").await
}

/// Creates IAM role `name` in `account` whose trust policy requires `external_id`, as
/// infra/in-use-reader.yaml writes it (the launcher's correction 10 checks it), and
/// returns its ARN.
pub async fn iam_role_requiring_external_id(
    moto: &TestMoto,
    account: &str,
    name: &str,
    external_id: &str,
) -> String {
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
        }],
    });
    iam_role_with_trust(moto, account, name, &trust.to_string()).await
}

async fn iam_role_with_trust(moto: &TestMoto, account: &str, name: &str, trust: &str) -> String {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "CreateRole")
        .append_pair("Version", "2010-05-08")
        .append_pair("RoleName", name)
        .append_pair("AssumeRolePolicyDocument", trust)
        .finish();
    let response = reqwest::Client::new()
        .post(moto.endpoint())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("x-moto-account-id", account)
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(body)
        .send()
        .await
        .expect("CreateRole");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "CreateRole {name} in {account}: {status} {text}"
    );
    format!("arn:aws:iam::{account}:role/{name}")
}

/// The SDK config of `role_arn`'s account, through `sts:AssumeRole` with the test
/// credentials, in `region`.
pub async fn assumed_config(
    moto: &TestMoto,
    role_arn: &str,
    region: &str,
) -> aws_config::SdkConfig {
    let home = moto.sdk_config().await;
    let sts = aws_sdk_sts::Client::new(&home);
    let out = sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("afterpush-tests")
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "AssumeRole {role_arn}: {}",
                aws_sdk_sts::error::DisplayErrorContext(e)
            )
        });
    let c = out.credentials().expect("credentials");
    let credentials = aws_sdk_ecs::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "afterpush-tests-assumed",
    );
    home.to_builder()
        .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
            credentials,
        ))
        .region(aws_config::Region::new(region.to_string()))
        .build()
}

/// Sets ECR `repository`'s policy to `document`.
pub async fn set_repository_policy(ecr: &aws_sdk_ecr::Client, repository: &str, document: &str) {
    ecr.set_repository_policy()
        .repository_name(repository)
        .policy_text(document)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "SetRepositoryPolicy {repository}: {}",
                aws_sdk_ecr::error::DisplayErrorContext(e)
            )
        });
}
