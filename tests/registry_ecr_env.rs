//! The production wiring for ECR, configured only through the environment: an ECR host
//! in the reference selects ECR auth automatically, aws-config follows
//! `AWS_ENDPOINT_URL` to moto for `GetAuthorizationToken`, and
//! `AFTERPUSH_REGISTRY_ENDPOINT` sends the registry HTTP to the real local registry
//! (through the recording proxy, which demands the ECR Basic credentials).
//!
//! Alone in its own test binary: it sets process environment variables.

mod support;

use afterpush::registry::distribution::{DistributionRepository, RegistrySettings};
use afterpush::registry::{push_bytes, read_blob_as_stored, Repository};
use base64::Engine as _;
use bytes::Bytes;
use support::fault_proxy::FaultProxy;

#[tokio::test]
async fn ecr_host_selects_ecr_auth_from_the_environment() {
    let moto = support::TestMoto::start();
    let registry = support::TestRegistry::start();
    let proxy = FaultProxy::start(registry.port);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AWS:123456789012-auth-token")
    );
    proxy.require_authorization(&expected, r#"Basic realm="ecr""#);
    for (k, v) in [
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        (
            "AFTERPUSH_REGISTRY_ENDPOINT",
            format!("http://{}", proxy.host()),
        ),
    ] {
        std::env::set_var(k, v);
    }
    let settings = RegistrySettings::from_env().unwrap();
    let repo = DistributionRepository::connect(
        &settings,
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "app",
    )
    .unwrap();
    let digest = push_bytes(&repo, Bytes::from_static(b"hello ecr"))
        .await
        .unwrap();
    assert_eq!(
        read_blob_as_stored(&repo, &digest).await.unwrap(),
        &b"hello ecr"[..]
    );
    let seen = proxy.seen();
    assert!(seen.len() >= 4, "{seen:#?}");
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(expected.as_str())),
        "{seen:#?}"
    );
    assert_eq!(
        repo.location(),
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/app"
    );
}
