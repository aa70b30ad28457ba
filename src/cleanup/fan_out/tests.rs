//! The fan-out and the gathering over an in-memory ECR, run store and queue.

use super::*;
use crate::catalog::ecr::seeded_manifest;
use crate::catalog::ecr::{EcrCatalog, MemoryEcr};
use crate::cleanup::run_store::MemoryRunStore;
use crate::oci::media;
use crate::queue::MemoryQueue;

const RUN: &str = "20261207T030000Z-0123abcd";

fn ecr(repositories: &[(&str, usize)]) -> EcrCatalog<MemoryEcr> {
    let ecr = MemoryEcr::new();
    for (repository, images) in repositories {
        for i in 0..*images {
            ecr.put(
                repository,
                crate::catalog::ecr::month_old_image(),
                seeded_manifest(&format!("{repository} {i}"), media::OCI_CONFIG, ""),
            );
        }
    }
    EcrCatalog::new(ecr)
}

/// Every image expires; no in-use source in memory, so the protection is off by name.
fn policy(max_deletions: Option<usize>) -> Policy {
    let max = max_deletions.map_or(String::new(), |m| format!("max_deletions: {m}\n"));
    Policy::parse(&format!(
        "repositories: ['*']\ngrace_period: 0s\n{max}rules: [{{name: old, select: {{kind: image}}, action: expire}}]\nprotect: {{ecs: false, lambda: false}}\n"
    ))
    .unwrap()
}

fn settings<'a>(policy: &'a Policy, filters: &'a RepositoryTagFilters) -> FanOutSettings<'a> {
    FanOutSettings {
        policy,
        dry_run: false,
        repository_filter: filters,
        prefix: "cache-janitor/",
    }
}

fn origin() -> Origin {
    Origin {
        account: Some("123456789012".into()),
        region: Some("us-east-1".into()),
    }
}

/// What the receiving side reads from a message body.
fn detail_of(message: &OutgoingMessage) -> events::RepositorySweep {
    match Trigger::from_value(serde_json::from_str(&message.body).unwrap()).unwrap() {
        Trigger::JanitorRepositorySweep(e) => e.detail,
        other => panic!("{other:?}"),
    }
}

#[test]
fn shares_never_add_up_to_more_than_the_cap() {
    assert_eq!(
        budget_shares(Some(5), 3),
        [Some(2), Some(2), Some(1)].to_vec()
    );
    assert_eq!(
        budget_shares(Some(1), 3),
        [Some(1), Some(0), Some(0)].to_vec()
    );
    assert_eq!(budget_shares(None, 2), [None, None].to_vec());
    assert!(budget_shares(Some(3), 0).is_empty());
}

#[test]
fn keys_and_run_ids() {
    let keys = RunKeys::new("cache-janitor/", RUN);
    assert_eq!(
        keys.result("team/app"),
        format!("cache-janitor/runs/{RUN}/repositories/team%2Fapp.json")
    );
    assert_eq!(
        keys.manifest(),
        format!("cache-janitor/runs/{RUN}/manifest.json")
    );
    assert_eq!(
        keys.report(),
        format!("cache-janitor/runs/{RUN}/report.json")
    );
    let t = "2026-12-07T03:00:00Z".parse().unwrap();
    let id = run_id_for(t, Some("ev-1"));
    assert_eq!(
        id,
        run_id_for(t, Some("ev-1")),
        "the same event, the same run"
    );
    assert_ne!(id, run_id_for(t, Some("ev-2")));
    assert!(events::janitor_sweep::is_run_id(&id), "{id}");
    assert!(events::janitor_sweep::is_run_id(&run_id_for(t, None)));
}

#[tokio::test]
async fn the_run_is_gathered_when_its_last_part_is_written() {
    let catalog = ecr(&[("a", 2), ("b", 2), ("c", 2), ("other/skip", 1)]);
    let (store, queue) = (MemoryRunStore::new(), MemoryQueue::new());
    let policy = policy(Some(5));
    let filters: RepositoryTagFilters = "a:*,b:*,c:*".parse().unwrap();
    let settings = settings(&policy, &filters);
    let started = start(
        &catalog,
        None,
        &store,
        &queue,
        settings,
        RUN,
        &origin(),
        None,
    )
    .await
    .unwrap();
    let names: Vec<&str> = started
        .manifest
        .repositories
        .iter()
        .map(|r| r.repository.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "the filters leave other/skip out");
    assert!(started.report.is_none() && started.s3_caches.is_none());
    let messages = queue.messages(Target::Janitor);
    assert_eq!(messages.len(), 3);
    for (m, name) in messages.iter().zip(&names) {
        let d = detail_of(m);
        assert_eq!(
            (d.run_id.as_str(), d.repository.as_str(), d.repositories),
            (RUN, *name, 3)
        );
        assert_eq!(m.group_id, *name);
        assert_eq!(
            m.dedup_id,
            Sha256Digest::of(format!("{RUN}\n{name}").as_bytes()).hex()
        );
    }
    // The same event again: the same manifest, and messages the queue already has.
    let again = start(
        &catalog,
        None,
        &store,
        &queue,
        settings,
        RUN,
        &origin(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(again.manifest, started.manifest);
    assert_eq!(queue.messages(Target::Janitor).len(), 3);

    let mut gathered = None;
    for (i, m) in messages.iter().enumerate() {
        let d = detail_of(m);
        let before: Vec<usize> = names.iter().map(|n| catalog.api().len(n)).collect();
        let swept = sweep_repository(
            &catalog,
            &store,
            settings,
            &d.run_id,
            &d.repository,
            d.repositories,
            None,
        )
        .await
        .unwrap();
        // That repository only.
        for (j, n) in names.iter().enumerate() {
            let after = catalog.api().len(n);
            assert_eq!(
                after == before[j],
                j != i,
                "{n} after sweeping {}",
                d.repository
            );
        }
        assert_eq!(swept.part.repositories.len(), 1);
        assert!(swept.part.blocked.is_none());
        assert_eq!(
            swept.report.is_some(),
            i == 2,
            "gathered only after the last"
        );
        gathered = swept.report;
    }
    let report = gathered.unwrap();
    // max_deletions 5 over 3 repositories: 2, 2 and 1.
    assert_eq!(report.deleted, 5, "{}", report.to_json());
    assert_eq!(report.planned_deletions, 5);
    assert_eq!(catalog.api().len("c"), 1);
    assert_eq!(catalog.api().len("other/skip"), 1);
    assert_eq!(report.run_id, RUN);
    assert_eq!(report.trigger, "sweep");
    assert!(report.blocked.is_none() && report.blocked_repositories.is_empty());
    let stored: Report = serde_json::from_slice(
        &store
            .get(&RunKeys::new("cache-janitor/", RUN).report())
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored.deleted, 5);
    assert_eq!(stored.repositories.len(), 3);
}

/// A manifest written as `start` would, for repositories the catalog may not have.
async fn manifest_for(
    store: &MemoryRunStore,
    settings: FanOutSettings<'_>,
    repositories: &[&str],
    s3_caches: bool,
) -> RunManifest {
    let manifest = RunManifest {
        run_id: RUN.into(),
        started_at: Utc::now(),
        now: Utc::now(),
        dry_run: settings.dry_run,
        settings: settings.fingerprint(),
        repositories: repositories
            .iter()
            .map(|r| PlannedRepository {
                repository: r.to_string(),
                max_deletions: None,
            })
            .collect(),
        s3_caches,
    };
    let keys = RunKeys::new(settings.prefix, RUN);
    write_json(store, &keys.manifest(), &manifest)
        .await
        .unwrap();
    manifest
}

#[tokio::test]
async fn a_repository_that_cannot_be_listed_keeps_everything_and_is_listed_blocked() {
    let catalog = ecr(&[("a", 2)]);
    let store = MemoryRunStore::new();
    let policy = policy(None);
    let filters = RepositoryTagFilters::default();
    let settings = settings(&policy, &filters);
    manifest_for(&store, settings, &["a", "gone"], false).await;
    let gone = sweep_repository(&catalog, &store, settings, RUN, "gone", 2, None)
        .await
        .unwrap();
    let blocked = gone.part.blocked.as_ref().unwrap();
    assert!(blocked.reason.contains("gone"), "{}", blocked.reason);
    assert!(gone.report.is_none());
    let a = sweep_repository(&catalog, &store, settings, RUN, "a", 2, None)
        .await
        .unwrap();
    let report = a.report.unwrap();
    assert_eq!(report.deleted, 2);
    assert!(
        report.blocked.is_none(),
        "a deleted: the run as a whole is not blocked"
    );
    let names: Vec<&str> = report
        .blocked_repositories
        .iter()
        .map(|b| b.repository.as_str())
        .collect();
    assert_eq!(names, ["gone"]);
    assert_eq!(report.summary()["blocked_repositories"][0], "gone");
}

#[tokio::test]
async fn the_s3_caches_part_is_waited_for() {
    let catalog = ecr(&[("a", 1)]);
    let store = MemoryRunStore::new();
    let policy = policy(None);
    let filters = RepositoryTagFilters::default();
    let settings = settings(&policy, &filters);
    let manifest = manifest_for(&store, settings, &["a"], true).await;
    let a = sweep_repository(&catalog, &store, settings, RUN, "a", 1, None)
        .await
        .unwrap();
    assert!(a.report.is_none(), "the S3 caches' part is missing");
    let keys = RunKeys::new(settings.prefix, RUN);
    let mut caches = Report::new("sweep".into(), false, manifest.now).finish();
    caches.errors.push("s3 caches: nothing to do".into());
    write_json(&store, &keys.s3_caches(), &caches)
        .await
        .unwrap();
    let report = gather_run(&store, &keys, &manifest).await.unwrap().unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(report.errors, ["s3 caches: nothing to do"]);
    // A part that is not a report stops the gathering: no report is written.
    store
        .put(&keys.result("a"), b"{\"deleted\": 1}".to_vec())
        .await
        .unwrap();
    let err = gather_run(&store, &keys, &manifest).await.unwrap_err();
    assert!(err.to_string().contains("repositories/a.json"), "{err}");
}

async fn refusal(
    catalog: &EcrCatalog<MemoryEcr>,
    store: &MemoryRunStore,
    settings: FanOutSettings<'_>,
    repository: &str,
    count: usize,
) -> String {
    sweep_repository(catalog, store, settings, RUN, repository, count, None)
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn a_message_that_does_not_match_its_run_sweeps_nothing() {
    let catalog = ecr(&[("a", 2), ("b", 2)]);
    let store = MemoryRunStore::new();
    let policy = policy(None);
    let filters = RepositoryTagFilters::default();
    let settings = settings(&policy, &filters);
    let err = refusal(&catalog, &store, settings, "a", 1).await;
    assert!(
        err.contains("no manifest at memory:cache-janitor/runs/"),
        "{err}"
    );
    manifest_for(&store, settings, &["a"], false).await;
    let err = refusal(&catalog, &store, settings, "b", 1).await;
    assert!(err.contains("does not name it"), "{err}");
    let err = refusal(&catalog, &store, settings, "a", 2).await;
    assert!(
        err.contains("counts 2 repositories, the manifest 1"),
        "{err}"
    );
    let dry = FanOutSettings {
        dry_run: true,
        ..settings
    };
    let err = refusal(&catalog, &store, dry, "a", 1).await;
    assert!(err.contains("changed since the run started"), "{err}");
    let narrower: RepositoryTagFilters = "b:*".parse().unwrap();
    let narrower = FanOutSettings {
        repository_filter: &narrower,
        ..settings
    };
    let err = refusal(&catalog, &store, narrower, "a", 1).await;
    assert!(err.contains("changed since"), "{err}");
    assert!(err.ends_with("nothing swept"), "{err}");
    assert_eq!((catalog.api().len("a"), catalog.api().len("b")), (2, 2));
}

#[tokio::test]
async fn a_message_delivered_again_after_its_part_sweeps_nothing_more() {
    let catalog = ecr(&[("a", 2)]);
    let store = MemoryRunStore::new();
    let policy = policy(None);
    let filters = RepositoryTagFilters::default();
    let settings = settings(&policy, &filters);
    manifest_for(&store, settings, &["a"], false).await;
    let first = sweep_repository(&catalog, &store, settings, RUN, "a", 1, None)
        .await
        .unwrap();
    assert_eq!(first.part.deleted, 2);
    // An image pushed since: the run's plan is done, the next run's business.
    catalog.api().put(
        "a",
        crate::catalog::ecr::month_old_image(),
        seeded_manifest("a late", media::OCI_CONFIG, ""),
    );
    let again = sweep_repository(&catalog, &store, settings, RUN, "a", 1, None)
        .await
        .unwrap();
    assert_eq!(catalog.api().len("a"), 1);
    assert_eq!(again.part.deleted, 2, "the first part stands");
    assert!(again.again && !first.again);
    assert_eq!(again.report.unwrap().deleted, 2);
}
