//! In use means kept: the janitor against moto's ECR, ECS and Lambda (corrected by the
//! test launcher where moto differs from AWS, see tests/it/moto_in_use.rs). A policy that
//! expires every image meets a service whose tag moved, a task pinned by digest,
//! task-definition revisions inside and outside the rollback window, a Lambda alias on
//! an old version, and a reference to another account's registry; then a listing
//! failure, which deletes nothing; then pushes that set off a rule, cleaned at once.

use crate::support;

use afterpush::catalog::ecr::EcrCatalog;
use afterpush::cleanup::policy::Policy;
use afterpush::cleanup::{on_push, sweep, RunOptions};
use afterpush::events::Trigger;
use afterpush::filters::RepositoryTagFilters;
use afterpush::lambda::janitor::{handle, JanitorEvent, JanitorSettings};
use afterpush::oci::{media, Sha256Digest};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use support::{create_image_function, register_task_definition};

const REPO: &str = "app";
/// The test credentials' account: every user is named with the account it runs in.
const ACCOUNT: &str = "123456789012";
const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

async fn put(ecr: &aws_sdk_ecr::Client, seed: &str, tag: &str) -> Sha256Digest {
    support::put_seeded_manifest(ecr, REPO, seed, tag).await
}

async fn remaining(ecr: &aws_sdk_ecr::Client) -> BTreeSet<Sha256Digest> {
    support::ecr_image_digests(ecr, REPO)
        .await
        .iter()
        .map(|d| d.parse().unwrap())
        .collect()
}

/// Task ids are what the janitor names a task by: the last part of its ARN.
async fn run_task(ecs: &aws_sdk_ecs::Client, task_definition: &str) -> String {
    let arn = support::run_fargate_task(ecs, "web", task_definition).await;
    arn.rsplit('/').next().unwrap().to_string()
}

/// Every image of kind `image` expires at once: only in-use protection keeps anything.
const EXPIRE_ALL_IMAGES: &str = r#"
repositories: ["app"]
grace_period: 0s
rules:
  - {name: all-images, select: {kind: image}, action: expire}
"#;

/// Digests by name, and the ECS task ids the scenario started.
struct Workloads {
    d: BTreeMap<&'static str, Sha256Digest>,
    service_task: String,
    pinned_task: String,
}

async fn workloads(moto: &support::TestMoto) -> Workloads {
    let (ecr, ecs, lambda) = (moto.ecr().await, moto.ecs().await, moto.lambda().await);
    support::create_ecr_repository(&ecr, REPO).await;
    support::create_ecs_cluster(&ecs, "web").await;
    let mut d = BTreeMap::new();

    // A service on a tagged image; its task started before the tag moved.
    d.insert("api-old", put(&ecr, "api 1", "api").await);
    let api = format!("{HOST}/app:api");
    register_task_definition(&ecs, "api", &[("c0", &api), ("c1", "nginx:1.27")]).await;
    ecs.create_service()
        .cluster("web")
        .service_name("api")
        .task_definition("api:1")
        .desired_count(1)
        .send()
        .await
        .unwrap();
    let service_task = run_task(&ecs, "api:1").await;
    d.insert("api-new", put(&ecr, "api 2", "api").await);

    // A task pinned by digest, whose definition was deregistered since: only the
    // running task holds its image.
    d.insert("pinned", put(&ecr, "batch", "batch").await);
    let pinned = format!("{HOST}/app@{}", d["pinned"]);
    register_task_definition(&ecs, "batch", &[("c0", &pinned)]).await;
    let pinned_task = run_task(&ecs, "batch:1").await;
    ecs.deregister_task_definition()
        .task_definition("batch:1")
        .send()
        .await
        .unwrap();

    // Seven revisions of a family: the 5 latest are rollback targets, 1 and 2 are not.
    for r in 1..=7 {
        let name: &'static str = Box::leak(format!("rev{r}").into_boxed_str());
        d.insert(name, put(&ecr, name, &format!("worker-{r}")).await);
        let worker = format!("{HOST}/app:worker-{r}");
        register_task_definition(&ecs, "worker", &[("c0", &worker)]).await;
    }

    // A function: version 1 on the first image with alias `live`; $LATEST moved on.
    let role = moto.iam_role("resize").await;
    d.insert("fn-old", put(&ecr, "fn 1", "fn-1").await);
    d.insert("fn-new", put(&ecr, "fn 2", "fn-2").await);
    create_image_function(&lambda, &role, "resize", &format!("{HOST}/app:fn-1")).await;
    support::publish_function_version(&lambda, "resize").await;
    lambda
        .create_alias()
        .function_name("resize")
        .name("live")
        .function_version("1")
        .send()
        .await
        .unwrap();
    support::update_function_image(&lambda, "resize", &format!("{HOST}/app:fn-2")).await;

    // Another account's repository of the same name, and an image nobody uses.
    d.insert("foreign", put(&ecr, "foreign", "x-1").await);
    register_task_definition(
        &ecs,
        "foreign",
        &[("c0", "210987654321.dkr.ecr.us-east-1.amazonaws.com/app:x-1")],
    )
    .await;
    d.insert("unused", put(&ecr, "unused", "unused").await);
    Workloads {
        d,
        service_task,
        pinned_task,
    }
}

fn apply() -> RunOptions {
    RunOptions {
        dry_run: false,
        ..RunOptions::dry_run_now()
    }
}

#[tokio::test]
async fn images_in_use_are_kept_and_named_whatever_the_rules_say() {
    let moto = support::TestMoto::start();
    let w = workloads(&moto).await;
    let ecr = moto.ecr().await;
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);
    let everything: BTreeSet<Sha256Digest> = w.d.values().cloned().collect();

    // Without the protection (turned off by name) the rule takes every image: the
    // protection is what keeps them below.
    let unprotected = Policy::parse(&format!(
        "{EXPIRE_ALL_IMAGES}protect: {{ecs: false, lambda: false}}\n"
    ))
    .unwrap();
    let dry = sweep(&catalog, None, &unprotected, &RunOptions::dry_run_now())
        .await
        .unwrap();
    assert_eq!(dry.planned_deletions, everything.len(), "{}", dry.to_json());
    assert_eq!(dry.in_use_references, 0);

    let policy = Policy::parse(EXPIRE_ALL_IMAGES).unwrap();
    let report = sweep(&catalog, None, &policy, &apply()).await.unwrap();
    assert!(report.blocked.is_none(), "{}", report.to_json());
    assert_eq!(report.failed, 0, "{}", report.to_json());
    let repo = &report.repositories[0];
    let deleted: BTreeSet<Sha256Digest> = repo.deleted.iter().cloned().collect();
    let expected_deleted: BTreeSet<Sha256Digest> = ["rev1", "rev2", "foreign", "unused"]
        .iter()
        .map(|n| w.d[n].clone())
        .collect();
    assert_eq!(deleted, expected_deleted, "{}", report.to_json());
    assert_eq!(
        remaining(&ecr).await,
        everything.difference(&expected_deleted).cloned().collect()
    );

    let users: BTreeMap<&Sha256Digest, &Vec<String>> =
        repo.keeps.iter().map(|k| (&k.digest, &k.in_use)).collect();
    let users_of = |name: &str| users[&w.d[name]].clone();
    // The tag moved: the running task keeps what it pulled, the service's task
    // definition keeps what the tag names now.
    assert_eq!(
        users_of("api-old"),
        [format!(
            "ecs task web/{} (container c0) in {ACCOUNT}",
            w.service_task
        )]
    );
    let api_new = users_of("api-new");
    assert!(
        api_new.contains(&format!("ecs service web/api, task def api:1 in {ACCOUNT}")),
        "{api_new:?}"
    );
    assert_eq!(
        users_of("pinned"),
        [format!(
            "ecs task web/{} (container c0) in {ACCOUNT}",
            w.pinned_task
        )]
    );
    assert_eq!(
        users_of("rev3"),
        [format!(
            "ecs task def worker:3 (one of the 5 latest) in {ACCOUNT}"
        )]
    );
    assert_eq!(
        users_of("rev7"),
        [format!(
            "ecs task def worker:7 (one of the 5 latest) in {ACCOUNT}"
        )]
    );
    assert_eq!(
        users_of("fn-old"),
        [
            format!("lambda fn resize:1 in {ACCOUNT}"),
            format!("lambda fn resize:live in {ACCOUNT}")
        ]
    );
    assert_eq!(
        users_of("fn-new"),
        [format!("lambda fn resize in {ACCOUNT}")]
    );
    // The reason names the users, and the rule it overrode.
    let kept = repo
        .keeps
        .iter()
        .find(|k| k.digest == w.d["fn-old"])
        .unwrap();
    assert_eq!(
        (kept.rule.as_deref(), kept.overridden),
        (Some("all-images"), true)
    );
    assert_eq!(
        kept.reason,
        format!("in use: lambda fn resize:1 in {ACCOUNT}; lambda fn resize:live in {ACCOUNT}")
    );

    // A narrower rollback window lets revision 3 go.
    let narrow = Policy::parse(&format!(
        "{EXPIRE_ALL_IMAGES}protect: {{task_definition_revisions: 4}}\n"
    ))
    .unwrap();
    let report = sweep(&catalog, None, &narrow, &apply()).await.unwrap();
    assert_eq!(
        report.repositories[0].deleted,
        [w.d["rev3"].clone()],
        "{}",
        report.to_json()
    );
}

#[tokio::test]
async fn a_listing_failure_deletes_nothing_and_says_why() {
    let moto = support::TestMoto::start();
    let w = workloads(&moto).await;
    let ecr = moto.ecr().await;
    let everything: BTreeSet<Sha256Digest> = w.d.values().cloned().collect();
    // Lambda answers AccessDenied to every call; ECR and ECS go through untouched.
    let proxy = support::fault_proxy::FaultProxy::start(moto.port);
    proxy.add_rule(
        None,
        "/2015-03-31/functions",
        support::fault_proxy::Fault::Respond {
            status: 403,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("x-amzn-ErrorType".into(), "AccessDeniedException".into()),
            ],
            body: br#"{"Message":"not authorized to perform: lambda:ListFunctions"}"#.to_vec(),
        },
        usize::MAX,
    );
    let config = support::TestMoto::sdk_config_at(&format!("http://{}", proxy.host())).await;
    let catalog = EcrCatalog::from_sdk_config(&config);
    let policy = Policy::parse(EXPIRE_ALL_IMAGES).unwrap();

    let report = sweep(&catalog, None, &policy, &apply()).await.unwrap();
    let blocked = report.blocked.as_ref().expect("the run is blocked");
    assert!(
        blocked.reason.contains("Lambda ListFunctions failed")
            && blocked.reason.contains("AccessDenied"),
        "{}",
        blocked.reason
    );
    assert!(!blocked.retryable);
    assert!(report.repositories.is_empty() && report.deleted == 0);
    assert!(report.errors[0].starts_with("nothing deleted: listing images in use"));
    assert_eq!(remaining(&ecr).await, everything);

    // The Lambda's path: the report is the same, and the invocation fails, naming why.
    let settings = JanitorSettings::from_lookup(|k| match k {
        "CLEANUP_POLICY" => Some(EXPIRE_ALL_IMAGES.to_string()),
        "DRY_RUN" => Some("false".into()),
        _ => None,
    })
    .unwrap();
    let push = JanitorEvent::from_trigger(
        &Trigger::from_value(push_event("unused", &w.d["unused"])).unwrap(),
    );
    let err = handle(
        &catalog,
        None,
        &settings,
        &RepositoryTagFilters::parse("").unwrap(),
        push,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("nothing deleted: listing images in use: Lambda"),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(remaining(&ecr).await, everything);
    assert!(proxy.faults_applied() >= 2);
}

fn push_event(tag: &str, digest: &Sha256Digest) -> serde_json::Value {
    serde_json::json!({
        "version": "0", "id": "1", "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": "123456789012", "time": "2026-11-30T10:00:00Z", "region": "us-east-1",
        "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": REPO, "image-digest": digest.to_string(),
                   "action-type": "PUSH", "image-tag": tag,
                   "manifest-media-type": media::OCI_MANIFEST,
                   "artifact-media-type": media::OCI_CONFIG}
    })
}

#[tokio::test]
async fn a_push_that_sets_off_a_rule_is_cleaned_at_once() {
    let moto = support::TestMoto::start();
    let (ecr, lambda) = (moto.ecr().await, moto.lambda().await);
    support::create_ecr_repository(&ecr, REPO).await;
    let settings = JanitorSettings::from_lookup(|k| match k {
        "CLEANUP_POLICY" => Some(
            r#"{"repositories": ["app"], "grace_period": "0s", "rules": [
                {"name": "three-releases", "select": {"tags": ["release-*"]}, "action": "expire", "when": {"keep_latest": 3}}]}"#
                .to_string(),
        ),
        "DRY_RUN" => Some("false".into()),
        _ => None,
    })
    .unwrap();
    let catalog = EcrCatalog::from_sdk_config(&moto.sdk_config().await);
    let filters = RepositoryTagFilters::parse("").unwrap();
    // moto records push times in whole seconds: one release per second keeps "newest"
    // unambiguous (real ECR's times are finer).
    let next_second = || tokio::time::sleep(std::time::Duration::from_millis(1100));
    let mut d = Vec::new();
    for r in 1..=3 {
        d.push(put(&ecr, &format!("release {r}"), &format!("release-{r}")).await);
        next_second().await;
    }
    // release-1 runs in a Lambda function.
    let role = moto.iam_role("api").await;
    create_image_function(&lambda, &role, "api", &format!("{HOST}/app:release-1")).await;

    // The 4th release pushes release-1 out of the 3 newest, but it is in use: kept.
    d.push(put(&ecr, "release 4", "release-4").await);
    let event =
        JanitorEvent::from_trigger(&Trigger::from_value(push_event("release-4", &d[3])).unwrap());
    let report = handle(&catalog, None, &settings, &filters, event)
        .await
        .unwrap();
    assert!(report.ignored.is_none(), "{}", report.to_json());
    assert_eq!(report.trigger, "push app:release-4");
    assert_eq!(report.deleted, 0, "{}", report.to_json());
    let keep = report.repositories[0]
        .keeps
        .iter()
        .find(|k| k.digest == d[0])
        .unwrap();
    assert_eq!(keep.in_use, [format!("lambda fn api in {ACCOUNT}")]);
    assert_eq!(
        (keep.rule.as_deref(), keep.overridden),
        (Some("three-releases"), true)
    );

    // The 5th pushes release-2 out: it goes at once, not at the next sweep.
    next_second().await;
    let pushed = Instant::now();
    d.push(put(&ecr, "release 5", "release-5").await);
    let event =
        JanitorEvent::from_trigger(&Trigger::from_value(push_event("release-5", &d[4])).unwrap());
    let report = handle(&catalog, None, &settings, &filters, event)
        .await
        .unwrap();
    let left = remaining(&ecr).await;
    let elapsed = pushed.elapsed();
    assert_eq!(
        report.repositories[0].deleted,
        [d[1].clone()],
        "{}",
        report.to_json()
    );
    assert!(!left.contains(&d[1]) && left.contains(&d[0]));
    println!(
        "push-to-deletion (moto; PutImage, janitor run with in-use listing, DescribeImages): {} ms",
        elapsed.as_millis()
    );

    // A push no expire rule can act on is ignored, and says why.
    let dev = put(&ecr, "dev", "dev-x").await;
    let JanitorEvent::Push(detail) =
        JanitorEvent::from_trigger(&Trigger::from_value(push_event("dev-x", &dev)).unwrap())
    else {
        panic!("not a push")
    };
    let report = on_push(&catalog, &settings.policy, &detail, &apply())
        .await
        .unwrap();
    assert_eq!(
        report.ignored.as_deref(),
        Some("not a BuildKit cache push, and no expire rule selects tag \"dev-x\" or untagged image manifests")
    );
    assert!(remaining(&ecr).await.contains(&dev));
}
