//! The cleanup policy (YAML or JSON) and its validation. Parsing goes through loose
//! "raw" serde structs; [`Policy::parse`] then checks every field and names the bad one
//! (`rules[2].when.unused_for: "14x" is not a duration`).

use super::in_use::Protect;
use crate::catalog::s3cache::S3CacheUri;
use crate::oci::ArtifactKind;
use chrono::Duration;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Errors loading a policy; the message names the file or the field.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy is not valid YAML/JSON: {0}")]
    Syntax(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A duration written as `90s`, `30m`, `1h`, `14d`, `2w` (or a number of seconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    repositories: Option<Vec<String>>,
    #[serde(default)]
    grace_period: Option<RawDuration>,
    #[serde(default)]
    max_deletions: Option<usize>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    s3_caches: Vec<RawS3Cache>,
    #[serde(default)]
    protect: Option<RawProtect>,
}

/// `protect: {ecs: false, lambda: false, task_definition_revisions: 5}`: every field
/// optional, everything on by default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtect {
    #[serde(default)]
    ecs: Option<bool>,
    #[serde(default)]
    lambda: Option<bool>,
    #[serde(default)]
    task_definition_revisions: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(default)]
    select: RawSelect,
    action: Option<String>,
    #[serde(default)]
    when: RawWhen,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelect {
    #[serde(default)]
    kind: Option<OneOrMany>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    exclude_tags: Vec<String>,
    #[serde(default)]
    tagged: Option<bool>,
    #[serde(default)]
    untagged: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    #[serde(default)]
    older_than: Option<RawDuration>,
    #[serde(default)]
    unused_for: Option<RawDuration>,
    #[serde(default)]
    keep_latest: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3Cache {
    uri: Option<String>,
    #[serde(default)]
    keep: Vec<String>,
    #[serde(default)]
    expire_unused_for: Option<RawDuration>,
    #[serde(default)]
    blob_grace: Option<RawDuration>,
}

/// A tag or name pattern: a glob (`cache-*`, `release-?.*`) or, written `/.../`, a regex.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

impl Pattern {
    /// Parses `text`; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        if text.is_empty() {
            return Err(invalid(field, "empty pattern"));
        }
        let matcher = if text.len() >= 2 && text.starts_with('/') && text.ends_with('/') {
            let re = &text[1..text.len() - 1];
            Matcher::Regex(
                regex::Regex::new(re)
                    .map_err(|e| invalid(field, format!("{text:?} is not a valid regex: {e}")))?,
            )
        } else {
            Matcher::Glob(
                globset::Glob::new(text)
                    .map_err(|e| invalid(field, format!("{text:?} is not a valid glob: {e}")))?
                    .compile_matcher(),
            )
        };
        Ok(Self {
            source: text.to_string(),
            matcher,
        })
    }
    pub fn matches(&self, s: &str) -> bool {
        match &self.matcher {
            Matcher::Glob(g) => g.is_match(s),
            Matcher::Regex(r) => r.is_match(s),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// What a rule does with the images it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleAction {
    Keep,
    Expire,
}

/// Which images a rule looks at. Every given field must hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Select {
    /// Empty: any kind.
    pub kinds: Vec<ArtifactKind>,
    /// Empty: any tags (untagged included). Otherwise some tag must match some pattern.
    pub tags: Vec<Pattern>,
    /// No tag may match any of these.
    pub exclude_tags: Vec<Pattern>,
    /// `Some(true)`: tagged images only; `Some(false)`: untagged only.
    pub tagged: Option<bool>,
}

/// Conditions on a rule; all given ones must hold for the rule to match.
#[derive(Debug, Clone, Default, Serialize)]
pub struct When {
    /// Since push.
    #[serde(with = "opt_duration")]
    pub older_than: Option<Duration>,
    /// Since the later of push and last recorded pull.
    #[serde(with = "opt_duration")]
    pub unused_for: Option<Duration>,
    /// The N most recently pushed images of each tag-pattern group are kept by this rule.
    pub keep_latest: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub name: String,
    pub select: Select,
    pub action: RuleAction,
    pub when: When,
}

/// Garbage collection of one S3 BuildKit cache.
#[derive(Debug, Clone, Serialize)]
pub struct S3CachePolicy {
    #[serde(serialize_with = "display")]
    pub uri: S3CacheUri,
    /// Cache manifest names that never expire.
    pub keep: Vec<Pattern>,
    /// Other cache manifests expire when not rewritten for this long (`None`: never).
    #[serde(with = "opt_duration")]
    pub expire_unused_for: Option<Duration>,
    /// Unreferenced blobs younger than this are left alone (a build may be writing).
    #[serde(with = "duration")]
    pub blob_grace: Duration,
}

/// A validated cleanup policy.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub repositories: Vec<Pattern>,
    #[serde(with = "duration")]
    pub grace_period: Duration,
    pub max_deletions: Option<usize>,
    pub rules: Vec<Rule>,
    pub s3_caches: Vec<S3CachePolicy>,
    /// Images ECS or Lambda use are never deleted (on unless turned off by name).
    pub protect: Protect,
}

/// Nothing younger than this is ever deleted, unless the policy says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::hours(1);
/// Default for S3 cache blobs: BuildKit "touches" live blobs every 24 h.
pub const DEFAULT_BLOB_GRACE: Duration = Duration::hours(24);

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Formats a duration the way the policy writes them (`14d`, `1h`, `90s`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.num_seconds();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs != 0 && secs % n == 0 {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

mod duration {
    pub fn serialize<S: serde::Serializer>(d: &chrono::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}
mod opt_duration {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<chrono::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}

fn parse_duration(field: &str, raw: &RawDuration) -> Result<Duration, PolicyError> {
    let std = match raw {
        RawDuration::Seconds(n) => std::time::Duration::from_secs(*n),
        RawDuration::Text(t) => humantime::parse_duration(t.trim()).map_err(|_| {
            invalid(
                field,
                format!("{t:?} is not a duration (e.g. 90s, 30m, 1h, 14d)"),
            )
        })?,
    };
    Duration::from_std(std).map_err(|_| invalid(field, "duration is too large"))
}

fn parse_kind(field: &str, s: &str) -> Result<ArtifactKind, PolicyError> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        invalid(
            field,
            format!(
                "{s:?} is not a kind (buildkit-cache, image, index, soci-index, attestation, signature, other)"
            ),
        )
    })
}

fn patterns(field: &str, list: &[String]) -> Result<Vec<Pattern>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, p)| Pattern::parse(&format!("{field}[{i}]"), p))
        .collect()
}

impl Policy {
    /// Reads and validates a policy file (YAML, or JSON which is YAML too).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates policy text (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_yaml_ng::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        Self::validate(raw)
    }

    fn validate(raw: RawPolicy) -> Result<Self, PolicyError> {
        let repositories = match raw.repositories {
            Some(list) if list.is_empty() => {
                return Err(invalid("repositories", "empty list selects no repository"))
            }
            Some(list) => patterns("repositories", &list)?,
            None => return Err(invalid("repositories", "missing (use [\"*\"] for all)")),
        };
        let grace_period = match &raw.grace_period {
            Some(d) => parse_duration("grace_period", d)?,
            None => DEFAULT_GRACE,
        };
        if raw.max_deletions == Some(0) {
            return Err(invalid(
                "max_deletions",
                "0 would delete nothing; leave it out for no limit",
            ));
        }
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            let name = r
                .name
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| invalid(format!("{at}.name"), "missing"))?;
            if rules.iter().any(|other| other.name == name) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("{name:?} is used by an earlier rule"),
                ));
            }
            let action = match r.action.as_deref() {
                Some("keep") => RuleAction::Keep,
                Some("expire") | Some("delete") => RuleAction::Expire,
                Some(other) => {
                    return Err(invalid(
                        format!("{at}.action"),
                        format!("{other:?} is not an action (keep or expire)"),
                    ))
                }
                None => return Err(invalid(format!("{at}.action"), "missing (keep or expire)")),
            };
            let kinds = match &r.select.kind {
                None => Vec::new(),
                Some(OneOrMany::One(k)) => vec![parse_kind(&format!("{at}.select.kind"), k)?],
                Some(OneOrMany::Many(ks)) => ks
                    .iter()
                    .enumerate()
                    .map(|(j, k)| parse_kind(&format!("{at}.select.kind[{j}]"), k))
                    .collect::<Result<_, _>>()?,
            };
            let tagged = match (r.select.tagged, r.select.untagged) {
                (Some(a), Some(b)) if a == b => {
                    return Err(invalid(
                        format!("{at}.select"),
                        "tagged and untagged contradict each other",
                    ))
                }
                (Some(a), _) => Some(a),
                (None, Some(b)) => Some(!b),
                (None, None) => None,
            };
            let tags = patterns(&format!("{at}.select.tags"), &r.select.tags)?;
            if tagged == Some(false) && !tags.is_empty() {
                return Err(invalid(
                    format!("{at}.select"),
                    "untagged: true with tag patterns can never match",
                ));
            }
            let select = Select {
                kinds,
                tags,
                exclude_tags: patterns(
                    &format!("{at}.select.exclude_tags"),
                    &r.select.exclude_tags,
                )?,
                tagged,
            };
            let when = When {
                older_than: r
                    .when
                    .older_than
                    .as_ref()
                    .map(|d| parse_duration(&format!("{at}.when.older_than"), d))
                    .transpose()?,
                unused_for: r
                    .when
                    .unused_for
                    .as_ref()
                    .map(|d| parse_duration(&format!("{at}.when.unused_for"), d))
                    .transpose()?,
                keep_latest: r.when.keep_latest,
            };
            if when.keep_latest.is_some() && action == RuleAction::Keep {
                return Err(invalid(
                    format!("{at}.when.keep_latest"),
                    "only meaningful on an expire rule",
                ));
            }
            rules.push(Rule {
                name,
                select,
                action,
                when,
            });
        }
        let mut s3_caches = Vec::new();
        for (i, c) in raw.s3_caches.into_iter().enumerate() {
            let at = format!("s3_caches[{i}]");
            let uri_text = c
                .uri
                .ok_or_else(|| invalid(format!("{at}.uri"), "missing"))?;
            let uri = uri_text
                .parse::<S3CacheUri>()
                .map_err(|e| invalid(format!("{at}.uri"), e))?;
            s3_caches.push(S3CachePolicy {
                uri,
                keep: patterns(&format!("{at}.keep"), &c.keep)?,
                expire_unused_for: c
                    .expire_unused_for
                    .as_ref()
                    .map(|d| parse_duration(&format!("{at}.expire_unused_for"), d))
                    .transpose()?,
                blob_grace: match &c.blob_grace {
                    Some(d) => parse_duration(&format!("{at}.blob_grace"), d)?,
                    None => DEFAULT_BLOB_GRACE,
                },
            });
        }
        let protect = match raw.protect {
            None => Protect::default(),
            Some(p) => Protect {
                ecs: p.ecs.unwrap_or(true),
                lambda: p.lambda.unwrap_or(true),
                task_definition_revisions: p
                    .task_definition_revisions
                    .unwrap_or(super::in_use::DEFAULT_TASK_DEFINITION_REVISIONS),
            },
        };
        Ok(Policy {
            repositories,
            grace_period,
            max_deletions: raw.max_deletions,
            rules,
            s3_caches,
            protect,
        })
    }

    /// True when the policy's repository selectors pick `name`.
    pub fn selects_repository(&self, name: &str) -> bool {
        self.repositories.iter().any(|p| p.matches(name))
    }

    /// True when a push of `tag` is a cache push by this policy: some rule selects the
    /// `buildkit-cache` kind by a tag pattern matching it.
    pub fn is_cache_tag(&self, tag: &str) -> bool {
        self.rules.iter().any(|r| {
            r.select.kinds.contains(&ArtifactKind::BuildkitCache)
                && r.select.tags.iter().any(|p| p.matches(tag))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
repositories: ["app", "svc-*"]
grace_period: 1h
max_deletions: 500
rules:
  - {name: keep-main-cache, select: {tags: ["cache-main"]}, action: keep}
  - {name: stale-cache, select: {kind: buildkit-cache, untagged: true}, action: expire}
  - {name: branch-caches, select: {kind: buildkit-cache, tags: ["cache-*"]}, action: expire, when: {unused_for: 14d}}
  - {name: old-untagged, select: {untagged: true}, action: expire, when: {older_than: 7d}}
s3_caches:
  - {uri: "s3://bucket/buildkit/", keep: ["main"], expire_unused_for: 14d, blob_grace: 24h}
"#;

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
        assert_eq!(p.s3_caches[0].uri.bucket, "bucket");
        assert_eq!(p.s3_caches[0].uri.prefix, "buildkit/");
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
        let p = Policy::parse(
            "repositories: ['*']\nprotect: {ecs: false, task_definition_revisions: 2}",
        )
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
                ISSUE_EXAMPLE.replace("s3://bucket/buildkit/", "bucket/buildkit/"),
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
}
