//! Text from layers, zTOCs and registries made safe to print on a terminal.
//!
//! Names in a layer are whatever its author wrote: ESC sequences can recolour or rewrite
//! the screen, CR and LF can forge lines, bidirectional overrides can reorder what is
//! shown. Human output passes such text through [`printable`]; JSON output does not
//! need it (serde escapes control characters).

use std::borrow::Cow;

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

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escapes_controls_and_backslashes_only() {
        assert!(matches!(
            printable("usr/lib/ünïcode 日本.txt"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\x1b[31mred\x07\r\nb\tc\\d\u{7f}\u{85}e\u{202e}f"),
            "a\\u{1b}[31mred\\u{7}\\r\\nb\\tc\\\\d\\u{7f}\\u{85}e\\u{202e}f"
        );
    }
}
