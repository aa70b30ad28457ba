//! The planner's tests.

use super::*;
use crate::oci::ArtifactKind as K;
use chrono::Duration;
use proptest::prelude::*;
use std::collections::HashSet;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn dg(name: &str) -> Sha256Digest {
    Sha256Digest::of(name.as_bytes())
}

/// An image called `name` (its digest is sha256 of the name), pushed `days` ago.
fn img(name: &str, kind: K, tags: &[&str], days: i64) -> ImageRecord {
    ImageRecord {
        kind,
        size_bytes: 100,
        ..ImageRecord::named(name, tags, now() - Duration::days(days))
    }
}

fn policy(yaml: &str) -> Policy {
    Policy::parse(yaml).unwrap()
}

/// The policy of issue 7 as shipped. Its repository globs, S3 cache and deletion cap
/// do not bear on these plans: one repository (`app`), far fewer than 500 images.
const ISSUE_POLICY: &str = include_str!("../../../infra/policies/ci-caches.yaml");

fn run(images: Vec<ImageRecord>, p: &Policy) -> Plan {
    plan(
        &Snapshot {
            repository: "app".into(),
            images,
        },
        p,
        now(),
    )
}

fn deleted(plan: &Plan) -> Vec<Sha256Digest> {
    let mut v: Vec<_> = plan.deleted().map(|d| d.digest.clone()).collect();
    v.sort();
    v
}

fn set(names: &[&str]) -> Vec<Sha256Digest> {
    let mut v: Vec<_> = names.iter().map(|n| dg(n)).collect();
    v.sort();
    v
}

fn decision<'a>(plan: &'a Plan, name: &str) -> &'a ImageDecision {
    plan.decisions
        .iter()
        .find(|d| d.digest == dg(name))
        .unwrap()
}

#[test]
fn issue_policy_rules_first_match_decides() {
    let mut pulled = img("branch-pulled", K::BuildkitCache, &["cache-feature-b"], 30);
    pulled.last_pulled_at = Some(now() - Duration::days(2));
    let images = vec![
        img("main", K::BuildkitCache, &["cache-main"], 60),
        img("stale1", K::BuildkitCache, &[], 2),
        img("stale-young", K::BuildkitCache, &[], 0),
        img("branch-old", K::BuildkitCache, &["cache-feature-a"], 20),
        pulled,
        img("branch-new", K::BuildkitCache, &["cache-feature-c"], 3),
        img("untagged-old", K::Image, &[], 8),
        img("untagged-new", K::Image, &[], 6),
        img("release", K::Image, &["v1.0"], 400),
    ];
    let p = run(images, &policy(ISSUE_POLICY));
    assert_eq!(deleted(&p), set(&["stale1", "branch-old", "untagged-old"]));
    assert_eq!(
        decision(&p, "main").rule.as_deref(),
        Some("keep-main-cache")
    );
    assert_eq!(decision(&p, "stale1").rule.as_deref(), Some("stale-cache"));
    assert!(decision(&p, "stale-young").reason.contains("grace period"));
    assert!(decision(&p, "branch-old").reason.contains("never pulled"));
    assert_eq!(decision(&p, "release").reason, "no rule matched");
    assert_eq!(p.bytes_reclaimed, 300);
    assert!(!p.stopped_by_max_deletions);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["deletions"], 3);
    let table = p.to_table();
    assert!(
        table.contains("DELETE") && table.contains("stale-cache"),
        "{table}"
    );
}

#[test]
fn images_in_use_are_kept_with_what_they_need_and_who_uses_them() {
    let p = policy(ISSUE_POLICY);
    let mut idx = img("idx", K::Index, &[], 30);
    idx.children = vec![dg("child")];
    let images = vec![
        idx,
        img("child", K::Image, &[], 30),
        img("loose", K::Image, &[], 30),
    ];
    let in_use: InUseMap = [(
        dg("idx"),
        vec!["ecs service web/api, task def api:3".into()],
    )]
    .into_iter()
    .collect();
    let plan = plan_app_in_use(images, &p, &in_use);
    assert_eq!(deleted(&plan), set(&["loose"]));
    let idx = decision(&plan, "idx");
    assert_eq!(
        (idx.rule.as_deref(), idx.overridden),
        (Some("old-untagged"), true)
    );
    assert_eq!(idx.reason, "in use: ecs service web/api, task def api:3");
    assert_eq!(idx.in_use, ["ecs service web/api, task def api:3"]);
    assert!(decision(&plan, "child")
        .reason
        .starts_with("listed by kept index"));
    assert!(decision(&plan, "loose").in_use.is_empty());
}

/// Plans repository `app` at `now()` with no deletion cap, given what is in use.
fn plan_app_in_use(images: Vec<ImageRecord>, p: &Policy, in_use: &InUseMap) -> Plan {
    plan_in_use(
        &Snapshot {
            repository: "app".into(),
            images,
        },
        p,
        now(),
        None,
        in_use,
    )
}

#[test]
fn images_in_use_are_kept_when_an_ecr_lifecycle_policy_would_expire_them() {
    // An ECR document that keeps only the newest tagged image.
    let p = policy(
        r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
    );
    let images = vec![
        img("new", K::Image, &["v3"], 1),
        img("running", K::Image, &["v2"], 20),
        img("old", K::Image, &["v1"], 30),
    ];
    let in_use: InUseMap = [(dg("running"), vec!["lambda fn resize:live".into()])]
        .into_iter()
        .collect();
    let plan = plan_app_in_use(images, &p, &in_use);
    assert_eq!(deleted(&plan), set(&["old"]));
    let running = decision(&plan, "running");
    assert_eq!(
        (running.rule.as_deref(), running.overridden),
        (Some("ecr:1"), true)
    );
    assert_eq!(running.reason, "in use: lambda fn resize:live");
    assert_eq!(running.in_use, ["lambda fn resize:live"]);
}

#[test]
fn pushes_set_off_rules_on_their_tag_or_on_untagged_images() {
    let p = policy(ISSUE_POLICY);
    // A cache push: branch-caches (its tag), stale-cache and old-untagged (untagged).
    assert_eq!(
        rules_set_off_by_push(&p, "cache-feature", K::BuildkitCache),
        ["stale-cache", "branch-caches", "old-untagged"]
    );
    assert_eq!(rules_set_off_by_push(&p, "v1", K::Image), ["old-untagged"]);
    let releases = policy("repositories: ['*']\nrules: [{name: k, select: {tags: ['release-*']}, action: keep}, {name: r, select: {tags: ['release-*'], exclude_tags: ['release-lts']}, action: expire, when: {keep_latest: 3}}]");
    assert_eq!(
        rules_set_off_by_push(&releases, "release-9", K::Image),
        ["r"]
    );
    assert!(rules_set_off_by_push(&releases, "release-lts", K::Image).is_empty());
    assert!(rules_set_off_by_push(&releases, "dev", K::Image).is_empty());
}

#[test]
fn unused_for_counts_from_the_last_pull() {
    let p = policy("repositories: ['*']\nrules: [{name: r, select: {kind: image}, action: expire, when: {unused_for: 10d}}]");
    let mut a = img("a", K::Image, &["a"], 30);
    a.last_pulled_at = Some(now() - Duration::days(9));
    let mut b = img("b", K::Image, &["b"], 30);
    b.last_pulled_at = Some(now() - Duration::days(11));
    let plan = run(vec![a, b, img("c", K::Image, &["c"], 9)], &p);
    assert_eq!(deleted(&plan), set(&["b"]));
    assert!(decision(&plan, "b").reason.contains("last pulled 11d ago"));
}

#[test]
fn keep_latest_per_tag_pattern_group() {
    let p = policy(
        "repositories: ['*']\ngrace_period: 0s\nrules: [{name: r, select: {tags: ['release-*', 'nightly-*']}, action: expire, when: {keep_latest: 2}}]",
    );
    let images = vec![
        img("r1", K::Image, &["release-1"], 5),
        img("r2", K::Image, &["release-2"], 4),
        img("r3", K::Image, &["release-3"], 3),
        img("n1", K::Image, &["nightly-1"], 3),
        img("n2", K::Image, &["nightly-2"], 2),
        img("n3", K::Image, &["nightly-3"], 1),
        img("n4", K::Image, &["nightly-4"], 0),
        img("other", K::Image, &["latest"], 50),
    ];
    let plan = run(images, &p);
    assert_eq!(deleted(&plan), set(&["r1", "n1", "n2"]));
    assert!(decision(&plan, "r3")
        .reason
        .contains("2 newest tagged release-*"));
}

#[test]
fn regex_tags_exclusions_and_kinds() {
    let p = policy(
        r#"repositories: ['*']
rules:
  - {name: keep-releases, select: {tags: ['/^v[0-9]+\.[0-9]+$/']}, action: keep}
  - {name: sigs, select: {kind: [signature, attestation]}, action: keep}
  - {name: images, select: {kind: image, exclude_tags: ['prod-*']}, action: expire, when: {older_than: 1d}}
"#,
    );
    let images = vec![
        img("v", K::Image, &["v1.2"], 9),
        img("vx", K::Image, &["v1.2-rc"], 9),
        img("prod", K::Image, &["prod-1"], 9),
        img("idx", K::Index, &["x"], 9),
    ];
    let plan = run(images, &p);
    assert_eq!(deleted(&plan), set(&["vx"]));
}

#[test]
fn kept_index_keeps_its_children_and_deleted_index_takes_them() {
    let p = policy(ISSUE_POLICY);
    let mut kept_idx = img("kept-idx", K::Index, &["v1"], 30);
    kept_idx.children = vec![dg("k-amd64"), dg("k-arm64"), dg("k-att")];
    let mut old_idx = img("old-idx", K::Index, &[], 30);
    old_idx.children = vec![dg("o-amd64"), dg("o-att"), dg("shared")];
    let mut other_idx = img("other-idx", K::Index, &["v2"], 30);
    other_idx.children = vec![dg("shared")];
    let images = vec![
        kept_idx,
        img("k-amd64", K::Image, &[], 30),
        img("k-arm64", K::Image, &[], 30),
        img("k-att", K::Attestation, &[], 30),
        old_idx,
        img("o-amd64", K::Image, &[], 30),
        img("o-att", K::Attestation, &[], 30),
        img("shared", K::Image, &[], 30),
        other_idx,
    ];
    let plan = run(images, &p);
    assert_eq!(deleted(&plan), set(&["old-idx", "o-amd64", "o-att"]));
    let k = decision(&plan, "k-amd64");
    assert_eq!(k.action, Action::Keep);
    assert_eq!(
        (k.rule.as_deref(), k.overridden),
        (Some("old-untagged"), true)
    );
    assert!(k.reason.starts_with("listed by kept index"));
    // The index goes first, in an earlier wave than its entries.
    let order: Vec<_> = plan.deleted().map(|d| d.digest.clone()).collect();
    assert_eq!(order[0], dg("old-idx"));
    assert_eq!(decision(&plan, "o-amd64").wave, 1);
    assert_eq!(decision(&plan, "o-amd64").after, vec![dg("old-idx")]);
}

#[test]
fn referrers_follow_their_subject_and_kept_referrers_keep_it() {
    let p = policy(
        r#"repositories: ['*']
rules:
  - {name: keep-signed-sboms, select: {tags: ['sbom-keep']}, action: keep}
  - {name: old, select: {kind: image}, action: expire, when: {older_than: 7d}}
"#,
    );
    let mut sig_a = img("sig-a", K::Signature, &[], 30);
    sig_a.subject = Some(dg("a"));
    let mut soci_a = img("soci-a", K::SociIndex, &[], 30);
    soci_a.subject = Some(dg("a"));
    let mut sig_b = img("sig-b", K::Signature, &[], 30);
    sig_b.subject = Some(dg("b"));
    let mut sbom_c = img("sbom-c", K::Attestation, &["sbom-keep"], 30);
    sbom_c.subject = Some(dg("c"));
    let mut dangling = img("dangling", K::Signature, &["sha256-x.sig"], 30);
    dangling.subject = Some(dg("gone"));
    let images = vec![
        img("a", K::Image, &["a"], 30),
        sig_a,
        soci_a,
        img("b", K::Image, &["b"], 1),
        sig_b,
        img("c", K::Image, &["c"], 30),
        sbom_c,
        dangling,
    ];
    let plan = run(images, &p);
    assert_eq!(deleted(&plan), set(&["a", "sig-a", "soci-a", "dangling"]));
    assert!(decision(&plan, "c")
        .reason
        .starts_with("subject of kept referrer"));
    assert!(decision(&plan, "sig-b")
        .reason
        .starts_with("referrer of kept image"));
    assert!(decision(&plan, "sig-a").reason.contains("its subject"));
    assert!(decision(&plan, "dangling")
        .reason
        .contains("not in the repository"));
    // Referrers before their subject.
    assert_eq!(decision(&plan, "a").after.len(), 2);
}

#[test]
fn generic_rules_leave_referrers_of_kept_images_alone() {
    let p = policy(ISSUE_POLICY);
    let mut soci = img("soci-v1", K::SociIndex, &[], 30);
    soci.subject = Some(dg("app"));
    let mut sig = img("sig", K::Signature, &[], 30);
    sig.subject = Some(dg("app"));
    let plan = run(vec![img("app", K::Image, &["v1"], 30), soci, sig], &p);
    assert!(deleted(&plan).is_empty());
    // A rule naming the kind does decide it.
    let p = policy(
        "repositories: ['*']\nrules: [{name: no-sigs, select: {kind: signature}, action: expire}]",
    );
    let mut sig = img("sig", K::Signature, &[], 30);
    sig.subject = Some(dg("app"));
    let plan = run(vec![img("app", K::Image, &["v1"], 30), sig], &p);
    assert_eq!(deleted(&plan), set(&["sig"]));
}

#[test]
fn soci_v2_lives_and_dies_with_its_image_index() {
    let p = policy(ISSUE_POLICY);
    let mk = |name: &str, tags: &[&str]| {
        let mut idx = img(&format!("{name}-idx"), K::Index, tags, 30);
        idx.children = vec![dg(&format!("{name}-img")), dg(&format!("{name}-soci"))];
        let mut m = img(&format!("{name}-img"), K::Image, &[], 30);
        m.soci_index = Some(dg(&format!("{name}-soci")));
        let soci = img(&format!("{name}-soci"), K::SociIndex, &[], 30);
        vec![idx, m, soci]
    };
    let mut images = mk("live", &["v1-soci"]);
    images.extend(mk("dead", &[]));
    // A SOCI index bound to a kept tagged manifest outside any index is kept with it.
    let mut lone = img("lone-img", K::Image, &["lone"], 30);
    lone.soci_index = Some(dg("lone-soci"));
    images.push(lone);
    images.push(img("lone-soci", K::SociIndex, &[], 30));
    let plan = run(images, &p);
    assert_eq!(deleted(&plan), set(&["dead-idx", "dead-img", "dead-soci"]));
    assert!(decision(&plan, "lone-soci")
        .reason
        .starts_with("SOCI index of kept image"));
}

#[test]
fn grace_period_protects_even_what_a_rule_expires() {
    let p = policy("repositories: ['*']\ngrace_period: 2h\nrules: [{name: all-caches, select: {kind: buildkit-cache}, action: expire}]");
    let mut young = img("young", K::BuildkitCache, &[], 0);
    young.pushed_at = now() - Duration::minutes(119);
    let mut old = img("old", K::BuildkitCache, &[], 0);
    old.pushed_at = now() - Duration::minutes(121);
    let plan = run(vec![young, old], &p);
    assert_eq!(deleted(&plan), set(&["old"]));
    assert!(decision(&plan, "young")
        .reason
        .contains("grace period of 2h"));
}

#[test]
fn max_deletions_stops_without_orphaning() {
    let p = policy("repositories: ['*']\nmax_deletions: 3\nrules: [{name: old, select: {untagged: true}, action: expire}]");
    let mut idx = img("idx", K::Index, &[], 10);
    idx.children = vec![dg("c1"), dg("c2"), dg("c3")];
    let images = vec![
        img("old1", K::BuildkitCache, &[], 20),
        img("old2", K::BuildkitCache, &[], 19),
        idx,
        img("c1", K::Image, &[], 10),
        img("c2", K::Image, &[], 10),
        img("c3", K::Image, &[], 10),
    ];
    let plan = run(images, &p);
    assert!(plan.stopped_by_max_deletions);
    // Oldest first, an index before its entries: old1, old2, idx fit; the entries are
    // cut and stay (left for the next run, harmless), never the other way round.
    assert_eq!(deleted(&plan), set(&["old1", "old2", "idx"]));
    assert!(decision(&plan, "c1")
        .reason
        .contains("max_deletions (3) reached"));
    assert!(plan.deletions <= 3);
}

/// An afterpush policy whose repositories all follow one ECR lifecycle rule.
fn ecr_policy(extra: &str, selection: &str) -> Policy {
    policy(&format!(
        "repositories: ['*']\n{extra}ecr_lifecycle:\n  - repositories: ['*']\n    policy: {{\"rules\": [{{\"rulePriority\": 1, \"description\": \"d\", \"selection\": {selection}, \"action\": {{\"type\": \"expire\"}}}}]}}\n"
    ))
}

fn minutes_ago(mut im: ImageRecord, minutes: i64) -> ImageRecord {
    im.pushed_at = now() - Duration::minutes(minutes);
    im
}

#[test]
fn ecr_rules_run_under_the_safety_rules_and_the_plan_names_them() {
    let p = ecr_policy(
        "grace_period: 1h\n",
        r#"{"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}"#,
    );
    let mut idx = img("idx", K::Index, &["v1"], 40);
    idx.children = vec![dg("child-amd64"), dg("child-arm64")];
    let mut sig = img("sig", K::Signature, &[], 35);
    sig.subject = Some(dg("app"));
    let mut sig_old = img("sig-old", K::Signature, &[], 30);
    sig_old.subject = Some(dg("old"));
    let images = vec![
        minutes_ago(img("newest", K::Image, &[], 0), 10),
        minutes_ago(img("young", K::Image, &[], 0), 20),
        img("old", K::Image, &[], 30),
        idx,
        img("child-amd64", K::Image, &[], 40),
        img("child-arm64", K::Image, &[], 40),
        img("app", K::Image, &["app"], 50),
        sig,
        sig_old,
    ];
    let plan = run(images, &p);
    // ECR alone would expire every untagged image but the newest; a referrer goes
    // with its subject.
    assert_eq!(deleted(&plan), set(&["old", "sig-old"]));
    assert_eq!(decision(&plan, "old").rule.as_deref(), Some("ecr:1"));
    assert!(decision(&plan, "old")
        .reason
        .contains("imageCountMoreThan 1"));
    for (name, why) in [
        ("young", "within the grace period"),
        ("child-amd64", "listed by kept index"),
    ] {
        let d = decision(&plan, name);
        assert_eq!(d.action, Action::Keep, "{name}");
        assert_eq!(
            (d.rule.as_deref(), d.overridden),
            (Some("ecr:1"), true),
            "{name}"
        );
        assert!(d.reason.contains(why), "{name}: {}", d.reason);
    }
    // Spared by ECR and young: the grace period keeps it, no rule overridden.
    assert_eq!(decision(&plan, "newest").rule, None);
    assert_eq!(decision(&plan, "app").reason, "no rule matched");
    // A referrer is no ECR rule's: it follows its subject.
    let sig = decision(&plan, "sig");
    assert_eq!(sig.rule, None);
    assert!(
        sig.reason.starts_with("referrer of kept image"),
        "{}",
        sig.reason
    );
    assert_eq!(
        plan.rules,
        [RuleCount {
            rule: "ecr:1".into(),
            description: Some("d".into()),
            matched: 5,
            expired: 1,
            kept_by_safety: 3,
            would_archive: None,
        }]
    );
}

#[test]
fn ecr_rules_stop_at_max_deletions_and_keep_rules_win() {
    let p = ecr_policy(
        "max_deletions: 1\nrules: [{name: keep-pinned, select: {tags: ['pinned']}, action: keep}, {name: unused, select: {kind: image}, action: expire}]\n",
        r#"{"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7}"#,
    );
    let images = vec![
        img("a", K::Image, &["a"], 30),
        img("b", K::Image, &["b"], 20),
        img("pinned", K::Image, &["pinned"], 40),
        img("fresh", K::Image, &["fresh"], 3),
    ];
    let plan = run(images, &p);
    assert_eq!(deleted(&plan), set(&["a"]));
    let b = decision(&plan, "b");
    assert_eq!((b.rule.as_deref(), b.overridden), (Some("ecr:1"), true));
    assert!(
        b.reason.contains("max_deletions (1) reached"),
        "{}",
        b.reason
    );
    assert_eq!(
        decision(&plan, "pinned").rule.as_deref(),
        Some("keep-pinned")
    );
    assert!(decision(&plan, "fresh").reason.contains("≤ 7d"));
    // Where a lifecycle policy decides, afterpush's expire rules are not used.
    let names: Vec<(&str, usize, usize)> = plan
        .rules
        .iter()
        .map(|r| (r.rule.as_str(), r.matched, r.expired))
        .collect();
    assert_eq!(names, [("keep-pinned", 1, 0), ("ecr:1", 4, 1)]);
}

#[test]
fn afterpush_rules_are_counted_too() {
    let plan = run(
        vec![
            img("main", K::BuildkitCache, &["cache-main"], 60),
            img("stale", K::BuildkitCache, &[], 2),
            img("loose", K::Image, &[], 8),
        ],
        &policy(ISSUE_POLICY),
    );
    let counts: Vec<(&str, usize, usize)> = plan
        .rules
        .iter()
        .map(|r| (r.rule.as_str(), r.matched, r.expired))
        .collect();
    assert_eq!(
        counts,
        [
            ("keep-main-cache", 1, 0),
            ("stale-cache", 1, 1),
            ("branch-caches", 1, 0),
            ("old-untagged", 2, 1),
        ]
    );
}

// Property: for any graph and any policy verdicts, nothing reachable from a kept image
// (through index entries, SOCI bindings and subjects) is planned for deletion, and
// the deletion order puts every image after the deleted images that point to it.
fn arb_repo() -> impl Strategy<Value = (Vec<ImageRecord>, Option<usize>)> {
    let n = 2usize..40;
    n.prop_flat_map(|n| {
        let image = (
            0u8..7,
            any::<bool>(),
            0i64..40,
            proptest::collection::vec(0..n, 0..4),
            proptest::option::of(0..n),
            proptest::option::of(0..n),
        );
        (
            proptest::collection::vec(image, n),
            proptest::option::of(1usize..20),
        )
    })
    .prop_map(|(raw, max)| {
        let kinds = [
            K::Image,
            K::Index,
            K::BuildkitCache,
            K::SociIndex,
            K::Attestation,
            K::Signature,
            K::Other,
        ];
        let n = raw.len();
        let images = raw
            .iter()
            .enumerate()
            .map(|(i, (k, tagged, days, children, subject, soci))| {
                let tag = format!("t{i}");
                let mut im = img(&format!("i{i}"), kinds[*k as usize], &[], *days);
                if *tagged {
                    im.tags = vec![tag];
                }
                // Only point "downwards" (i -> j > i) so the graph is acyclic, like
                // content-addressed manifests.
                im.children = children
                    .iter()
                    .filter(|&&j| j > i && j < n)
                    .map(|j| dg(&format!("i{j}")))
                    .collect();
                im.subject = subject.filter(|&j| j > i).map(|j| dg(&format!("i{j}")));
                im.soci_index = soci.filter(|&j| j > i).map(|j| dg(&format!("i{j}")));
                im
            })
            .collect();
        (images, max)
    })
}

proptest! {
    #[test]
    fn nothing_reachable_from_a_kept_image_is_deleted((images, max) in arb_repo(), rule_set in 0usize..3) {
        let policies = [
            ISSUE_POLICY.to_string(),
            "repositories: ['*']\ngrace_period: 0s\nrules: [{name: all, select: {}, action: expire, when: {older_than: 5d}}]".to_string(),
            "repositories: ['*']\nrules: [{name: k, select: {tags: ['t1*']}, action: keep}, {name: e, select: {kind: [image, index, signature]}, action: expire}]".to_string(),
        ];
        let mut p = policy(&policies[rule_set]);
        p.max_deletions = max;
        let plan = run(images.clone(), &p);
        let deleted: HashSet<_> = plan.deleted().map(|d| d.digest.clone()).collect();
        if let Some(m) = max { prop_assert!(deleted.len() <= m); }
        let by: HashMap<_, _> = images.iter().map(|i| (i.digest.clone(), i)).collect();
        for k in plan.kept() {
            let mut stack = vec![k.digest.clone()];
            let mut seen = HashSet::new();
            while let Some(d) = stack.pop() {
                if !seen.insert(d.clone()) { continue; }
                prop_assert!(!deleted.contains(&d), "{} reachable from kept {} is deleted", d, k.digest);
                if let Some(im) = by.get(&d) {
                    stack.extend(im.references().cloned());
                    stack.extend(im.subject.iter().cloned());
                }
            }
        }
        let pos: HashMap<_, _> = plan.deleted().enumerate().map(|(i, d)| (d.digest.clone(), i)).collect();
        for d in plan.deleted() {
            for a in &d.after {
                prop_assert!(pos[a] < pos[&d.digest]);
                prop_assert!(decision_wave(&plan, a) < d.wave);
            }
        }
        prop_assert_eq!(plan.decisions.len(), images.len());
    }
}

fn decision_wave(plan: &Plan, d: &Sha256Digest) -> usize {
    plan.decisions.iter().find(|x| &x.digest == d).unwrap().wave
}
