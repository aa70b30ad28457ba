//! Setup steps against `moto_server` (repositories, buckets, manifests, ECS tasks, Lambda
//! functions) that several test files share. Each panics with the SDK's error, naming
//! the call and what it was for, so a failed setup is never mistaken for a failed test.

use afterpush::oci::{media, Sha256Digest};
use std::collections::{BTreeMap, BTreeSet};

/// Creates ECR repository `name`.
pub async fn create_ecr_repository(ecr: &aws_sdk_ecr::Client, name: &str) {
    ecr.create_repository()
        .repository_name(name)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateRepository {name}: {}",
                aws_sdk_ecr::error::DisplayErrorContext(e)
            )
        });
}

/// Puts manifest `body` (of `media_type`) into ECR `repository`, tagged `tag` or
/// untagged, and returns its digest: sha256 of the bytes, which the request names as
/// `imageDigest` (real ECR checks it against the bytes; moto takes it as given).
pub async fn put_ecr_manifest(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    body: &str,
    media_type: &str,
    tag: Option<&str>,
) -> Sha256Digest {
    let digest = Sha256Digest::of(body.as_bytes());
    put_image(ecr, repository, body, media_type, tag, Some(&digest)).await;
    digest
}

/// Puts a small OCI image manifest (config digest from `seed`, no layers) into ECR
/// `repository` under `tag`, and returns its digest. The request leaves `imageDigest`
/// out, so that moto computes it, as real ECR does (sha256 of the bytes, once corrected
/// by the launcher).
pub async fn put_seeded_manifest(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    seed: &str,
    tag: &str,
) -> Sha256Digest {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":10}},"layers":[]}}"#,
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        Sha256Digest::of(seed.as_bytes())
    );
    put_image(ecr, repository, &body, media::OCI_MANIFEST, Some(tag), None).await;
    Sha256Digest::of(body.as_bytes())
}

/// Puts manifest `body` (of `media_type`) into ECR `repository`, tagged `tag` or
/// untagged, naming `digest` as its `imageDigest` when given (moto computes it when not).
pub async fn put_image(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    body: &str,
    media_type: &str,
    tag: Option<&str>,
    digest: Option<&Sha256Digest>,
) {
    ecr.put_image()
        .repository_name(repository)
        .image_manifest(body)
        .image_manifest_media_type(media_type)
        .set_image_digest(digest.map(Sha256Digest::to_string))
        .set_image_tag(tag.map(str::to_string))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PutImage {repository}:{tag:?} ({digest:?}): {}",
                aws_sdk_ecr::error::DisplayErrorContext(e)
            )
        });
}

/// ECR's view of `repository`: each image digest with its tags (every DescribeImages
/// page).
pub async fn ecr_image_tags(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut images = BTreeMap::new();
    let mut token = None;
    loop {
        let page = ecr
            .describe_images()
            .repository_name(repository)
            .set_next_token(token)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "DescribeImages {repository}: {}",
                    aws_sdk_ecr::error::DisplayErrorContext(e)
                )
            });
        for detail in page.image_details() {
            let digest = detail.image_digest().expect("an image digest").to_string();
            images
                .entry(digest)
                .or_insert_with(BTreeSet::new)
                .extend(detail.image_tags().iter().cloned());
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return images;
        }
    }
}

/// The digests of the images in ECR `repository`.
pub async fn ecr_image_digests(ecr: &aws_sdk_ecr::Client, repository: &str) -> BTreeSet<String> {
    ecr_image_tags(ecr, repository).await.into_keys().collect()
}

/// Creates S3 bucket `name`.
pub async fn create_s3_bucket(s3: &aws_sdk_s3::Client, name: &str) {
    s3.create_bucket()
        .bucket(name)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateBucket {name}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
}

/// Whether S3 has object `key` in `bucket` (HeadObject succeeds).
pub async fn s3_object_exists(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    s3.head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
}

/// Creates ECS cluster `name`.
pub async fn create_ecs_cluster(ecs: &aws_sdk_ecs::Client, name: &str) {
    ecs.create_cluster()
        .cluster_name(name)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateCluster {name}: {}",
                aws_sdk_ecs::error::DisplayErrorContext(e)
            )
        });
}

/// Registers the next revision of task-definition `family`, one container per
/// `(name, image)` (128 MiB each, which moto requires of every container).
pub async fn register_task_definition(
    ecs: &aws_sdk_ecs::Client,
    family: &str,
    containers: &[(&str, &str)],
) {
    let mut call = ecs.register_task_definition().family(family);
    for (name, image) in containers {
        call = call.container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name(*name)
                .image(*image)
                .memory(128)
                .build(),
        );
    }
    call.send().await.unwrap_or_else(|e| {
        panic!(
            "RegisterTaskDefinition {family}: {}",
            aws_sdk_ecs::error::DisplayErrorContext(e)
        )
    });
}

/// Runs one Fargate task of `task_definition` in `cluster`; returns the task's ARN.
pub async fn run_fargate_task(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    task_definition: &str,
) -> String {
    let out = ecs
        .run_task()
        .cluster(cluster)
        .task_definition(task_definition)
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RunTask {task_definition}: {}",
                aws_sdk_ecs::error::DisplayErrorContext(e)
            )
        });
    out.tasks()[0].task_arn().unwrap().to_string()
}

/// Creates Lambda function `name`, packaged as container image `image_uri`, with execution
/// role `role` (an ARN; see `TestMoto::iam_role`).
pub async fn create_image_function(
    lambda: &aws_sdk_lambda::Client,
    role: &str,
    name: &str,
    image_uri: &str,
) {
    lambda
        .create_function()
        .function_name(name)
        .role(role)
        .package_type(aws_sdk_lambda::types::PackageType::Image)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .image_uri(image_uri)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateFunction {name}: {}",
                aws_sdk_lambda::error::DisplayErrorContext(e)
            )
        });
}

/// Publishes the function's `$LATEST` as its next version.
pub async fn publish_function_version(lambda: &aws_sdk_lambda::Client, name: &str) {
    lambda
        .publish_version()
        .function_name(name)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PublishVersion {name}: {}",
                aws_sdk_lambda::error::DisplayErrorContext(e)
            )
        });
}

/// Moves the function's `$LATEST` to container image `image_uri`.
pub async fn update_function_image(lambda: &aws_sdk_lambda::Client, name: &str, image_uri: &str) {
    lambda
        .update_function_code()
        .function_name(name)
        .image_uri(image_uri)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "UpdateFunctionCode {name}: {}",
                aws_sdk_lambda::error::DisplayErrorContext(e)
            )
        });
}
