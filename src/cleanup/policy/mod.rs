//! The cleanup policy (YAML or JSON) and its validation. Parsing goes through loose
//! "raw" serde structs; [`Policy::parse`] then checks every field and names the bad one
//! (`rules[2].when.unused_for: "14x" is not a duration`).

use super::ecr_lifecycle::{lifecycle_document, LifecycleError, LifecyclePolicy};
use super::first_seen::FirstSeen;
use super::in_use::Protect;
use super::yaml_expansion::{expands_within_limit, expansion_limit, flow_nesting_exceeds};
use crate::catalog::s3cache::S3CacheUri;
use crate::glob::Glob;
use crate::oci::ArtifactKind;
use chrono::Duration;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Errors loading a policy; the message names the file or the field.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file cannot be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid YAML or JSON, or does not have the policy's shape (an unknown field, a wrong type); holds the parser's message with line and column.
    #[error("policy is not valid YAML/JSON: {0}")]
    Syntax(String),
    /// The policy is longer than [`MAX_POLICY_BYTES`]; refused before it is parsed.
    #[error("policy is {size} bytes, more than the {MAX_POLICY_BYTES} bytes a policy may have")]
    TooLarge {
        /// The policy's size in bytes (at least; reading stops past the limit).
        size: u64,
    },
    /// `[` and `{` nest deeper than [`MAX_FLOW_NESTING`]; refused before it is parsed.
    #[error("policy nests [ and {{ more than {MAX_FLOW_NESTING} deep")]
    TooDeep,
    /// YAML aliases would expand the policy past the limit (see `limit`); refused before deserialising.
    #[error("policy expands to more than {limit} bytes through YAML aliases (`*name` repeats the node anchored `&name`): write the repeated parts out or repeat less")]
    AliasExpansion {
        /// The limit, in bytes of expanded text: 4 × the text's length + 1 MiB.
        limit: u64,
    },
    /// A field has a value the policy cannot use.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, e.g. `rules[2].when.unused_for`.
        field: String,
        /// What is wrong with its value.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// `protect.accept_uncovered`: exact repository names and 12-digit account ids only, so
/// that a risk is accepted by name and never by a pattern that grows.
fn accept_uncovered(
    raw: Option<RawAcceptUncovered>,
) -> Result<super::shared::AcceptUncovered, PolicyError> {
    let Some(raw) = raw else {
        return Ok(Default::default());
    };
    for (i, r) in raw.repositories.iter().enumerate() {
        if r.is_empty() || r.contains(['*', '?', '[', '{']) {
            return Err(invalid(
                format!("protect.accept_uncovered.repositories[{i}]"),
                format!("{r:?}: name a repository exactly (no patterns)"),
            ));
        }
    }
    let mut accounts = Vec::new();
    for (i, a) in raw.accounts.iter().enumerate() {
        let at = format!("protect.accept_uncovered.accounts[{i}]");
        // A bare number loses an account id's leading zeros: it must be quoted.
        let Some(a) = a.as_str() else {
            return Err(invalid(
                at,
                format!("{a:?}: write the account id as a quoted string"),
            ));
        };
        if !crate::registry::ecr::is_account_id(a) {
            return Err(invalid(at, format!("{a:?} is not a 12-digit account id")));
        }
        accounts.push(a.to_string());
    }
    Ok(super::shared::AcceptUncovered {
        repositories: raw.repositories,
        accounts,
    })
}

fn ecr_invalid(prefix: &str, e: LifecycleError) -> PolicyError {
    invalid(
        format!("{prefix}{}", e.at),
        format!("{} (ECR lifecycle policy)", e.message),
    )
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
    ecr_lifecycle: Vec<RawEcrGroup>,
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
    #[serde(default)]
    inspector: Option<bool>,
    #[serde(default)]
    inspector_window: Option<RawDuration>,
    accept_uncovered: Option<RawAcceptUncovered>,
}

/// `protect.accept_uncovered: {repositories: [app], accounts: ["333333333333"]}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcceptUncovered {
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    accounts: Vec<serde_yaml_ng::Value>,
}

/// An ECR lifecycle policy for some repositories, inside an afterpush policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEcrGroup {
    repositories: Option<Vec<String>>,
    /// The document itself, or its JSON text (as `lifecyclePolicyText` holds it).
    policy: Option<serde_json::Value>,
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
    /// `true`: the rule means every image (an expire rule with no selector and no
    /// condition is refused without it).
    #[serde(default)]
    all: Option<bool>,
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

/// A tag or name pattern: a glob (`cache-*`, `release-?.*`, see [`crate::glob`]) or,
/// written `/.../`, a regex.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Glob(Glob),
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
            Matcher::Glob(Glob::new(text).map_err(|e| invalid(field, e))?)
        };
        Ok(Self {
            source: text.to_string(),
            matcher,
        })
    }
    /// True when `s` (a tag or repository name) matches the pattern.
    pub fn matches(&self, s: &str) -> bool {
        match &self.matcher {
            Matcher::Glob(g) => g.is_match(s),
            Matcher::Regex(r) => r.is_match(s),
        }
    }
    /// The pattern as written.
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
    /// The images the rule matches are kept.
    Keep,
    /// The images the rule matches are deleted (unless a safety rule keeps them).
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

/// One rule of the policy: the first rule (in order) that matches an image decides for it.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// The rule's name in plans and reports.
    pub name: String,
    /// Which images it looks at.
    pub select: Select,
    /// What it does with those that match.
    pub action: RuleAction,
    /// Conditions that must also hold.
    pub when: When,
}

/// Garbage collection of one S3 BuildKit cache.
#[derive(Debug, Clone, Serialize)]
pub struct S3CachePolicy {
    /// The cache's `s3://bucket/prefix`.
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

/// An ECR lifecycle policy that decides, with ECR's semantics, for the repositories it
/// names (afterpush's `keep` rules and safety rules still apply there).
#[derive(Debug, Clone, Serialize)]
pub struct EcrRuleGroup {
    /// The repositories the group decides for (first matching group wins).
    pub repositories: Vec<Pattern>,
    /// The validated lifecycle policy.
    pub policy: LifecyclePolicy,
}

/// A validated cleanup policy.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// The repositories the policy cleans up (names or patterns).
    pub repositories: Vec<Pattern>,
    /// Images pushed more recently than this are never deleted (default [`DEFAULT_GRACE`]).
    #[serde(with = "duration")]
    pub grace_period: Duration,
    /// At most this many image deletions per run, shared by all its repositories (`None`: no limit).
    pub max_deletions: Option<usize>,
    /// The afterpush rules, in order: the first that matches an image decides.
    pub rules: Vec<Rule>,
    /// The S3 BuildKit caches to garbage-collect.
    pub s3_caches: Vec<S3CachePolicy>,
    /// ECR lifecycle policies for some repositories; the first group naming a
    /// repository decides there instead of the `expire` rules.
    pub ecr_lifecycle: Vec<EcrRuleGroup>,
    /// Images ECS or Lambda use are never deleted (on unless turned off by name).
    pub protect: Protect,
    /// Consumers of shared repositories the janitor cannot scan, whose risk is accepted
    /// by name (`protect.accept_uncovered`); none by default.
    pub accept_uncovered: super::shared::AcceptUncovered,
}

/// The longest policy text afterpush reads: 1 MiB. Policies are a few KiB (Lambda's
/// environment holds 4 KiB in all); the bound keeps parsing time and memory small.
pub const MAX_POLICY_BYTES: usize = 1 << 20;
/// How deep `[...]` and `{...}` may nest in a policy (they nest 5 deep in an ECR
/// lifecycle policy written as JSON).
pub const MAX_FLOW_NESTING: usize = 64;

/// Nothing younger than this is ever deleted, unless the policy says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::hours(1);
/// Default for S3 cache blobs: BuildKit "touches" live blobs every 24 h.
pub const DEFAULT_BLOB_GRACE: Duration = Duration::hours(24);

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

mod duration {
    pub fn serialize<S: serde::Serializer>(d: &chrono::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::format::duration(*d))
    }
}
mod opt_duration {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<chrono::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&crate::format::duration(*d)),
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
        use std::io::Read as _;
        let read_error = |source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(MAX_POLICY_BYTES as u64 + 1)
                    .read_to_string(&mut text)
            })
            .map_err(read_error)?;
        Self::parse(&text)
    }

    /// Parses and validates policy text (YAML or JSON): an afterpush policy, or an ECR
    /// lifecycle policy document (told apart by its shape, see [`lifecycle_document`]),
    /// which then applies to every repository.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                size: text.len() as u64,
            });
        }
        if flow_nesting_exceeds(text, MAX_FLOW_NESTING) {
            return Err(PolicyError::TooDeep);
        }
        // Measured first: deserializing expands every alias, whatever its size.
        if !expands_within_limit(text).map_err(|e| PolicyError::Syntax(e.to_string()))? {
            return Err(PolicyError::AliasExpansion {
                limit: expansion_limit(text.len()),
            });
        }
        // Told apart on a JSON view of the text; the afterpush policy is then read from
        // the text itself, so that its errors keep their line and column. The view
        // refuses a key given twice anywhere, as ECR does (YAML and JSON readers keep
        // the last one, silently).
        let value = crate::strict_json::value_from(serde_yaml_ng::Deserializer::from_str(text))
            .map_err(|e| PolicyError::Syntax(e.to_string()))?;
        if value.as_object().is_some_and(|o| {
            o.len() == 1
                && o.get("rules")
                    .and_then(|r| r.as_array())
                    .is_some_and(Vec::is_empty)
        }) {
            return Err(invalid(
                "rules",
                "empty, and nothing else: an ECR lifecycle policy needs at least one rule, \
                 an afterpush policy needs repositories",
            ));
        }
        if let Some(document) = lifecycle_document(&value) {
            let policy = document
                .and_then(|d| LifecyclePolicy::from_value(&d))
                .map_err(|e| ecr_invalid("", e))?;
            return Ok(Self::from_lifecycle_policy(
                vec![Pattern::parse("repositories", "*")?],
                policy,
            ));
        }
        let raw: RawPolicy =
            serde_yaml_ng::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        Self::validate(raw)
    }

    /// A policy made of one ECR lifecycle policy for `repositories`, with afterpush's
    /// defaults (grace period, no `max_deletions`, images in use protected) around it.
    pub fn from_lifecycle_policy(repositories: Vec<Pattern>, policy: LifecyclePolicy) -> Self {
        Policy {
            repositories: repositories.clone(),
            grace_period: DEFAULT_GRACE,
            max_deletions: None,
            rules: Vec::new(),
            s3_caches: Vec::new(),
            ecr_lifecycle: vec![EcrRuleGroup {
                repositories,
                policy,
            }],
            protect: Protect::default(),
            accept_uncovered: Default::default(),
        }
    }

    /// The ECR lifecycle policy that decides for `repository`, if any.
    pub fn lifecycle_policy_for(&self, repository: &str) -> Option<&LifecyclePolicy> {
        self.ecr_lifecycle
            .iter()
            .find(|g| g.repositories.iter().any(|p| p.matches(repository)))
            .map(|g| &g.policy)
    }

    fn validate(mut raw: RawPolicy) -> Result<Self, PolicyError> {
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
        let mut names = FirstSeen::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            let name = r
                .name
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| invalid(format!("{at}.name"), "missing"))?;
            if names.record(name.clone(), i).is_err() {
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
            let selects_all = r.select.all == Some(true);
            let unconditional = r.when.older_than.is_none()
                && r.when.unused_for.is_none()
                && r.when.keep_latest.is_none();
            let no_selector = kinds.is_empty()
                && tags.is_empty()
                && r.select.exclude_tags.is_empty()
                && tagged.is_none();
            if selects_all && !no_selector {
                return Err(invalid(
                    format!("{at}.select.all"),
                    "all: true means every image; drop the other selectors or drop all",
                ));
            }
            if action == RuleAction::Expire && no_selector && unconditional && !selects_all {
                return Err(invalid(
                    at.clone(),
                    format!(
                        "rule {name:?} would expire every image of every repository it applies to \
                         (no tags, kind, tagged/untagged or when condition); if that is what you \
                         mean, say so with select: {{all: true}}"
                    ),
                ));
            }
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
        let mut ecr_lifecycle = Vec::new();
        for (i, g) in raw.ecr_lifecycle.into_iter().enumerate() {
            let at = format!("ecr_lifecycle[{i}]");
            let repositories = match g.repositories {
                Some(list) if !list.is_empty() => patterns(&format!("{at}.repositories"), &list)?,
                _ => {
                    return Err(invalid(
                        format!("{at}.repositories"),
                        "missing (the repositories this lifecycle policy decides for)",
                    ))
                }
            };
            let document = match g.policy {
                Some(serde_json::Value::String(text)) => LifecyclePolicy::document_from_text(&text)
                    .map_err(|e| ecr_invalid(&format!("{at}.policy."), e))?,
                Some(v) => v,
                None => return Err(invalid(format!("{at}.policy"), "missing")),
            };
            let policy = LifecyclePolicy::from_value(&document)
                .map_err(|e| ecr_invalid(&format!("{at}.policy."), e))?;
            ecr_lifecycle.push(EcrRuleGroup {
                repositories,
                policy,
            });
        }
        let accept_uncovered =
            accept_uncovered(raw.protect.as_mut().and_then(|p| p.accept_uncovered.take()))?;
        let protect = match raw.protect {
            None => Protect::default(),
            Some(p) => Protect {
                ecs: p.ecs.unwrap_or(true),
                lambda: p.lambda.unwrap_or(true),
                task_definition_revisions: p
                    .task_definition_revisions
                    .unwrap_or(super::in_use::DEFAULT_TASK_DEFINITION_REVISIONS),
                inspector: p.inspector.unwrap_or(false),
                inspector_window: match &p.inspector_window {
                    Some(w) => parse_duration("protect.inspector_window", w)?
                        .to_std()
                        .map_err(|_| invalid("protect.inspector_window", "must not be negative"))?,
                    None => crate::catalog::inspector::DEFAULT_INSPECTOR_WINDOW,
                },
            },
        };
        Ok(Policy {
            repositories,
            grace_period,
            max_deletions: raw.max_deletions,
            rules,
            s3_caches,
            ecr_lifecycle,
            protect,
            accept_uncovered,
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
mod tests;
