//! The moto launcher's corrections: ECR image digests are sha256 of the manifest bytes
//! as pushed (moto's own `_create_digest` hashes the joined layer digests), an image's
//! push and last pull times can be set as real ECR would report them, and authorization
//! tokens expire 12 hours after issue (moto's say 2015-01-01).

use crate::support;

/// An OCI image manifest with an empty config and no layers.
const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

#[tokio::test]
async fn moto_ecr_digest_is_sha256_of_manifest_bytes() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    let manifest = MANIFEST;
    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    for (body, media_type) in [
        (manifest, "application/vnd.oci.image.manifest.v1+json"),
        (index, "application/vnd.oci.image.index.v1+json"),
    ] {
        let out = ecr
            .put_image()
            .repository_name("app")
            .image_manifest(body)
            .image_manifest_media_type(media_type)
            .image_tag(if body == manifest { "m" } else { "i" })
            .send()
            .await
            .unwrap();
        let got = out
            .image()
            .unwrap()
            .image_id()
            .unwrap()
            .image_digest()
            .unwrap()
            .to_string();
        assert_eq!(
            got,
            afterpush::oci::Sha256Digest::of(body.as_bytes()).to_string(),
            "{media_type}"
        );
    }
}

#[tokio::test]
async fn moto_ecr_reports_the_push_and_pull_times_set_by_the_launcher() {
    use chrono::{DateTime, Utc};
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    let manifest = MANIFEST;
    let digest = afterpush::oci::Sha256Digest::of(manifest.as_bytes()).to_string();
    ecr.put_image()
        .repository_name("app")
        .image_manifest(manifest)
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
        .image_tag("v1")
        .send()
        .await
        .unwrap();
    let describe = || async {
        let out = ecr
            .describe_images()
            .repository_name("app")
            .send()
            .await
            .unwrap();
        let d = out.image_details()[0].clone();
        let time = |t: Option<&aws_sdk_ecr::primitives::DateTime>| {
            t.map(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0).unwrap())
        };
        (time(d.image_pushed_at()), time(d.last_recorded_pull_time()))
    };
    // As moto has it: pushed now, never pulled.
    let (pushed, pulled) = describe().await;
    assert!((Utc::now() - pushed.unwrap()).num_minutes().abs() < 5);
    assert_eq!(pulled, None);

    let pushed_at: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().unwrap();
    let pulled_at: DateTime<Utc> = "2026-03-04T05:06:07Z".parse().unwrap();
    moto.set_ecr_image_times("app", &digest, pushed_at, Some(pulled_at))
        .await;
    assert_eq!(describe().await, (Some(pushed_at), Some(pulled_at)));
    moto.set_ecr_image_times("app", &digest, pushed_at, None)
        .await;
    assert_eq!(describe().await, (Some(pushed_at), None));
}

#[tokio::test]
async fn moto_ecr_accepts_the_lifecycle_policies_ecr_accepts() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    // AWS's "Combining archive and expire rules" example: moto's own validator refuses
    // the transition action and the archive storage class.
    let text = r#"{"rules": [
        {"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 90},
         "action": {"type": "transition", "targetStorageClass": "archive"}},
        {"rulePriority": 2, "selection": {"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 365},
         "action": {"type": "expire"}}]}"#;
    ecr.put_lifecycle_policy()
        .repository_name("app")
        .lifecycle_policy_text(text)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_ecr::error::DisplayErrorContext(e)));
    let got = ecr
        .get_lifecycle_policy()
        .repository_name("app")
        .send()
        .await
        .unwrap();
    assert_eq!(got.lifecycle_policy_text(), Some(text));
    // What ECR refuses, moto still refuses.
    let bad = text.replace("\"expire\"", "\"delete\"");
    assert!(ecr
        .put_lifecycle_policy()
        .repository_name("app")
        .lifecycle_policy_text(bad)
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn moto_ecr_authorization_tokens_expire_twelve_hours_after_issue() {
    use std::time::{Duration, SystemTime};
    let moto = support::TestMoto::shared();
    let before = SystemTime::now();
    let out = moto
        .ecr()
        .await
        .get_authorization_token()
        .send()
        .await
        .unwrap();
    let after = SystemTime::now();
    let data = &out.authorization_data()[0];
    let expires = SystemTime::try_from(*data.expires_at().unwrap()).unwrap();
    let twelve_hours = Duration::from_secs(12 * 3600);
    // moto serialises whole seconds: allow the one it may cut off.
    assert!(
        expires + Duration::from_secs(1) >= before + twelve_hours
            && expires <= after + twelve_hours,
        "expiresAt {expires:?}, asked between {before:?} and {after:?}"
    );
    // The token itself is moto's, unchanged.
    assert_eq!(
        afterpush::registry::ecr::decode_authorization_token(data.authorization_token().unwrap())
            .unwrap(),
        afterpush::registry::distribution::Credentials::new("AWS", "123456789012-auth-token")
    );
}
