//! ECR lifecycle policies, as written, against moto's ECR: every worked example of AWS's
//! "Examples of lifecycle policies in Amazon ECR" page (its repository contents, its
//! policy text, the images it says expire), planned through
//! `afterpush cleanup plan --policy <ECR JSON> --repository R --as-of T --json`, through
//! `--from-ecr` (the repository's own policy, set with PutLifecyclePolicy), and through
//! the cache-janitor Lambda handler on a push event (`afterpush invoke cache-janitor`).
//!
//! The expectations are the documentation's, not the code's. The page's image lists
//! give ages in days; the images are pushed with those ages before T (moto's push
//! times are set through the launcher's correction, see tests/support). Where the page
//! lists two images "1 day ago" and its outcome needs one newer than the other, the
//! later-listed one is pushed an hour later. The page's tag `git hash` has a space,
//! which ECR tags cannot have; it is pushed as `5f3c2ab`, a git hash.
//!
//! The page has used `tagPrefixList` (2023) and `tagPatternList` (now) in the same
//! examples with the same outcomes; both versions are run.

mod support;

use afterpush::oci::{media, Sha256Digest};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

/// One image of an example: its letter, tags and age.
struct Image {
    name: &'static str,
    tags: &'static [&'static str],
    age: Duration,
    last_pulled: Option<Duration>,
}

const fn days(n: i64) -> Duration {
    Duration::days(n)
}

fn image(name: &'static str, tags: &'static [&'static str], age: Duration) -> Image {
    Image {
        name,
        tags,
        age,
        last_pulled: None,
    }
}

struct Example {
    /// Section and example of the page; also gives the repository name.
    name: &'static str,
    images: Vec<Image>,
    policy: String,
    expired: &'static [&'static str],
    would_archive: &'static [&'static str],
}

fn rule(priority: u32, selection: &str, action: &str) -> String {
    format!(
        r#"{{"rulePriority": {priority}, "description": "Rule {priority}", "selection": {selection}, "action": {action}}}"#
    )
}

fn policy(rules: &[String]) -> String {
    format!(r#"{{"rules": [{}]}}"#, rules.join(", "))
}

const EXPIRE: &str = r#"{"type": "expire"}"#;
const ARCHIVE: &str = r#"{"type": "transition", "targetStorageClass": "archive"}"#;

/// `"tagPatternList": ["alpha*", "beta*"]` or, 2023's page, `"tagPrefixList": ["alpha", "beta"]`.
fn tag_list(prefix_list: bool, tags: &[&str]) -> String {
    if prefix_list {
        format!(r#""tagPrefixList": {:?}"#, tags)
    } else {
        let patterns: Vec<String> = tags.iter().map(|t| format!("{t}*")).collect();
        format!(r#""tagPatternList": {:?}"#, patterns)
    }
}

fn count_more_than(n: u32) -> String {
    format!(r#""countType": "imageCountMoreThan", "countNumber": {n}"#)
}

fn since_pushed(n: u32) -> String {
    format!(r#""countType": "sinceImagePushed", "countUnit": "days", "countNumber": {n}"#)
}

/// The examples with an image list and an outcome, in both list kinds.
fn worked_examples() -> Vec<Example> {
    let mut out = Vec::new();
    for prefix_list in [false, true] {
        let kind = if prefix_list { "prefix" } else { "pattern" };
        let tagged = |tags: &[&str], count: &str| {
            format!(
                r#"{{"tagStatus": "tagged", {}, {count}}}"#,
                tag_list(prefix_list, tags)
            )
        };
        let three = || {
            vec![
                image("A", &["beta-1", "prod-1"], days(10)),
                image("B", &["beta-2", "prod-2"], days(9)),
                image("C", &["beta-3"], days(8)),
            ]
        };
        // Filtering on multiple rules, Example A: "Result: Image A is expired."
        out.push(Example {
            name: leak(format!("multiple-rules-a-{kind}")),
            images: three(),
            policy: policy(&[
                rule(1, &tagged(&["prod"], &count_more_than(1)), EXPIRE),
                rule(2, &tagged(&["beta"], &count_more_than(1)), EXPIRE),
            ]),
            expired: &["A"],
            would_archive: &[],
        });
        // Example B, priorities swapped: "Result: Images A and B are expired."
        out.push(Example {
            name: leak(format!("multiple-rules-b-{kind}")),
            images: three(),
            policy: policy(&[
                rule(1, &tagged(&["beta"], &count_more_than(1)), EXPIRE),
                rule(2, &tagged(&["prod"], &count_more_than(1)), EXPIRE),
            ]),
            expired: &["A", "B"],
            would_archive: &[],
        });
        // Filtering on multiple tags in a single rule, Example A: "Result: Image C is
        // expired."
        out.push(Example {
            name: leak(format!("multiple-tags-a-{kind}")),
            images: vec![
                image("A", &["alpha-1"], days(12)),
                image("B", &["beta-1"], days(11)),
                image("C", &["alpha-2", "beta-2"], days(10)),
                image("D", &["alpha-3"], days(4)),
                image("E", &["beta-3"], days(3)),
                image("F", &["alpha-4", "beta-4"], days(2)),
            ],
            policy: policy(&[rule(
                1,
                &tagged(&["alpha", "beta"], &since_pushed(5)),
                EXPIRE,
            )]),
            expired: &["C"],
            would_archive: &[],
        });
        // Example B, "tags are not exclusive": "Result: Images A and B are expired."
        out.push(Example {
            name: leak(format!("multiple-tags-b-{kind}")),
            images: vec![
                image("A", &["alpha-1", "beta-1", "gamma-1"], days(10)),
                image("B", &["alpha-2", "beta-2"], days(9)),
                image("C", &["alpha-3", "beta-3", "gamma-2"], days(8)),
            ],
            policy: policy(&[rule(
                1,
                &tagged(&["alpha", "beta"], &count_more_than(1)),
                EXPIRE,
            )]),
            expired: &["A", "B"],
            would_archive: &[],
        });
        // Filtering on all images, Example B: "Result: Images A, B, and D are expired."
        out.push(Example {
            name: leak(format!("all-images-b-{kind}")),
            images: vec![
                image("A", &["alpha-1", "beta-1"], days(4)),
                image("B", &[], days(3)),
                image("C", &["alpha-2"], days(2)),
                image("D", &["5f3c2ab"], days(1)),
                image("E", &[], days(1) - Duration::hours(1)),
            ],
            policy: policy(&[
                rule(1, &tagged(&["alpha"], &count_more_than(1)), EXPIRE),
                rule(
                    2,
                    &format!(r#"{{"tagStatus": "untagged", {}}}"#, since_pushed(1)),
                    EXPIRE,
                ),
                rule(
                    3,
                    &format!(r#"{{"tagStatus": "any", {}}}"#, count_more_than(1)),
                    EXPIRE,
                ),
            ]),
            expired: &["A", "B", "D"],
            would_archive: &[],
        });
    }
    // Filtering on all images, Example A: "Result: Images A, B, and C are expired."
    out.push(Example {
        name: "all-images-a",
        images: vec![
            image("A", &["alpha-1"], days(4)),
            image("B", &["beta-1"], days(3)),
            image("C", &[], days(2)),
            image("D", &["alpha-2"], days(1)),
        ],
        policy: policy(&[rule(
            1,
            &format!(r#"{{"tagStatus": "any", {}}}"#, count_more_than(1)),
            EXPIRE,
        )]),
        expired: &["A", "B", "C"],
        would_archive: &[],
    });
    out
}

/// The page's examples that give a policy and a sentence but no image list ("expires
/// images with a tag starting with prod older than 14 days", "keeps only one untagged
/// image", "archives images not pulled in 90 days", the archive-then-expire pair): the
/// images here are chosen on both sides of each sentence.
fn sentence_examples() -> Vec<Example> {
    let mut pulled_old = image("pulled-100d-ago", &["v1"], days(200));
    pulled_old.last_pulled = Some(days(100));
    let mut pulled_new = image("pulled-10d-ago", &["v2"], days(200));
    pulled_new.last_pulled = Some(days(10));
    vec![
        Example {
            name: "image-age",
            images: vec![
                image("prod-old", &["prod-1"], days(15)),
                image("prod-young", &["prod-2"], days(13)),
                image("production-old", &["production"], days(30)),
                image("dev-old", &["dev-1"], days(30)),
                image("untagged-old", &[], days(30)),
            ],
            policy: policy(&[rule(
                1,
                &format!(
                    r#"{{"tagStatus": "tagged", "tagPatternList": ["prod*"], {}}}"#,
                    since_pushed(14)
                ),
                EXPIRE,
            )]),
            expired: &["prod-old", "production-old"],
            would_archive: &[],
        },
        Example {
            name: "image-count",
            images: vec![
                image("untagged-3", &[], days(3)),
                image("untagged-2", &[], days(2)),
                image("untagged-1", &[], days(1)),
                image("tagged-old", &["v1"], days(9)),
            ],
            policy: policy(&[rule(
                1,
                &format!(r#"{{"tagStatus": "untagged", {}}}"#, count_more_than(1)),
                EXPIRE,
            )]),
            expired: &["untagged-3", "untagged-2"],
            would_archive: &[],
        },
        Example {
            name: "last-pulled",
            images: vec![
                pulled_old,
                pulled_new,
                image("never-pulled-91d", &["v3"], days(91)),
                image("never-pulled-89d", &["v4"], days(89)),
            ],
            policy: policy(&[rule(
                1,
                r#"{"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 90}"#,
                ARCHIVE,
            )]),
            expired: &[],
            would_archive: &["pulled-100d-ago", "never-pulled-91d"],
        },
        Example {
            name: "archive-then-expire",
            images: vec![
                image("old", &["v1"], days(31)),
                image("young", &["v2"], days(29)),
            ],
            policy: policy(&[
                rule(
                    1,
                    &format!(r#"{{"tagStatus": "any", {}}}"#, since_pushed(30)),
                    ARCHIVE,
                ),
                rule(
                    2,
                    r#"{"tagStatus": "any", "storageClass": "archive", "countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 365}"#,
                    EXPIRE,
                ),
            ]),
            expired: &[],
            would_archive: &["old"],
        },
    ]
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A pushed example: its repository and each image's digest by name.
struct Seeded {
    repository: String,
    digests: Vec<(&'static str, String)>,
}

impl Seeded {
    fn names(&self, digests: &BTreeSet<String>) -> BTreeSet<&'static str> {
        self.digests
            .iter()
            .filter(|(_, d)| digests.contains(d))
            .map(|(n, _)| *n)
            .collect()
    }
    fn newest_tagged(&self, example: &Example) -> (&'static str, String) {
        let im = example
            .images
            .iter()
            .filter(|i| !i.tags.is_empty())
            .min_by_key(|i| i.age)
            .unwrap();
        let d = &self.digests.iter().find(|(n, _)| *n == im.name).unwrap().1;
        (im.tags[0], d.clone())
    }
}

/// Pushes the example's images (one manifest each, every tag put on it) into its own
/// repository and sets their push and pull times relative to `t`.
async fn seed(moto: &support::TestMoto, example: &Example, t: DateTime<Utc>) -> Seeded {
    let ecr = moto.ecr().await;
    let repository = format!("lp-{}", example.name);
    support::create_ecr_repository(&ecr, &repository).await;
    let mut digests = Vec::new();
    for im in &example.images {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            Sha256Digest::of(format!("{repository} {}", im.name).as_bytes())
        );
        let digest = Sha256Digest::of(body.as_bytes()).to_string();
        let tags: Vec<Option<&str>> = if im.tags.is_empty() {
            vec![None]
        } else {
            im.tags.iter().map(|t| Some(*t)).collect()
        };
        for tag in tags {
            support::put_ecr_manifest(&ecr, &repository, &body, media::OCI_MANIFEST, tag).await;
        }
        moto.set_ecr_image_times(
            &repository,
            &digest,
            t - im.age,
            im.last_pulled.map(|p| t - p),
        )
        .await;
        digests.push((im.name, digest));
    }
    Seeded {
        repository,
        digests,
    }
}

fn cli(moto: &support::TestMoto, args: &[&str]) -> Value {
    let out = moto
        .afterpush_command()
        .args(args)
        .output()
        .expect("run afterpush");
    assert!(
        out.status.success(),
        "afterpush {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "afterpush {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The digests a report plans to delete in its one repository, and those it keeps
/// saying "would archive".
fn planned(report: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let repo = &report["repositories"][0];
    let digests = |list: &Value, filter: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|d| filter(d))
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect()
    };
    (
        digests(&repo["planned"], &|_| true),
        digests(&repo["keeps"], &|d| {
            d["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("would archive"))
        }),
    )
}

fn check(example: &Example, seeded: &Seeded, report: &Value, how: &str) {
    assert_eq!(report["dry_run"], true, "{how}: {report}");
    assert_eq!(report["deleted"], 0, "{how}: {report}");
    let (deleted, archived) = planned(report);
    assert_eq!(
        seeded.names(&deleted),
        example.expired.iter().copied().collect(),
        "{} ({how}): expired images\n{report}",
        example.name
    );
    assert_eq!(
        seeded.names(&archived),
        example.would_archive.iter().copied().collect(),
        "{} ({how}): would-archive images\n{report}",
        example.name
    );
}

/// T: now, to the second (moto keeps push times in whole seconds).
fn as_of() -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::seconds(1)).unwrap()
}

#[tokio::test]
async fn every_worked_example_plans_the_documented_expirations() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    let dir = tempfile::tempdir().unwrap();
    let t = as_of();
    let t_text = t.to_rfc3339();
    let examples: Vec<Example> = worked_examples()
        .into_iter()
        .chain(sentence_examples())
        .collect();
    for example in &examples {
        let seeded = seed(&moto, example, t).await;
        let file = dir.path().join(format!("{}.json", example.name));
        std::fs::write(&file, &example.policy).unwrap();
        let report = cli(
            &moto,
            &[
                "cleanup",
                "plan",
                "--policy",
                file.to_str().unwrap(),
                "--repository",
                &seeded.repository,
                "--as-of",
                &t_text,
                "--json",
            ],
        );
        check(example, &seeded, &report, "--policy");

        // The same policy set on the repository, read back with --from-ecr.
        ecr.put_lifecycle_policy()
            .repository_name(&seeded.repository)
            .lifecycle_policy_text(&example.policy)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PutLifecyclePolicy {}: {}",
                    example.name,
                    aws_sdk_ecr::error::DisplayErrorContext(e)
                )
            });
        let report = cli(
            &moto,
            &[
                "cleanup",
                "plan",
                "--from-ecr",
                "--repository",
                &seeded.repository,
                "--as-of",
                &t_text,
                "--json",
            ],
        );
        check(example, &seeded, &report, "--from-ecr");
    }
}

/// The same examples through the cache-janitor handler (`afterpush invoke cache-janitor`)
/// with the ECR document as `CLEANUP_POLICY`, on an ECR push event of the example's
/// newest tagged image: the Lambda evaluates the repository at once, dry run by default.
/// The handler plans at its own clock, so the images are aged from the test's start;
/// no example has an image within a minute of a rule's threshold.
#[tokio::test]
async fn every_worked_example_plans_the_documented_expirations_on_a_push_event() {
    let moto = support::TestMoto::start();
    let dir = tempfile::tempdir().unwrap();
    let t = as_of();
    let examples: Vec<Example> = worked_examples()
        .into_iter()
        .chain(sentence_examples())
        .collect();
    let template: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("infra/events/push-image-tag.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for example in &examples {
        let seeded = seed(&moto, example, t).await;
        let (tag, digest) = seeded.newest_tagged(example);
        let mut event = template.clone();
        event["detail"]["repository-name"] = seeded.repository.clone().into();
        event["detail"]["image-tag"] = tag.into();
        event["detail"]["image-digest"] = digest.into();
        let file = dir.path().join(format!("{}-event.json", example.name));
        std::fs::write(&file, serde_json::to_vec(&event).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_afterpush"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(support::TestMoto::aws_env(&moto.endpoint()))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("CLEANUP_POLICY", &example.policy)
            .args(["invoke", "cache-janitor", "--event"])
            .arg(&file)
            .output()
            .expect("run afterpush invoke");
        assert!(
            out.status.success(),
            "{}: {}",
            example.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
        let report = &outcome["report"];
        assert_eq!(
            report["trigger"],
            format!("push {}:{tag}", seeded.repository),
            "{outcome}"
        );
        check(example, &seeded, report, "push event");
    }
}

/// The text plan shows each rule's counts and says that archiving is never done;
/// `--from-ecr` names what it lacks.
#[tokio::test]
async fn plan_prints_per_rule_counts_and_from_ecr_names_what_is_missing() {
    let moto = support::TestMoto::start();
    let t = as_of();
    let example = sentence_examples()
        .into_iter()
        .find(|e| e.name == "archive-then-expire")
        .unwrap();
    let seeded = seed(&moto, &example, t).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, &example.policy).unwrap();
    let run = |args: &[&str]| moto.afterpush_command().args(args).output().unwrap();
    let t_text = t.to_rfc3339();
    let out = run(&[
        "cleanup",
        "plan",
        "--policy",
        file.to_str().unwrap(),
        "--repository",
        &seeded.repository,
        "--as-of",
        &t_text,
        "--all",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("  rule ecr:1 (Rule 1): matched 2, would delete 0, would archive 1 (never done by afterpush)\n"),
        "{text}"
    );
    assert!(
        text.contains("  rule ecr:2 (Rule 2): matched 0, would delete 0\n"),
        "{text}"
    );

    let out = run(&[
        "cleanup",
        "plan",
        "--from-ecr",
        "--repository",
        &seeded.repository,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "repository {:?} has no lifecycle policy",
            seeded.repository
        )),
        "{err}"
    );
    let out = run(&["cleanup", "plan", "--from-ecr"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--from-ecr needs --repository R"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ECR policy applied for real runs under afterpush's safety rules: the entries of a
/// kept multi-arch index and an image within the grace period stay, each named with the
/// ECR rule it overrides; exactly the planned images are deleted.
#[tokio::test]
async fn apply_keeps_what_the_safety_rules_protect_and_deletes_the_rest() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    let repository = "lp-safety";
    support::create_ecr_repository(&ecr, repository).await;
    let t = as_of();
    let put = |body: String, media_type: &'static str, tag: Option<&'static str>| {
        let ecr = ecr.clone();
        async move {
            support::put_ecr_manifest(&ecr, repository, &body, media_type, tag)
                .await
                .to_string()
        }
    };
    let manifest = |seed: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            Sha256Digest::of(seed.as_bytes())
        )
    };
    let mut ages: Vec<(String, Duration)> = Vec::new();
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let d = put(manifest(arch), media::OCI_MANIFEST, None).await;
        ages.push((d.clone(), days(10)));
        children.push(d);
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
        media::OCI_INDEX,
        children
            .iter()
            .map(|d| format!(
                r#"{{"mediaType":"{}","digest":"{d}","size":2}}"#,
                media::OCI_MANIFEST
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let index = put(index, media::OCI_INDEX, Some("v1")).await;
    ages.push((index.clone(), days(10)));
    let mut loose = BTreeSet::new();
    for (i, age) in [days(9), days(8), days(7)].into_iter().enumerate() {
        let d = put(manifest(&format!("loose {i}")), media::OCI_MANIFEST, None).await;
        ages.push((d.clone(), age));
        loose.insert(d);
    }
    let young_newest = put(manifest("young 1"), media::OCI_MANIFEST, None).await;
    ages.push((young_newest.clone(), Duration::minutes(10)));
    let young = put(manifest("young 2"), media::OCI_MANIFEST, None).await;
    ages.push((young.clone(), Duration::minutes(20)));
    for (d, age) in &ages {
        moto.set_ecr_image_times(repository, d, t - *age, None)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    // ECR alone keeps the newest untagged image and expires the other six.
    std::fs::write(
        &file,
        policy(&[rule(
            1,
            &format!(r#"{{"tagStatus": "untagged", {}}}"#, count_more_than(1)),
            EXPIRE,
        )]),
    )
    .unwrap();
    let report = cli(
        &moto,
        &[
            "cleanup",
            "apply",
            "--policy",
            file.to_str().unwrap(),
            "--repository",
            repository,
            "--as-of",
            &t.to_rfc3339(),
            "--json",
        ],
    );
    assert_eq!(report["dry_run"], false, "{report}");
    let repo = &report["repositories"][0];
    let deleted: BTreeSet<String> = repo["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(deleted, loose, "{report}");
    let keeps = repo["keeps"].as_array().unwrap();
    let kept = |digest: &str| {
        keeps
            .iter()
            .find(|k| k["digest"] == digest)
            .unwrap_or_else(|| panic!("{digest} not kept: {report}"))
    };
    for (digest, why) in [
        (&children[0], "listed by kept index"),
        (&children[1], "listed by kept index"),
        (&young, "within the grace period"),
    ] {
        let k = kept(digest);
        assert_eq!(k["rule"], "ecr:1", "{k}");
        assert_eq!(k["overridden"], true, "{k}");
        assert!(k["reason"].as_str().unwrap().contains(why), "{k}");
    }
    assert_eq!(
        repo["rules"][0],
        serde_json::json!({"rule": "ecr:1", "description": "Rule 1", "matched": 7,
            "expired": 3, "kept_by_safety": 3})
    );
    let left = support::ecr_image_digests(&ecr, repository).await;
    let expected: BTreeSet<String> = ages
        .iter()
        .map(|(d, _)| d.clone())
        .filter(|d| !loose.contains(d))
        .collect();
    assert_eq!(left, expected);
    assert!(left.contains(&young_newest) && left.contains(&index));
}

/// A tag in cosign's scheme (`sha256-<hex>.sig`) on an ordinary image does not make it a
/// signature of `<hex>`: its own manifest (config type, layers) says what it is. Y is
/// untagged and 30 days old; X is an image tagged `v1` and `sha256-<Y>.sig`, 5 days
/// old. Rule 1 keeps the 10 newest `v*` images, rule 2 expires untagged images older
/// than 7 days: ECR's rules expire Y and keep X (rule 1 identifies it).
#[tokio::test]
async fn a_cosign_style_tag_does_not_make_an_image_a_signature() {
    let moto = support::TestMoto::start();
    let ecr = moto.ecr().await;
    let repository = "lp-cosign-tag";
    support::create_ecr_repository(&ecr, repository).await;
    let t = as_of();
    let manifest = |seed: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[{{"mediaType":"{}","digest":"{}","size":3}}]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            Sha256Digest::of(format!("config {seed}").as_bytes()),
            media::OCI_LAYER_GZIP,
            Sha256Digest::of(format!("layer {seed}").as_bytes()),
        )
    };
    let y = support::put_ecr_manifest(&ecr, repository, &manifest("Y"), media::OCI_MANIFEST, None)
        .await;
    let x_body = manifest("X");
    let sig_tag = format!("sha256-{}.sig", y.hex());
    let mut x = None;
    for tag in ["v1", sig_tag.as_str()] {
        x = Some(
            support::put_ecr_manifest(&ecr, repository, &x_body, media::OCI_MANIFEST, Some(tag))
                .await,
        );
    }
    let x = x.unwrap().to_string();
    let y = y.to_string();
    moto.set_ecr_image_times(repository, &y, t - days(30), None)
        .await;
    moto.set_ecr_image_times(repository, &x, t - days(5), None)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(
        &file,
        policy(&[
            rule(
                1,
                &format!(
                    r#"{{"tagStatus": "tagged", {}, {}}}"#,
                    tag_list(true, &["v"]),
                    count_more_than(10)
                ),
                EXPIRE,
            ),
            rule(
                2,
                &format!(r#"{{"tagStatus": "untagged", {}}}"#, since_pushed(7)),
                EXPIRE,
            ),
        ]),
    )
    .unwrap();
    let report = cli(
        &moto,
        &[
            "cleanup",
            "apply",
            "--policy",
            file.to_str().unwrap(),
            "--repository",
            repository,
            "--as-of",
            &t.to_rfc3339(),
            "--json",
        ],
    );
    let repo = &report["repositories"][0];
    let deleted: BTreeSet<String> = repo["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(deleted, BTreeSet::from([y.clone()]), "{report}");
    let left = support::ecr_image_digests(&ecr, repository).await;
    assert_eq!(left, BTreeSet::from([x]), "{report}");
}
