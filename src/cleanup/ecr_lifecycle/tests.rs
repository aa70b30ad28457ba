use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Image `name`, tagged `tags`, pushed `minutes` ago.
fn img(name: &str, tags: &[&str], minutes: i64) -> ImageRecord {
    ImageRecord::named(name, tags, now() - Duration::minutes(minutes))
}

const DAY: i64 = 24 * 60;

fn rule(priority: u32, selection: &str, action: &str) -> String {
    format!(
        r#"{{"rulePriority":{priority},"description":"r{priority}","selection":{selection},"action":{action}}}"#
    )
}

fn doc(rules: &[String]) -> String {
    format!(r#"{{"rules":[{}]}}"#, rules.join(","))
}

const EXPIRE: &str = r#"{"type":"expire"}"#;

fn expired(policy: &str, images: &[ImageRecord]) -> Vec<usize> {
    let p = LifecyclePolicy::parse(policy).unwrap();
    let (outcomes, _) = p.evaluate(images, now());
    outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Outcome::Expire { .. }))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn wildcards_cover_the_whole_tag() {
    for (p, t, m) in [
        ("prod", "prod", true),
        ("prod", "prod1", false),
        ("prod*", "prod", true),
        ("prod*", "production-team1", true),
        ("*prod*", "repo-production", true),
        ("*prod*", "prd", false),
        ("*test*1*2*3", "xtest-1-2-3", true),
        ("*test*1*2*3", "xtest-1-2-3x", false),
        ("a*a", "a", false),
        ("a*a", "aa", true),
    ] {
        assert_eq!(wildcard_match(p, t), m, "{p} ~ {t}");
    }
}

#[test]
fn every_list_entry_must_match_some_tag() {
    let prefixes = LifecyclePolicy::parse(&doc(&[rule(
        1,
        r#"{"tagStatus":"tagged","tagPrefixList":["alpha","beta"],"countType":"imageCountMoreThan","countNumber":1}"#,
        EXPIRE,
    )]))
    .unwrap();
    let r = &prefixes.rules[0];
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(r.identifies(&tags(&["alpha-2", "beta-2"])));
    assert!(!r.identifies(&tags(&["alpha-1"])));
    assert!(!r.identifies(&tags(&[])));
    // A prefix is a prefix; a pattern without `*` is the whole tag.
    let patterns = LifecyclePolicy::parse(&doc(&[rule(
        1,
        r#"{"tagStatus":"tagged","tagPatternList":["alpha","beta*"],"countType":"imageCountMoreThan","countNumber":1}"#,
        EXPIRE,
    )]))
    .unwrap();
    assert!(!patterns.rules[0].identifies(&tags(&["alpha-2", "beta-2"])));
    assert!(patterns.rules[0].identifies(&tags(&["alpha", "beta-2"])));
}

/// AWS's examples page, "Filtering on multiple rules", Example A and (priorities
/// swapped) Example B, with both list kinds the page has used.
#[test]
fn higher_rules_claim_what_they_identify() {
    let images = [
        img("A", &["beta-1", "prod-1"], 10 * DAY),
        img("B", &["beta-2", "prod-2"], 9 * DAY),
        img("C", &["beta-3"], 8 * DAY),
    ];
    for list in ["tagPrefixList", "tagPatternList"] {
        let (prod, beta) = if list == "tagPrefixList" {
            ("prod", "beta")
        } else {
            ("prod*", "beta*")
        };
        let sel = |t: &str| {
            format!(
                r#"{{"tagStatus":"tagged","{list}":["{t}"],"countType":"imageCountMoreThan","countNumber":1}}"#
            )
        };
        let a = doc(&[rule(1, &sel(prod), EXPIRE), rule(2, &sel(beta), EXPIRE)]);
        assert_eq!(expired(&a, &images), [0], "{list} example A");
        let b = doc(&[rule(1, &sel(beta), EXPIRE), rule(2, &sel(prod), EXPIRE)]);
        assert_eq!(expired(&b, &images), [0, 1], "{list} example B");
    }
}

/// "Filtering on all images", Example B: a lower rule counts what higher rules
/// identified, and expires only what they did not.
#[test]
fn lower_rules_count_but_cannot_expire_claimed_images() {
    let images = [
        img("A", &["alpha-1", "beta-1"], 4 * DAY),
        img("B", &[], 3 * DAY),
        img("C", &["alpha-2"], 2 * DAY),
        img("D", &["5f3c2ab"], DAY),
        img("E", &[], DAY - 1),
    ];
    let policy = doc(&[
        rule(
            1,
            r#"{"tagStatus":"tagged","tagPatternList":["alpha*"],"countType":"imageCountMoreThan","countNumber":1}"#,
            EXPIRE,
        ),
        rule(
            2,
            r#"{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1}"#,
            EXPIRE,
        ),
        rule(
            3,
            r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1}"#,
            EXPIRE,
        ),
    ]);
    assert_eq!(expired(&policy, &images), [0, 1, 3]);
    let p = LifecyclePolicy::parse(&policy).unwrap();
    let (outcomes, tallies) = p.evaluate(&images, now());
    assert_eq!(
        tallies
            .iter()
            .map(|t| (t.identified, t.marked))
            .collect::<Vec<_>>(),
        [(2, 1), (2, 1), (5, 1)]
    );
    assert!(matches!(&outcomes[4], Outcome::Spared { rule: 1, reason } if reason.contains("≤ 1d")));
}

#[test]
fn since_image_pulled_ages_never_pulled_images_from_their_push() {
    let mut pulled_long_ago = img("old-pull", &["v1"], 200 * DAY);
    pulled_long_ago.last_pulled_at = Some(now() - Duration::days(100));
    let mut pulled_lately = img("new-pull", &["v2"], 200 * DAY);
    pulled_lately.last_pulled_at = Some(now() - Duration::days(10));
    let images = [
        pulled_long_ago,
        pulled_lately,
        img("never-old", &["v3"], 91 * DAY),
        img("never-young", &["v4"], 89 * DAY),
    ];
    let p = LifecyclePolicy::parse(&doc(&[rule(
        1,
        r#"{"tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":90}"#,
        r#"{"type":"transition","targetStorageClass":"archive"}"#,
    )]))
    .unwrap();
    let (outcomes, _) = p.evaluate(&images, now());
    let archived: Vec<bool> = outcomes
        .iter()
        .map(|o| matches!(o, Outcome::Archive { .. }))
        .collect();
    assert_eq!(archived, [true, false, true, false]);
    assert!(
        matches!(&outcomes[2], Outcome::Archive { reason, .. } if reason.starts_with("never pulled, pushed 91d ago"))
    );
}

#[test]
fn archive_rules_identify_nothing_in_standard_storage() {
    let p = LifecyclePolicy::parse(&doc(&[rule(
        1,
        r#"{"tagStatus":"any","storageClass":"archive","countType":"sinceImageTransitioned","countUnit":"days","countNumber":365}"#,
        EXPIRE,
    )]))
    .unwrap();
    let (outcomes, tallies) = p.evaluate(&[img("a", &[], 1000 * DAY)], now());
    assert_eq!(outcomes, [Outcome::Unselected]);
    assert_eq!(tallies[0].identified, 0);
}

#[test]
fn validation_refuses_what_ecr_refuses_and_names_the_rule() {
    let count = r#""countType":"imageCountMoreThan","countNumber":1"#;
    let cases: Vec<(String, &str)> = vec![
        (
            doc(&[rule(1, &format!(r#"{{"tagStatus":"any",{count}}}"#), EXPIRE), rule(1, &format!(r#"{{"tagStatus":"untagged",{count}}}"#), EXPIRE)]),
            "rules[1].rulePriority: 1 is used by an earlier rule",
        ),
        (
            doc(&[rule(1, &format!(r#"{{"tagStatus":"any",{count}}}"#), EXPIRE), rule(2, &format!(r#"{{"tagStatus":"untagged",{count}}}"#), EXPIRE)]),
            "rule ecr:1 (rulePriority 1): tagStatus any must be on the rule with the highest rulePriority",
        ),
        (
            doc(&[rule(3, &format!(r#"{{"tagStatus":"tagged",{count}}}"#), EXPIRE)]),
            "rules[0] (rulePriority 3).selection: tagStatus tagged needs a tagPrefixList or a tagPatternList",
        ),
        (
            doc(&[rule(3, &format!(r#"{{"tagStatus":"untagged","tagPrefixList":["a"],{count}}}"#), EXPIRE)]),
            "rules[0] (rulePriority 3).selection: tagPrefixList and tagPatternList are only for tagStatus tagged, not untagged",
        ),
        (
            doc(&[rule(3, &format!(r#"{{"tagStatus":"tagged","tagPrefixList":["a"],"tagPatternList":["a*"],{count}}}"#), EXPIRE)]),
            "rules[0] (rulePriority 3).selection: a rule may have a tagPrefixList or a tagPatternList, not both",
        ),
        (
            doc(&[rule(4, &format!(r#"{{"tagStatus":"tagged","tagPatternList":["ok*","test*1*2*3*4*5*6"],{count}}}"#), EXPIRE)]),
            "rules[0] (rulePriority 4).selection.tagPatternList[1]: \"test*1*2*3*4*5*6\" has 6 wildcards; ECR allows at most 4",
        ),
        (
            doc(&[rule(5, r#"{"tagStatus":"any","countType":"imageCountMoreThan","countUnit":"days","countNumber":1}"#, EXPIRE)]),
            "rules[0] (rulePriority 5).selection.countUnit: only with countType sinceImagePushed",
        ),
        (
            doc(&[rule(5, r#"{"tagStatus":"any","countType":"sinceImagePushed","countNumber":1}"#, EXPIRE)]),
            "rules[0] (rulePriority 5).selection.countUnit: missing",
        ),
        (
            doc(&[rule(5, r#"{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"hours","countNumber":1}"#, EXPIRE)]),
            "rules[0] (rulePriority 5).selection.countUnit: \"hours\" is not days",
        ),
        (
            doc(&[rule(6, r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":0}"#, EXPIRE)]),
            "rules[0] (rulePriority 6).selection.countNumber: 0 is not a positive integer",
        ),
        (
            doc(&[rule(7, r#"{"tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":9}"#, EXPIRE)]),
            "rules[0] (rulePriority 7).action.type: ECR allows countType sinceImagePulled only with action transition",
        ),
        (
            doc(&[rule(7, &format!(r#"{{"tagStatus":"any",{count}}}"#), r#"{"type":"transition"}"#)]),
            "rules[0] (rulePriority 7).action.targetStorageClass: missing",
        ),
        (
            doc(&[rule(7, &format!(r#"{{"tagStatus":"any",{count}}}"#), r#"{"type":"delete"}"#)]),
            "rules[0] (rulePriority 7).action.type: \"delete\" is not expire or transition",
        ),
        (
            doc(&[rule(8, r#"{"tagStatus":"any","countType":"sinceImageTransitioned","countUnit":"days","countNumber":9}"#, EXPIRE)]),
            "rules[0] (rulePriority 8).selection.storageClass: countType sinceImageTransitioned needs storageClass archive",
        ),
        (
            doc(&[rule(1, &format!(r#"{{"tagStatus":"untagged",{count}}}"#), EXPIRE), rule(2, r#"{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":3}"#, EXPIRE)]),
            "rule ecr:2 (rulePriority 2): only one rule may select untagged images, and rulePriority 1 already does",
        ),
        (
            doc(&[rule(1, &format!(r#"{{"tagStatus":"tagged","tagPrefixList":["a","b"],{count}}}"#), EXPIRE), rule(2, &format!(r#"{{"tagStatus":"tagged","tagPrefixList":["b","a"],{count}}}"#), EXPIRE)]),
            "rule ecr:2 (rulePriority 2): rulePriority 1 has the same tagPrefixList",
        ),
        (
            doc(&[rule(1, &format!(r#"{{"tagStatus":"any",{count},"tagFilter":1}}"#), EXPIRE)]),
            "rules[0]: unknown field `tagFilter`",
        ),
        (r#"{"rules":[]}"#.to_string(), "rules: a lifecycle policy needs at least one rule"),
    ];
    for (text, expected) in cases {
        let e = LifecyclePolicy::parse(&text).unwrap_err().to_string();
        assert!(e.starts_with(expected), "expected {expected:?}, got {e:?}");
    }
    // Two `any` rules are fine in different storage classes (AWS's archive example).
    LifecyclePolicy::parse(&doc(&[
        rule(1, r#"{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":30}"#, r#"{"type":"transition","targetStorageClass":"archive"}"#),
        rule(2, r#"{"tagStatus":"any","storageClass":"archive","countType":"sinceImageTransitioned","countUnit":"days","countNumber":365}"#, EXPIRE),
    ]))
    .unwrap();
}

#[test]
fn documents_are_told_by_their_shape() {
    let ecr = serde_json::json!({"rules": [{"rulePriority": 1}]});
    assert!(lifecycle_document(&ecr).is_some());
    let ours = serde_json::json!({"repositories": ["*"], "rules": [{"rulePriority": 1}]});
    assert!(lifecycle_document(&ours).is_none());
    let native = serde_json::json!({"rules": [{"name": "x"}]});
    assert!(lifecycle_document(&native).is_none());
    let cli = serde_json::json!({"registryId": "1", "repositoryName": "app",
        "lifecyclePolicyText": "{\"rules\":[{\"rulePriority\":1}]}"});
    assert_eq!(
        lifecycle_document(&cli).unwrap().unwrap(),
        serde_json::json!({"rules": [{"rulePriority": 1}]})
    );
}

/// ECR stores at most 30,720 characters of `lifecyclePolicyText`; longer documents are
/// refused before they are parsed (the text) or validated (an object, as compact JSON).
#[test]
fn documents_over_ecr_s_length_limit_are_refused() {
    let count = r#""countType":"imageCountMoreThan","countNumber":1"#;
    let rules: Vec<String> = (1..=400)
        .map(|p| {
            rule(
                p,
                &format!(r#"{{"tagStatus":"tagged","tagPrefixList":["p{p}"],{count}}}"#),
                EXPIRE,
            )
        })
        .collect();
    let text = doc(&rules);
    assert!(text.chars().count() > MAX_DOCUMENT_CHARS);
    for e in [
        LifecyclePolicy::parse(&text).unwrap_err(),
        LifecyclePolicy::from_value(&serde_json::from_str(&text).unwrap()).unwrap_err(),
    ] {
        assert!(
            e.to_string().contains("more than ECR's limit of 30720"),
            "{e}"
        );
    }
    // Just within: padded with spaces to exactly the limit.
    let small = doc(&rules[..100]);
    let padded = format!("{small}{}", " ".repeat(MAX_DOCUMENT_CHARS - small.len()));
    assert_eq!(LifecyclePolicy::parse(&padded).unwrap().rules.len(), 100);
    assert!(LifecyclePolicy::parse(&format!("{padded} ")).is_err());
}
