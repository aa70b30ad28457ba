//! The launcher's corrections of moto's ECS, Lambda and ECR models (see
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
