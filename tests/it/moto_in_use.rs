//! The launcher's corrections of moto's ECS, Lambda, ECR and STS models (see
//! tests/support/moto_launcher.py), asserted through the AWS SDK: what in-use protection
//! reads must be what AWS answers.

use crate::support;

use afterpush::oci::Sha256Digest;

const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

async fn put(ecr: &aws_sdk_ecr::Client, seed: &str, tag: &str) -> Sha256Digest {
    support::put_seeded_manifest(ecr, "app", seed, tag).await
}

#[tokio::test]
async fn ecs_tasks_report_every_container_with_the_digest_it_pulled() {
    let moto = support::TestMoto::start();
    let (ecr, ecs) = (moto.ecr().await, moto.ecs().await);
    support::create_ecr_repository(&ecr, "app").await;
    let first = put(&ecr, "one", "v1").await;
    support::create_ecs_cluster(&ecs, "web").await;
    let app = format!("{HOST}/app:v1");
    support::register_task_definition(&ecs, "web", &[("app", &app), ("proxy", "nginx:latest")])
        .await;
    let task = support::run_fargate_task(&ecs, "web", "web").await;
    // The tag moves on; the running task still runs what it pulled.
    let second = put(&ecr, "two", "v1").await;
    assert_ne!(first, second);
    let described = ecs
        .describe_tasks()
        .cluster("web")
        .tasks(&task)
        .send()
        .await
        .unwrap();
    let containers: Vec<(&str, Option<&str>)> = described.tasks()[0]
        .containers()
        .iter()
        .map(|c| (c.name().unwrap(), c.image_digest()))
        .collect();
    let first = first.to_string();
    assert_eq!(
        containers,
        [("app", Some(first.as_str())), ("proxy", None)],
        "one container per definition; ECR images carry the digest pulled at start"
    );
}

#[tokio::test]
async fn ecr_keeps_the_image_a_moved_tag_left_untagged() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    let first = put(&ecr, "one", "v1").await;
    let second = put(&ecr, "two", "v1").await;
    let listed = ecr
        .describe_images()
        .repository_name("app")
        .send()
        .await
        .unwrap();
    let mut images: Vec<(String, Vec<String>)> = listed
        .image_details()
        .iter()
        .map(|d| {
            (
                d.image_digest().unwrap().to_string(),
                d.image_tags().to_vec(),
            )
        })
        .collect();
    images.sort();
    let mut expected = vec![
        (first.to_string(), vec![]),
        (second.to_string(), vec!["v1".to_string()]),
    ];
    expected.sort();
    assert_eq!(images, expected);
}

#[tokio::test]
async fn lambda_versions_keep_their_image_and_resolve_digests() {
    let moto = support::TestMoto::start();
    let (ecr, lambda) = (moto.ecr().await, moto.lambda().await);
    support::create_ecr_repository(&ecr, "app").await;
    let first = put(&ecr, "one", "fn-1").await;
    let second = put(&ecr, "two", "fn-2").await;
    let role = moto.iam_role("resize").await;
    support::create_image_function(&lambda, &role, "resize", &format!("{HOST}/app:fn-1")).await;
    support::publish_function_version(&lambda, "resize").await;
    // $LATEST moves to the second image, by digest.
    support::update_function_image(&lambda, "resize", &format!("{HOST}/app@{second}")).await;
    let code = |q: &'static str| {
        let lambda = lambda.clone();
        async move {
            let out = lambda
                .get_function()
                .function_name("resize")
                .qualifier(q)
                .send()
                .await
                .unwrap();
            let c = out.code().unwrap();
            (
                c.image_uri().unwrap().to_string(),
                c.resolved_image_uri().unwrap().to_string(),
            )
        }
    };
    assert_eq!(
        code("1").await,
        (format!("{HOST}/app:fn-1"), format!("{HOST}/app@{first}")),
        "a published version keeps its image"
    );
    assert_eq!(
        code("$LATEST").await,
        (
            format!("{HOST}/app@{second}"),
            format!("{HOST}/app@{second}")
        ),
        "an image given by digest resolves to that digest"
    );
}

/// Correction 10: STS refuses a role the target account does not have, as AWS does; a
/// role that exists is assumed, and what its credentials create stays in its account.
#[tokio::test]
async fn sts_refuses_a_role_the_target_account_does_not_have() {
    let moto = support::TestMoto::start();
    let sts = aws_sdk_sts::Client::new(&moto.sdk_config().await);
    let missing = "arn:aws:iam::222222222222:role/afterpush-in-use-reader";
    let err = sts
        .assume_role()
        .role_arn(missing)
        .role_session_name("t")
        .send()
        .await
        .unwrap_err();
    let raw_status = err.raw_response().map(|r| r.status().as_u16());
    let service = err.into_service_error();
    assert_eq!(
        aws_sdk_sts::error::ProvideErrorMetadata::code(&service),
        Some("AccessDenied"),
        "{service:?}"
    );
    assert_eq!(raw_status, Some(403));
    assert!(
        aws_sdk_sts::error::ProvideErrorMetadata::message(&service)
            .is_some_and(|m| m.contains("sts:AssumeRole on resource: ") && m.contains(missing)),
        "{service:?}"
    );

    let role =
        support::moto_accounts::iam_role_in(&moto, "222222222222", "afterpush-in-use-reader").await;
    assert_eq!(role, missing);
    let b = support::moto_accounts::assumed_config(&moto, &role, "us-east-1").await;
    let identity = aws_sdk_sts::Client::new(&b)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(identity.account(), Some("222222222222"));
    let ecs_b = aws_sdk_ecs::Client::new(&b);
    support::create_ecs_cluster(&ecs_b, "web").await;
    let in_b = ecs_b.list_clusters().send().await.unwrap();
    let at_home = moto.ecs().await.list_clusters().send().await.unwrap();
    assert_eq!(
        in_b.cluster_arns(),
        ["arn:aws:ecs:us-east-1:222222222222:cluster/web"]
    );
    assert!(at_home.cluster_arns().is_empty());
}

/// Correction 10, trust policies: a role that requires an `sts:ExternalId` is refused
/// without it or with another, and assumed with it.
#[tokio::test]
async fn sts_refuses_a_role_whose_external_id_is_missing_or_wrong() {
    let moto = support::TestMoto::start();
    let sts = aws_sdk_sts::Client::new(&moto.sdk_config().await);
    let role = support::moto_accounts::iam_role_requiring_external_id(
        &moto,
        "222222222222",
        "afterpush-in-use-reader",
        "org-7f3a",
    )
    .await;
    for external_id in [None, Some("org-0000")] {
        let err = sts
            .assume_role()
            .role_arn(&role)
            .role_session_name("t")
            .set_external_id(external_id.map(str::to_string))
            .send()
            .await
            .unwrap_err();
        let service = err.into_service_error();
        assert_eq!(
            aws_sdk_sts::error::ProvideErrorMetadata::code(&service),
            Some("AccessDenied"),
            "{external_id:?}: {service:?}"
        );
    }
    let assumed = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("t")
        .external_id("org-7f3a")
        .send()
        .await
        .unwrap();
    assert!(assumed.credentials().is_some());
}

/// Correction 11: a function in another account is created from this registry's image,
/// by tag or by digest, and reports the digest it resolved.
#[tokio::test]
async fn lambda_resolves_an_image_of_another_accounts_registry() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    let digest = put(&ecr, "fn", "v1").await;
    let role = support::moto_accounts::iam_role_in(&moto, "333333333333", "reader").await;
    let exec = support::moto_accounts::iam_role_in(&moto, "333333333333", "exec").await;
    let lambda_c = aws_sdk_lambda::Client::new(
        &support::moto_accounts::assumed_config(&moto, &role, "us-east-1").await,
    );
    for (name, uri) in [
        ("by-tag", format!("{HOST}/app:v1")),
        ("by-digest", format!("{HOST}/app@{digest}")),
    ] {
        support::create_image_function(&lambda_c, &exec, name, &uri).await;
        let got = lambda_c
            .get_function()
            .function_name(name)
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.code().unwrap().resolved_image_uri(),
            Some(format!("{HOST}/app@{digest}").as_str()),
            "{name}"
        );
        assert!(got
            .configuration()
            .unwrap()
            .function_arn()
            .unwrap()
            .contains(":333333333333:"));
    }
}

/// Correction 12: a registry policy may grant pulls (the V2 scope new registries have);
/// GetRegistryPolicy returns it, and an action outside ECR is still refused.
#[tokio::test]
async fn a_registry_policy_may_grant_pulls() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    let pull = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow",
        "Principal":{"AWS":"arn:aws:iam::222222222222:root"},"Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"],
        "Resource":"arn:aws:ecr:us-east-1:123456789012:repository/*"}]}"#;
    ecr.put_registry_policy()
        .policy_text(pull)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_ecr::error::DisplayErrorContext(e)));
    let got = ecr.get_registry_policy().send().await.unwrap();
    assert_eq!(got.policy_text(), Some(pull));
    assert_eq!(got.registry_id(), Some("123456789012"));
    let s3 = pull.replace("ecr:BatchGetImage", "s3:GetObject");
    let err = ecr
        .put_registry_policy()
        .policy_text(s3)
        .send()
        .await
        .unwrap_err();
    assert!(
        aws_sdk_ecr::error::DisplayErrorContext(&err)
            .to_string()
            .contains("InvalidParameterException"),
        "{err:?}"
    );
}
