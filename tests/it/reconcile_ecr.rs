//! The survey through ECR's API gives the same survey as through the repository
//! itself: the reconcile scenario (tests/it/reconcile.rs) is written into an OCI layout,
//! every manifest of the layout is seeded into an in-memory ECR with the tags the
//! layout gives them (as ECR and as moto report them), and the survey of
//! [`EcrApiRepository`] (manifests through ECR, configs from the layout) must equal the
//! survey of the layout, before and after the work is applied, for SOCI v2 and v1.

use crate::support;

use crate::reconcile::{
    check_converged, check_first_survey, platform, settings, spec, work_of, write_scenario,
};

use afterpush::catalog::ecr::{CountingEcr, MemoryEcr};
use afterpush::filters::RepositoryTagFilters;
use afterpush::oci::{ManifestSummary, Sha256Digest};
use afterpush::reconcile::ecr_fixtures::{seed_from_layout, Reports};
use afterpush::reconcile::{
    self, apply::ItemStatus, EcrApiRepository, EventOrigin, ReconcileSettings, Survey,
};
use afterpush::registry::distribution::{DistributionRepository, RegistrySettings};
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::{push_bytes, Repository};
use afterpush::sample;
use afterpush::soci::{IndexVersion, NoZtocCache, SociSettings};
use afterpush::stitch::StitchSettings;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `v` without the events' `time` (each survey stamps its own).
fn without_times(mut v: serde_json::Value) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("time");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// The survey as JSON without the events' `time`.
fn comparable(survey: &Survey) -> serde_json::Value {
    without_times(serde_json::to_value(survey).unwrap())
}

/// Surveys the layout at `dir` directly and through a freshly seeded ECR; asserts both
/// are the same and returns the survey through ECR with its ECR call counts.
async fn both_ways(
    dir: &Path,
    reports: Reports,
    settings: &ReconcileSettings,
) -> (Survey, usize, usize) {
    let layout = Arc::new(LayoutRepository::open(dir).unwrap());
    let origin = EventOrigin::default();
    let direct = reconcile::survey(layout.as_ref(), "app", &origin, settings, None)
        .await
        .unwrap();
    let ecr = MemoryEcr::new();
    seed_from_layout(&ecr, "app", layout.as_ref(), dir, reports).await;
    let api = Arc::new(CountingEcr::new(ecr));
    let through_ecr = EcrApiRepository::new(api.clone(), "app", layout);
    let listed = reconcile::survey(&through_ecr, "app", &origin, settings, None)
        .await
        .unwrap();
    assert_eq!(
        comparable(&listed),
        comparable(&direct),
        "{reports:?}: the survey through ECR differs"
    );
    let counts = &api.counts;
    (
        listed,
        counts.describe_images.load(Ordering::Relaxed),
        counts.batch_get_image.load(Ordering::Relaxed),
    )
}

#[tokio::test]
async fn the_survey_through_ecr_is_the_survey_of_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    let layout = LayoutRepository::open_or_create(&dir).unwrap();
    write_scenario(&layout).await;
    let settings = settings();
    for reports in [Reports::Ecr, Reports::Moto] {
        let (survey, describe, batches) = both_ways(&dir, reports, &settings).await;
        check_first_survey(&survey);
        // One listing; the manifests the survey reads come in a few batches, not one
        // request each.
        let manifests = std::fs::read_dir(dir.join("blobs/sha256")).unwrap().count();
        println!("{reports:?}: {describe} DescribeImages, {batches} BatchGetImage for {} tags ({manifests} blobs)", survey.tags);
        assert_eq!(describe, 1);
        assert!(
            batches * 4 <= survey.tags,
            "{batches} BatchGetImage calls for {} tags",
            survey.tags
        );
    }

    let (survey, _, _) = both_ways(&dir, Reports::Ecr, &settings).await;
    let report = reconcile::apply(&layout, &survey, &settings, &NoZtocCache, None, None).await;
    assert_eq!(report.count(ItemStatus::Failed), 0, "{report:#?}");
    for reports in [Reports::Ecr, Reports::Moto] {
        let (survey, _, _) = both_ways(&dir, reports, &settings).await;
        check_converged(&survey);
    }
}

/// SOCI v1: whether each platform has a referrer comes from ECR's subjects (or, as
/// moto reports none, from the registry), with the same answer as the layout's.
#[tokio::test]
async fn v1_referrers_through_ecr_are_the_repository_s() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    let layout = LayoutRepository::open_or_create(&dir).unwrap();
    sample::write_multi_arch(&layout, &spec(5, &[3000, 400_000]), Some("5"))
        .await
        .unwrap();
    sample::write_image(
        &layout,
        &spec(6, &[3000, 400_000]),
        &platform("linux/arm64"),
        Some("6"),
    )
    .await
    .unwrap();
    let v1 = ReconcileSettings::new(
        SociSettings {
            index_version: IndexVersion::V1,
            min_layer_size: 32 * 1024,
            ..SociSettings::default()
        },
        StitchSettings::default(),
        RepositoryTagFilters::default(),
    )
    .unwrap();
    for reports in [Reports::Ecr, Reports::Moto] {
        let (survey, _, _) = both_ways(&dir, reports, &v1).await;
        assert_eq!(work_of(&survey), ["index 5", "index 6"], "{survey:#?}");
    }
    let (survey, _, _) = both_ways(&dir, Reports::Ecr, &v1).await;
    let report = reconcile::apply(&layout, &survey, &v1, &NoZtocCache, None, None).await;
    assert_eq!(report.count(ItemStatus::Done), 2, "{report:#?}");
    for reports in [Reports::Ecr, Reports::Moto] {
        let (survey, _, _) = both_ways(&dir, reports, &v1).await;
        assert!(survey.work.is_empty(), "{reports:?}: {:#?}", survey.work);
        assert_eq!(survey.indexed, 2);
    }
}

/// `afterpush reconcile --all-repositories` against moto's ECR (the manifests) and the
/// real registry (the blobs, reached through `AFTERPUSH_REGISTRY_ENDPOINT`): the plan
/// of the registry's one repository is the plan of the same repository as a layout.
#[tokio::test]
async fn the_cli_surveys_every_repository_of_an_ecr_registry() {
    const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const NAME: &str = "reconcile/app";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    let layout = LayoutRepository::open_or_create(&dir).unwrap();
    write_scenario(&layout).await;

    // Its own moto: DescribeRepositories lists this test's repositories only.
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, NAME).await;
    let registry = support::TestRegistry::shared();
    let blobs =
        DistributionRepository::connect(&RegistrySettings::default(), &registry.host(), NAME)
            .unwrap();
    let mut tags_of: std::collections::HashMap<String, Vec<String>> = Default::default();
    for tag in layout.list_tags().await.unwrap() {
        let digest = layout.resolve(&tag).await.unwrap().digest.to_string();
        tags_of.entry(digest).or_default().push(tag);
    }
    for entry in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        push_bytes(&blobs, bytes.clone().into()).await.unwrap();
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let Ok(summary) = ManifestSummary::parse("blob", text.as_bytes()) else {
            continue;
        };
        if !text.contains("\"schemaVersion\"")
            || (summary.config.is_none() && summary.manifests.is_empty())
        {
            continue;
        }
        let media_type = summary.effective_media_type(None).to_string();
        let digest = Sha256Digest::of(text.as_bytes()).to_string();
        match tags_of.get(&digest) {
            Some(tags) => {
                for tag in tags {
                    support::put_ecr_manifest(&ecr, NAME, &text, &media_type, Some(tag)).await;
                }
            }
            None => {
                support::put_ecr_manifest(&ecr, NAME, &text, &media_type, None).await;
            }
        }
    }

    let endpoint = format!("http://{}", registry.host());
    let aws = support::TestMoto::aws_env(&moto.endpoint());
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("AFTERPUSH_REGISTRY_ENDPOINT", endpoint.as_str()),
        ("AFTERPUSH_REGISTRY_AUTH", "anonymous"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("SPAN_SIZE", "64KiB"),
        ("MIN_LAYER_SIZE", "32KiB"),
        ("REPOSITORY_TAG_FILTERS", "*:[0-9]*"),
    ]);
    let (status, stdout, stderr) =
        support::afterpush_cli(&["reconcile", "--all-repositories", HOST, "--json"], &env);
    assert!(status.success(), "{stdout}\n{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["failures"], serde_json::json!([]), "{out:#}");
    assert_eq!(out["calls"]["describe_repositories"], 1, "{out:#}");
    assert_eq!(out["calls"]["describe_images"], 1, "{out:#}");
    let batches = out["calls"]["batch_get_image"].as_u64().unwrap();
    assert!((1..=4).contains(&batches), "{out:#}");
    assert!(stderr.contains("1 of 1 repositories surveyed"), "{stderr}");

    let origin = EventOrigin::of_host(Some(HOST));
    let expected = reconcile::survey(&layout, NAME, &origin, &settings(), None)
        .await
        .unwrap();
    check_first_survey(&expected);
    let mut expected = comparable(&expected);
    let mut found = without_times(out["plan"]["repositories"][0].clone());
    for v in [&mut expected, &mut found] {
        let map = v.as_object_mut().unwrap();
        map.remove("location");
        map.remove("totals");
    }
    assert_eq!(found, expected);
}
