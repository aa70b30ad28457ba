//! First verdicts: what the grace period, the policy's rules (or an ECR lifecycle
//! policy) and the images in use say of each image, before the safety closure.

use super::first_verdict::Verdict;
use super::graph::Graph;
use crate::catalog::ImageRecord;
use crate::cleanup::ecr_lifecycle::{LifecyclePolicy, Outcome};
use crate::cleanup::policy::{Policy, Rule, RuleAction};
use crate::cleanup::shared::InUseMap;
use crate::format::age;
use chrono::{DateTime, Utc};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};

pub(super) fn group_of<'a>(rule: &'a Rule, image: &ImageRecord) -> &'a str {
    rule.select
        .tags
        .iter()
        .find(|p| image.tags.iter().any(|t| p.matches(t)))
        .map_or("", |p| p.as_str())
}

pub(super) fn selects(rule: &Rule, image: &ImageRecord) -> bool {
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

/// keep_latest: per rule, the images that are among the N newest of their group.
fn latest_per_rule(policy: &Policy, images: &[ImageRecord]) -> Vec<HashSet<usize>> {
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

    latest
}

/// The first verdict on every image: the grace period and the rules, or the ECR
/// lifecycle policy's `outcomes` where one decides; then the images in use are kept.
pub(super) fn first_verdicts(
    policy: &Policy,
    images: &[ImageRecord],
    now: DateTime<Utc>,
    graph: &Graph,
    lifecycle: Option<&LifecyclePolicy>,
    ecr: Option<&[Outcome]>,
    in_use: &InUseMap,
) -> Vec<Verdict> {
    let latest = latest_per_rule(policy, images);
    let mut verdicts: Vec<Verdict> = images
        .iter()
        .enumerate()
        .map(|(i, im)| {
            let since_push = now - im.pushed_at;
            // Whoever decides (the rules or an ECR lifecycle policy), the grace period first.
            if since_push < policy.grace_period {
                return Verdict::Keep {
                    rule: None,
                    reason: format!(
                        "pushed {} ago, within the grace period of {}",
                        age(since_push),
                        age(policy.grace_period)
                    ),
                    overridden: false,
                };
            }
            if let (Some(l), Some(outcomes)) = (lifecycle, ecr) {
                return ecr_verdict(policy, l, &outcomes[i], im, !graph.parents[i].is_empty());
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
                        overridden: false,
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
                        overridden: false,
                    },
                    RuleAction::Expire => Verdict::Delete {
                        rule: rule.name.clone(),
                        reason,
                    },
                };
            }
            let dependant =
                im.subject.is_some() || (im.tags.is_empty() && !graph.parents[i].is_empty());
            if dependant {
                Verdict::Follow
            } else {
                Verdict::Keep {
                    rule: None,
                    reason: "no rule matched".into(),
                    overridden: false,
                }
            }
        })
        .collect();
    for (v, im) in verdicts.iter_mut().zip(images) {
        if let Some(users) = in_use.get(&im.digest) {
            let (rule, overridden) = match v {
                Verdict::Delete { rule, .. } => (Some(rule.clone()), true),
                Verdict::Keep {
                    rule, overridden, ..
                } => (rule.clone(), *overridden),
                Verdict::Follow => (None, false),
            };
            *v = Verdict::Keep {
                rule,
                reason: format!("in use: {}", users.join("; ")),
                overridden,
            };
        }
    }
    verdicts
}

/// The first verdict on an image past the grace period, of a repository an ECR lifecycle
/// policy decides for: afterpush's `keep` rules, then ECR's outcome.
fn ecr_verdict(
    policy: &Policy,
    lifecycle: &LifecyclePolicy,
    outcome: &Outcome,
    im: &ImageRecord,
    listed_by_index: bool,
) -> Verdict {
    if let Some(rule) = policy
        .rules
        .iter()
        .find(|r| r.action == RuleAction::Keep && selects(r, im))
    {
        return Verdict::Keep {
            rule: Some(rule.name.clone()),
            reason: format!("{} selected by keep rule", im.kind),
            overridden: false,
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
            overridden: false,
        },
        Outcome::Spared { rule, reason } => Verdict::Keep {
            rule: Some(lifecycle.rules[*rule].name()),
            reason: reason.clone(),
            overridden: false,
        },
        Outcome::Unselected if dependant => Verdict::Follow,
        Outcome::Unselected => Verdict::Keep {
            rule: None,
            reason: "no rule matched".into(),
            overridden: false,
        },
    }
}
