//! Making text from inputs safe to print.
//!
//! Messages quote what came from outside: a member name of a base image,
//! bytes of a file, a registry's answer. Printed as they are, such text can
//! hold terminal control sequences (which rewrite the screen or the window
//! title) and bytes that are not UTF-8. Every message that carries such
//! text passes it through [`text`] or [`bytes`] first: control characters
//! (C0, DEL and C1) and invalid UTF-8 are shown as escapes, and nothing
//! else changes, so ordinary text reads as it is.

use std::fmt::Write as _;

/// `s` with its control characters escaped (`\n`, `\t`, `\r`, `\\` kept
/// readable, others as `\x1b` or `\u{9b}`).
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_char(&mut out, c);
    }
    out
}

/// `s` with only its control characters escaped: the last guard before a
/// message reaches the terminal, for text whose other escapes (a path shown
/// with `{:?}`) are already done.
pub fn controls(s: &str) -> String {
    if !s.chars().any(is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            push_char(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

fn is_control(c: char) -> bool {
    (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c)
}

/// `bytes` as text: valid UTF-8 as in [`text`], every other byte as `\xNN`.
pub fn bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if ('\u{80}'..='\u{9f}').contains(&c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_control_sequences() {
        assert_eq!(text("a\u{1b}[31mb"), "a\\x1b[31mb");
        assert_eq!(text("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(text("tab\there\nnew"), "tab\\there\\nnew");
        assert_eq!(text("back\\slash"), "back\\\\slash");
        assert_eq!(
            text("/nix/store/abc-hello-1.0 é ✓"),
            "/nix/store/abc-hello-1.0 é ✓"
        );
        assert_eq!(bytes(b"ok\xff\xfe\x07"), "ok\\xff\\xfe\\x07");
        assert_eq!(
            controls("a\\b\u{1b}]0;title\u{7}"),
            "a\\b\\x1b]0;title\\x07"
        );
        assert_eq!(controls("plain"), "plain");
    }

    proptest! {
        /// Whatever goes in, no control character comes out.
        #[test]
        fn output_has_no_control_characters(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let shown = bytes(&input);
            prop_assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        }
    }
}
