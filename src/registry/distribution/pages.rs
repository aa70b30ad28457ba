//! Lists that come in pages (`tags/list`, the referrers API), following
//! `Link: <URL>; rel="next"` within bounds on the whole list, not per page: a registry
//! whose `Link` loops or never ends must neither keep us forever nor fill memory. Past a
//! bound the listing fails naming it; it never returns a silently cut list.

use crate::registry::{RegistryError, Result};
use std::collections::HashSet;
use url::Url;

/// Bytes of all the pages of one list together.
pub const MAX_LIST_BYTES: usize = 32 * 1024 * 1024;
/// Entries (tags, referrers) of one list together.
pub const MAX_LIST_ENTRIES: usize = 200_000;
/// Pages of one list.
pub const MAX_LIST_PAGES: usize = 10_000;

/// The state of one paged listing: where it has been and how much it holds.
pub(crate) struct Pages {
    what: String,
    visited: HashSet<Url>,
    next: Option<Url>,
    bytes: usize,
    entries: usize,
}

impl Pages {
    /// A listing of `what` (`tag list of host/app`) starting at `first`.
    pub(crate) fn new(what: String, first: Url) -> Self {
        Self {
            what,
            visited: HashSet::new(),
            next: Some(first),
            bytes: 0,
            entries: 0,
        }
    }

    /// The next page to fetch, `None` when the list is complete.
    pub(crate) fn next_url(&mut self) -> Result<Option<Url>> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        if !self.visited.insert(url.clone()) {
            return Err(self.error(format!(
                "pagination loops: Link header names {url} a second time"
            )));
        }
        if self.visited.len() > MAX_LIST_PAGES {
            return Err(self.error(format!("more than {MAX_LIST_PAGES} pages")));
        }
        Ok(Some(url))
    }

    /// True while the page being fetched is the first (a 404 there means "no list").
    pub(crate) fn on_first_page(&self) -> bool {
        self.visited.len() == 1
    }

    /// The most bytes the next page may have (what is left of [`MAX_LIST_BYTES`]).
    pub(crate) fn byte_budget(&self) -> usize {
        MAX_LIST_BYTES - self.bytes
    }

    /// The error for a page over [`Self::byte_budget`] (`size`: what it had or announced).
    pub(crate) fn too_many_bytes(&self, size: usize) -> RegistryError {
        self.error(format!(
            "over the {MAX_LIST_BYTES}-byte limit of a whole list (a page of {size} bytes after {} bytes)",
            self.bytes
        ))
    }

    /// Records a page of `bytes` bytes and `entries` entries fetched from `url`, whose
    /// answer had `headers`; finds the next page.
    pub(crate) fn add_page(
        &mut self,
        url: &Url,
        headers: &reqwest::header::HeaderMap,
        bytes: usize,
        entries: usize,
    ) -> Result<()> {
        self.bytes += bytes;
        if self.bytes > MAX_LIST_BYTES {
            return Err(self.too_many_bytes(bytes));
        }
        self.entries += entries;
        if self.entries > MAX_LIST_ENTRIES {
            return Err(self.error(format!(
                "more than {MAX_LIST_ENTRIES} entries across its pages"
            )));
        }
        self.next = next_link(headers, url);
        Ok(())
    }

    fn error(&self, message: String) -> RegistryError {
        RegistryError::Invalid {
            location: self.what.clone(),
            message,
        }
    }
}

/// The `Link: <URL>; rel="next"` of a paginated answer, resolved against `current`.
pub(crate) fn next_link(headers: &reqwest::header::HeaderMap, current: &Url) -> Option<Url> {
    for value in headers.get_all(reqwest::header::LINK) {
        let value = value.to_str().ok()?;
        for part in value.split(',') {
            let part = part.trim();
            let (target, params) = part.split_once(';').unwrap_or((part, ""));
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let is_next = params.split(';').any(|p| {
                matches!(
                    p.trim().replace(' ', "").as_str(),
                    "rel=\"next\"" | "rel=next"
                )
            });
            if is_next {
                return current.join(target).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, LINK};

    fn link(to: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_str(&format!("<{to}>; rel=\"next\"")).unwrap(),
        );
        h
    }

    #[test]
    fn follows_link_headers() {
        let base = Url::parse("http://r:5000/v2/app/tags/list?n=2").unwrap();
        assert_eq!(
            next_link(&link("/v2/app/tags/list?last=b&n=2"), &base)
                .unwrap()
                .as_str(),
            "http://r:5000/v2/app/tags/list?last=b&n=2"
        );
        assert_eq!(next_link(&HeaderMap::new(), &base), None);
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(r#"<https://other/x>; rel="prev""#),
        );
        assert_eq!(next_link(&h, &base), None);
    }

    #[test]
    fn a_repeated_link_is_an_error_naming_it() {
        let first = Url::parse("http://r/v2/app/tags/list?n=1").unwrap();
        let mut pages = Pages::new("tag list of r/app".into(), first.clone());
        let a = pages.next_url().unwrap().unwrap();
        pages
            .add_page(&a, &link("/v2/app/tags/list?last=a&n=1"), 10, 1)
            .unwrap();
        let b = pages.next_url().unwrap().unwrap();
        pages.add_page(&b, &link(first.as_str()), 10, 1).unwrap();
        let err = pages.next_url().unwrap_err().to_string();
        assert!(
            err.contains("tag list of r/app")
                && err.contains("loops")
                && err.contains(first.as_str()),
            "{err}"
        );
    }

    #[test]
    fn bytes_and_entries_are_bounded_across_pages() {
        let mut pages = Pages::new("list".into(), Url::parse("http://r/1").unwrap());
        let mut n = 0;
        let err = loop {
            let url = pages.next_url().unwrap().unwrap();
            n += 1;
            let next = link(&format!("/{}", n + 1));
            if let Err(e) = pages.add_page(&url, &next, 1024 * 1024, 10) {
                break e;
            }
        };
        assert!(
            err.to_string().contains(&MAX_LIST_BYTES.to_string()),
            "{err}"
        );
        assert_eq!(n, MAX_LIST_BYTES / (1024 * 1024) + 1);

        let mut pages = Pages::new("list".into(), Url::parse("http://r/1").unwrap());
        let url = pages.next_url().unwrap().unwrap();
        let err = pages
            .add_page(&url, &HeaderMap::new(), 10, MAX_LIST_ENTRIES + 1)
            .unwrap_err();
        assert!(
            err.to_string().contains(&MAX_LIST_ENTRIES.to_string()),
            "{err}"
        );
        // The end of a list is the absence of a next link.
        let mut pages = Pages::new("list".into(), Url::parse("http://r/1").unwrap());
        let url = pages.next_url().unwrap().unwrap();
        pages.add_page(&url, &HeaderMap::new(), 10, 1).unwrap();
        assert!(pages.next_url().unwrap().is_none());
    }
}
