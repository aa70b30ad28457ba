//! Amazon Inspector as a source of images in use, against moto: the launcher's
//! ListCoverage and BatchGetAccountStatus (corrections 8 and 9 of
//! tests/support/moto_launcher.py), and a janitor sweep that keeps what Inspector saw in
//! use and deletes nothing while Inspector's ECR scanning is off.

use crate::support;

use afterpush::catalog::ecr::EcrCatalog;
use afterpush::cleanup::policy::Policy;
use afterpush::cleanup::{sweep, RunOptions};
use afterpush::oci::Sha256Digest;
use aws_sdk_inspector2::types::{
    CoverageFilterCriteria, CoverageStringComparison, CoverageStringFilter, ResourceScanType,
    Status,
};
use chrono::{Duration, Utc};

/// Replaces the account's Inspector coverage: (repository, digest, inUseCount, lastInUseAt).
async fn set_coverage(
    moto: &support::TestMoto,
    images: &[(&str, &Sha256Digest, i64, Option<chrono::DateTime<Utc>>)],
) {
    let images: Vec<serde_json::Value> = images
        .iter()
        .map(|(repo, digest, count, last)| {
            serde_json::json!({
                "repositoryName": repo,
                "imageDigest": digest.to_string(),
                "imageTags": ["v1"],
                "inUseCount": count,
                "lastInUseAt": last.map(|t| t.timestamp()),
            })
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!(
            "{}/moto-api/afterpush/inspector-coverage",
            moto.endpoint()
        ))
        .json(&serde_json::json!({"images": images}))
        .send()
        .await
        .expect("POST inspector-coverage");
    assert!(response.status().is_success(), "{}", response.status());
}

async fn inspector(moto: &support::TestMoto) -> aws_sdk_inspector2::Client {
    aws_sdk_inspector2::Client::new(&moto.sdk_config().await)
}

async fn enable_ecr_scanning(client: &aws_sdk_inspector2::Client) {
    client
        .enable()
        .account_ids("123456789012")
        .resource_types(ResourceScanType::Ecr)
        .send()
        .await
        .expect("Inspector Enable");
}

fn string_filter(value: &str) -> CoverageStringFilter {
    CoverageStringFilter::builder()
        .comparison(CoverageStringComparison::Equals)
        .value(value)
        .build()
        .unwrap()
}

#[tokio::test]
async fn list_coverage_and_account_status_answer_as_inspector_does() {
    let moto = support::TestMoto::start();
    let client = inspector(&moto).await;
    // The caller's account, DISABLED until enabled, without naming it.
    let status = client.batch_get_account_status().send().await.unwrap();
    let ecr = |s: &aws_sdk_inspector2::operation::batch_get_account_status::BatchGetAccountStatusOutput| {
        s.accounts()[0].resource_state().unwrap().ecr().unwrap().status().clone()
    };
    assert_eq!(status.accounts()[0].account_id(), "123456789012");
    assert_eq!(ecr(&status), Status::Disabled);
    enable_ecr_scanning(&client).await;
    let status = client.batch_get_account_status().send().await.unwrap();
    assert_eq!(ecr(&status), Status::Enabled);

    let (a, b, c) = (
        Sha256Digest::of(b"a"),
        Sha256Digest::of(b"b"),
        Sha256Digest::of(b"c"),
    );
    let seen = Utc::now() - Duration::days(2);
    set_coverage(
        &moto,
        &[
            ("app", &a, 3, Some(seen)),
            ("app", &b, 0, None),
            ("web", &c, 1, None),
        ],
    )
    .await;
    // Pages of two, filtered to one repository and to ECR images.
    let mut pages = 0;
    let mut resources = Vec::new();
    let mut token = None;
    loop {
        let out = client
            .list_coverage()
            .max_results(1)
            .set_next_token(token)
            .filter_criteria(
                CoverageFilterCriteria::builder()
                    .resource_type(string_filter("AWS_ECR_CONTAINER_IMAGE"))
                    .ecr_repository_name(string_filter("app"))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        pages += 1;
        resources.extend(out.covered_resources().to_vec());
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!((pages, resources.len()), (2, 2));
    let first = &resources[0];
    assert_eq!(
        first.resource_id(),
        format!("arn:aws:ecr:us-east-1:123456789012:repository/app/{a}")
    );
    assert_eq!(first.resource_type().as_str(), "AWS_ECR_CONTAINER_IMAGE");
    assert_eq!(first.account_id(), "123456789012");
    assert_eq!(
        first.scan_status().unwrap().status_code().as_str(),
        "ACTIVE"
    );
    let image = first.resource_metadata().unwrap().ecr_image().unwrap();
    assert_eq!(image.tags(), ["v1"]);
    assert_eq!(image.in_use_count(), Some(3));
    assert_eq!(image.last_in_use_at().unwrap().secs(), seen.timestamp());
    assert_eq!(
        first
            .resource_metadata()
            .unwrap()
            .ecr_repository()
            .unwrap()
            .name(),
        Some("app")
    );
    // A criterion the launcher does not model is refused, never ignored.
    let err = client
        .list_coverage()
        .filter_criteria(
            CoverageFilterCriteria::builder()
                .scan_type(string_filter("PACKAGE"))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert!(
        aws_sdk_inspector2::error::DisplayErrorContext(&err)
            .to_string()
            .contains("scanType"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_janitor_keeps_what_inspector_saw_in_use_and_blocks_while_scanning_is_off() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    let old = Utc::now() - Duration::days(60);
    let mut digests = Vec::new();
    for seed in ["running", "recent", "stale"] {
        let d = support::put_seeded_manifest(&ecr, "app", seed, seed).await;
        moto.set_ecr_image_times("app", &d.to_string(), old, None)
            .await;
        digests.push(d);
    }
    let [running, recent, stale] = [&digests[0], &digests[1], &digests[2]];
    let policy = Policy::parse(
        "repositories: ['*']\n\
         rules: [{name: old, select: {kind: image}, action: expire}]\n\
         protect: {ecs: false, lambda: false, inspector: true, inspector_window: 30d}",
    )
    .unwrap();
    let options = RunOptions {
        dry_run: false,
        ..RunOptions::dry_run_now()
    };
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);

    // Inspector does not scan ECR here: the run deletes nothing.
    let report = sweep(&catalog, None, &policy, &options).await.unwrap();
    let blocked = report.blocked.as_ref().expect("blocked");
    assert!(
        blocked.reason.contains("ECR scanning is DISABLED"),
        "{}",
        blocked.reason
    );
    assert_eq!(report.deleted, 0);
    assert_eq!(support::ecr_image_digests(&ecr, "app").await.len(), 3);

    enable_ecr_scanning(&inspector(&moto).await).await;
    set_coverage(
        &moto,
        &[
            ("app", running, 2, Some(Utc::now() - Duration::hours(1))),
            ("app", recent, 0, Some(Utc::now() - Duration::days(3))),
            ("app", stale, 0, Some(Utc::now() - Duration::days(45))),
        ],
    )
    .await;
    let report = sweep(&catalog, None, &policy, &options).await.unwrap();
    assert!(report.blocked.is_none(), "{:?}", report.blocked);
    assert_eq!(report.in_use_references, 2);
    let repo = &report.repositories[0];
    let deleted: Vec<&Sha256Digest> = repo.deleted.iter().collect();
    assert_eq!(deleted, [stale]);
    let kept = |d: &Sha256Digest| repo.keeps.iter().find(|k| &k.digest == d).unwrap();
    assert!(
        kept(running).in_use[0]
            .starts_with("inspector: in use by 2 ECS tasks or EKS pods, last in use "),
        "{:?}",
        kept(running).in_use
    );
    assert!(kept(running).overridden && kept(recent).overridden);
    assert!(
        kept(recent).in_use[0].contains("in use by 0"),
        "{:?}",
        kept(recent).in_use
    );
    let left = support::ecr_image_digests(&ecr, "app").await;
    assert_eq!(left.len(), 2);
}
