//! `REPOSITORY_TAG_FILTERS`: which repository/tag pairs a function acts on (the
//! indexer's and stitcher's push events, the janitor's pushes and scheduled sweep).
//!
//! Syntax: comma-separated `repo-glob:tag-glob` entries; a pair is selected when any entry
//! matches both its repository and its tag. Globs are [`crate::glob`] globs where `*` also
//! matches `/`, so `*` covers namespaced repositories (`team/app`) and `team/*` covers
//! everything below `team/`. A colon cannot occur in repository names or tags, so exactly
//! one colon per entry is required. Commas inside `{a,b}` alternations do not split
//! entries (`app:{1,2}.*` is one entry).

use crate::glob::Glob;
use std::fmt;
use std::str::FromStr;

/// A bad `REPOSITORY_TAG_FILTERS` value; names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("REPOSITORY_TAG_FILTERS entry {position} ({entry:?}): {problem}")]
pub struct FilterError {
    /// 1-based position of the entry in the comma-separated list.
    pub position: usize,
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub problem: String,
}

#[derive(Debug, Clone)]
struct Entry {
    repository: String,
    tag: String,
    repository_matcher: Glob,
    tag_matcher: Glob,
}

/// Parsed `REPOSITORY_TAG_FILTERS`. The default selects everything (`*:*`).
#[derive(Debug, Clone)]
pub struct RepositoryTagFilters {
    entries: Vec<Entry>,
}

impl RepositoryTagFilters {
    /// The default, `*:*`.
    pub const DEFAULT: &'static str = "*:*";

    /// Parses the setting; blank means the default.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.trim().is_empty() {
            return Self::parse(Self::DEFAULT);
        }
        let mut entries = Vec::new();
        for (index, raw) in split_entries(text).into_iter().enumerate() {
            let position = index + 1;
            let entry = raw.trim();
            let fail = |problem: String| FilterError {
                position,
                entry: entry.to_string(),
                problem,
            };
            if entry.is_empty() {
                return Err(fail(
                    "empty entry (two commas in a row, or a trailing comma)".into(),
                ));
            }
            let mut parts = entry.split(':');
            let (Some(repository), Some(tag), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(fail(
                    "expected exactly one ':' as in repo-glob:tag-glob".into(),
                ));
            };
            let (repository, tag) = (repository.trim(), tag.trim());
            if repository.is_empty() {
                return Err(fail(
                    "empty repository glob (use * for every repository)".into(),
                ));
            }
            if tag.is_empty() {
                return Err(fail("empty tag glob (use * for every tag)".into()));
            }
            let glob = |what: &str, pattern: &str| {
                Glob::new(pattern).map_err(|e| fail(format!("invalid {what} glob: {e}")))
            };
            entries.push(Entry {
                repository_matcher: glob("repository", repository)?,
                tag_matcher: glob("tag", tag)?,
                repository: repository.to_string(),
                tag: tag.to_string(),
            });
        }
        Ok(Self { entries })
    }

    /// True when some entry matches both `repository` and `tag`.
    pub fn matches(&self, repository: &str, tag: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.repository_matcher.is_match(repository) && e.tag_matcher.is_match(tag))
    }

    /// True when some entry matches `repository` (whatever the tag): for work that is not
    /// about one tag, such as the janitor's scheduled sweep.
    pub fn matches_repository(&self, repository: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.repository_matcher.is_match(repository))
    }

    /// The `(repo-glob, tag-glob)` pairs, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.repository.as_str(), e.tag.as_str()))
    }
}

/// Splits on the commas that separate entries, not those inside a glob's `{a,b}`
/// alternation or `[...]` class.
fn split_entries(text: &str) -> Vec<&str> {
    let mut entries = Vec::new();
    let (mut braces, mut in_class, mut start) = (0usize, false, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '{' if !in_class => braces += 1,
            '}' if !in_class => braces = braces.saturating_sub(1),
            ',' if braces == 0 && !in_class => {
                entries.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    entries.push(&text[start..]);
    entries
}

impl Default for RepositoryTagFilters {
    fn default() -> Self {
        Self::parse(Self::DEFAULT).expect("the default filter parses")
    }
}

impl FromStr for RepositoryTagFilters {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, FilterError> {
        Self::parse(s)
    }
}

/// The canonical text form (reparses to an equal filter).
impl fmt::Display for RepositoryTagFilters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (repository, tag)) in self.entries().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{repository}:{tag}")?;
        }
        Ok(())
    }
}

impl PartialEq for RepositoryTagFilters {
    fn eq(&self, other: &Self) -> bool {
        self.entries().eq(other.entries())
    }
}

impl Eq for RepositoryTagFilters {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case("*:*", "app", "1.2.3", true)]
    #[case("", "team/app", "latest", true)]
    #[case("app:*", "app", "anything", true)]
    #[case("app:*", "app2", "anything", false)]
    #[case("team/*:release-*", "team/app", "release-1", true)]
    #[case("team/*:release-*", "team/app", "main", false)]
    #[case("*:v*, svc-*:latest", "svc-a", "latest", true)]
    #[case("*:v*, svc-*:latest", "other", "latest", false)]
    #[case("app:{1,2}.*", "app", "2.0", true)]
    #[case("app:{1,2}.*", "app", "3.0", false)]
    fn matches_pairs(
        #[case] filters: &str,
        #[case] repository: &str,
        #[case] tag: &str,
        #[case] expected: bool,
    ) {
        let parsed = RepositoryTagFilters::parse(filters).unwrap();
        assert_eq!(
            parsed.matches(repository, tag),
            expected,
            "{filters} {repository}:{tag}"
        );
    }

    #[rstest]
    #[case("app", 1, "exactly one ':'")]
    #[case("*:*,app:1:2", 2, "exactly one ':'")]
    #[case("*:*,,app:*", 2, "empty entry")]
    #[case("*:*,", 2, "empty entry")]
    #[case(":latest", 1, "empty repository glob")]
    #[case("app: ", 1, "empty tag glob")]
    #[case("app:[", 1, "invalid tag glob")]
    #[case("a{b:*", 1, "invalid repository glob")]
    #[case("*:*, app:[", 2, "invalid tag glob")]
    fn errors_name_the_entry(
        #[case] filters: &str,
        #[case] position: usize,
        #[case] problem: &str,
    ) {
        let err = RepositoryTagFilters::parse(filters).unwrap_err();
        assert_eq!(err.position, position, "{err}");
        assert!(err.to_string().contains(problem), "{err}");
        assert!(err.to_string().contains("REPOSITORY_TAG_FILTERS"), "{err}");
    }

    #[test]
    fn an_oversized_glob_is_an_error_not_a_panic() {
        let huge = format!("app:{}", "a?".repeat(512 * 1024));
        let err = RepositoryTagFilters::parse(&huge).unwrap_err();
        assert!(
            err.to_string().contains("invalid tag glob") && err.to_string().contains("not usable"),
            "{err}"
        );
    }

    #[test]
    fn repository_only_matching_ignores_tags() {
        let f = RepositoryTagFilters::parse("app:release-*").unwrap();
        assert!(f.matches_repository("app"));
        assert!(!f.matches_repository("other"));
    }

    fn glob_part() -> impl Strategy<Value = String> {
        // Repository and tag characters plus glob wildcards.
        "[a-z0-9*?][a-z0-9._/*?-]{0,12}"
    }

    proptest! {
        #[test]
        fn display_reparses_to_the_same_filters(
            pairs in proptest::collection::vec((glob_part(), glob_part()), 1..5)
        ) {
            let text = pairs.iter().map(|(r, t)| format!("{r}:{t}")).collect::<Vec<_>>().join(",");
            let parsed = RepositoryTagFilters::parse(&text).unwrap();
            let again = RepositoryTagFilters::parse(&parsed.to_string()).unwrap();
            prop_assert_eq!(&parsed, &again);
            prop_assert_eq!(parsed.to_string(), text);
        }

        #[test]
        fn literal_entries_select_exactly_their_pair(
            repository in "[a-z][a-z0-9-]{0,10}(/[a-z][a-z0-9-]{0,10})?",
            tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
            other_tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        ) {
            let f = RepositoryTagFilters::parse(&format!("{repository}:{tag}")).unwrap();
            prop_assert!(f.matches(&repository, &tag));
            prop_assert_eq!(f.matches(&repository, &other_tag), tag == other_tag);
            prop_assert!(RepositoryTagFilters::default().matches(&repository, &other_tag));
        }
    }
}
