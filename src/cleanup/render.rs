//! Plans and decisions as text for people: the aligned tables the CLI and the demo
//! print, with every text from policies and registries made [`printable`]. The planner itself ([`super::planner`]) produces data only.

use super::planner::{Action, ImageDecision, Plan};
use crate::format::{age, bytes, count, printable, short_digest};
use chrono::{DateTime, Utc};

impl Plan {
    /// The plan as an aligned text table, one line per image, then a summary line.
    pub fn to_table(&self) -> String {
        let mut out = decisions_table(&self.repository, self.now, &self.decisions);
        out.push_str(&format!(
            "{}: delete {} of {}, reclaiming {}{}\n",
            printable(&self.repository),
            self.deletions,
            count(self.decisions.len() as u64, "image", "images"),
            bytes(self.bytes_reclaimed),
            if self.stopped_by_max_deletions {
                " (stopped at max_deletions)"
            } else {
                ""
            }
        ));
        out
    }
}

/// Decisions as an aligned text table (ages measured to `now`).
pub fn decisions_table(
    repository: &str,
    now: DateTime<Utc>,
    decisions: &[ImageDecision],
) -> String {
    let mut rows = vec![[
        "ACTION".to_string(),
        "DIGEST".into(),
        "KIND".into(),
        "TAGS".into(),
        "PUSHED".into(),
        "SIZE".into(),
        "RULE".into(),
        "REASON".into(),
    ]];
    for d in decisions {
        rows.push([
            match d.action {
                Action::Keep => "keep".into(),
                Action::Delete => "DELETE".into(),
            },
            short_digest(&d.digest),
            d.kind.to_string(),
            if d.tags.is_empty() {
                "-".into()
            } else {
                printable(&d.tags.join(",")).into_owned()
            },
            format!("{} ago", age(now - d.pushed_at)),
            bytes(d.size_bytes),
            d.rule_label()
                .map_or_else(|| "-".into(), |r| printable(&r).into_owned()),
            printable(&d.reason).into_owned(),
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!("repository {}\n", printable(repository));
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(k, (c, w))| {
                if k == 7 {
                    c.clone()
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
