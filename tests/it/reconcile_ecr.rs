//! The survey through ECR's API gives the same survey as through the repository
//! itself: the reconcile scenario (tests/it/reconcile.rs) is written into an OCI layout,
//! every manifest of the layout is seeded into an in-memory ECR with the tags the
//! layout gives them (as ECR and as moto report them), and the survey of
//! [`EcrApiRepository`] (manifests through ECR, configs from the layout) must equal the
//! survey of the layout, before and after the work is applied, for SOCI v2 and v1.

use crate::reconcile::{
    check_converged, check_first_survey, platform, settings, spec, work_of, write_scenario,
};

use afterpush::catalog::ecr::{CountingEcr, MemoryEcr};
use afterpush::filters::RepositoryTagFilters;
use afterpush::reconcile::ecr_fixtures::{seed_from_layout, Reports};
use afterpush::reconcile::{
    self, apply::ItemStatus, EcrApiRepository, EventOrigin, ReconcileSettings, Survey,
};
use afterpush::registry::layout::LayoutRepository;
use afterpush::sample;
use afterpush::soci::{IndexVersion, NoZtocCache, SociSettings};
use afterpush::stitch::StitchSettings;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The survey as JSON without the events' `time` (each survey stamps its own).
fn comparable(survey: &Survey) -> serde_json::Value {
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
    let mut v = serde_json::to_value(survey).unwrap();
    strip(&mut v);
    v
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
