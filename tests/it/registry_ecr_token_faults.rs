//! The registry's ECR token client against moto behind a proxy whose
//! GetAuthorizationToken never answers (tests/support/moto_fault_proxy.rs), which moto
//! cannot do: the client built by `aws_clients::ClientSettings` times out, so the
//! registry call fails with an authentication error instead of waiting for ever.

use crate::support;

use afterpush::aws_clients::ClientSettings;
use afterpush::registry::distribution::auth::CredentialSource;
use afterpush::registry::ecr::EcrTokenProvider;
use afterpush::registry::RegistryError;
use std::time::Duration;
use support::moto_fault_proxy::{Fault, MotoFaultProxy, Operation};

/// Issue 21 item 8: the ECR token client has the operation and attempt timeouts.
#[tokio::test]
async fn a_token_request_that_never_answers_ends_in_a_timeout_error() {
    let moto = support::TestMoto::start();
    let proxy = MotoFaultProxy::start(moto.port);
    proxy.always(
        Operation::Target("GetAuthorizationToken"),
        Fault::NeverAnswer,
    );
    let short = ClientSettings {
        max_attempts: 1,
        operation_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(2),
    };
    let provider = EcrTokenProvider::new(
        &support::TestMoto::sdk_config_at(&proxy.endpoint()).await,
        &short,
        Some("123456789012".into()),
    );
    let err = provider.credentials().await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::Auth { message, .. } if message.contains("GetAuthorizationToken") && message.contains("timeout")),
        "{err}"
    );
    assert_eq!(proxy.calls_to("GetAuthorizationToken"), 1);
}
