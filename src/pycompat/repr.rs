//! Python 3.11's `repr()` of `str` and of a `list` of `str`.
//!
//! `stream_layered_image.py` writes the layer's store paths into the image
//! history as `repr(paths)`, so the `comment` fields of the image
//! configuration only come out byte-identical if the quoting, escaping and
//! the notion of "printable" match CPython 3.11 exactly (Unicode 14.0, as
//! captured in the generated table `src/pycompat/repr_table.rs`).

#[path = "repr_table.rs"]
mod table;

use std::fmt::Write as _;

/// Returns the text of Python's `repr(s)`.
///
/// Single quotes are used unless `s` contains a `'` and no `"`.
pub fn repr_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_repr(&mut out, s);
    out
}

/// Returns the text of Python's `repr(items)` for a list of strings, e.g.
/// `['a', 'b']` or `[]`.
pub fn repr_str_list(items: &[&str]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_repr(&mut out, item);
    }
    out.push(']');
    out
}

/// Python's `str.isprintable()` for one character (Python 3.11, Unicode 14.0).
pub fn is_printable(c: char) -> bool {
    let cp = u32::from(c);
    // The table holds the exceptions, so printable means "in no range".
    table::NON_PRINTABLE
        .binary_search_by(|&(start, end)| {
            if end < cp {
                std::cmp::Ordering::Less
            } else if start > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_err()
}

fn push_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            // CPython decides ASCII by range, not by the Unicode table; the
            // two agree, but this keeps the common case off the search.
            ' '..='~' => out.push(c),
            c if !c.is_ascii() && is_printable(c) => out.push(c),
            c => {
                let cp = u32::from(c);
                // Writing to a String cannot fail.
                let _ = if cp <= 0xff {
                    write!(out, "\\x{cp:02x}")
                } else if cp <= 0xffff {
                    write!(out, "\\u{cp:04x}")
                } else {
                    write!(out, "\\U{cp:08x}")
                };
            }
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected strings below were produced by CPython 3.11.7.
    #[test]
    fn quotes() {
        assert_eq!(repr_str(""), "''");
        assert_eq!(repr_str("abc"), "'abc'");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("say \"hi\""), "'say \"hi\"'");
        assert_eq!(repr_str("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(repr_str("\\"), "'\\\\'");
    }

    #[test]
    fn escapes() {
        assert_eq!(repr_str("a\tb\nc\rd"), "'a\\tb\\nc\\rd'");
        assert_eq!(repr_str("\0\x1b\x7f"), "'\\x00\\x1b\\x7f'");
        assert_eq!(repr_str("\u{80}\u{a0}\u{ad}"), "'\\x80\\xa0\\xad'");
        assert_eq!(repr_str("é\u{a1}ÿ"), "'é¡ÿ'");
        assert_eq!(
            repr_str("\u{2028}\u{feff}\u{378}"),
            "'\\u2028\\ufeff\\u0378'"
        );
        assert_eq!(repr_str("\u{3000}\u{e000}"), "'\\u3000\\ue000'");
        assert_eq!(repr_str("日本😀"), "'日本😀'");
        assert_eq!(repr_str("\u{e0001}\u{10ffff}"), "'\\U000e0001\\U0010ffff'");
        assert_eq!(repr_str("\u{1f972}\u{1fae0}"), "'\u{1f972}\u{1fae0}'");
        // Unicode 15.0 (Python 3.12) made U+1FAE8 printable; 3.11 escapes it.
        assert_eq!(repr_str("\u{1fae7}\u{1fae8}"), "'\u{1fae7}\\U0001fae8'");
    }

    #[test]
    fn lists() {
        assert_eq!(repr_str_list(&[]), "[]");
        assert_eq!(repr_str_list(&["a"]), "['a']");
        assert_eq!(
            repr_str_list(&["/nix/store/abc-foo", "it's"]),
            "['/nix/store/abc-foo', \"it's\"]"
        );
    }

    #[test]
    fn table_is_sorted_and_disjoint() {
        assert!(table::NON_PRINTABLE.iter().all(|&(s, e)| s <= e));
        assert!(table::NON_PRINTABLE.windows(2).all(|w| w[0].1 + 1 < w[1].0));
        assert!(is_printable(' '));
        assert!(!is_printable('\u{10ffff}'));
    }
}
