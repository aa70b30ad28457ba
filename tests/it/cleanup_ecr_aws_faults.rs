//! The ECR catalog and its workload listings against moto behind a proxy that makes
//! one operation misbehave as moto cannot (tests/support/moto_fault_proxy.rs): a page
//! token handed back again, a call that never answers, manifests left out of a
//! BatchGetImage answer, one BatchDeleteImage of several failing. Each must end in an
//! error that blocks deletions, or a report that counts every deletion made.

use crate::support;

use afterpush::aws_clients::ClientSettings;
use afterpush::catalog::ecr::EcrCatalog;
use afterpush::catalog::paginate::PagingError;
use afterpush::catalog::{Catalog, CatalogError};
use afterpush::cleanup::in_use::Protect;
use afterpush::cleanup::policy::Policy;
use afterpush::cleanup::{sweep, RunOptions};
use afterpush::deadline::Deadline;
use afterpush::oci::{media, Sha256Digest};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};
use support::moto_fault_proxy::{Fault, MotoFaultProxy, Operation};

const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

const EXPIRE_UNTAGGED: &str = r#"
repositories: ["app"]
grace_period: 0s
protect: {ecs: false, lambda: false}
rules:
  - {name: untagged, select: {tagged: false}, action: expire}
"#;

fn apply() -> RunOptions {
    RunOptions {
        dry_run: false,
        ..RunOptions::dry_run_now()
    }
}

/// One attempt per call: a failure injected once is the call's failure.
fn one_attempt() -> ClientSettings {
    ClientSettings {
        max_attempts: 1,
        ..ClientSettings::default()
    }
}

/// An ECR repository `app` with one tagged image, an ECS cluster running a task of it,
/// and an image-packaged Lambda function with a version and an alias.
async fn seed(moto: &support::TestMoto) {
    let (ecr, ecs, lambda) = (moto.ecr().await, moto.ecs().await, moto.lambda().await);
    support::create_ecr_repository(&ecr, "app").await;
    support::put_seeded_manifest(&ecr, "app", "one", "v1").await;
    support::create_ecs_cluster(&ecs, "web").await;
    let image = format!("{HOST}/app:v1");
    support::register_task_definition(&ecs, "web", &[("app", &image)]).await;
    support::run_fargate_task(&ecs, "web", "web").await;
    let role = moto.iam_role("fn").await;
    support::create_image_function(&lambda, &role, "fn", &image).await;
    support::publish_function_version(&lambda, "fn").await;
    lambda
        .create_alias()
        .function_name("fn")
        .name("live")
        .function_version("1")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn every_listing_stops_on_a_repeated_token_with_an_error() {
    let moto = support::TestMoto::start();
    seed(&moto).await;
    let proxy = MotoFaultProxy::start(moto.port);
    let config = support::TestMoto::sdk_config_at(&proxy.endpoint()).await;
    let catalog = EcrCatalog::with_settings(&config, &one_attempt());
    let workloads = catalog.in_use().unwrap();
    let protect = Protect::default();
    let ecs_next = Fault::RepeatToken { field: "nextToken" };
    let lambda_next = Fault::RepeatToken {
        field: "NextMarker",
    };
    for (name, op, fault) in [
        ("ListClusters", Operation::Target("ListClusters"), &ecs_next),
        ("ListServices", Operation::Target("ListServices"), &ecs_next),
        ("ListTasks", Operation::Target("ListTasks"), &ecs_next),
        (
            "ListTaskDefinitions",
            Operation::Target("ListTaskDefinitions"),
            &ecs_next,
        ),
        ("ListFunctions", Operation::list_functions(), &lambda_next),
        (
            "ListVersionsByFunction",
            Operation::list_versions(),
            &lambda_next,
        ),
        ("ListAliases", Operation::list_aliases(), &lambda_next),
    ] {
        proxy.clear();
        proxy.always(op, fault.clone());
        let err = match workloads.collect(&protect).await {
            Ok(refs) => panic!("{name}: listed {} references, no error", refs.len()),
            Err(e) => e,
        };
        assert_eq!(err.operation, name, "{err}");
        assert!(err.message.contains("a second time"), "{name}: {err}");
        assert!(!err.retryable, "{name}: {err}");
    }
    for (name, op) in [
        ("DescribeRepositories", "DescribeRepositories"),
        ("DescribeImages", "DescribeImages"),
    ] {
        proxy.clear();
        proxy.always(Operation::Target(op), ecs_next.clone());
        let before = proxy.calls_to(op);
        let err = if name == "DescribeRepositories" {
            catalog.list_repositories().await.unwrap_err()
        } else {
            catalog.list_images("app").await.map(|_| ()).unwrap_err()
        };
        assert!(
            matches!(
                &err,
                CatalogError::Paging {
                    error: PagingError::RepeatedToken { operation, page: 2, .. },
                    ..
                } if *operation == name
            ),
            "{name}: {err:?}"
        );
        assert_eq!(
            proxy.calls_to(op) - before,
            2,
            "{name}: the first page and the repeat"
        );
    }
}

#[tokio::test]
async fn a_repeated_token_blocks_every_deletion_of_the_run() {
    let moto = support::TestMoto::start();
    seed(&moto).await;
    let ecr = moto.ecr().await;
    // An untagged image the policy expires.
    let old = support::put_ecr_manifest(
        &ecr,
        "app",
        &String::from_utf8(afterpush::catalog::ecr::seeded_manifest(
            "old",
            media::OCI_CONFIG,
            "",
        ))
        .unwrap(),
        media::OCI_MANIFEST,
        None,
    )
    .await;
    let proxy = MotoFaultProxy::start(moto.port);
    let config = support::TestMoto::sdk_config_at(&proxy.endpoint()).await;
    let catalog = EcrCatalog::with_settings(&config, &one_attempt());
    let protected =
        Policy::parse(&EXPIRE_UNTAGGED.replace("protect: {ecs: false, lambda: false}\n", ""))
            .unwrap();
    proxy.always(
        Operation::Target("ListTasks"),
        Fault::RepeatToken { field: "nextToken" },
    );
    let report = sweep(&catalog, None, &protected, &apply()).await.unwrap();
    let blocked = report.blocked.as_ref().expect("the run is blocked");
    assert!(blocked.reason.contains("ListTasks"), "{}", report.to_json());
    assert_eq!(report.deleted, 0);
    proxy.clear();
    proxy.always(
        Operation::Target("DescribeImages"),
        Fault::RepeatToken { field: "nextToken" },
    );
    let unprotected = Policy::parse(EXPIRE_UNTAGGED).unwrap();
    let report = sweep(&catalog, None, &unprotected, &apply()).await.unwrap();
    assert_eq!(report.deleted, 0, "{}", report.to_json());
    assert!(
        report.errors.iter().any(|e| e.contains("DescribeImages")),
        "{}",
        report.to_json()
    );
    assert!(support::ecr_image_digests(&ecr, "app")
        .await
        .contains(&old.to_string()));
}

/// A ListTasks that never answers: the attempt timeout ends it; with longer client
/// timeouts, the invocation deadline does.
#[tokio::test]
async fn a_call_that_never_answers_ends_in_a_timeout_error() {
    let moto = support::TestMoto::start();
    seed(&moto).await;
    let proxy = MotoFaultProxy::start(moto.port);
    proxy.always(Operation::Target("ListTasks"), Fault::NeverAnswer);
    let config = support::TestMoto::sdk_config_at(&proxy.endpoint()).await;
    let short = ClientSettings {
        max_attempts: 1,
        operation_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(2),
    };
    let catalog = EcrCatalog::with_settings(&config, &short);
    let err = catalog
        .in_use()
        .unwrap()
        .collect(&Protect::default())
        .await
        .unwrap_err();
    assert_eq!(err.operation, "ListTasks", "{err}");
    assert!(err.retryable, "a timeout may pass: {err}");

    let long = ClientSettings {
        max_attempts: 1,
        operation_timeout: Duration::from_secs(3600),
        attempt_timeout: Duration::from_secs(3600),
    };
    let catalog = EcrCatalog::with_settings(&config, &long);
    catalog.set_deadline(Some(Deadline::new(
        SystemTime::now() + Duration::from_secs(3),
        Duration::ZERO,
    )));
    let err = catalog
        .in_use()
        .unwrap()
        .collect(&Protect::default())
        .await
        .unwrap_err();
    assert_eq!(err.operation, "ListTasks", "{err}");
    assert!(err.message.contains("deadline"), "{err}");
}

/// BatchGetImage answers without the index's manifest and without a failure for it:
/// the index's children are unknown, so nothing of the repository is deleted, and the
/// report says why.
#[tokio::test]
async fn a_manifest_left_out_of_batch_get_image_blocks_the_repository() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let body = String::from_utf8(afterpush::catalog::ecr::seeded_manifest(
            arch,
            media::OCI_CONFIG,
            "",
        ))
        .unwrap();
        children
            .push(support::put_ecr_manifest(&ecr, "app", &body, media::OCI_MANIFEST, None).await);
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
        media::OCI_INDEX,
        children
            .iter()
            .map(|d| format!(
                r#"{{"mediaType":"{}","digest":"{d}","size":2}}"#,
                media::OCI_MANIFEST
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let index = support::put_ecr_manifest(&ecr, "app", &index, media::OCI_INDEX, Some("v1")).await;
    let proxy = MotoFaultProxy::start(moto.port);
    proxy.always(Operation::Target("BatchGetImage"), Fault::DropImages);
    let config = support::TestMoto::sdk_config_at(&proxy.endpoint()).await;
    let catalog = EcrCatalog::with_settings(&config, &one_attempt());
    let report = sweep(
        &catalog,
        None,
        &Policy::parse(EXPIRE_UNTAGGED).unwrap(),
        &apply(),
    )
    .await
    .unwrap();
    assert_eq!(report.deleted, 0, "{}", report.to_json());
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("BatchGetImage returned neither the manifest nor a failure")),
        "{}",
        report.to_json()
    );
    let left = support::ecr_image_digests(&ecr, "app").await;
    let all: BTreeSet<String> = children
        .iter()
        .chain([&index])
        .map(Sha256Digest::to_string)
        .collect();
    assert_eq!(left, all);
}

/// 150 deletions take two BatchDeleteImage calls; the second fails. The 100 the first
/// deleted are reported deleted, the other 50 failed.
#[tokio::test]
async fn a_failed_delete_batch_keeps_what_earlier_batches_deleted() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    let mut digests = Vec::new();
    for i in 0..150 {
        let body = String::from_utf8(afterpush::catalog::ecr::seeded_manifest(
            &format!("img {i}"),
            media::OCI_CONFIG,
            "",
        ))
        .unwrap();
        // Tagged: moto leaves untagged images out of BatchDeleteImage's `imageIds`.
        let tag = format!("t{i}");
        digests.push(
            support::put_ecr_manifest(&ecr, "app", &body, media::OCI_MANIFEST, Some(&tag)).await,
        );
    }
    let proxy = MotoFaultProxy::start(moto.port);
    proxy.after(
        Operation::Target("BatchDeleteImage"),
        Fault::Error {
            status: 500,
            code: "ServerException",
        },
        1,
        1,
    );
    let config = support::TestMoto::sdk_config_at(&proxy.endpoint()).await;
    let catalog = EcrCatalog::with_settings(&config, &one_attempt());
    let outcome = catalog.delete_images("app", &digests).await.unwrap();
    assert_eq!(outcome.deleted.len(), 100);
    assert_eq!(outcome.failed.len(), 50);
    assert!(outcome.failed.iter().all(|f| f.code == "CallFailed"));
    assert_eq!(support::ecr_image_digests(&ecr, "app").await.len(), 50);
}
