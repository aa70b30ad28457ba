//! Globs as users write them in settings and policies (`team/*`, `release-?.*`,
//! `app:{1,2}.*`), compiled without panicking.
//!
//! `globset` syntax, with `*` also matching `/` (so `*` covers namespaced repositories).
//! The glob's regex is compiled here rather than by `Glob::compile_matcher`, which
//! panics when that regex is over the regex crate's size limit (a 1 MiB glob is): an
//! oversized glob is an error like any other bad glob.

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Glob {
    source: String,
    /// The glob's regex, matched on bytes as `globset::GlobMatcher` does.
    regex: regex::bytes::Regex,
}

impl Glob {
    /// Compiles `text`; the error says what is wrong (the caller names where).
    pub fn new(text: &str) -> Result<Self, String> {
        let glob = globset::GlobBuilder::new(text)
            .literal_separator(false)
            .build()
            .map_err(|e| format!("{text:?} is not a valid glob: {e}"))?;
        let regex = regex::bytes::Regex::new(glob.regex())
            .map_err(|e| format!("a {}-byte glob is not usable: {e}", text.len()))?;
        Ok(Self {
            source: text.to_string(),
            regex,
        })
    }

    /// True when the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s.as_bytes())
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn stars_cross_slashes_and_alternations_work() {
        let g = Glob::new("team/*").unwrap();
        assert!(g.is_match("team/app") && g.is_match("team/a/b") && !g.is_match("other/app"));
        assert!(Glob::new("*").unwrap().is_match("team/app"));
        let g = Glob::new("{1,2}.*").unwrap();
        assert!(g.is_match("2.0") && !g.is_match("3.0"));
        assert!(Glob::new("a[").unwrap_err().contains("not a valid glob"));
    }

    #[test]
    fn an_oversized_glob_is_an_error_not_a_panic() {
        let huge = "a?".repeat(512 * 1024);
        let err = Glob::new(&huge).unwrap_err();
        assert!(err.contains("glob is not usable"), "{err}");
    }
}
