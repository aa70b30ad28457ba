//! Per-arch tag groups (`1.2-amd64`, `1.2-arm64` -> `1.2`) and whether their stitched tag
//! is what the stitcher would write now. The stitcher itself answers, in a dry run
//! ([`crate::stitch::stitch`] with `dry_run`): it reads the group as on a push and says
//! whether the target is missing, out of date, up to date, or waiting for a platform.

use crate::registry::Repository;
use crate::stitch::{self, StitchOutcome, StitchSettings, StitchedIndex};
use std::collections::BTreeMap;

/// The per-arch tags of one base tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagGroup {
    /// The base tag (`1.2`).
    pub base: String,
    /// The stitched tag (`TARGET_TAG_TEMPLATE` of the base).
    pub target: String,
    /// The per-arch tags present, sorted.
    pub tags: Vec<String>,
}

/// The groups of per-arch tags among `tags`, by base tag. A tag that is its own group's
/// target is left out, as the stitcher ignores its push.
pub fn tag_groups(tags: &[String], settings: &StitchSettings) -> Vec<TagGroup> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for tag in tags {
        let Some(matched) = settings.arch_tag_template.match_tag(tag) else {
            continue;
        };
        if settings.target_tag_template.render(&matched.base_tag) == *tag {
            continue;
        }
        groups
            .entry(matched.base_tag)
            .or_default()
            .push(tag.clone());
    }
    groups
        .into_iter()
        .map(|(base, mut tags)| {
            tags.sort();
            TagGroup {
                target: settings.target_tag_template.render(&base),
                base,
                tags,
            }
        })
        .collect()
}

/// Where a group stands.
#[derive(Debug, Clone)]
pub enum StitchState {
    /// The stitched tag is the index the stitcher would write.
    Current,
    /// Not complete (`STITCH_MODE=complete` and a required platform is missing).
    Waiting(String),
    /// The stitcher would write `index` to the target, for this reason.
    Needed {
        /// The index it would write.
        index: StitchedIndex,
        /// Why (missing, or listing other digests).
        reason: String,
    },
    /// The stitcher would fail (a platform mismatch, a foreign image in the target...).
    Problem(String),
}

/// What the stitcher would do for `group` now, without writing anything.
pub async fn stitch_state(
    repo: &dyn Repository,
    group: &TagGroup,
    settings: &StitchSettings,
) -> StitchState {
    match stitch::stitch(repo, &group.base, settings, true).await {
        Ok(StitchOutcome::Unchanged { .. }) => StitchState::Current,
        Ok(StitchOutcome::Incomplete {
            target, missing, ..
        }) => StitchState::Waiting(format!("{target}: missing {}", missing.join(", "))),
        Ok(StitchOutcome::WouldWrite { target, index }) => {
            let reason = match repo.resolve(&target).await {
                Ok(current) => format!(
                    "{target} is {}, not the index of the current per-arch digests ({})",
                    current.digest, index.digest
                ),
                Err(e) if e.is_not_found() => format!("no {target} tag"),
                Err(e) => format!("{target} could not be read: {e}"),
            };
            StitchState::Needed { index, reason }
        }
        Ok(other) => StitchState::Problem(format!(
            "{}: unexpected stitcher outcome in a dry run: {other:?}",
            group.base
        )),
        Err(e) => {
            StitchState::Problem(format!("{} ({}): {e}", group.target, group.tags.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_per_arch_tags_by_base_tag() {
        let settings = StitchSettings::default();
        let tags: Vec<String> = [
            "1.2",
            "1.2-amd64",
            "1.2-arm64",
            "1.2-amd64-soci",
            "1.3-arm64",
            "latest",
        ]
        .map(String::from)
        .to_vec();
        let groups = tag_groups(&tags, &settings);
        assert_eq!(
            groups,
            vec![
                TagGroup {
                    base: "1.2".into(),
                    target: "1.2".into(),
                    tags: vec!["1.2-amd64".into(), "1.2-arm64".into()],
                },
                TagGroup {
                    base: "1.3".into(),
                    target: "1.3".into(),
                    tags: vec!["1.3-arm64".into()],
                },
            ]
        );
    }
}
