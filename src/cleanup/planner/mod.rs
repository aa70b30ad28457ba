//! The planner: a pure function `(snapshot, policy, now) -> Plan`.
//!
//! 1. Every image gets a first verdict: kept by the grace period, decided by the first
//!    matching rule, or (no rule matched) kept — except dependants (referrers, and
//!    untagged entries of an index), which *follow* what they depend on.
//! 2. The safety closure grows the kept set to a fixpoint: a kept image keeps every
//!    manifest it references (index entries, its SOCI v2 index) and its subject; a
//!    following referrer of a kept image is kept. Everything else is deleted.
//! 3. Deletions are ordered so that an index goes before its entries and a referrer
//!    before its subject, oldest first; `max_deletions` cuts that order and the closure
//!    runs again with the cut images kept, so a cut can never orphan anything.

mod assemble;
mod first_verdict;
mod graph;
#[cfg(test)]
mod tests;
mod verdict;

use super::ecr_lifecycle::{LifecycleAction, LifecyclePolicy, Outcome, RuleTally};
use super::policy::{Policy, RuleAction};
use crate::catalog::ImageRecord;
use crate::oci::{ArtifactKind, Sha256Digest};
use assemble::{build_plan, PlanInputs};
use chrono::{DateTime, Utc};
use graph::Graph;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use verdict::{first_verdicts, selects};

/// The images of one repository at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The repository's name.
    pub repository: String,
    /// Every image in it, as the catalog listed them.
    pub images: Vec<ImageRecord>,
}

/// What the plan does with an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Left in place.
    Keep,
    /// Deleted (in a dry run: would be).
    Delete,
}

/// The plan's decision on one image: keep or delete it, the rule that decided, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageDecision {
    /// The image's manifest digest.
    pub digest: Sha256Digest,
    /// Its tags (empty when untagged).
    pub tags: Vec<String>,
    /// What the manifest is (image, index, BuildKit cache, SOCI index, ...).
    pub kind: ArtifactKind,
    /// When it was pushed.
    pub pushed_at: DateTime<Utc>,
    /// When it was last pulled, if the registry knows.
    pub last_pulled_at: Option<DateTime<Utc>>,
    /// Its size as the registry reports it.
    pub size_bytes: u64,
    /// Keep or delete.
    pub action: Action,
    /// The rule that decided, when one did.
    pub rule: Option<String>,
    /// Kept although `rule` would delete it: a safety rule or a workload using it
    /// overrode the rule (see `reason`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overridden: bool,
    /// Why, in words (`pushed 9d ago (> 7d)`, `listed by kept index ...`).
    pub reason: String,
    /// Deletions only: images of this plan that must be deleted first (the indexes
    /// listing it, the referrers of it); the executor skips this one if any failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<Sha256Digest>,
    /// Deletions only: 0 for images nothing deleted depends on, else one more than the
    /// largest wave of `after` — a BatchDeleteImage call never mixes waves.
    pub wave: usize,
    /// Who uses this image (`ecs service web/api, task def web:42`, `lambda fn resize:live`):
    /// kept whatever the rules say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_use: Vec<String>,
}

/// The plan for one repository: deletions first, in execution order, then what is kept.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The repository planned.
    pub repository: String,
    /// The time ages are measured to.
    pub now: DateTime<Utc>,
    /// One per image: the deletions in execution order, then the images kept.
    pub decisions: Vec<ImageDecision>,
    /// How many of `decisions` are deletions.
    pub deletions: usize,
    /// Bytes the deletions free.
    pub bytes_reclaimed: u64,
    /// True when `max_deletions` cut the plan short.
    pub stopped_by_max_deletions: bool,
    /// Per rule that applies here: how many images it matched and expired.
    pub rules: Vec<RuleCount>,
}

/// One rule's effect on one repository, so that a rule matching nothing, or
/// everything, shows at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCount {
    /// The rule's name (`ecr:<priority>` for an ECR lifecycle rule).
    pub rule: String,
    /// An ECR lifecycle rule's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Images its selection picks (an ECR rule: the images it identifies, those a
    /// higher-priority rule identified included).
    pub matched: usize,
    /// Planned deletions it decided.
    pub expired: usize,
    /// Images it would expire that a safety rule keeps (grace period, index entry,
    /// referrer, max_deletions).
    pub kept_by_safety: usize,
    /// ECR `transition` rules: images it would archive (afterpush never archives).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_archive: Option<usize>,
}

impl ImageDecision {
    /// The rule as plans show it: `old-untagged`, or `old-untagged (overridden)`.
    pub fn rule_label(&self) -> Option<String> {
        self.rule.as_ref().map(|r| {
            if self.overridden {
                format!("{r} (overridden)")
            } else {
                r.clone()
            }
        })
    }
}

impl Plan {
    /// The deletions, in execution order.
    pub fn deleted(&self) -> impl Iterator<Item = &ImageDecision> {
        self.decisions.iter().filter(|d| d.action == Action::Delete)
    }
    /// The images kept.
    pub fn kept(&self) -> impl Iterator<Item = &ImageDecision> {
        self.decisions.iter().filter(|d| d.action == Action::Keep)
    }
}

/// The expire rules a push of `tag` (an image of `kind`) can set off at once: those
/// that select an image carrying the tag (a new image pushes an older one out of
/// `keep_latest`), and those that select untagged images of that kind (the push may have
/// moved the tag off an older image). Their time conditions are left to the plan.
pub fn rules_set_off_by_push(policy: &Policy, tag: &str, kind: ArtifactKind) -> Vec<String> {
    let probe = |tags: Vec<String>| ImageRecord {
        digest: Sha256Digest::of(tag.as_bytes()),
        tags,
        pushed_at: DateTime::<Utc>::MIN_UTC,
        last_pulled_at: None,
        manifest_media_type: String::new(),
        artifact_media_type: None,
        kind,
        subject: None,
        children: Vec::new(),
        soci_index: None,
        size_bytes: 0,
    };
    let (tagged, untagged) = (probe(vec![tag.to_string()]), probe(Vec::new()));
    policy
        .rules
        .iter()
        .filter(|r| {
            r.action == RuleAction::Expire && (selects(r, &tagged) || selects(r, &untagged))
        })
        .map(|r| r.name.clone())
        .collect()
}

/// Plans `snapshot` under `policy` at `now`, with the policy's `max_deletions`.
pub fn plan(snapshot: &Snapshot, policy: &Policy, now: DateTime<Utc>) -> Plan {
    plan_with_limit(snapshot, policy, now, policy.max_deletions)
}

/// Plans with an explicit deletion budget (a sweep shares one budget across
/// repositories).
pub fn plan_with_limit(
    snapshot: &Snapshot,
    policy: &Policy,
    now: DateTime<Utc>,
    max_deletions: Option<usize>,
) -> Plan {
    plan_in_use(snapshot, policy, now, max_deletions, &InUseMap::new())
}

pub use super::shared::InUseMap;

/// As [`plan_with_limit`], with the images in use kept whatever the rules say (and,
/// through the safety closure, everything they need).
pub fn plan_in_use(
    snapshot: &Snapshot,
    policy: &Policy,
    now: DateTime<Utc>,
    max_deletions: Option<usize>,
    in_use: &InUseMap,
) -> Plan {
    let images = &snapshot.images;
    let graph = Graph::new(images);
    let lifecycle = policy.lifecycle_policy_for(&snapshot.repository);
    let ecr = lifecycle.map(|l| l.evaluate(images, now));
    // The ECR rule that would expire an image, for the safety rule that keeps it.
    let mut intended: HashMap<usize, String> = HashMap::new();
    if let (Some(l), Some((outcomes, _))) = (lifecycle, &ecr) {
        for (i, o) in outcomes.iter().enumerate() {
            if let Outcome::Expire { rule, .. } = o {
                intended.insert(i, l.rules[*rule].name());
            }
        }
    }
    let verdicts = first_verdicts(
        policy,
        images,
        now,
        &graph,
        lifecycle,
        ecr.as_ref().map(|(o, _)| o.as_slice()),
        in_use,
    );

    let mut forced: HashMap<usize, String> = HashMap::new();
    let mut stopped = false;
    loop {
        let (kept, why_kept) = graph.closure(&verdicts, &forced);
        let order = graph.deletion_order(&kept);
        match max_deletions {
            Some(limit) if order.len() > limit => {
                stopped = true;
                for &i in &order[limit..] {
                    forced.insert(i, format!("max_deletions ({limit}) reached"));
                }
                // Runs once more: the cut images are now roots, and the new deletions are
                // a subset of the first `limit`, so the loop ends.
            }
            _ => {
                let inputs = PlanInputs {
                    snapshot,
                    now,
                    graph: &graph,
                    verdicts: &verdicts,
                    forced: &forced,
                    intended: &intended,
                    in_use,
                };
                let mut plan = build_plan(
                    &inputs,
                    assemble::Outcome {
                        kept,
                        why_kept,
                        order,
                        stopped,
                    },
                );
                plan.rules = rule_counts(
                    policy,
                    lifecycle.zip(ecr.as_ref().map(|(_, t)| t.as_slice())),
                    images,
                    &plan.decisions,
                );
                return plan;
            }
        }
    }
}

/// The per-rule counts of a plan: afterpush's rules (only the `keep` rules where an ECR
/// lifecycle policy decides), then the ECR rules.
fn rule_counts(
    policy: &Policy,
    lifecycle: Option<(&LifecyclePolicy, &[RuleTally])>,
    images: &[ImageRecord],
    decisions: &[ImageDecision],
) -> Vec<RuleCount> {
    let tally = |name: &str| {
        let expired = decisions
            .iter()
            .filter(|d| d.action == Action::Delete && d.rule.as_deref() == Some(name))
            .count();
        let kept = decisions
            .iter()
            .filter(|d| d.action == Action::Keep && d.overridden && d.rule.as_deref() == Some(name))
            .count();
        (expired, kept)
    };
    let mut counts = Vec::new();
    for rule in &policy.rules {
        if lifecycle.is_some() && rule.action != RuleAction::Keep {
            continue;
        }
        let (expired, kept_by_safety) = tally(&rule.name);
        counts.push(RuleCount {
            rule: rule.name.clone(),
            description: None,
            matched: images.iter().filter(|im| selects(rule, im)).count(),
            expired,
            kept_by_safety,
            would_archive: None,
        });
    }
    if let Some((l, tallies)) = lifecycle {
        for (rule, t) in l.rules.iter().zip(tallies) {
            let name = rule.name();
            let (expired, kept_by_safety) = tally(&name);
            counts.push(RuleCount {
                rule: name,
                description: rule.description.clone(),
                matched: t.identified,
                expired,
                kept_by_safety,
                would_archive: (rule.action == LifecycleAction::Transition).then_some(t.marked),
            });
        }
    }
    counts
}
