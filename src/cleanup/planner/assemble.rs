//! Plan assembly: the decisions of one repository from its first verdicts and the
//! closure's outcome.

use super::first_verdict::Verdict;
use super::graph::Graph;
use super::{Action, ImageDecision, InUseMap, Plan, Snapshot};
use crate::format::short_digest;
use chrono::{DateTime, Utc};
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

/// Everything a plan is assembled from.
pub(super) struct PlanInputs<'a> {
    pub snapshot: &'a Snapshot,
    pub now: DateTime<Utc>,
    pub graph: &'a Graph<'a>,
    pub verdicts: &'a [Verdict],
    /// Images `max_deletions` kept, with the reason.
    pub forced: &'a HashMap<usize, String>,
    /// The ECR lifecycle rule that would expire an image.
    pub intended: &'a HashMap<usize, String>,
    pub in_use: &'a InUseMap,
}

/// The closure's outcome: what is kept (and why, when a safety rule kept it), the
/// deletions in order, and whether `max_deletions` cut them.
pub(super) struct Outcome {
    pub kept: Vec<bool>,
    pub why_kept: HashMap<usize, String>,
    pub order: Vec<usize>,
    pub stopped: bool,
}

/// The plan's decisions: deletions in order, then the images kept, newest first.
pub(super) fn build_plan(inputs: &PlanInputs, outcome: Outcome) -> Plan {
    let PlanInputs {
        snapshot,
        now,
        graph,
        verdicts,
        forced,
        intended,
        in_use,
    } = *inputs;
    let Outcome {
        kept,
        why_kept,
        order,
        stopped,
    } = outcome;
    let (at, parents, referrers) = (&graph.at, &graph.parents, &graph.referrers);
    let images = &snapshot.images;
    let in_order: HashSet<usize> = order.iter().copied().collect();
    let decision =
        |i: usize, action: Action, rule: Option<String>, overridden: bool, reason: String| {
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
                overridden,
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
        let mut d = decision(i, Action::Delete, rule, false, reason);
        d.after = after.iter().map(|&j| images[j].digest.clone()).collect();
        d.wave = wave;
        decisions.push(d);
    }
    let mut keeps: Vec<usize> = (0..images.len())
        .filter(|i| !in_order.contains(i))
        .collect();
    keeps.sort_by_key(|&i| (Reverse(images[i].pushed_at), images[i].digest.clone()));
    for i in keeps {
        let (rule, overridden, reason) = if let Some(r) = forced.get(&i) {
            (None, false, r.clone())
        } else if let Some(r) = why_kept.get(&i) {
            match &verdicts[i] {
                Verdict::Delete { rule, .. } => (Some(rule.clone()), true, r.clone()),
                _ => (None, false, r.clone()),
            }
        } else {
            match &verdicts[i] {
                Verdict::Keep {
                    rule,
                    reason,
                    overridden,
                } => (rule.clone(), *overridden, reason.clone()),
                // Not reached in a consistent graph (see deletion_order): kept, safely.
                _ if !kept[i] => (None, false, "left in place: reference cycle".into()),
                _ => (None, false, "kept".into()),
            }
        };
        // A safety rule kept what the ECR lifecycle policy alone would expire: say so.
        let (rule, overridden) = match (rule, intended.get(&i)) {
            (None, Some(r)) => (Some(r.clone()), true),
            (rule, _) => (rule, overridden),
        };
        decisions.push(decision(i, Action::Keep, rule, overridden, reason));
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
