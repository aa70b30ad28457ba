//! Per-arch tags as the indexer sees them: with `SOCI_SKIP_ARCH_TAGS` a tag that
//! `ARCH_TAG_TEMPLATE` matches (`app:1.2-amd64`) gets no SOCI index of its own; the
//! stitched tag gets one.

use super::ArchTagTemplate;
use std::fmt;

/// A pushed tag that `ARCH_TAG_TEMPLATE` names as a per-arch tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerArchTag {
    /// The pushed tag.
    pub tag: String,
    /// The `ARCH_TAG_TEMPLATE` it matches.
    pub template: String,
}

impl PerArchTag {
    /// `Some` when `template` matches `tag`.
    pub fn of(tag: &str, template: &ArchTagTemplate) -> Option<Self> {
        template.match_tag(tag).map(|_| PerArchTag {
            tag: tag.to_string(),
            template: template.as_str().to_string(),
        })
    }
}

impl fmt::Display for PerArchTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tag {:?} matches ARCH_TAG_TEMPLATE {}: with SOCI_SKIP_ARCH_TAGS the stitched index gets the SOCI index",
            self.tag, self.template
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tags_the_template_matches_are_per_arch() {
        let template = ArchTagTemplate::parse(ArchTagTemplate::DEFAULT).unwrap();
        let per_arch = PerArchTag::of("1.2-arm64", &template).unwrap();
        assert_eq!(per_arch.tag, "1.2-arm64");
        assert!(per_arch.to_string().contains("{tag}-{arch}"));
        assert_eq!(PerArchTag::of("1.2", &template), None);
    }
}
