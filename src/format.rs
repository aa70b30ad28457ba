//! Text for people: durations and ages, digests in tables, byte sizes, counts, and
//! text from outside made safe for a terminal. One formatter of each, so that plans,
//! reports, the CLI and the demo write them alike.
//!
//! Text that others wrote (names in a layer, zTOC fields, policy descriptions, ECR
//! lifecycle policies stored on a repository, error messages of services) can hold
//! ESC sequences that recolour or rewrite the screen, CR and LF that forge lines, and
//! bidirectional overrides that reorder what is shown. Human output passes such text
//! through [`printable`]; JSON output does not need it (serde escapes control characters).

use chrono::Duration;
use std::borrow::Cow;

/// A duration as policies write them, exactly: every non-zero unit of days, hours,
/// minutes and seconds (`14d`, `1d12h`, `2h5m`, `90s` is `1m30s`, zero is `0s`).
/// Negative durations are written as zero. humantime reads every form back.
pub fn duration(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    let mut out = String::new();
    for (unit, n) in [
        ("d", s / 86_400),
        ("h", s % 86_400 / 3_600),
        ("m", s % 3_600 / 60),
    ] {
        if n != 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if s % 60 != 0 || out.is_empty() {
        out.push_str(&format!("{}s", s % 60));
    }
    out
}

/// An age for people: [`duration`] cut down to its two largest units, and to whole
/// minutes once past a minute (`30d`, `1d12h`, `2h5m`, `45m`, `12s`).
pub fn age(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    let kept = match s {
        0..60 => s,
        60..3_600 => s - s % 60,
        3_600..86_400 => s - s % 60,
        _ => s - s % 3_600,
    };
    duration(Duration::seconds(kept))
}

/// The first 12 hex digits of a digest (`sha256:` dropped), as tables show it.
pub fn short_digest<D: std::fmt::Display + ?Sized>(digest: &D) -> String {
    let text = digest.to_string();
    let hex = text.strip_prefix("sha256:").unwrap_or(&text);
    hex.chars().take(12).collect()
}

/// A size in binary units with three significant digits at most: `0 B`, `512 B`,
/// `1.5 KiB`, `64.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `n` and the noun, pluralised in English: `1 image`, `2 images`, `0 images`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Unicode's explicit bidirectional formatting characters (they are not `is_control`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with control characters (C0, DEL, C1) and bidirectional formatting characters
/// written as Rust escapes (`\n`, `\u{1b}`), and `\` doubled so the escapes stay
/// unambiguous. Borrows when there is nothing to escape.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c == '\\' || c.is_control() || is_bidi_control(c))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' || c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// "outer: cause: root cause", so the one line Lambda (or the CLI) prints explains the
/// failure, each cause once.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        // Errors that already print their source (`#[error("..: {0}")]`) would repeat it.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_controls_and_backslashes_only() {
        assert!(matches!(
            printable("usr/lib/ünïcode 日本.txt"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\x1b[31mred\x07\r\nb\tc\\d\u{7f}\u{85}e\u{202e}f"),
            "a\\u{1b}[31mred\\u{7}\\r\\nb\\tc\\\\d\\u{7f}\\u{85}e\\u{202e}f"
        );
    }

    #[test]
    fn durations_are_exact_and_read_back() {
        for (secs, text) in [
            (0, "0s"),
            (90, "1m30s"),
            (3_600, "1h"),
            (14 * 86_400, "14d"),
            (36 * 3_600, "1d12h"),
            (86_400 + 3_661, "1d1h1m1s"),
            (-5, "0s"),
        ] {
            assert_eq!(duration(Duration::seconds(secs)), text);
            if secs >= 0 {
                assert_eq!(
                    humantime::parse_duration(text).unwrap().as_secs(),
                    secs as u64
                );
            }
        }
    }

    #[test]
    fn ages_keep_two_units() {
        for (secs, text) in [
            (12, "12s"),
            (45 * 60 + 3, "45m"),
            (2 * 3600, "2h"),
            (2 * 3600 + 5 * 60 + 7, "2h5m"),
            (30 * 86_400 + 1, "30d"),
            (36 * 3600 + 59, "1d12h"),
        ] {
            assert_eq!(age(Duration::seconds(secs)), text);
        }
    }

    #[test]
    fn digests_sizes_and_counts() {
        let d = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(short_digest(&d), "0123456789ab");
        assert_eq!(short_digest("abc"), "abc");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(count(1u64, "image", "images"), "1 image");
        assert_eq!(count(0u64, "image", "images"), "0 images");
        assert_eq!(count(2u64, "image", "images"), "2 images");
    }
}
