//! A central registry and its consumer accounts, on moto (one server; each account
//! reached through `sts:AssumeRole`, see tests/support/moto_accounts.rs): account B runs
//! an ECS service on a tag of the central `app` repository, account C a Lambda function
//! pinned to an untagged digest of it. The janitor lists both through the reader role
//! when `CONSUMER_ACCOUNTS` covers them; a consumer the policies grant but the setting
//! does not cover (an account, an organisation) keeps every image it could be running,
//! until the policy accepts that risk by name; a reader role that cannot be assumed
//! blocks every deletion.

use crate::support;

use afterpush::catalog::consumer_accounts::ConsumerAccounts;
use afterpush::catalog::ecr::EcrCatalog;
use afterpush::cleanup::policy::Policy;
use afterpush::cleanup::{sweep, Report, RunOptions};
use afterpush::events::Trigger;
use afterpush::filters::RepositoryTagFilters;
use afterpush::lambda::janitor::{handle, JanitorEvent, JanitorSettings};
use afterpush::oci::Sha256Digest;
use std::collections::{BTreeMap, BTreeSet};
use support::moto_accounts::{assumed_config, iam_role_in, set_repository_policy};

const B: &str = "222222222222";
const C: &str = "333333333333";
/// An account with no reader role.
const D: &str = "444444444444";
const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const READER: &str = "afterpush-in-use-reader";

/// Every image of `app` expires at once: only what is in use (or could be) is kept.
const EXPIRE_ALL_IMAGES: &str = r#"
repositories: ["app"]
grace_period: 0s
rules:
  - {name: all-images, select: {kind: image}, action: expire}
"#;

/// The images of `app` by name.
type Images = BTreeMap<&'static str, Sha256Digest>;

/// The central `app` repository, B's service on `app:api`, C's function on an untagged
/// digest, and two images nobody uses.
async fn central_registry(moto: &support::TestMoto) -> Images {
    let ecr = moto.ecr().await;
    support::create_ecr_repository(&ecr, "app").await;
    let mut d = Images::new();
    d.insert(
        "service-b",
        support::put_seeded_manifest(&ecr, "app", "api", "api").await,
    );
    d.insert(
        "fn-c",
        support::put_seeded_manifest(&ecr, "app", "fn 1", "fn").await,
    );
    d.insert(
        "unused",
        support::put_seeded_manifest(&ecr, "app", "old", "old").await,
    );

    // B: the reader role, and a service on the tag.
    let reader_b = iam_role_in(moto, B, READER).await;
    let ecs_b = aws_sdk_ecs::Client::new(&assumed_config(moto, &reader_b, "us-east-1").await);
    support::create_ecs_cluster(&ecs_b, "web").await;
    support::register_task_definition(&ecs_b, "api", &[("c0", &format!("{HOST}/app:api"))]).await;
    ecs_b
        .create_service()
        .cluster("web")
        .service_name("api")
        .task_definition("api:1")
        .desired_count(1)
        .send()
        .await
        .unwrap();

    // C: the reader role, and a function pinned by digest; the tag then moves on, so
    // only the function holds that image.
    let reader_c = iam_role_in(moto, C, READER).await;
    let exec_c = iam_role_in(moto, C, "resize-exec").await;
    let lambda_c = aws_sdk_lambda::Client::new(&assumed_config(moto, &reader_c, "us-east-1").await);
    support::create_image_function(
        &lambda_c,
        &exec_c,
        "resize",
        &format!("{HOST}/app@{}", d["fn-c"]),
    )
    .await;
    d.insert(
        "fn-new",
        support::put_seeded_manifest(&ecr, "app", "fn 2", "fn").await,
    );
    d
}

/// A repository policy letting `principals` pull (`{"AWS": [...]}`), with `condition`.
fn pull_policy(principal: &str, condition: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"pull","Effect":"Allow","Principal":{principal},
        "Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]{condition}}}]}}"#
    )
}

async fn catalog(moto: &support::TestMoto, consumer_accounts: &str) -> EcrCatalog {
    EcrCatalog::from_sdk_config_with_consumers(
        &moto.sdk_config().await,
        &ConsumerAccounts::parse(consumer_accounts, "").unwrap(),
    )
}

fn apply() -> RunOptions {
    RunOptions {
        dry_run: false,
        ..RunOptions::dry_run_now()
    }
}

fn deleted(report: &Report) -> BTreeSet<Sha256Digest> {
    report
        .repositories
        .iter()
        .flat_map(|r| r.deleted.iter().cloned())
        .collect()
}

fn named(d: &Images, names: &[&str]) -> BTreeSet<Sha256Digest> {
    names.iter().map(|n| d[n].clone()).collect()
}

/// Who keeps `digest`, as the report names them.
fn users(report: &Report, digest: &Sha256Digest) -> Vec<String> {
    report.repositories[0]
        .keeps
        .iter()
        .find(|k| &k.digest == digest)
        .map(|k| k.in_use.clone())
        .unwrap_or_default()
}

/// `(principal, coverage)` of every consumer the report lists for `app`.
fn consumers(report: &Report) -> Vec<(String, String)> {
    report
        .shared
        .iter()
        .filter(|s| s.repository == "app")
        .flat_map(|s| s.consumers.iter())
        .map(|c| {
            (
                c.principal.clone(),
                serde_json::to_value(c.coverage)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn consumer_accounts_keep_what_they_run_and_are_named() {
    let moto = support::TestMoto::start();
    let d = central_registry(&moto).await;
    let ecr = moto.ecr().await;
    set_repository_policy(
        &ecr,
        "app",
        &pull_policy(&format!(r#"{{"AWS":["arn:aws:iam::{B}:root","{C}"]}}"#), ""),
    )
    .await;
    // A registry policy that replicates to D grants no pull.
    ecr.put_registry_policy()
        .policy_text(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"replicate","Effect":"Allow",
            "Principal":{{"AWS":"arn:aws:iam::{D}:root"}},"Action":["ecr:CreateRepository","ecr:ReplicateImage"],
            "Resource":"arn:aws:ecr:us-east-1:123456789012:repository/*"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    let catalog = catalog(&moto, &format!("{B},{C}")).await;
    let policy = Policy::parse(EXPIRE_ALL_IMAGES).unwrap();
    let report = sweep(&catalog, None, &policy, &apply()).await.unwrap();
    assert!(report.blocked.is_none(), "{}", report.to_json());
    assert_eq!(
        deleted(&report),
        named(&d, &["unused", "fn-new"]),
        "{}",
        report.to_json()
    );
    assert_eq!(
        users(&report, &d["service-b"]),
        [
            format!("ecs service web/api, task def api:1 in {B}"),
            format!("ecs task def api:1 (one of the 5 latest) in {B}"),
        ]
    );
    assert_eq!(
        users(&report, &d["fn-c"]),
        [format!("lambda fn resize in {C}")]
    );
    assert_eq!(
        consumers(&report),
        [
            (format!("account {B}"), "covered".to_string()),
            (format!("account {C}"), "covered".to_string()),
        ]
    );
    let remaining = support::ecr_image_digests(&ecr, "app").await;
    assert_eq!(
        remaining,
        named(&d, &["service-b", "fn-c"])
            .iter()
            .map(ToString::to_string)
            .collect()
    );
}

#[tokio::test]
async fn a_grant_to_b_is_covered_only_while_the_setting_covers_b() {
    let moto = support::TestMoto::start();
    let d = central_registry(&moto).await;
    let ecr = moto.ecr().await;
    set_repository_policy(
        &ecr,
        "app",
        &pull_policy(&format!(r#"{{"AWS":"{B}"}}"#), ""),
    )
    .await;
    let policy = Policy::parse(EXPIRE_ALL_IMAGES).unwrap();

    // Not covered: every image B could be running is kept, and the report says why.
    let report = sweep(&catalog(&moto, "").await, None, &policy, &apply())
        .await
        .unwrap();
    assert!(deleted(&report).is_empty(), "{}", report.to_json());
    assert_eq!(
        consumers(&report),
        [(format!("account {B}"), "uncovered".to_string())]
    );
    let why = format!(
        "may be run by account {B} (granted by the repository policy), whose workloads are not listed"
    );
    for name in ["service-b", "fn-c", "unused", "fn-new"] {
        assert_eq!(
            users(&report, &d[name]),
            std::slice::from_ref(&why),
            "{name}"
        );
    }
    assert_eq!(
        report.summary()["uncovered_consumers"],
        serde_json::json!([format!("app: account {B} (repository policy)")])
    );

    // Covered: B's service keeps its image; C, granted nothing, cannot pull.
    let report = sweep(&catalog(&moto, B).await, None, &policy, &apply())
        .await
        .unwrap();
    assert_eq!(
        deleted(&report),
        named(&d, &["fn-c", "unused", "fn-new"]),
        "{}",
        report.to_json()
    );
    assert_eq!(
        consumers(&report),
        [(format!("account {B}"), "covered".to_string())]
    );
}

#[tokio::test]
async fn a_grant_to_an_uncovered_account_keeps_what_it_could_run_until_accepted_by_name() {
    let moto = support::TestMoto::start();
    let d = central_registry(&moto).await;
    let ecr = moto.ecr().await;
    set_repository_policy(
        &ecr,
        "app",
        &pull_policy(
            &format!(r#"{{"AWS":["{B}","arn:aws:iam::{C}:role/deploy"]}}"#),
            "",
        ),
    )
    .await;
    let catalog = catalog(&moto, B).await;
    let report = sweep(
        &catalog,
        None,
        &Policy::parse(EXPIRE_ALL_IMAGES).unwrap(),
        &apply(),
    )
    .await
    .unwrap();
    assert!(deleted(&report).is_empty(), "{}", report.to_json());
    assert_eq!(
        consumers(&report),
        [
            (format!("account {B}"), "covered".to_string()),
            (format!("account {C}"), "uncovered".to_string()),
        ]
    );
    // B's service is named as well as the uncovered consumer.
    assert_eq!(
        users(&report, &d["service-b"]),
        [
            format!("ecs service web/api, task def api:1 in {B}"),
            format!("ecs task def api:1 (one of the 5 latest) in {B}"),
            format!("may be run by account {C} (granted by the repository policy), whose workloads are not listed"),
        ]
    );

    // Accepted by name: C's images are no longer kept for it, and C's pinned image goes.
    let accepted = Policy::parse(&format!(
        "{EXPIRE_ALL_IMAGES}protect: {{accept_uncovered: {{accounts: ['{C}']}}}}\n"
    ))
    .unwrap();
    let report = sweep(&catalog, None, &accepted, &apply()).await.unwrap();
    assert_eq!(
        deleted(&report),
        named(&d, &["fn-c", "unused", "fn-new"]),
        "{}",
        report.to_json()
    );
    assert_eq!(
        consumers(&report)[1],
        (format!("account {C}"), "accepted".to_string())
    );
}

#[tokio::test]
async fn an_org_wide_grant_keeps_every_image_it_could_run() {
    let moto = support::TestMoto::start();
    let d = central_registry(&moto).await;
    let ecr = moto.ecr().await;
    set_repository_policy(
        &ecr,
        "app",
        &pull_policy(
            r#""*""#,
            r#","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-abc123"}}"#,
        ),
    )
    .await;
    // Both consumer accounts are covered; the organisation's other accounts are not.
    let catalog = catalog(&moto, &format!("{B},{C}")).await;
    let report = sweep(
        &catalog,
        None,
        &Policy::parse(EXPIRE_ALL_IMAGES).unwrap(),
        &apply(),
    )
    .await
    .unwrap();
    assert!(deleted(&report).is_empty(), "{}", report.to_json());
    assert_eq!(
        consumers(&report),
        [("organization o-abc123".to_string(), "uncovered".to_string())]
    );
    assert_eq!(
        users(&report, &d["unused"]),
        ["may be run by organization o-abc123 (granted by the repository policy), whose workloads are not listed"]
    );
    assert_eq!(
        users(&report, &d["fn-c"]),
        [
            format!("lambda fn resize in {C}"),
            "may be run by organization o-abc123 (granted by the repository policy), whose workloads are not listed".to_string(),
        ]
    );

    // The repository accepted by name: what the covered accounts run is still kept.
    let accepted = Policy::parse(&format!(
        "{EXPIRE_ALL_IMAGES}protect: {{accept_uncovered: {{repositories: [app]}}}}\n"
    ))
    .unwrap();
    let report = sweep(&catalog, None, &accepted, &apply()).await.unwrap();
    assert_eq!(
        deleted(&report),
        named(&d, &["unused", "fn-new"]),
        "{}",
        report.to_json()
    );
}

#[tokio::test]
async fn a_reader_role_that_cannot_be_assumed_blocks_every_deletion() {
    let moto = support::TestMoto::start();
    let d = central_registry(&moto).await;
    let ecr = moto.ecr().await;
    let everything: BTreeSet<String> = d.values().map(ToString::to_string).collect();
    // D has no reader role: STS refuses it, as AWS does (tests/moto_in_use.rs).
    let catalog = catalog(&moto, &format!("{B},{D}:us-east-1")).await;
    let report = sweep(
        &catalog,
        None,
        &Policy::parse(EXPIRE_ALL_IMAGES).unwrap(),
        &apply(),
    )
    .await
    .unwrap();
    let blocked = report.blocked.as_ref().expect("the run is blocked");
    assert!(
        blocked.reason.starts_with("listing images in use: STS AssumeRole failed: account 444444444444: role arn:aws:iam::444444444444:role/afterpush-in-use-reader")
            && blocked.reason.contains("AccessDenied"),
        "{}",
        blocked.reason
    );
    assert!(!blocked.retryable);
    assert!(report.repositories.is_empty() && report.deleted == 0);
    assert_eq!(support::ecr_image_digests(&ecr, "app").await, everything);

    // The Lambda's path: the settings name the accounts, the invocation fails naming D.
    let vars = BTreeMap::from([
        ("CLEANUP_POLICY", EXPIRE_ALL_IMAGES.to_string()),
        ("DRY_RUN", "false".to_string()),
        ("CONSUMER_ACCOUNTS", format!("{B},{D}")),
        ("IN_USE_READER_ROLE", READER.to_string()),
    ]);
    let settings = JanitorSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let catalog =
        EcrCatalog::from_sdk_config_with_consumers(&moto.sdk_config().await, &settings.consumers);
    let tick =
        serde_json::json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let err = handle(
        &catalog,
        None,
        &settings,
        &RepositoryTagFilters::parse("").unwrap(),
        JanitorEvent::from_trigger(&Trigger::from_value(tick).unwrap()),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("STS AssumeRole failed: account 444444444444"),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(support::ecr_image_digests(&ecr, "app").await, everything);
}

/// A reader role whose trust policy requires an `sts:ExternalId` (infra/in-use-reader.yaml's
/// `ExternalId`) is read only when the janitor passes it (`IN_USE_READER_EXTERNAL_ID`);
/// without it, or with another, STS refuses and the run deletes nothing.
#[tokio::test]
async fn a_reader_role_requiring_an_external_id_is_read_with_it_and_blocks_without() {
    let moto = support::TestMoto::start();
    let d = central_registry(&moto).await;
    let ecr = moto.ecr().await;
    let everything: BTreeSet<String> = d.values().map(ToString::to_string).collect();
    support::moto_accounts::iam_role_requiring_external_id(&moto, D, READER, "org-7f3a").await;
    let tick =
        serde_json::json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let run = |external_id: Option<&'static str>| {
        let moto = &moto;
        let tick = tick.clone();
        async move {
            let mut vars = BTreeMap::from([
                ("CLEANUP_POLICY", EXPIRE_ALL_IMAGES.to_string()),
                ("DRY_RUN", "true".to_string()),
                ("CONSUMER_ACCOUNTS", format!("{B},{C},{D}")),
                ("IN_USE_READER_ROLE", READER.to_string()),
            ]);
            if let Some(id) = external_id {
                vars.insert("IN_USE_READER_EXTERNAL_ID", id.to_string());
            }
            let settings = JanitorSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
            let catalog = EcrCatalog::from_sdk_config_with_consumers(
                &moto.sdk_config().await,
                &settings.consumers,
            );
            handle(
                &catalog,
                None,
                &settings,
                &RepositoryTagFilters::parse("").unwrap(),
                JanitorEvent::from_trigger(&Trigger::from_value(tick).unwrap()),
            )
            .await
        }
    };
    for wrong in [None, Some("org-0000")] {
        let err = run(wrong).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("STS AssumeRole failed: account 444444444444")
                && err.to_string().contains("AccessDenied"),
            "{wrong:?}: {err}"
        );
    }
    let report = run(Some("org-7f3a")).await.unwrap();
    assert!(report.blocked.is_none(), "{}", report.to_json());
    // B's service and C's function are read, so their images are kept by name.
    for image in ["service-b", "fn-c"] {
        assert!(
            !users(&report, &d[image]).is_empty(),
            "{image} is not kept by its user: {}",
            report.to_json()
        );
    }
    assert_eq!(support::ecr_image_digests(&ecr, "app").await, everything);
}

#[tokio::test]
async fn a_registry_policy_grant_applies_to_the_repositories_its_resource_names() {
    let moto = support::TestMoto::start();
    let d = central_registry(&moto).await;
    let ecr = moto.ecr().await;
    let registry_policy = |resource: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"org","Effect":"Allow","Principal":"*",
            "Action":"ecr:BatchGet*","Resource":"arn:aws:ecr:us-east-1:123456789012:repository/{resource}",
            "Condition":{{"StringEquals":{{"aws:PrincipalOrgID":"o-abc123"}}}}}}]}}"#
        )
    };
    let catalog = catalog(&moto, &format!("{B},{C}")).await;
    let policy = Policy::parse(EXPIRE_ALL_IMAGES).unwrap();

    // Every repository: app is shared with the organisation, nothing it could run goes.
    ecr.put_registry_policy()
        .policy_text(registry_policy("*"))
        .send()
        .await
        .unwrap();
    let report = sweep(&catalog, None, &policy, &apply()).await.unwrap();
    assert!(deleted(&report).is_empty(), "{}", report.to_json());
    assert_eq!(
        report.shared[0].consumers[0].granted_by,
        afterpush::cleanup::shared::GrantedBy::RegistryPolicy
    );
    assert_eq!(
        consumers(&report),
        [("organization o-abc123".to_string(), "uncovered".to_string())]
    );

    // Only team/*: app is not shared, and what nobody runs goes.
    ecr.put_registry_policy()
        .policy_text(registry_policy("team/*"))
        .send()
        .await
        .unwrap();
    let report = sweep(&catalog, None, &policy, &apply()).await.unwrap();
    assert!(report.shared.is_empty(), "{}", report.to_json());
    assert_eq!(
        deleted(&report),
        named(&d, &["unused", "fn-new"]),
        "{}",
        report.to_json()
    );
}
