//! ECR lifecycle policies as ECR writes them (the JSON of `lifecyclePolicyText`):
//! parsing, validation as ECR validates, and evaluation with ECR's documented semantics.
//!
//! The semantics follow AWS's "Lifecycle policy evaluation rules" (Amazon ECR User
//! Guide, "Automate the cleanup of images by using lifecycle policies") and "Lifecycle
//! policy properties":
//! - every rule identifies its images at once; rules then apply in `rulePriority`
//!   order, lowest number first;
//! - an image is identified by the first rule (by priority) whose `tagStatus` and tag
//!   list select it, and only that rule may expire or archive it; lower rules still
//!   count it (in `imageCountMoreThan`) as if it were still there;
//! - several entries in one `tagPrefixList` or `tagPatternList` must each match some
//!   tag of the image (AND). A prefix matches tags that start with it; a pattern
//!   matches a whole tag, `*` standing for any run of characters (`prod` matches only
//!   `prod`, `prod*` also `prod1`);
//! - `imageCountMoreThan` keeps the N most recently pushed images it identifies;
//!   `sinceImagePushed` marks images pushed more than N days ago; `sinceImagePulled`
//!   images last pulled more than N days ago;
//! - reference artifacts (manifests with a subject: signatures, attestations, SOCI v1
//!   indexes) go with their subject image: AWS documents that lifecycle policies expire
//!   them after the subject is deleted. No rule identifies them, so they neither count
//!   nor get expired on their own; the planner lets them follow their subject.
//!
//! afterpush never archives: `transition` rules are evaluated and reported as "would
//! archive", and the images stay. The catalog lists images with DescribeImages, which
//! returns only `ACTIVE` images unless its `imageStatus` filter asks for others: every
//! image it sees is in `standard` storage, archived images are neither counted nor
//! touched (as ECR's standard-class rules ignore them), and rules on
//! `storageClass: archive` identify nothing.

use super::first_seen::FirstSeen;
use crate::catalog::ImageRecord;
use crate::format::age as format_age;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// A lifecycle policy document that ECR would refuse, or that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct LifecycleError {
    /// Where: `rules[2] (rulePriority 20).selection.countUnit`.
    pub at: String,
    /// What is wrong there.
    pub message: String,
}

fn err(at: impl Into<String>, message: impl Into<String>) -> LifecycleError {
    LifecycleError {
        at: at.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    rules: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    rule_priority: Option<serde_json::Value>,
    description: Option<String>,
    selection: Option<RawSelection>,
    action: Option<RawAction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelection {
    tag_status: Option<String>,
    tag_prefix_list: Option<Vec<String>>,
    tag_pattern_list: Option<Vec<String>>,
    storage_class: Option<String>,
    count_type: Option<String>,
    count_unit: Option<String>,
    count_number: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAction {
    #[serde(rename = "type")]
    kind: Option<String>,
    target_storage_class: Option<String>,
}

/// `selection.tagStatus`: which images a rule can identify by their tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TagStatus {
    /// Images with at least one tag that satisfies the rule's tag list.
    Tagged,
    /// Images without tags.
    Untagged,
    /// Every image, tagged or not (only on the rule with the highest `rulePriority`).
    Any,
}

/// `selection.storageClass`: the storage class whose images a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageClass {
    /// Images in standard storage (every image the catalog lists).
    Standard,
    /// Archived images (the catalog does not list them, so such rules identify nothing).
    Archive,
}

/// Which tags a `tagged` rule needs: every entry must match some tag of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TagList {
    /// No tag list (`tagStatus` `untagged` or `any`).
    None,
    /// `tagPrefixList`: each prefix must start some tag of the image.
    Prefixes(Vec<String>),
    /// `tagPatternList`: each pattern (`*` for any run of characters) must match some whole tag.
    Patterns(Vec<String>),
}

/// `selection.countType` with its `countNumber`: when an identified image is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "countType", content = "countNumber")]
pub enum Count {
    /// Keep this many of the most recently pushed images the rule identifies.
    ImageCountMoreThan(u32),
    /// Days since push.
    SinceImagePushed(u32),
    /// Days since the last recorded pull (the push when never pulled).
    SinceImagePulled(u32),
    /// Days since the image was archived.
    SinceImageTransitioned(u32),
}

/// `action.type`: what happens to a marked image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleAction {
    /// Delete it (afterpush deletes it unless a safety rule keeps it).
    Expire,
    /// To archive storage: evaluated and reported, never carried out by afterpush.
    Transition,
}

/// One validated rule.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleRule {
    /// `rulePriority`: rules apply lowest number first; unique within a policy.
    pub rule_priority: u32,
    /// `description`, when given and not empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `selection.tagStatus`.
    pub tag_status: TagStatus,
    /// `selection.tagPrefixList` or `selection.tagPatternList`.
    pub tags: TagList,
    /// `selection.storageClass` (`standard` when omitted).
    pub storage_class: StorageClass,
    /// `selection.countType` and `selection.countNumber`.
    pub count: Count,
    /// `action.type`.
    pub action: LifecycleAction,
}

/// A validated lifecycle policy, rules in `rulePriority` order.
#[derive(Debug, Clone, Serialize)]
pub struct LifecyclePolicy {
    /// The rules, sorted by `rulePriority`.
    pub rules: Vec<LifecycleRule>,
}

/// ECR's limit on the length of `lifecyclePolicyText`, in characters. A document given as
/// an object rather than text is measured as compact JSON.
pub const MAX_DOCUMENT_CHARS: usize = 30_720;

fn check_length(chars: usize) -> Result<(), LifecycleError> {
    if chars > MAX_DOCUMENT_CHARS {
        return Err(err(
            "lifecycle policy",
            format!("{chars} characters, more than ECR's limit of {MAX_DOCUMENT_CHARS}"),
        ));
    }
    Ok(())
}

/// At most four `*` in a tag pattern (ECR's limit).
pub const MAX_PATTERN_WILDCARDS: usize = 4;

impl LifecycleRule {
    /// The rule's name in plans and reports: `ecr:<rulePriority>`.
    pub fn name(&self) -> String {
        format!("ecr:{}", self.rule_priority)
    }

    /// True when `tags` satisfy the rule's `tagStatus` and tag list.
    pub fn identifies(&self, tags: &[String]) -> bool {
        match self.tag_status {
            TagStatus::Any => true,
            TagStatus::Untagged => tags.is_empty(),
            TagStatus::Tagged => match &self.tags {
                TagList::None => false,
                TagList::Prefixes(ps) => ps.iter().all(|p| tags.iter().any(|t| t.starts_with(p))),
                TagList::Patterns(ps) => {
                    ps.iter().all(|p| tags.iter().any(|t| wildcard_match(p, t)))
                }
            },
        }
    }
}

/// ECR's tag patterns: `*` matches any run of characters (none included), every other
/// character itself; the pattern covers the whole tag.
pub fn wildcard_match(pattern: &str, tag: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == tag;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !tag.starts_with(first) || tag.len() < first.len() + last.len() || !tag.ends_with(last) {
        return false;
    }
    let mut rest = &tag[first.len()..tag.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn positive_integer(at: &str, v: &serde_json::Value) -> Result<u32, LifecycleError> {
    v.as_u64()
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| err(at, format!("{v} is not a positive integer")))
}

impl LifecyclePolicy {
    /// Parses and validates the JSON of `lifecyclePolicyText`.
    pub fn parse(text: &str) -> Result<Self, LifecycleError> {
        Self::from_value(&Self::document_from_text(text)?)
    }

    /// The JSON document in `text` (what `lifecyclePolicyText` holds), refused when
    /// longer than ECR allows or when an object has a key twice (ECR refuses those;
    /// a JSON reader would keep the last).
    pub fn document_from_text(text: &str) -> Result<serde_json::Value, LifecycleError> {
        check_length(text.chars().count())?;
        crate::strict_json::from_str(text)
            .map_err(|e| err("lifecycle policy", format!("not valid JSON: {e}")))
    }

    /// Validates a parsed document (`{"rules": [...]}`) as ECR does; every error names
    /// the rule by its index and `rulePriority`.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, LifecycleError> {
        check_length(value.to_string().chars().count())?;
        let raw: RawDocument = serde_json::from_value(value.clone())
            .map_err(|e| err("lifecycle policy", e.to_string()))?;
        let raw_rules = raw.rules.ok_or_else(|| err("rules", "missing"))?;
        if raw_rules.is_empty() {
            return Err(err("rules", "a lifecycle policy needs at least one rule"));
        }
        let mut rules: Vec<LifecycleRule> = Vec::with_capacity(raw_rules.len());
        let mut priorities = FirstSeen::new();
        for (i, v) in raw_rules.iter().enumerate() {
            let rule = parse_rule(i, v)?;
            if priorities.record(rule.rule_priority, i).is_err() {
                return Err(err(
                    format!("rules[{i}].rulePriority"),
                    format!(
                        "{} is used by an earlier rule; every rule needs a unique rulePriority",
                        rule.rule_priority
                    ),
                ));
            }
            rules.push(rule);
        }
        rules.sort_by_key(|r| r.rule_priority);
        let at =
            |r: &LifecycleRule| format!("rule {} (rulePriority {})", r.name(), r.rule_priority);
        for class in [StorageClass::Standard, StorageClass::Archive] {
            let of_class: Vec<&LifecycleRule> =
                rules.iter().filter(|r| r.storage_class == class).collect();
            let highest = of_class.iter().map(|r| r.rule_priority).max();
            for r in &of_class {
                if r.tag_status == TagStatus::Any && Some(r.rule_priority) != highest {
                    return Err(err(
                        at(r),
                        "tagStatus any must be on the rule with the highest rulePriority number (it is applied last)",
                    ));
                }
            }
            let untagged: Vec<&&LifecycleRule> = of_class
                .iter()
                .filter(|r| r.tag_status == TagStatus::Untagged)
                .collect();
            if untagged.len() > 1 {
                return Err(err(
                    at(untagged[1]),
                    format!(
                        "only one rule may select untagged images, and rulePriority {} already does",
                        untagged[0].rule_priority
                    ),
                ));
            }
            let mut prefix_sets = FirstSeen::new();
            for r in &of_class {
                if let TagList::Prefixes(ps) = &r.tags {
                    let mut set: Vec<&String> = ps.iter().collect();
                    set.sort();
                    set.dedup();
                    if let Err(p) = prefix_sets.record(set, r.rule_priority as usize) {
                        return Err(err(
                            at(r),
                            format!("rulePriority {p} has the same tagPrefixList; the rules of a storage class need unique sets of prefixes"),
                        ));
                    }
                }
            }
        }
        Ok(LifecyclePolicy { rules })
    }
}

fn parse_rule(i: usize, v: &serde_json::Value) -> Result<LifecycleRule, LifecycleError> {
    let mut at = format!("rules[{i}]");
    let raw: RawRule = serde_json::from_value(v.clone()).map_err(|e| err(&at, e.to_string()))?;
    let priority_value = raw
        .rule_priority
        .ok_or_else(|| err(format!("{at}.rulePriority"), "missing"))?;
    let rule_priority = positive_integer(&format!("{at}.rulePriority"), &priority_value)?;
    at = format!("{at} (rulePriority {rule_priority})");
    let sel = raw
        .selection
        .ok_or_else(|| err(format!("{at}.selection"), "missing"))?;
    let tag_status = match sel.tag_status.as_deref() {
        Some("tagged") => TagStatus::Tagged,
        Some("untagged") => TagStatus::Untagged,
        Some("any") => TagStatus::Any,
        Some(other) => {
            return Err(err(
                format!("{at}.selection.tagStatus"),
                format!("{other:?} is not tagged, untagged or any"),
            ))
        }
        None => return Err(err(format!("{at}.selection.tagStatus"), "missing")),
    };
    let tags = match (sel.tag_prefix_list, sel.tag_pattern_list) {
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{at}.selection"),
                "a rule may have a tagPrefixList or a tagPatternList, not both",
            ))
        }
        (Some(ps), None) => TagList::Prefixes(ps),
        (None, Some(ps)) => TagList::Patterns(ps),
        (None, None) => TagList::None,
    };
    match (&tags, tag_status) {
        (TagList::None, TagStatus::Tagged) => {
            return Err(err(
                format!("{at}.selection"),
                "tagStatus tagged needs a tagPrefixList or a tagPatternList",
            ))
        }
        (TagList::Prefixes(_) | TagList::Patterns(_), TagStatus::Untagged | TagStatus::Any) => {
            return Err(err(
                format!("{at}.selection"),
                format!(
                    "tagPrefixList and tagPatternList are only for tagStatus tagged, not {}",
                    if tag_status == TagStatus::Any {
                        "any"
                    } else {
                        "untagged"
                    }
                ),
            ))
        }
        _ => {}
    }
    let list_field = match &tags {
        TagList::Prefixes(_) => "tagPrefixList",
        _ => "tagPatternList",
    };
    if let TagList::Prefixes(list) | TagList::Patterns(list) = &tags {
        if list.is_empty() {
            return Err(err(format!("{at}.selection.{list_field}"), "empty list"));
        }
        for (j, entry) in list.iter().enumerate() {
            if entry.is_empty() {
                return Err(err(
                    format!("{at}.selection.{list_field}[{j}]"),
                    "empty string",
                ));
            }
            let stars = entry.matches('*').count();
            if matches!(tags, TagList::Patterns(_)) && stars > MAX_PATTERN_WILDCARDS {
                return Err(err(
                    format!("{at}.selection.{list_field}[{j}]"),
                    format!("{entry:?} has {stars} wildcards; ECR allows at most {MAX_PATTERN_WILDCARDS} per pattern"),
                ));
            }
        }
    }
    let count_number = sel
        .count_number
        .as_ref()
        .ok_or_else(|| err(format!("{at}.selection.countNumber"), "missing"))
        .and_then(|v| positive_integer(&format!("{at}.selection.countNumber"), v))?;
    let count = match sel.count_type.as_deref() {
        Some("imageCountMoreThan") => Count::ImageCountMoreThan(count_number),
        Some("sinceImagePushed") => Count::SinceImagePushed(count_number),
        Some("sinceImagePulled") => Count::SinceImagePulled(count_number),
        Some("sinceImageTransitioned") => Count::SinceImageTransitioned(count_number),
        Some(other) => return Err(err(
            format!("{at}.selection.countType"),
            format!("{other:?} is not imageCountMoreThan, sinceImagePushed, sinceImagePulled or sinceImageTransitioned"),
        )),
        None => return Err(err(format!("{at}.selection.countType"), "missing")),
    };
    match (count, sel.count_unit.as_deref()) {
        (Count::ImageCountMoreThan(_), Some(_)) => {
            return Err(err(
                format!("{at}.selection.countUnit"),
                "only with countType sinceImagePushed, sinceImagePulled or sinceImageTransitioned",
            ))
        }
        (Count::ImageCountMoreThan(_), None) | (_, Some("days")) => {}
        (_, Some(other)) => {
            return Err(err(
                format!("{at}.selection.countUnit"),
                format!("{other:?} is not days"),
            ))
        }
        (_, None) => {
            return Err(err(
                format!("{at}.selection.countUnit"),
                "missing (days) for a sinceImage* countType",
            ))
        }
    }
    let storage_class = match sel.storage_class.as_deref() {
        None | Some("standard") => StorageClass::Standard,
        Some("archive") => StorageClass::Archive,
        Some(other) => {
            return Err(err(
                format!("{at}.selection.storageClass"),
                format!("{other:?} is not standard or archive"),
            ))
        }
    };
    match (count, storage_class) {
        (Count::SinceImageTransitioned(_), StorageClass::Standard) => {
            return Err(err(
                format!("{at}.selection.storageClass"),
                "countType sinceImageTransitioned needs storageClass archive",
            ))
        }
        (Count::SinceImageTransitioned(_), StorageClass::Archive) | (_, StorageClass::Standard) => {
        }
        (_, StorageClass::Archive) => {
            return Err(err(
                format!("{at}.selection.storageClass"),
                "storageClass archive goes only with countType sinceImageTransitioned",
            ))
        }
    }
    let raw_action = raw
        .action
        .ok_or_else(|| err(format!("{at}.action"), "missing"))?;
    let action = match (
        raw_action.kind.as_deref(),
        raw_action.target_storage_class.as_deref(),
    ) {
        (Some("expire"), None) => LifecycleAction::Expire,
        (Some("expire"), Some(_)) => {
            return Err(err(
                format!("{at}.action.targetStorageClass"),
                "only with type transition",
            ))
        }
        (Some("transition"), Some("archive")) => LifecycleAction::Transition,
        (Some("transition"), Some(other)) => {
            return Err(err(
                format!("{at}.action.targetStorageClass"),
                format!("{other:?} is not archive"),
            ))
        }
        (Some("transition"), None) => {
            return Err(err(
                format!("{at}.action.targetStorageClass"),
                "missing (archive) for type transition",
            ))
        }
        (Some(other), _) => {
            return Err(err(
                format!("{at}.action.type"),
                format!("{other:?} is not expire or transition"),
            ))
        }
        (None, _) => return Err(err(format!("{at}.action.type"), "missing")),
    };
    match (count, action) {
        (Count::SinceImagePulled(_), LifecycleAction::Expire) => {
            return Err(err(
                format!("{at}.action.type"),
                "ECR allows countType sinceImagePulled only with action transition; to expire images by their last pull, use an afterpush rule with when: {unused_for: Nd}",
            ))
        }
        (Count::SinceImageTransitioned(_), LifecycleAction::Transition) => {
            return Err(err(
                format!("{at}.action.type"),
                "countType sinceImageTransitioned goes only with action expire",
            ))
        }
        _ => {}
    }
    Ok(LifecycleRule {
        rule_priority,
        description: raw.description.filter(|d| !d.is_empty()),
        tag_status,
        tags,
        storage_class,
        count,
        action,
    })
}

/// What the policy does with one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No rule identifies it.
    Unselected,
    /// Identified by `rule` (its first rule), which does not mark it.
    Spared {
        /// Index of the rule in [`LifecyclePolicy::rules`].
        rule: usize,
        /// Why the rule does not mark it (e.g. "one of the 5 most recently pushed").
        reason: String,
    },
    /// Identified and marked by `rule` for expiry.
    Expire {
        /// Index of the rule in [`LifecyclePolicy::rules`].
        rule: usize,
        /// Why the rule marks it (e.g. "pushed 40d ago (> 30d)").
        reason: String,
    },
    /// Identified and marked by `rule` for archive (never carried out).
    Archive {
        /// Index of the rule in [`LifecyclePolicy::rules`].
        rule: usize,
        /// Why the rule marks it.
        reason: String,
    },
}

/// Per rule: how many images it identified and how many it marked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleTally {
    /// Images the rule's selection matches, including those a higher-priority rule identified first.
    pub identified: usize,
    /// Images the rule marks for expiry or archive (only those it is the first rule for).
    pub marked: usize,
}

impl LifecyclePolicy {
    /// ECR's verdict on each image of one repository at `now` (same order as
    /// `images`), and the tally of each rule (same order as `self.rules`).
    pub fn evaluate(
        &self,
        images: &[ImageRecord],
        now: DateTime<Utc>,
    ) -> (Vec<Outcome>, Vec<RuleTally>) {
        let mut outcomes = vec![Outcome::Unselected; images.len()];
        let mut tallies = vec![RuleTally::default(); self.rules.len()];
        for (ri, rule) in self.rules.iter().enumerate() {
            // The catalog lists only active (standard) images (see the module docs).
            let identified: Vec<usize> = if rule.storage_class == StorageClass::Standard {
                (0..images.len())
                    .filter(|&i| images[i].subject.is_none() && rule.identifies(&images[i].tags))
                    .collect()
            } else {
                Vec::new()
            };
            tallies[ri].identified = identified.len();
            // What this rule marks, as if no other rule existed.
            let mut marks: BTreeMap<usize, String> = BTreeMap::new();
            let mut spared: BTreeMap<usize, String> = BTreeMap::new();
            match rule.count {
                Count::ImageCountMoreThan(n) => {
                    let mut by_age = identified.clone();
                    // Newest first; the digest breaks ties so plans are reproducible.
                    by_age
                        .sort_by_key(|&i| (Reverse(images[i].pushed_at), images[i].digest.clone()));
                    for (rank, &i) in by_age.iter().enumerate() {
                        if rank < n as usize {
                            spared.insert(i, format!("one of the {n} most recently pushed"));
                        } else {
                            marks.insert(
                                i,
                                format!("{} images are newer (imageCountMoreThan {n})", rank),
                            );
                        }
                    }
                }
                Count::SinceImagePushed(n) => {
                    for &i in &identified {
                        let age = now - images[i].pushed_at;
                        if age > Duration::days(n.into()) {
                            marks.insert(i, format!("pushed {} ago (> {n}d)", format_age(age)));
                        } else {
                            spared.insert(i, format!("pushed {} ago (≤ {n}d)", format_age(age)));
                        }
                    }
                }
                Count::SinceImagePulled(n) => {
                    for &i in &identified {
                        // AWS, "Lifecycle policy evaluation rules": with sinceImagePulled,
                        // an image that was never pulled is aged from its pushed_at_time
                        // instead of its last_recorded_pulltime.
                        let (since, what) = match images[i].last_pulled_at {
                            Some(p) => (p, "last pulled"),
                            None => (images[i].pushed_at, "never pulled, pushed"),
                        };
                        let age = now - since;
                        if age > Duration::days(n.into()) {
                            marks.insert(i, format!("{what} {} ago (> {n}d)", format_age(age)));
                        } else {
                            spared.insert(i, format!("{what} {} ago (≤ {n}d)", format_age(age)));
                        }
                    }
                }
                Count::SinceImageTransitioned(_) => {}
            }
            for &i in &identified {
                if outcomes[i] != Outcome::Unselected {
                    // Identified by a higher-priority rule: only that rule may act on it.
                    continue;
                }
                outcomes[i] = match (marks.remove(&i), rule.action) {
                    (Some(reason), LifecycleAction::Expire) => {
                        tallies[ri].marked += 1;
                        Outcome::Expire { rule: ri, reason }
                    }
                    (Some(reason), LifecycleAction::Transition) => {
                        tallies[ri].marked += 1;
                        Outcome::Archive { rule: ri, reason }
                    }
                    (None, _) => Outcome::Spared {
                        rule: ri,
                        reason: spared.remove(&i).unwrap_or_default(),
                    },
                };
            }
        }
        (outcomes, tallies)
    }
}

/// The lifecycle policy document in `value`, when it has the shape of one: `{"rules":
/// [{"rulePriority": …}, …]}` without afterpush's `repositories`, or what `aws ecr
/// get-lifecycle-policy` prints (its `lifecyclePolicyText` holds the document as text).
pub fn lifecycle_document(
    value: &serde_json::Value,
) -> Option<Result<serde_json::Value, LifecycleError>> {
    let map = value.as_object()?;
    if let Some(text) = map.get("lifecyclePolicyText") {
        return Some(
            text.as_str()
                .ok_or_else(|| err("lifecyclePolicyText", "not a string"))
                .and_then(|t| {
                    LifecyclePolicy::document_from_text(t).map_err(|e| LifecycleError {
                        at: "lifecyclePolicyText".into(),
                        message: e.message,
                    })
                }),
        );
    }
    let rules = map.get("rules")?.as_array()?;
    let is_ecr = !map.contains_key("repositories")
        && !rules.is_empty()
        && rules.iter().all(|r| {
            r.as_object()
                .is_some_and(|o| o.contains_key("rulePriority"))
        });
    is_ecr.then(|| Ok(value.clone()))
}

#[cfg(test)]
mod tests;
