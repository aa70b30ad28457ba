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

use super::ecr_lifecycle::{LifecycleAction, LifecyclePolicy, Outcome, RuleTally};
use super::policy::{Policy, Rule, RuleAction};
use crate::catalog::ImageRecord;
use crate::format::{age, short_digest};
use crate::oci::{ArtifactKind, Sha256Digest};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

/// The images of one repository at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The repository's name.
    pub repository: String,
    /// Every image in it, as the catalog listed them.
    pub images: Vec<ImageRecord>,
}

/// What the plan does with an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Left in place.
    Keep,
    /// Deleted (in a dry run: would be).
    Delete,
}

/// The plan's decision on one image: keep or delete it, the rule that decided, and why.
#[derive(Debug, Clone, Serialize)]
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
    /// Why, in words (`pushed 9d ago (> 7d)`, `listed by kept index ...`).
    pub reason: String,
    /// Deletions only: images of this plan that must be deleted first (the indexes
    /// listing it, the referrers of it); the executor skips this one if any failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<Sha256Digest>,
    /// Deletions only: 0 for images nothing deleted depends on, else one more than the
    /// largest wave of `after` — a BatchDeleteImage call never mixes waves.
    pub wave: usize,
    /// Who uses this image (`ecs service web/api, task def web:42`, `lambda fn resize:live`):
    /// kept whatever the rules say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// A first verdict, before the closure.
#[derive(Debug, Clone)]
enum Verdict {
    Keep {
        rule: Option<String>,
        reason: String,
    },
    Delete {
        rule: String,
        reason: String,
    },
    /// No rule matched a dependant: kept exactly when what it depends on is kept.
    Follow,
}

fn group_of<'a>(rule: &'a Rule, image: &ImageRecord) -> &'a str {
    rule.select
        .tags
        .iter()
        .find(|p| image.tags.iter().any(|t| p.matches(t)))
        .map_or("", |p| p.as_str())
}

fn selects(rule: &Rule, image: &ImageRecord) -> bool {
    let s = &rule.select;
    // A referrer (signature, SOCI v1 index, attestation with a subject) is always
    // untagged: only an expire rule naming its kind may expire it, otherwise `untagged: true`
    // rules would strip the signatures and SOCI indexes of every kept image. Unselected,
    // it follows its subject.
    if rule.action == RuleAction::Expire
        && image.subject.is_some()
        && !s.kinds.contains(&image.kind)
    {
        return false;
    }
    (s.kinds.is_empty() || s.kinds.contains(&image.kind))
        && s.tagged.is_none_or(|t| t != image.tags.is_empty())
        && (s.tags.is_empty()
            || s.tags
                .iter()
                .any(|p| image.tags.iter().any(|t| p.matches(t))))
        && !s
            .exclude_tags
            .iter()
            .any(|p| image.tags.iter().any(|t| p.matches(t)))
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

/// The images of a repository that ECS or Lambda use, each with who uses it
/// (`cleanup::in_use::InUse::protected`).
pub type InUseMap = BTreeMap<Sha256Digest, Vec<String>>;

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
    let at: HashMap<&Sha256Digest, usize> = images
        .iter()
        .enumerate()
        .map(|(i, im)| (&im.digest, i))
        .collect();
    // parents[i]: images whose references include i. referrers[i]: images whose subject is i.
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); images.len()];
    let mut referrers: Vec<Vec<usize>> = vec![Vec::new(); images.len()];
    for (i, im) in images.iter().enumerate() {
        for r in im.references() {
            if let Some(&j) = at.get(r) {
                if j != i && !parents[j].contains(&i) {
                    parents[j].push(i);
                }
            }
        }
        if let Some(&j) = im.subject.as_ref().and_then(|s| at.get(s)) {
            if j != i {
                referrers[j].push(i);
            }
        }
    }

    // keep_latest: per rule, the digests that are among the N newest of their group.
    let mut latest: Vec<HashSet<usize>> = vec![HashSet::new(); policy.rules.len()];
    for (ri, rule) in policy.rules.iter().enumerate() {
        let Some(n) = rule.when.keep_latest else {
            continue;
        };
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, im) in images.iter().enumerate() {
            if selects(rule, im) {
                groups.entry(group_of(rule, im)).or_default().push(i);
            }
        }
        for members in groups.values_mut() {
            members.sort_by_key(|&i| (Reverse(images[i].pushed_at), images[i].digest.clone()));
            latest[ri].extend(members.iter().take(n));
        }
    }

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

    let mut verdicts: Vec<Verdict> = images
        .iter()
        .enumerate()
        .map(|(i, im)| {
            let since_push = now - im.pushed_at;
            if let (Some(l), Some((outcomes, _))) = (lifecycle, &ecr) {
                return ecr_verdict(
                    policy,
                    l,
                    &outcomes[i],
                    im,
                    since_push,
                    !parents[i].is_empty(),
                );
            }
            if since_push < policy.grace_period {
                return Verdict::Keep {
                    rule: None,
                    reason: format!(
                        "pushed {} ago, within the grace period of {}",
                        age(since_push),
                        age(policy.grace_period)
                    ),
                };
            }
            let last_use = im
                .last_pulled_at
                .map_or(im.pushed_at, |p| p.max(im.pushed_at));
            for (ri, rule) in policy.rules.iter().enumerate() {
                if !selects(rule, im) {
                    continue;
                }
                if latest[ri].contains(&i) {
                    return Verdict::Keep {
                        rule: Some(rule.name.clone()),
                        reason: format!(
                            "one of the {} newest{}",
                            rule.when.keep_latest.unwrap_or(0),
                            match group_of(rule, im) {
                                "" => String::new(),
                                g => format!(" tagged {g}"),
                            }
                        ),
                    };
                }
                let mut why = Vec::new();
                if let Some(d) = rule.when.older_than {
                    if since_push <= d {
                        continue;
                    }
                    why.push(format!("pushed {} ago (> {})", age(since_push), age(d)));
                }
                if let Some(d) = rule.when.unused_for {
                    let unused = now - last_use;
                    if unused <= d {
                        continue;
                    }
                    why.push(match im.last_pulled_at {
                        Some(_) => format!("last pulled {} ago (> {})", age(unused), age(d)),
                        None => format!("never pulled, pushed {} ago (> {})", age(unused), age(d)),
                    });
                }
                if rule.when.keep_latest.is_some() {
                    why.push(format!(
                        "not one of the {} newest",
                        rule.when.keep_latest.unwrap_or(0)
                    ));
                }
                let reason = if why.is_empty() {
                    format!("{} selected by rule", im.kind)
                } else {
                    why.join(", ")
                };
                return match rule.action {
                    RuleAction::Keep => Verdict::Keep {
                        rule: Some(rule.name.clone()),
                        reason,
                    },
                    RuleAction::Expire => Verdict::Delete {
                        rule: rule.name.clone(),
                        reason,
                    },
                };
            }
            let dependant = im.subject.is_some() || (im.tags.is_empty() && !parents[i].is_empty());
            if dependant {
                Verdict::Follow
            } else {
                Verdict::Keep {
                    rule: None,
                    reason: "no rule matched".into(),
                }
            }
        })
        .collect();
    for (v, im) in verdicts.iter_mut().zip(images) {
        if let Some(users) = in_use.get(&im.digest) {
            let rule = match v {
                Verdict::Delete { rule, .. } => Some(format!("{rule} (overridden)")),
                Verdict::Keep { rule, .. } => rule.clone(),
                Verdict::Follow => None,
            };
            *v = Verdict::Keep {
                rule,
                reason: format!("in use: {}", users.join("; ")),
            };
        }
    }

    let mut forced: HashMap<usize, String> = HashMap::new();
    let mut stopped = false;
    loop {
        let (kept, why_kept) = closure(images, &verdicts, &forced, &at, &referrers);
        let order = deletion_order(images, &kept, &at);
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
                let mut plan = build_plan(
                    snapshot, now, &verdicts, &forced, &intended, kept, why_kept, order, &at,
                    &parents, &referrers, stopped, in_use,
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

/// The first verdict on an image of a repository an ECR lifecycle policy decides for:
/// the grace period, then afterpush's `keep` rules, then ECR's outcome.
fn ecr_verdict(
    policy: &Policy,
    lifecycle: &LifecyclePolicy,
    outcome: &Outcome,
    im: &ImageRecord,
    since_push: Duration,
    listed_by_index: bool,
) -> Verdict {
    if since_push < policy.grace_period {
        return Verdict::Keep {
            rule: None,
            reason: format!(
                "pushed {} ago, within the grace period of {}",
                age(since_push),
                age(policy.grace_period)
            ),
        };
    }
    if let Some(rule) = policy
        .rules
        .iter()
        .find(|r| r.action == RuleAction::Keep && selects(r, im))
    {
        return Verdict::Keep {
            rule: Some(rule.name.clone()),
            reason: format!("{} selected by keep rule", im.kind),
        };
    }
    // Referrers are never identified (see ecr_lifecycle): they follow their subject.
    let dependant = im.subject.is_some() || (im.tags.is_empty() && listed_by_index);
    match outcome {
        Outcome::Expire { rule, reason } => Verdict::Delete {
            rule: lifecycle.rules[*rule].name(),
            reason: reason.clone(),
        },
        Outcome::Archive { rule, reason } => Verdict::Keep {
            rule: Some(lifecycle.rules[*rule].name()),
            reason: format!("would archive ({reason}); afterpush never archives"),
        },
        Outcome::Spared { rule, reason } => Verdict::Keep {
            rule: Some(lifecycle.rules[*rule].name()),
            reason: reason.clone(),
        },
        Outcome::Unselected if dependant => Verdict::Follow,
        Outcome::Unselected => Verdict::Keep {
            rule: None,
            reason: "no rule matched".into(),
        },
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
        let overridden = format!("{name} (overridden)");
        let expired = decisions
            .iter()
            .filter(|d| d.action == Action::Delete && d.rule.as_deref() == Some(name))
            .count();
        let kept = decisions
            .iter()
            .filter(|d| d.action == Action::Keep && d.rule.as_deref() == Some(&overridden))
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

/// The least kept set containing the roots and closed under: kept → its references and
/// its subject; kept → its following referrers and entries.
fn closure(
    images: &[ImageRecord],
    verdicts: &[Verdict],
    forced: &HashMap<usize, String>,
    at: &HashMap<&Sha256Digest, usize>,
    referrers: &[Vec<usize>],
) -> (Vec<bool>, HashMap<usize, String>) {
    let mut kept = vec![false; images.len()];
    let mut why: HashMap<usize, String> = HashMap::new();
    let mut queue = VecDeque::new();
    for (i, v) in verdicts.iter().enumerate() {
        if matches!(v, Verdict::Keep { .. }) || forced.contains_key(&i) {
            kept[i] = true;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        let im = &images[i];
        let mut reach = |j: usize, reason: String, kept: &mut Vec<bool>| {
            if !kept[j] {
                kept[j] = true;
                why.insert(j, reason);
                queue.push_back(j);
            }
        };
        for r in &im.children {
            if let Some(&j) = at.get(r) {
                reach(
                    j,
                    format!("listed by kept index {}", short_digest(&im.digest)),
                    &mut kept,
                );
            }
        }
        if let Some(&j) = im.soci_index.as_ref().and_then(|s| at.get(s)) {
            reach(
                j,
                format!("SOCI index of kept image {}", short_digest(&im.digest)),
                &mut kept,
            );
        }
        if let Some(&j) = im.subject.as_ref().and_then(|s| at.get(s)) {
            reach(
                j,
                format!("subject of kept referrer {}", short_digest(&im.digest)),
                &mut kept,
            );
        }
        for &j in &referrers[i] {
            if matches!(verdicts[j], Verdict::Follow) {
                reach(
                    j,
                    format!("referrer of kept image {}", short_digest(&im.digest)),
                    &mut kept,
                );
            }
        }
    }
    (kept, why)
}

/// The images not kept, each after every deleted image that references it or refers to
/// it; oldest first among those free to go.
fn deletion_order(
    images: &[ImageRecord],
    kept: &[bool],
    at: &HashMap<&Sha256Digest, usize>,
) -> Vec<usize> {
    let deleted: Vec<usize> = (0..images.len()).filter(|&i| !kept[i]).collect();
    let mut indegree: HashMap<usize, usize> = deleted.iter().map(|&i| (i, 0)).collect();
    let mut out_edges: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in &deleted {
        let im = &images[i];
        let targets = im.references().chain(im.subject.iter());
        let mut seen = HashSet::new();
        for t in targets {
            if let Some(&j) = at.get(t) {
                if j != i && !kept[j] && seen.insert(j) {
                    out_edges.entry(i).or_default().push(j);
                    *indegree.get_mut(&j).unwrap() += 1;
                }
            }
        }
    }
    let key = |i: usize| Reverse((images[i].pushed_at, images[i].digest.clone(), i));
    let mut ready: BinaryHeap<_> = indegree
        .iter()
        .filter(|(_, &d)| d == 0)
        .map(|(&i, _)| key(i))
        .collect();
    let mut order = Vec::with_capacity(deleted.len());
    while let Some(Reverse((_, _, i))) = ready.pop() {
        order.push(i);
        for &j in out_edges.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
            let d = indegree.get_mut(&j).unwrap();
            *d -= 1;
            if *d == 0 {
                ready.push(key(j));
            }
        }
    }
    // Content addressing makes cycles impossible; should a registry report one anyway,
    // those images are kept rather than deleted in an unsafe order (see build_plan).
    order
}

#[allow(clippy::too_many_arguments)]
fn build_plan(
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    verdicts: &[Verdict],
    forced: &HashMap<usize, String>,
    intended: &HashMap<usize, String>,
    kept: Vec<bool>,
    why_kept: HashMap<usize, String>,
    order: Vec<usize>,
    at: &HashMap<&Sha256Digest, usize>,
    parents: &[Vec<usize>],
    referrers: &[Vec<usize>],
    stopped: bool,
    in_use: &InUseMap,
) -> Plan {
    let images = &snapshot.images;
    let in_order: HashSet<usize> = order.iter().copied().collect();
    let decision = |i: usize, action: Action, rule: Option<String>, reason: String| {
        let im = &images[i];
        ImageDecision {
            digest: im.digest.clone(),
            tags: im.tags.clone(),
            kind: im.kind,
            pushed_at: im.pushed_at,
            last_pulled_at: im.last_pulled_at,
            size_bytes: im.size_bytes,
            action,
            rule,
            reason,
            after: Vec::new(),
            wave: 0,
            in_use: in_use.get(&im.digest).cloned().unwrap_or_default(),
        }
    };
    let mut decisions = Vec::with_capacity(images.len());
    let mut wave_of: HashMap<usize, usize> = HashMap::new();
    let mut bytes = 0u64;
    for &i in &order {
        let im = &images[i];
        let (rule, reason) = match &verdicts[i] {
            Verdict::Delete { rule, reason } => (Some(rule.clone()), reason.clone()),
            _ => {
                let gone_parents: Vec<String> = parents[i]
                    .iter()
                    .map(|&p| short_digest(&images[p].digest))
                    .collect();
                let reason = match &im.subject {
                    Some(s) if at.contains_key(s) => {
                        format!("its subject {} is deleted", short_digest(s))
                    }
                    Some(s) => format!("its subject {} is not in the repository", short_digest(s)),
                    None => format!("listed only by deleted index {}", gone_parents.join(", ")),
                };
                (intended.get(&i).cloned(), reason)
            }
        };
        // Deleted images that must go before this one: its deleted parents and referrers.
        let after: Vec<usize> = parents[i]
            .iter()
            .chain(referrers[i].iter())
            .copied()
            .filter(|j| in_order.contains(j))
            .collect();
        let wave = after.iter().map(|j| wave_of[j] + 1).max().unwrap_or(0);
        wave_of.insert(i, wave);
        bytes += im.size_bytes;
        let mut d = decision(i, Action::Delete, rule, reason);
        d.after = after.iter().map(|&j| images[j].digest.clone()).collect();
        d.wave = wave;
        decisions.push(d);
    }
    let mut keeps: Vec<usize> = (0..images.len())
        .filter(|i| !in_order.contains(i))
        .collect();
    keeps.sort_by_key(|&i| (Reverse(images[i].pushed_at), images[i].digest.clone()));
    for i in keeps {
        let (rule, reason) = if let Some(r) = forced.get(&i) {
            (None, r.clone())
        } else if let Some(r) = why_kept.get(&i) {
            let rule = match &verdicts[i] {
                Verdict::Delete { rule, .. } => Some(format!("{rule} (overridden)")),
                _ => None,
            };
            (rule, r.clone())
        } else {
            match &verdicts[i] {
                Verdict::Keep { rule, reason } => (rule.clone(), reason.clone()),
                // Not reached in a consistent graph (see deletion_order): kept, safely.
                _ if !kept[i] => (None, "left in place: reference cycle".into()),
                _ => (None, "kept".into()),
            }
        };
        // A safety rule kept what the ECR lifecycle policy alone would expire: say so.
        let rule = rule.or_else(|| intended.get(&i).map(|r| format!("{r} (overridden)")));
        decisions.push(decision(i, Action::Keep, rule, reason));
    }
    Plan {
        repository: snapshot.repository.clone(),
        now,
        deletions: order.len(),
        decisions,
        bytes_reclaimed: bytes,
        stopped_by_max_deletions: stopped,
        rules: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::ArtifactKind as K;
    use proptest::prelude::*;

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
    const ISSUE_POLICY: &str = include_str!("../../infra/policies/ci-caches.yaml");

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
        assert_eq!(idx.rule.as_deref(), Some("old-untagged (overridden)"));
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
        assert_eq!(running.rule.as_deref(), Some("ecr:1 (overridden)"));
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
    fn ages_read_like_durations() {
        for (secs, text) in [
            (12, "12s"),
            (45 * 60 + 3, "45m"),
            (2 * 3600, "2h"),
            (2 * 3600 + 5 * 60, "2h5m"),
            (30 * 86_400 + 1, "30d"),
            (36 * 3600, "1d12h"),
        ] {
            assert_eq!(age(Duration::seconds(secs)), text);
        }
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
        assert_eq!(k.rule.as_deref(), Some("old-untagged (overridden)"));
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
        let p = policy("repositories: ['*']\nrules: [{name: no-sigs, select: {kind: signature}, action: expire}]");
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
            assert_eq!(d.rule.as_deref(), Some("ecr:1 (overridden)"), "{name}");
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
        assert_eq!(b.rule.as_deref(), Some("ecr:1 (overridden)"));
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
}
