//! How big a YAML document gets once its aliases are expanded, measured before it is
//! deserialized.
//!
//! serde_yaml_ng replays an anchored node (`&name`) at every alias (`*name`) and limits
//! only how many replays there are, not how big they are: a 1 MB policy made of one
//! anchored 1 MiB string and 3,000 aliases becomes 3 GB of strings. Walking the document
//! once with a visitor that keeps nothing (scalars are borrowed from the parser's events)
//! measures the expanded size cheaply, and stops as soon as it passes the limit.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// The expansion units a document without aliases can reach for each byte of its text
/// (a node is 1 unit plus its scalar's bytes; `{a,b}` is 3 units per 2 bytes): a document
/// is over the limit only through aliases.
const UNITS_PER_TEXT_BYTE: u64 = 4;
/// Room for small documents.
const BASE_UNITS: u64 = 1 << 20;

/// The expansion limit for a document of `text_len` bytes.
pub(crate) fn expansion_limit(text_len: usize) -> u64 {
    (text_len as u64)
        .saturating_mul(UNITS_PER_TEXT_BYTE)
        .saturating_add(BASE_UNITS)
}

/// Whether one YAML document expands within [`expansion_limit`] of its size.
///
/// # Errors
/// The document's own syntax error, as serde_yaml_ng reports it.
pub(crate) fn expands_within_limit(text: &str) -> Result<bool, serde_yaml_ng::Error> {
    let budget = Budget {
        left: Cell::new(expansion_limit(text.len())),
        exceeded: Cell::new(false),
    };
    match Walk(&budget).deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Ok(()) => Ok(true),
        Err(_) if budget.exceeded.get() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the flow collections (`[...]`, `{...}`) of a YAML text, JSON included, nest
/// deeper than `limit`, in one pass over the text before any parser sees it.
///
/// The YAML scanner keeps state per open flow collection and revisits all of it at every
/// token, so a document nested n deep takes time in n²: 20,000 `[` took 20 s and 100,000
/// took 49 s before it was refused for its depth. Brackets inside quoted scalars (opened
/// where a scalar can start) and comments do not count; brackets inside plain scalars do,
/// which can only make a document look deeper than it is.
pub(crate) fn flow_nesting_exceeds(text: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' if prev.is_whitespace() => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        break;
                    }
                }
                prev = '\n';
                continue;
            }
            '\'' | '"' if prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':') => {
                while let Some(q) = chars.next() {
                    if c == '"' && q == '\\' {
                        chars.next();
                    } else if q == c {
                        if c == '\'' && chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    false
}

struct Budget {
    left: Cell<u64>,
    exceeded: Cell<bool>,
}

impl Budget {
    fn charge<E: de::Error>(&self, units: u64) -> Result<(), E> {
        match self.left.get().checked_sub(units) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("expansion limit reached"))
            }
        }
    }
}

/// Visits every node (aliases replayed), charging 1 unit per node plus its scalar bytes.
#[derive(Clone, Copy)]
struct Walk<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.charge(1)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.charge(1)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.charge(1)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.0.charge(1)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.0.charge(1 + s.len() as u64)
    }
    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<(), E> {
        self.0.charge(1 + b.len() as u64)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.charge(1)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.charge(1)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.charge(1)?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.charge(1)?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    /// A tagged node (`!tag value`): the tag, then the value.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let ((), value) = data.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(value, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_without_aliases_are_within_the_limit() {
        for text in [
            "",
            "a: 1",
            "{a,b,c,d,e,f,g,h}",
            "[[[[[[[[]]]]]]]]",
            "repositories: [\"*\"]\nrules:\n  - keep: {last: 3}\n",
        ] {
            assert!(expands_within_limit(text).unwrap(), "{text:?}");
        }
        // A big alias-free document stays within (the limit grows with the text).
        let big: String = (0..200_000).map(|i| format!("- {i}\n")).collect();
        assert!(expands_within_limit(&big).unwrap());
    }

    #[test]
    fn aliases_of_a_big_node_are_over_the_limit() {
        let blob = "x".repeat(64 * 1024);
        let few = format!("a: &s {blob}\nb: [*s, *s]\n");
        assert!(expands_within_limit(&few).unwrap());
        let many = format!("a: &s {blob}\nb: [{}]\n", vec!["*s"; 100].join(", "));
        assert!(!expands_within_limit(&many).unwrap());
    }

    #[test]
    fn nested_aliases_are_counted_expanded() {
        // Each level doubles the one below: 2^30 leaves from a few hundred bytes. Either
        // the budget or serde_yaml_ng's own cap on the number of replays stops it.
        let mut text = String::from("l0: &l0 [x, x]\n");
        for i in 1..30 {
            text.push_str(&format!("l{i}: &l{i} [*l{}, *l{}]\n", i - 1, i - 1));
        }
        assert!(!matches!(expands_within_limit(&text), Ok(true)));
    }

    #[test]
    fn flow_nesting_is_measured_outside_quotes_and_comments() {
        assert!(!flow_nesting_exceeds("a: [[[x]]]\nb: {c: [1]}", 3));
        assert!(flow_nesting_exceeds("a: [[[[x]]]]", 3));
        assert!(flow_nesting_exceeds(&"[".repeat(100_000), 64));
        let json = format!("{{\"rules\":{}{}}}", "[".repeat(65), "]".repeat(65));
        assert!(flow_nesting_exceeds(&json, 64));
        // Brackets in quoted scalars and comments are text.
        for text in [
            "a: '[[[['\nb: \"{{{{\"",
            "a: 'it''s [[[['",
            "a: \"\\\" [[[[\"",
            "a: 1 # [[[[\n",
            "{\"a\":\"[[[[\"}",
        ] {
            assert!(!flow_nesting_exceeds(text, 3), "{text}");
        }
        // A quote inside a plain scalar does not hide what follows.
        assert!(flow_nesting_exceeds("a: it's\nb: [[[[x]]]]", 3));
        assert!(flow_nesting_exceeds(
            "{\"a\":\"see #5\",\"b\":[[[[1]]]]}",
            3
        ));
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(expands_within_limit("a: [1, 2").is_err());
        assert!(expands_within_limit("a: *missing").is_err());
    }
}
