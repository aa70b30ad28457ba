//! The registry survey under ECR throttling, on moto behind the fault proxy
//! (tests/support/moto_fault_proxy.rs), since moto itself never throttles: with the
//! survey's client (the SDK's standard retries) a throttled DescribeImages or
//! BatchGetImage is tried again and the survey completes; with one attempt per call the throttled
//! repository is reported failed, retryable and by name, and the others are surveyed.

use crate::support;

use afterpush::aws_clients::ClientSettings;
use afterpush::filters::RepositoryTagFilters;
use afterpush::reconcile::ecr_fixtures::{image_manifest, push_configs};
use afterpush::reconcile::registry_survey::{
    survey_ecr_registry, OpenInner, RegistrySurvey, RegistrySurveyOptions,
};
use afterpush::reconcile::{EventOrigin, ReconcileSettings};
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::Repository;
use afterpush::soci::SociSettings;
use afterpush::stitch::StitchSettings;
use std::sync::Arc;
use support::moto_fault_proxy::{Fault, MotoFaultProxy, Operation};

const REPOSITORIES: [&str; 3] = ["alpha", "beta", "gamma"];
const IMAGES: usize = 4;

fn throttled() -> Fault {
    Fault::Error {
        status: 400,
        code: "ThrottlingException",
    }
}

/// Three repositories of four images each in moto's ECR, their configs in a layout.
async fn seed(moto: &support::TestMoto, dir: &std::path::Path) -> Arc<LayoutRepository> {
    let layout = Arc::new(LayoutRepository::open_or_create(dir).unwrap());
    let (amd64, _) = push_configs(layout.as_ref()).await;
    layout.commit().await.unwrap();
    let ecr = moto.ecr().await;
    let big = SociSettings::default().min_layer_size;
    for repository in REPOSITORIES {
        support::create_ecr_repository(&ecr, repository).await;
        for i in 0..IMAGES {
            let m = image_manifest(&format!("{repository} {i}"), &amd64, &[big]);
            let body = std::str::from_utf8(&m.bytes).unwrap();
            let tag = format!("v{i}");
            support::put_image(
                &ecr,
                repository,
                body,
                &m.media_type,
                Some(&tag),
                Some(&m.digest),
            )
            .await;
        }
    }
    layout
}

async fn survey(
    proxy: &MotoFaultProxy,
    layout: Arc<LayoutRepository>,
    attempts: u32,
) -> RegistrySurvey {
    let config = support::TestMoto::sdk_config_at(&proxy.endpoint()).await;
    let client = ClientSettings {
        max_attempts: attempts,
        ..ClientSettings::default()
    };
    let api = Arc::new(afterpush::catalog::ecr::SdkEcr::new(client.ecr(&config)));
    let open: Box<OpenInner> = Box::new(move |_| Ok(layout.clone() as Arc<dyn Repository>));
    let settings = ReconcileSettings::new(
        SociSettings::default(),
        StitchSettings::default(),
        RepositoryTagFilters::default(),
    )
    .unwrap();
    survey_ecr_registry(
        api,
        open.as_ref(),
        &EventOrigin::default(),
        &settings,
        &RegistrySurveyOptions {
            concurrency: 1,
            ..RegistrySurveyOptions::default()
        },
    )
    .await
    .unwrap()
}

fn surveyed(out: &RegistrySurvey) -> Vec<&str> {
    out.surveys.iter().map(|s| s.repository.as_str()).collect()
}

#[tokio::test]
async fn throttled_calls_are_tried_again_and_the_survey_completes() {
    let moto = support::TestMoto::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = seed(&moto, dir.path()).await;
    let proxy = MotoFaultProxy::start(moto.port);
    // The first DescribeImages and the first BatchGetImage are throttled.
    proxy.after(Operation::Target("DescribeImages"), throttled(), 0, 1);
    proxy.after(Operation::Target("BatchGetImage"), throttled(), 0, 1);
    let out = survey(&proxy, layout, 3).await;
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert!(out.complete);
    assert_eq!(surveyed(&out), REPOSITORIES);
    for s in &out.surveys {
        assert_eq!(s.work.len(), IMAGES, "{}: {:?}", s.repository, s.work);
    }
    // One DescribeImages per repository reached the survey's count; the proxy saw the
    // throttled attempt besides.
    assert_eq!(out.calls.describe_images, REPOSITORIES.len());
    assert_eq!(
        proxy.calls_to("DescribeImages"),
        REPOSITORIES.len() + 1,
        "the throttled calls were tried again"
    );
}

#[tokio::test]
async fn with_one_attempt_the_throttled_repository_is_named_and_the_others_surveyed() {
    let moto = support::TestMoto::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = seed(&moto, dir.path()).await;
    let proxy = MotoFaultProxy::start(moto.port);
    // The second repository's listing (beta, in name order) is throttled.
    proxy.after(Operation::Target("DescribeImages"), throttled(), 1, 1);
    let out = survey(&proxy, layout, 1).await;
    assert_eq!(surveyed(&out), ["alpha", "gamma"]);
    assert_eq!(out.failures.len(), 1, "{:?}", out.failures);
    let failure = &out.failures[0];
    assert_eq!(failure.repository, "beta");
    assert!(failure.retryable, "{failure:?}");
    assert!(failure.error.contains("Throttling"), "{}", failure.error);
}
