//! `afterpush reconcile` end to end: a repository where some images are indexed, some
//! not, one was indexed with another span size and one per-arch group is unstitched,
//! in an OCI layout and in the real registry (Debian's docker-registry). The survey must
//! find exactly the missing work, applying it must converge, a second survey must find
//! nothing, and a run that fails halfway (a fault proxy in front of the registry) must
//! be finished by the next one, each piece of work written once.

use crate::support;

use afterpush::filters::RepositoryTagFilters;
use afterpush::oci::{annotation, ManifestSummary};
use afterpush::reconcile::{
    self, apply::ItemStatus, EventOrigin, ReconcileSettings, Survey, WorkKind,
};
use afterpush::registry::distribution::DistributionRepository;
use afterpush::registry::layout::LayoutRepository;
use afterpush::registry::Repository;
use afterpush::sample::{self, SamplePlatform, SampleSpec};
use afterpush::soci::{create_soci, NoZtocCache, SociSettings};
use afterpush::stitch::{self, StitchSettings};
use support::fault_proxy::{Fault, FaultProxy};
use support::{afterpush_cli, TestRegistry};

/// The span size the survey runs with, and the one image `3` was indexed with before.
pub(crate) const SPAN: u64 = 64 * 1024;
pub(crate) const STALE_SPAN: u64 = 128 * 1024;
/// Between the samples' small (~2 KB) and large (~125 KB) gzip layers.
pub(crate) const MIN_LAYER: u64 = 32 * 1024;
/// Tags starting with a digit: `dev-1` is filtered out.
const FILTERS: &str = "*:[0-9]*";

fn soci_settings(span_size: u64) -> SociSettings {
    SociSettings {
        span_size,
        min_layer_size: MIN_LAYER,
        ..SociSettings::default()
    }
}

pub(crate) fn settings() -> ReconcileSettings {
    ReconcileSettings::new(
        soci_settings(SPAN),
        StitchSettings::default(),
        RepositoryTagFilters::parse(FILTERS).unwrap(),
    )
    .unwrap()
}

pub(crate) fn spec(seed: u64, layer_sizes: &[u64]) -> SampleSpec {
    SampleSpec {
        seed,
        layer_sizes: layer_sizes.to_vec(),
        ..SampleSpec::default()
    }
}

pub(crate) fn platform(p: &str) -> SamplePlatform {
    p.parse().unwrap()
}

/// Indexes `tag` in place with `span_size` (and [`MIN_LAYER`]); the image must have a
/// layer to index.
pub(crate) async fn index(repo: &dyn Repository, tag: &str, span_size: u64) {
    let outcome = create_soci(
        repo,
        tag,
        Some(tag),
        &soci_settings(span_size),
        &NoZtocCache,
        None,
    )
    .await
    .unwrap();
    assert!(outcome.skipped.is_none(), "{tag}: {outcome:?}");
}

/// The repository before the reconcile:
/// - `1`: indexed; `2`: not indexed; `3`: indexed with span size 128 KiB;
/// - `4`: only layers under the minimum size (nothing to index);
/// - `5`: a multi-arch index with attestations, not indexed;
/// - `6-amd64`, `6-arm64`: per-arch images, neither indexed nor stitched;
/// - `7-amd64`, `7-arm64`: stitched into `7`, all three indexed;
/// - `cache-main`: a BuildKit cache; `dev-1`: an image the filters leave out.
pub(crate) async fn write_scenario(repo: &dyn Repository) {
    let big = [3000, 400_000];
    let amd64 = platform("linux/amd64");
    let arm64 = platform("linux/arm64");
    for (seed, tag) in [(1, "1"), (2, "2"), (3, "3")] {
        sample::write_image(repo, &spec(seed, &big), &amd64, Some(tag))
            .await
            .unwrap();
    }
    index(repo, "1", SPAN).await;
    index(repo, "3", STALE_SPAN).await;
    sample::write_image(repo, &spec(4, &[3000]), &amd64, Some("4"))
        .await
        .unwrap();
    sample::write_multi_arch(repo, &spec(5, &big), Some("5"))
        .await
        .unwrap();
    for (seed, base) in [(6, "6"), (7, "7")] {
        for p in [&amd64, &arm64] {
            let tag = format!("{base}-{}", p.arch_suffix());
            sample::write_image(repo, &spec(seed, &big), p, Some(&tag))
                .await
                .unwrap();
        }
    }
    let stitched = stitch::stitch(repo, "7", &StitchSettings::default(), false)
        .await
        .unwrap();
    assert!(
        matches!(stitched, stitch::StitchOutcome::Written { .. }),
        "{stitched:?}"
    );
    for tag in ["7-amd64", "7-arm64", "7"] {
        index(repo, tag, SPAN).await;
    }
    sample::write_buildkit_cache(repo, &spec(8, &big), Some("cache-main"))
        .await
        .unwrap();
    sample::write_image(repo, &spec(9, &big), &amd64, Some("dev-1"))
        .await
        .unwrap();
    repo.commit().await.unwrap();
}

/// `kind tag` of every piece of work, the indexing after a stitch as `then index tag`.
pub(crate) fn work_of(survey: &Survey) -> Vec<String> {
    let mut out = vec![];
    for w in &survey.work {
        out.push(format!("{:?} {}", w.kind, w.tag).to_lowercase());
        if let Some(then) = &w.then {
            out.push(format!("then {:?} {}", then.kind, then.tag).to_lowercase());
        }
    }
    out.sort();
    out
}

const EXPECTED_WORK: [&str; 7] = [
    "index 2",
    "index 3",
    "index 5",
    "index 6-amd64",
    "index 6-arm64",
    "stitch 6-amd64",
    "then index 6",
];

pub(crate) fn check_first_survey(survey: &Survey) {
    assert_eq!(work_of(survey), EXPECTED_WORK, "{survey:#?}");
    let stale = survey.work.iter().find(|w| w.tag == "3").unwrap();
    assert!(
        stale.reason.contains(&STALE_SPAN.to_string()) && stale.reason.contains(&SPAN.to_string()),
        "{}",
        stale.reason
    );
    let missing = survey.work.iter().find(|w| w.tag == "2").unwrap();
    assert!(
        missing.reason.contains("no 2-soci tag"),
        "{}",
        missing.reason
    );
    assert_eq!(
        missing.layers, 1,
        "only the layer over MIN_LAYER_SIZE is read"
    );
    let multi = survey.work.iter().find(|w| w.tag == "5").unwrap();
    assert_eq!(
        multi.layers, 2,
        "one layer per platform, attestations left out"
    );
    let stitch = survey
        .work
        .iter()
        .find(|w| w.kind == WorkKind::Stitch)
        .unwrap();
    assert!(stitch.reason.contains("no 6 tag"), "{}", stitch.reason);
    assert_eq!(stitch.event.detail.tag(), Some("6-amd64"));
    assert_eq!(stitch.then.as_ref().unwrap().layers, 2);
    assert_eq!(
        (survey.indexed, survey.nothing_to_index, survey.stitched),
        (4, 1, 1)
    );
    let skipped = |code: &str| survey.index_skipped.get(code).copied().unwrap_or(0);
    // 1-soci, 3-soci, 7-soci, 7-amd64-soci, 7-arm64-soci.
    assert_eq!(skipped("own-output"), 5, "{:?}", survey.index_skipped);
    assert_eq!(skipped("not-an-image"), 1, "{:?}", survey.index_skipped);
    assert_eq!(skipped("filtered-out"), 1, "{:?}", survey.index_skipped);
    assert!(survey.problems.is_empty(), "{:?}", survey.problems);
    for w in &survey.work {
        assert_eq!(w.event.detail.repository_name, survey.repository);
        assert_eq!(
            w.event.detail.image_digest.as_deref(),
            Some(w.digest.to_string().as_str())
        );
    }
}

pub(crate) fn check_converged(survey: &Survey) {
    assert!(survey.work.is_empty(), "{:#?}", survey.work);
    // 1, 2, 3, 5, 6, 6-amd64, 6-arm64, 7, 7-amd64, 7-arm64.
    assert_eq!(
        (survey.indexed, survey.nothing_to_index, survey.stitched),
        (10, 1, 2)
    );
}

/// The span size every zTOC of `<tag>-soci` records.
async fn spans_of(repo: &dyn Repository, tag: &str) -> Vec<String> {
    let output = repo.get_manifest(&format!("{tag}-soci")).await.unwrap();
    let summary = ManifestSummary::parse(tag, &output.bytes).unwrap();
    let mut spans = vec![];
    for d in &summary.manifests {
        if let Some(index) = d.annotations.get(annotation::SOCI_INDEX_DIGEST) {
            let index = repo.get_manifest(index).await.unwrap();
            for z in ManifestSummary::parse(tag, &index.bytes).unwrap().layers {
                spans.push(z.annotations[annotation::SOCI_SPAN_SIZE].clone());
            }
        }
    }
    spans
}

#[tokio::test]
async fn a_layout_converges_and_a_second_survey_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("app")).unwrap();
    write_scenario(&repo).await;
    let settings = settings();
    let origin = EventOrigin::default();

    let first = reconcile::survey(&repo, "app", &origin, &settings, None)
        .await
        .unwrap();
    check_first_survey(&first);
    assert_eq!(spans_of(&repo, "3").await, [STALE_SPAN.to_string()]);

    let report = reconcile::apply(&repo, &first, &settings, &NoZtocCache, None, None).await;
    assert_eq!(
        (
            report.count(ItemStatus::Done),
            report.count(ItemStatus::Failed)
        ),
        (7, 0),
        "{report:#?}"
    );
    assert_eq!(spans_of(&repo, "3").await, [SPAN.to_string()]);

    let second = reconcile::survey(&repo, "app", &origin, &settings, None)
        .await
        .unwrap();
    check_converged(&second);
}

/// The same over the CLI on a layout: the dry run prints the plan and changes nothing,
/// `--apply` converges, and the next dry run has nothing to do.
#[tokio::test]
async fn the_cli_plans_applies_and_then_has_nothing_to_do_on_a_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let repo = LayoutRepository::open_or_create(&layout).unwrap();
    write_scenario(&repo).await;
    let reference = format!("oci:{}", layout.display());
    let env = [
        ("SPAN_SIZE", "65536"),
        ("MIN_LAYER_SIZE", "32768"),
        ("REPOSITORY_TAG_FILTERS", FILTERS),
    ];
    let cli = |extra: &[&str]| {
        let mut args = vec!["reconcile", reference.as_str(), "--repository-name", "app"];
        args.extend_from_slice(extra);
        afterpush_cli(&args, &env)
    };
    let before = support::files_under(&layout);
    let (status, stdout, stderr) = cli(&[]);
    assert!(status.success(), "{stderr}");
    println!("{stdout}");
    assert!(stdout.contains("stitch app:6-amd64: no 6 tag"), "{stdout}");
    assert!(
        stdout.contains("  then index  app:6 (2 layers, "),
        "{stdout}"
    );
    assert!(stdout.contains("224.1 MB/s"), "{stdout}");
    assert!(stderr.contains("--apply does the work"), "{stderr}");
    assert_eq!(
        support::files_under(&layout),
        before,
        "the dry run wrote something"
    );

    let (status, stdout, stderr) = cli(&["--json"]);
    assert!(status.success(), "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(plan["total"]["images"], 6, "{plan:#}");
    assert_eq!(plan["total"]["stitches"], 1, "{plan:#}");
    assert_eq!(plan["total"]["invocations"], 7, "{plan:#}");
    assert_eq!(plan["repositories"][0]["work"].as_array().unwrap().len(), 6);

    let (status, stdout, stderr) = cli(&["--apply"]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("applied: 7 done, 0 failed"), "{stdout}");

    let (status, stdout, stderr) = cli(&[]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.starts_with("nothing to do"), "{stdout}");
    let (status, _, stderr) = cli(&["--apply", "--dry-run"]);
    assert!(
        !status.success() && stderr.contains("--dry-run"),
        "{stderr}"
    );
}

fn connect(host: &str) -> DistributionRepository {
    support::work_stack::connect(host, "reconcile/app")
}

/// The CLI against the real registry: plan, apply, nothing left.
#[tokio::test]
async fn the_cli_converges_a_registry_repository() {
    let registry = TestRegistry::start();
    write_scenario(&connect(&registry.host())).await;
    let reference = registry.reference("reconcile/app");
    let env = [
        ("SPAN_SIZE", "64KiB"),
        ("MIN_LAYER_SIZE", "32KiB"),
        ("REPOSITORY_TAG_FILTERS", FILTERS),
    ];
    let (status, stdout, stderr) = afterpush_cli(&["reconcile", &reference, "--json"], &env);
    assert!(status.success(), "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let repository = &plan["repositories"][0];
    assert_eq!(repository["repository"], "reconcile/app");
    let mut tags: Vec<String> = repository["work"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{} {}",
                w["kind"].as_str().unwrap(),
                w["tag"].as_str().unwrap()
            )
        })
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "index 2",
            "index 3",
            "index 5",
            "index 6-amd64",
            "index 6-arm64",
            "stitch 6-amd64"
        ]
    );
    // Each piece of work carries the event the handlers take.
    let event = &repository["work"][0]["event"];
    assert_eq!(event["detail-type"], "ECR Image Action");
    assert_eq!(event["detail"]["repository-name"], "reconcile/app");

    let (status, stdout, stderr) = afterpush_cli(&["reconcile", &reference, "--apply"], &env);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("applied: 7 done, 0 failed"), "{stdout}");
    let (status, stdout, stderr) = afterpush_cli(&["reconcile", &reference], &env);
    assert!(status.success(), "{stderr}");
    assert!(stdout.starts_with("nothing to do"), "{stdout}");
}

/// A run whose registry fails halfway (every write of `3-soci` answered 500) does the
/// rest and fails; the next run finds only that image, finishes it, and the one after
/// finds nothing. Every output tag is written once over the runs.
#[tokio::test]
async fn a_run_that_fails_halfway_is_finished_by_the_next_one_once() {
    let registry = TestRegistry::start();
    write_scenario(&connect(&registry.host())).await;
    let proxy = FaultProxy::start(registry.port);
    let repo = connect(&proxy.host());
    let settings = settings();
    let origin = EventOrigin::default();

    let first = reconcile::survey(&repo, "reconcile/app", &origin, &settings, None)
        .await
        .unwrap();
    check_first_survey(&first);
    proxy.add_rule(Some("PUT"), "/manifests/3-soci", Fault::Status(500), 1000);
    let report = reconcile::apply(&repo, &first, &settings, &NoZtocCache, None, None).await;
    let failed: Vec<&str> = report
        .results
        .iter()
        .filter(|r| r.status == ItemStatus::Failed)
        .map(|r| r.tag.as_str())
        .collect();
    assert_eq!(failed, ["3"], "{report:#?}");
    assert_eq!(report.count(ItemStatus::Done), 6, "{report:#?}");
    proxy.clear_rules();

    let second = reconcile::survey(&repo, "reconcile/app", &origin, &settings, None)
        .await
        .unwrap();
    assert_eq!(work_of(&second), ["index 3"], "{second:#?}");
    let report = reconcile::apply(&repo, &second, &settings, &NoZtocCache, None, None).await;
    assert_eq!(report.count(ItemStatus::Done), 1, "{report:#?}");

    let third = reconcile::survey(&repo, "reconcile/app", &origin, &settings, None)
        .await
        .unwrap();
    check_converged(&third);
    let written = |tag: &str| {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "PUT" && s.fault.is_none())
            .filter(|s| s.path.ends_with(&format!("/manifests/{tag}")))
            .count()
    };
    for tag in [
        "2-soci",
        "3-soci",
        "5-soci",
        "6-amd64-soci",
        "6-arm64-soci",
        "6",
        "6-soci",
    ] {
        assert_eq!(written(tag), 1, "{tag} written {} times", written(tag));
    }
    assert_eq!(
        written("1-soci") + written("7-soci"),
        0,
        "current indexes were rewritten"
    );
}

/// The indexer's own idempotency check: an image whose `-soci` index was built with
/// another span size is rebuilt, not reported as already indexed.
#[tokio::test]
async fn the_indexer_rebuilds_an_index_built_under_another_span_size() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("app")).unwrap();
    sample::write_image(
        &repo,
        &spec(3, &[3000, 400_000]),
        &platform("linux/amd64"),
        Some("3"),
    )
    .await
    .unwrap();
    index(&repo, "3", STALE_SPAN).await;
    let again = create_soci(
        &repo,
        "3",
        Some("3"),
        &soci_settings(STALE_SPAN),
        &NoZtocCache,
        None,
    )
    .await
    .unwrap();
    assert_eq!(again.skip_code.as_deref(), Some("already-indexed"));
    let rebuilt = create_soci(
        &repo,
        "3",
        Some("3"),
        &soci_settings(SPAN),
        &NoZtocCache,
        None,
    )
    .await
    .unwrap();
    assert_eq!(rebuilt.skip_code, None, "{rebuilt:?}");
    assert_ne!(rebuilt.output, again.output);
    assert_eq!(spans_of(&repo, "3").await, [SPAN.to_string()]);
}

/// A lower `MIN_LAYER_SIZE` makes every index stale whose image has a layer between
/// the two minimums (the index records no minimum: its zTOCs name the layers it
/// covers), and an image that had nothing to index gets work.
#[tokio::test]
async fn a_lower_minimum_layer_size_makes_indexes_stale() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("app")).unwrap();
    let amd64 = platform("linux/amd64");
    sample::write_image(&repo, &spec(1, &[3000, 400_000]), &amd64, Some("1"))
        .await
        .unwrap();
    sample::write_image(&repo, &spec(2, &[400_000]), &amd64, Some("2"))
        .await
        .unwrap();
    sample::write_image(&repo, &spec(4, &[3000]), &amd64, Some("4"))
        .await
        .unwrap();
    index(&repo, "1", SPAN).await;
    index(&repo, "2", SPAN).await;
    let origin = EventOrigin::default();
    let before = reconcile::survey(&repo, "app", &origin, &settings(), None)
        .await
        .unwrap();
    assert!(before.work.is_empty(), "{:#?}", before.work);

    let lower = ReconcileSettings::new(
        SociSettings {
            min_layer_size: 1,
            ..soci_settings(SPAN)
        },
        StitchSettings::default(),
        RepositoryTagFilters::parse(FILTERS).unwrap(),
    )
    .unwrap();
    let survey = reconcile::survey(&repo, "app", &origin, &lower, None)
        .await
        .unwrap();
    // `2` has no layer under either minimum: its index is what the new one builds.
    assert_eq!(work_of(&survey), ["index 1", "index 4"], "{survey:#?}");
    let stale = survey.work.iter().find(|w| w.tag == "1").unwrap();
    assert!(
        stale.reason.contains("zTOCs for 1 layer(s)") && stale.reason.contains("select 2"),
        "{}",
        stale.reason
    );
    let report = reconcile::apply(&repo, &survey, &lower, &NoZtocCache, None, None).await;
    assert_eq!(report.count(ItemStatus::Done), 2, "{report:#?}");
    let after = reconcile::survey(&repo, "app", &origin, &lower, None)
        .await
        .unwrap();
    assert!(after.work.is_empty(), "{:#?}", after.work);
}

/// SOCI v1: an image is indexed when each platform with a layer to index has a SOCI
/// v1 referrer.
#[tokio::test]
async fn v1_means_a_referrer_per_platform() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("app")).unwrap();
    sample::write_multi_arch(&repo, &spec(5, &[3000, 400_000]), Some("5"))
        .await
        .unwrap();
    let v1 = ReconcileSettings::new(
        SociSettings {
            index_version: afterpush::soci::IndexVersion::V1,
            ..soci_settings(SPAN)
        },
        StitchSettings::default(),
        RepositoryTagFilters::default(),
    )
    .unwrap();
    let origin = EventOrigin::default();
    let survey = reconcile::survey(&repo, "app", &origin, &v1, None)
        .await
        .unwrap();
    assert_eq!(work_of(&survey), ["index 5"], "{survey:#?}");
    assert!(
        survey.work[0]
            .reason
            .contains("no SOCI v1 referrer for linux/amd64, linux/arm64"),
        "{}",
        survey.work[0].reason
    );
    let report = reconcile::apply(&repo, &survey, &v1, &NoZtocCache, None, None).await;
    assert_eq!(report.count(ItemStatus::Done), 1, "{report:#?}");
    let after = reconcile::survey(&repo, "app", &origin, &v1, None)
        .await
        .unwrap();
    assert!(after.work.is_empty(), "{:#?}", after.work);
    assert_eq!(after.indexed, 1);
}

/// `SOCI_TAG_MODE=in-place`: the tag itself holds the SOCI-enabled index, whose source
/// annotation names the image; a stale one is rebuilt from that source.
#[tokio::test]
async fn in_place_output_is_checked_and_rebuilt_from_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let repo = LayoutRepository::open_or_create(dir.path().join("app")).unwrap();
    let source = sample::write_image(
        &repo,
        &spec(2, &[3000, 400_000]),
        &platform("linux/amd64"),
        Some("2"),
    )
    .await
    .unwrap();
    let in_place = |span_size| {
        ReconcileSettings::new(
            SociSettings {
                tag_mode: afterpush::soci::TagMode::InPlace,
                ..soci_settings(span_size)
            },
            StitchSettings::default(),
            RepositoryTagFilters::default(),
        )
        .unwrap()
    };
    let origin = EventOrigin::default();
    let stale = in_place(STALE_SPAN);
    let survey = reconcile::survey(&repo, "app", &origin, &stale, None)
        .await
        .unwrap();
    assert_eq!(work_of(&survey), ["index 2"], "{survey:#?}");
    reconcile::apply(&repo, &survey, &stale, &NoZtocCache, None, None).await;
    assert_ne!(
        repo.resolve("2").await.unwrap().digest,
        source.manifest.digest
    );
    let again = reconcile::survey(&repo, "app", &origin, &stale, None)
        .await
        .unwrap();
    assert!(again.work.is_empty(), "{:#?}", again.work);

    let current = in_place(SPAN);
    let survey = reconcile::survey(&repo, "app", &origin, &current, None)
        .await
        .unwrap();
    assert_eq!(work_of(&survey), ["index 2"], "{survey:#?}");
    assert_eq!(
        survey.work[0].digest, source.manifest.digest,
        "the event names the source image"
    );
    let report = reconcile::apply(&repo, &survey, &current, &NoZtocCache, None, None).await;
    assert_eq!(report.count(ItemStatus::Done), 1, "{report:#?}");
    let after = reconcile::survey(&repo, "app", &origin, &current, None)
        .await
        .unwrap();
    assert!(after.work.is_empty(), "{:#?}", after.work);
}

#[test]
fn tag_mode_none_is_refused_by_name() {
    let err = ReconcileSettings::new(
        SociSettings {
            tag_mode: afterpush::soci::TagMode::None,
            ..SociSettings::default()
        },
        StitchSettings::default(),
        RepositoryTagFilters::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("SOCI_TAG_MODE=none"), "{err}");
}
