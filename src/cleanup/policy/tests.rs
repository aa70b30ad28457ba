use super::*;

/// The policy of issue 7, as shipped.
const ISSUE_EXAMPLE: &str = include_str!("../../../infra/policies/ci-caches.yaml");

#[test]
fn parses_the_issue_example() {
    let p = Policy::parse(ISSUE_EXAMPLE).unwrap();
    assert!(p.selects_repository("app") && p.selects_repository("svc-x"));
    assert!(!p.selects_repository("apps"));
    assert_eq!(p.grace_period, Duration::hours(1));
    assert_eq!(p.max_deletions, Some(500));
    assert_eq!(p.rules.len(), 4);
    assert_eq!(p.rules[1].select.kinds, vec![ArtifactKind::BuildkitCache]);
    assert_eq!(p.rules[1].select.tagged, Some(false));
    assert_eq!(p.rules[2].when.unused_for, Some(Duration::days(14)));
    assert_eq!(p.rules[3].when.older_than, Some(Duration::days(7)));
    assert_eq!(p.s3_caches[0].uri.bucket, "buildkit-cache");
    assert_eq!(p.s3_caches[0].uri.prefix, "app/");
    assert_eq!(p.s3_caches[0].blob_grace, Duration::hours(24));
    assert!(p.is_cache_tag("cache-feature-x") && !p.is_cache_tag("latest"));
    assert_eq!(
        p.protect,
        Protect::default(),
        "in-use protection is on by default"
    );
}

#[test]
fn in_use_protection_is_turned_off_only_by_name() {
    let p = Policy::parse("repositories: ['*']\nprotect: {lambda: false}").unwrap();
    assert!(p.protect.ecs && !p.protect.lambda);
    assert_eq!(p.protect.task_definition_revisions, 5);
    let p =
        Policy::parse("repositories: ['*']\nprotect: {ecs: false, task_definition_revisions: 2}")
            .unwrap();
    assert!(!p.protect.ecs && p.protect.lambda);
    assert_eq!(p.protect.task_definition_revisions, 2);
    let p = Policy::parse("repositories: ['*']\nprotect: {}").unwrap();
    assert_eq!(p.protect, Protect::default());
    let err = Policy::parse("repositories: ['*']\nprotect: {ecs: off-please}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ecs"), "{err}");
    let err = Policy::parse("repositories: ['*']\nprotect: {eks: false}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("eks"), "{err}");
}

#[test]
fn uncovered_consumers_are_accepted_only_by_exact_name() {
    let p = Policy::parse("repositories: ['*']").unwrap();
    assert_eq!(p.accept_uncovered, Default::default());
    let p = Policy::parse(
        "repositories: ['*']\nprotect: {accept_uncovered: {repositories: [legacy], accounts: ['012345678901']}}",
    )
    .unwrap();
    assert_eq!(p.accept_uncovered.repositories, ["legacy"]);
    assert_eq!(p.accept_uncovered.accounts, ["012345678901"]);
    assert!(p.protect.ecs && p.protect.lambda);
    for (yaml, field) in [
        (
            "{repositories: ['team/*']}",
            "accept_uncovered.repositories[0]",
        ),
        ("{accounts: [12345678901]}", "accept_uncovered.accounts[0]"),
        ("{accounts: ['o-abc123']}", "accept_uncovered.accounts[0]"),
        ("{everyone: true}", "everyone"),
    ] {
        let err = Policy::parse(&format!(
            "repositories: ['*']\nprotect: {{accept_uncovered: {yaml}}}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(field), "{yaml}: {err}");
    }
}

#[test]
fn json_policies_parse_too() {
    let p = Policy::parse(
        r#"{"repositories":["*"],"rules":[{"name":"r","select":{"tags":["/^release-[0-9]+$/"]},"action":"keep"}]}"#,
    )
    .unwrap();
    assert_eq!(p.grace_period, DEFAULT_GRACE);
    assert!(p.rules[0].select.tags[0].matches("release-12"));
    assert!(!p.rules[0].select.tags[0].matches("release-x"));
}

#[test]
fn errors_name_the_bad_field() {
    let cases = [
        (
            ISSUE_EXAMPLE.replace("unused_for: 14d", "unused_for: 14x"),
            r#"rules[2].when.unused_for: "14x" is not a duration"#,
        ),
        (
            ISSUE_EXAMPLE.replace("kind: buildkit-cache, untagged", "kind: cache, untagged"),
            r#"rules[1].select.kind: "cache" is not a kind"#,
        ),
        (
            ISSUE_EXAMPLE.replace("action: keep}", "action: save}"),
            r#"rules[0].action: "save" is not an action"#,
        ),
        (
            ISSUE_EXAMPLE.replace("grace_period: 1h", "grace_period: soon"),
            r#"grace_period: "soon" is not a duration"#,
        ),
        (
            ISSUE_EXAMPLE.replace("s3://buildkit-cache/app/", "buildkit-cache/app/"),
            "s3_caches[0].uri:",
        ),
        (
            ISSUE_EXAMPLE.replace("name: old-untagged", "name: stale-cache"),
            r#"rules[3].name: "stale-cache" is used by an earlier rule"#,
        ),
        (
            ISSUE_EXAMPLE.replace(r#"["cache-main"]"#, r#"["/cache-(/"]"#),
            "rules[0].select.tags[0]: \"/cache-(/\" is not a valid regex",
        ),
        (
            ISSUE_EXAMPLE.replace("max_deletions: 500", "max_deletions: 0"),
            "max_deletions: 0 would delete nothing",
        ),
        (
            ISSUE_EXAMPLE.replace("repositories: [\"app\", \"svc-*\"]\n", ""),
            "repositories: missing",
        ),
    ];
    for (text, expected) in cases {
        let err = Policy::parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with(expected),
            "expected {expected:?}, got {err:?}"
        );
    }
    let err = Policy::parse("repositories: [a]\nrules: [{name: x, action: keep, selct: {}}]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("selct"), "{err}");
}

const ECR_DOCUMENT: &str = r#"{"rules": [{"rulePriority": 1, "description": "keep 3",
    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 3},
    "action": {"type": "expire"}}]}"#;

#[test]
fn an_ecr_lifecycle_policy_is_a_policy_for_every_repository() {
    let p = Policy::parse(ECR_DOCUMENT).unwrap();
    assert!(p.selects_repository("any/repo"));
    assert!(p.rules.is_empty());
    assert_eq!(p.grace_period, DEFAULT_GRACE);
    assert_eq!(p.max_deletions, None);
    let l = p.lifecycle_policy_for("any/repo").unwrap();
    assert_eq!(l.rules[0].name(), "ecr:1");
    // What `aws ecr get-lifecycle-policy` prints works too.
    let cli = serde_json::json!({"registryId": "123456789012", "repositoryName": "app",
        "lifecyclePolicyText": ECR_DOCUMENT});
    assert!(Policy::parse(&cli.to_string())
        .unwrap()
        .lifecycle_policy_for("app")
        .is_some());
    let err = Policy::parse(&ECR_DOCUMENT.replace("\"any\"", "\"tagged\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("rules[0] (rulePriority 1).selection: tagStatus tagged needs a tagPrefixList or a tagPatternList (ECR lifecycle policy)"),
        "{err}"
    );
}

#[test]
fn an_afterpush_policy_embeds_lifecycle_policies_for_some_repositories() {
    let yaml = format!(
        "repositories: ['*']\nrules:\n  - {{name: keep-prod, select: {{tags: ['prod']}}, action: keep}}\necr_lifecycle:\n  - repositories: ['legacy-*']\n    policy: {ECR_DOCUMENT}\n  - repositories: ['text']\n    policy: {}\n",
        serde_json::to_string(ECR_DOCUMENT).unwrap()
    );
    let p = Policy::parse(&yaml).unwrap();
    assert!(p.lifecycle_policy_for("legacy-api").is_some());
    assert!(p.lifecycle_policy_for("text").is_some());
    assert!(p.lifecycle_policy_for("app").is_none());
    let bad = yaml.replace(
        "\"countNumber\": 3",
        "\"countNumber\": 3, \"countUnit\": \"days\"",
    );
    let err = Policy::parse(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with("ecr_lifecycle[0].policy.rules[0] (rulePriority 1).selection.countUnit: only with countType sinceImage"),
        "{err}"
    );
    let err = Policy::parse("repositories: ['*']\necr_lifecycle: [{policy: {}}]")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("ecr_lifecycle[0].repositories: missing"),
        "{err}"
    );
}

#[test]
fn a_rule_that_expires_everything_must_say_so() {
    let err = Policy::parse("repositories: ['*']\nrules: [{name: wipe, action: expire}]")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("rules[0]: rule \"wipe\" would expire every image")
            && err.contains("say so with select: {all: true}"),
        "{err}"
    );
    let p = Policy::parse(
        "repositories: ['*']\nrules: [{name: wipe, select: {all: true}, action: expire}]",
    )
    .unwrap();
    assert_eq!(p.rules.len(), 1);
    // Any selector or condition makes it something less than everything.
    for ok in [
        "{name: r, select: {untagged: true}, action: expire}",
        "{name: r, select: {kind: image}, action: expire}",
        "{name: r, action: expire, when: {older_than: 30d}}",
        "{name: r, action: keep}",
    ] {
        Policy::parse(&format!("repositories: ['*']\nrules: [{ok}]")).unwrap();
    }
    let err = Policy::parse(
        "repositories: ['*']\nrules: [{name: r, select: {all: true, kind: image}, action: expire}]",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("rules[0].select.all:"), "{err}");
}

#[test]
fn the_sample_lifecycle_policies_parse() {
    let ecr = Policy::parse(include_str!("../../../infra/policies/ecr-lifecycle.json")).unwrap();
    assert_eq!(ecr.lifecycle_policy_for("anything").unwrap().rules.len(), 3);
    let mixed = Policy::parse(include_str!(
        "../../../infra/policies/ecr-lifecycle-mixed.yaml"
    ))
    .unwrap();
    assert_eq!(
        mixed.lifecycle_policy_for("svc-api").unwrap().rules.len(),
        2
    );
    assert_eq!(
        mixed.lifecycle_policy_for("legacy/web").unwrap().rules[0].name(),
        "ecr:1"
    );
    assert!(mixed.lifecycle_policy_for("app").is_none());
    assert_eq!(mixed.rules.len(), 3);
}

/// ECR refuses a document with a key twice; JSON and YAML readers keep the last one,
/// which made `"countNumber":1000,"countNumber":1` plan deletions and a second
/// `"rules"` replace the first.
#[test]
fn a_key_given_twice_is_refused_in_every_form() {
    let count_twice = ECR_DOCUMENT.replace(
        r#""countNumber": 3"#,
        r#""countNumber": 1000, "countNumber": 3"#,
    );
    let rules_twice = format!(
        r#"{{"rules": [{{"rulePriority": 9}}], {}"#,
        &ECR_DOCUMENT.trim_start()[1..]
    );
    let yaml_twice =
        "repositories: ['*']\nmax_deletions: 1\nrules: []\nrules: [{name: r, action: keep}]\n";
    let cli_text = serde_json::json!({"lifecyclePolicyText": count_twice}).to_string();
    let embedded_text = format!(
        "repositories: ['*']\necr_lifecycle:\n  - repositories: [a]\n    policy: {}\n",
        serde_json::to_string(&count_twice).unwrap()
    );
    let embedded_object = format!(
        "repositories: ['*']\necr_lifecycle:\n  - repositories: [a]\n    policy: {count_twice}\n"
    );
    for (text, key) in [
        (&count_twice, "countNumber"),
        (&rules_twice, "rules"),
        (&yaml_twice.to_string(), "rules"),
        (&cli_text, "countNumber"),
        (&embedded_text, "countNumber"),
        (&embedded_object, "countNumber"),
    ] {
        let err = Policy::parse(text).unwrap_err().to_string();
        assert!(
            err.contains(&format!("duplicate key \"{key}\"")),
            "{text}\n=> {err}"
        );
    }
    let err = LifecyclePolicy::parse(&count_twice)
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate key \"countNumber\""), "{err}");
}

#[test]
fn policies_over_one_mib_are_refused_before_parsing() {
    let at_limit = format!(
        "repositories: ['*']\n#{}\n",
        "x".repeat(MAX_POLICY_BYTES - 22)
    );
    assert_eq!(at_limit.len(), MAX_POLICY_BYTES);
    Policy::parse(&at_limit).unwrap();
    let over = format!("{at_limit} ");
    let err = Policy::parse(&over).unwrap_err();
    assert!(
        matches!(err, PolicyError::TooLarge { size } if size == MAX_POLICY_BYTES as u64 + 1),
        "{err}"
    );
    // A file is read only up to the limit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, "#".repeat(3 * MAX_POLICY_BYTES)).unwrap();
    let err = Policy::load(&path).unwrap_err();
    assert!(
        matches!(err, PolicyError::TooLarge { size } if size == MAX_POLICY_BYTES as u64 + 1),
        "{err}"
    );
}

/// 100,000 nested `[` took 49 s in the YAML scanner before it failed on its depth.
/// Refused by a count of the nesting, before any parser runs.
#[test]
fn deep_nesting_is_refused_before_parsing() {
    for text in [
        format!(
            "repositories: {}{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!(
            "{{\"rules\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    ] {
        let err = Policy::parse(&text).unwrap_err();
        assert!(matches!(err, PolicyError::TooDeep), "{err}");
        assert!(err.to_string().contains("more than 64 deep"), "{err}");
    }
}

/// Every rule name is checked against the earlier ones through one set: 20,000 rules
/// (a 700 KiB policy, within the size limit) parse, and a repeat is found at the end.
#[test]
fn many_rules_are_checked_for_repeated_names() {
    let rules: String = (0..20_000)
        .map(|i| format!("  - {{name: r{i}, action: keep}}\n"))
        .collect();
    let text = format!("repositories: ['*']\nrules:\n{rules}");
    assert!(text.len() < MAX_POLICY_BYTES);
    assert_eq!(Policy::parse(&text).unwrap().rules.len(), 20_000);
    let err = Policy::parse(&format!("{text}  - {{name: r7, action: keep}}\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("rules[20000].name: \"r7\" is used by an earlier rule"),
        "{err}"
    );
}

#[test]
fn an_empty_rules_list_alone_says_what_each_kind_of_policy_needs() {
    for text in [r#"{"rules":[]}"#, "rules: []"] {
        let err = Policy::parse(text).unwrap_err().to_string();
        assert!(
            err.starts_with("rules: empty")
                && err.contains("at least one rule")
                && !err.contains("missing"),
            "{err}"
        );
    }
}

/// `.inf` is a YAML float; a JSON view of it used to be null, so an ECR count of
/// `.inf` read as "countNumber: missing".
#[test]
fn an_infinite_count_is_named_not_missing() {
    let text = "rules:\n  - rulePriority: 1\n    selection: {tagStatus: any, countType: imageCountMoreThan, countNumber: .inf}\n    action: {type: expire}\n";
    let err = Policy::parse(text).unwrap_err().to_string();
    assert!(
        !err.contains("missing")
            && err.contains("countNumber: invalid value: floating point `inf`")
            && err.contains("line 3"),
        "{err}"
    );
    let err = Policy::parse(
        "repositories: ['*']\nrules: [{name: r, action: expire, when: {keep_latest: .inf}}]",
    )
    .unwrap_err()
    .to_string();
    assert!(!err.contains("missing") && err.contains("inf"), "{err}");
}

#[test]
fn inspector_is_opt_in_with_a_window() {
    let p = Policy::parse("repositories: ['*']").unwrap();
    assert!(!p.protect.inspector);
    assert_eq!(p.protect.inspector_window.as_secs(), 30 * 24 * 3600);
    let p = Policy::parse("repositories: ['*']\nprotect: {inspector: true, inspector_window: 14d}")
        .unwrap();
    assert!(p.protect.inspector && p.protect.ecs);
    assert_eq!(p.protect.inspector_window.as_secs(), 14 * 24 * 3600);
    let shown = serde_json::to_value(&p.protect).unwrap();
    assert_eq!(shown["inspector_window"], "14d");
    let err =
        Policy::parse("repositories: ['*']\nprotect: {inspector: true, inspector_window: soon}")
            .unwrap_err()
            .to_string();
    assert!(err.contains("protect.inspector_window"), "{err}");
}
