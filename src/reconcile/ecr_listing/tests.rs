//! Tests of [`super::EcrApiRepository`]: call counts, digest checks, referrers, writes.
use super::*;
use crate::catalog::ecr::{CountingEcr, ImageFailure, MemoryEcr};
use crate::filters::RepositoryTagFilters;
use crate::reconcile::ecr_fixtures::{detail_of, image_manifest, push_configs, Reports};
use crate::reconcile::{survey, EventOrigin, ReconcileSettings};
use crate::registry::layout::LayoutRepository;
use crate::soci::SociSettings;
use crate::stitch::StitchSettings;

fn settings() -> ReconcileSettings {
    ReconcileSettings::new(
        SociSettings::default(),
        StitchSettings::default(),
        RepositoryTagFilters::default(),
    )
    .unwrap()
}

/// A layout holding two configs (the blobs a survey reads) and an ECR whose `app`
/// holds `n` tagged single-platform images with one layer to index each.
async fn images(n: usize) -> (tempfile::TempDir, Arc<LayoutRepository>, MemoryEcr) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Arc::new(LayoutRepository::open_or_create(dir.path().join("blobs")).unwrap());
    let (amd64, _) = push_configs(layout.as_ref()).await;
    let ecr = MemoryEcr::new();
    let big = SociSettings::default().min_layer_size;
    for i in 0..n {
        let m = image_manifest(&format!("image {i}"), &amd64, &[1000, big]);
        ecr.put(
            "app",
            detail_of(&[format!("v{i:05}")], &m.bytes, Reports::Ecr),
            m.bytes.to_vec(),
        );
    }
    (dir, layout, ecr)
}

#[tokio::test]
async fn a_survey_of_n_images_lists_n_over_1000_times_and_batches_n_over_100() {
    let (_dir, layout, ecr) = images(2_500).await;
    let api = Arc::new(CountingEcr::new(ecr));
    let repo = EcrApiRepository::new(api.clone(), "app", layout);
    let survey = survey(&repo, "app", &EventOrigin::default(), &settings(), None)
        .await
        .unwrap();
    assert_eq!(survey.tags, 2_500);
    assert_eq!(survey.work.len(), 2_500, "no image has a SOCI index");
    assert!(survey.problems.is_empty(), "{:?}", survey.problems);
    let calls = repo.calls();
    assert_eq!(
        (calls.describe_images, calls.batch_get_image),
        (3, 25),
        "{calls:?}"
    );
    // The wrapper's own counts are the calls that reached ECR.
    let reached = &api.counts;
    assert_eq!(reached.describe_images.load(Ordering::Relaxed), 3);
    assert_eq!(reached.batch_get_image.load(Ordering::Relaxed), 25);
}

#[tokio::test]
async fn tags_come_from_the_listing_and_a_tag_it_lacks_costs_no_call() {
    let (_dir, layout, ecr) = images(3).await;
    let repo = EcrApiRepository::new(Arc::new(ecr), "app", layout);
    assert_eq!(
        repo.list_tags().await.unwrap(),
        ["v00000", "v00001", "v00002"]
    );
    let err = repo.get_manifest("v00000-soci").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let m = repo.get_manifest("v00001").await.unwrap();
    assert_eq!(repo.resolve("v00001").await.unwrap(), m.descriptor());
    assert_eq!(repo.get_manifest(&m.digest.to_string()).await.unwrap(), m);
    // One listing, one batch (all three tags).
    assert_eq!(
        (repo.calls().describe_images, repo.calls().batch_get_image),
        (1, 1)
    );
    let gone = Sha256Digest::of(b"not there");
    let err = repo.get_manifest(&gone.to_string()).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

/// BatchGetImage answers with other bytes than the digest names.
struct Tampering(MemoryEcr);

#[async_trait]
impl EcrApi for Tampering {
    async fn describe_repositories(
        &self,
        t: Option<String>,
    ) -> std::result::Result<(Vec<String>, Option<String>), EcrApiError> {
        self.0.describe_repositories(t).await
    }
    async fn describe_images(
        &self,
        r: &str,
        t: Option<String>,
    ) -> std::result::Result<(Vec<ImageDetail>, Option<String>), EcrApiError> {
        self.0.describe_images(r, t).await
    }
    async fn batch_get_image(
        &self,
        r: &str,
        d: &[String],
    ) -> std::result::Result<(Vec<FetchedManifest>, Vec<ImageFailure>), EcrApiError> {
        let (mut found, failed) = self.0.batch_get_image(r, d).await?;
        for f in &mut found {
            f.bytes = f.bytes.iter().map(|b| b.to_ascii_uppercase()).collect();
        }
        Ok((found, failed))
    }
    async fn batch_delete_image(
        &self,
        r: &str,
        d: &[String],
    ) -> std::result::Result<(Vec<String>, Vec<ImageFailure>), EcrApiError> {
        self.0.batch_delete_image(r, d).await
    }
}

#[tokio::test]
async fn a_manifest_whose_bytes_do_not_match_its_digest_is_refused() {
    let (_dir, layout, ecr) = images(1).await;
    let repo = EcrApiRepository::new(Arc::new(Tampering(ecr)), "app", layout);
    let err = repo.get_manifest("v00000").await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Oci(crate::oci::OciError::DigestMismatch { .. })
        ),
        "{err}"
    );
}

/// An image, a SOCI v1-style referrer of it, and the repository as ECR and as moto
/// report it; the inner layout holds another referrer, so each answer shows
/// whether it came from the listing or from the inner repository.
async fn referrer_setup(
    reports: Reports,
) -> (
    tempfile::TempDir,
    EcrApiRepository<MemoryEcr>,
    Manifest,
    Manifest,
    Manifest,
) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Arc::new(LayoutRepository::open_or_create(dir.path().join("l")).unwrap());
    let (amd64, _) = push_configs(layout.as_ref()).await;
    // The referrers' empty config.
    crate::registry::push_bytes(layout.as_ref(), "{}".into())
        .await
        .unwrap();
    let image = image_manifest("image", &amd64, &[]);
    let referrer = |seed: &str| {
        let bytes = json_referrer(seed, &image);
        Manifest::new(media::OCI_MANIFEST, bytes)
    };
    let in_ecr = referrer("in ECR");
    let in_layout = referrer("in the layout");
    layout.put_manifest(&image, Some("v1")).await.unwrap();
    layout.push_referrer(&in_layout).await.unwrap();
    let ecr = MemoryEcr::new();
    for (tags, m) in [(vec!["v1".to_string()], &image), (vec![], &in_ecr)] {
        ecr.put("app", detail_of(&tags, &m.bytes, reports), m.bytes.to_vec());
    }
    let repo = EcrApiRepository::new(Arc::new(ecr), "app", layout);
    (dir, repo, image, in_ecr, in_layout)
}

fn json_referrer(seed: &str, subject: &Manifest) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": media::SOCI_INDEX_V1,
        "config": {"mediaType": media::OCI_EMPTY, "digest": Sha256Digest::of(b"{}").to_string(), "size": 2},
        "layers": [],
        "subject": {"mediaType": media::OCI_MANIFEST, "digest": subject.digest.to_string(), "size": subject.bytes.len()},
        "annotations": {"seed": seed},
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn referrers_come_from_the_subjects_ecr_reports() {
    let (_dir, repo, image, in_ecr, _) = referrer_setup(Reports::Ecr).await;
    let found = repo
        .referrers(&image.digest, Some(media::SOCI_INDEX_V1))
        .await
        .unwrap();
    let digests: Vec<&str> = found.iter().map(|d| d.digest.as_str()).collect();
    assert_eq!(digests, [in_ecr.digest.to_string()]);
    assert_eq!(
        found[0].artifact_type.as_deref(),
        Some(media::SOCI_INDEX_V1)
    );
    assert_eq!(found[0].annotations["seed"], "in ECR");
    assert!(repo
        .referrers(&image.digest, Some(media::COSIGN_SIGNATURE))
        .await
        .unwrap()
        .is_empty());
    assert!(repo
        .referrers(&in_ecr.digest, None)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn without_subjects_in_the_listing_the_registry_answers() {
    let (_dir, repo, image, _, in_layout) = referrer_setup(Reports::Moto).await;
    let found = repo
        .referrers(&image.digest, Some(media::SOCI_INDEX_V1))
        .await
        .unwrap();
    let digests: Vec<&str> = found.iter().map(|d| d.digest.as_str()).collect();
    assert_eq!(digests, [in_layout.digest.to_string()]);
}

/// ECR reports every image's artifact type: when none is the type asked for, there
/// is no such referrer, and the registry is not asked.
#[tokio::test]
async fn known_artifact_types_answer_that_there_is_no_referrer_of_a_type() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Arc::new(LayoutRepository::open_or_create(dir.path().join("l")).unwrap());
    let (amd64, _) = push_configs(layout.as_ref()).await;
    // The referrers' empty config.
    crate::registry::push_bytes(layout.as_ref(), "{}".into())
        .await
        .unwrap();
    let image = image_manifest("image", &amd64, &[]);
    layout.put_manifest(&image, Some("v1")).await.unwrap();
    let referrer = Manifest::new(media::OCI_MANIFEST, json_referrer("layout", &image));
    layout.push_referrer(&referrer).await.unwrap();
    let ecr = MemoryEcr::new();
    ecr.put(
        "app",
        detail_of(&["v1".into()], &image.bytes, Reports::Ecr),
        image.bytes.to_vec(),
    );
    let repo = EcrApiRepository::new(Arc::new(ecr), "app", layout);
    assert!(repo
        .referrers(&image.digest, Some(media::SOCI_INDEX_V1))
        .await
        .unwrap()
        .is_empty());
    // Without a type the listing cannot tell: the registry answers.
    assert_eq!(repo.referrers(&image.digest, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_write_makes_the_next_read_list_again() {
    let (_dir, layout, ecr) = images(1).await;
    let ecr = Arc::new(ecr);
    let (amd64, _) = push_configs(layout.as_ref()).await;
    let repo = EcrApiRepository::new(ecr.clone(), "app", layout);
    repo.get_manifest("v00000").await.unwrap();
    // No layers: the layout takes it without them.
    let m = image_manifest("written", &amd64, &[]);
    repo.put_manifest(&m, Some("again")).await.unwrap();
    // In production the inner client writes to the same ECR repository.
    ecr.put(
        "app",
        detail_of(&["again".into()], &m.bytes, Reports::Ecr),
        m.bytes.to_vec(),
    );
    assert!(repo
        .list_tags()
        .await
        .unwrap()
        .contains(&"again".to_string()));
    assert_eq!(repo.calls().describe_images, 2);
    // What was read before is kept: no second BatchGetImage for it.
    repo.get_manifest("v00000").await.unwrap();
    assert_eq!(repo.calls().batch_get_image, 1);
}
