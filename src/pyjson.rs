//! Python 3.11's `json.dumps(json.loads(text), indent=4)`.
//!
//! `stream_layered_image.py` loads the image configuration with `json.load`
//! and writes it back with `json.dumps(..., indent=4)`; the config blob's
//! sha256 is the image id, so the text must be byte-identical.  That pins
//! down the layout (`,` and `": "` separators, four-space indentation, `[]`
//! and `{}` for empty containers), the ASCII-only string escaping, and how
//! numbers survive the round trip through Python's `int` and `float`.
//!
//! Values must come from `serde_json` built with `arbitrary_precision` (so a
//! number still carries its source text) and `preserve_order` (so objects
//! keep key order, and a duplicate key keeps its first position with the
//! last value, as a Python dict does).

use serde_json::{Number, Value};
use std::fmt::Write as _;

const INDENT: &str = "    ";

/// Returns the text of Python's `json.dumps(obj, indent=4)` for the object
/// Python's `json.loads` would have produced from the same JSON text.
pub fn dumps_indent4(value: &Value) -> String {
    let mut out = String::new();
    push_value(&mut out, value, 0);
    out
}

/// Returns `s` as a JSON string literal escaped like Python's
/// `json.dumps(s)` with the default `ensure_ascii=True`.
pub fn dumps_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_str(&mut out, s);
    out
}

/// Returns Python's `repr(x)` (and `str(x)`) for a float: the shortest text
/// that round-trips, e.g. `1.5`, `100.0`, `1e+16`, `1e-05`, `-0.0`, `inf`,
/// `nan`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x.is_infinite() {
        return format!("{sign}inf");
    }
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    let (digits, exp) = shortest_digits(x.abs());

    let mut out = String::from(sign);
    if !(-4..16).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let exp_sign = if exp < 0 { '-' } else { '+' };
        // Writing to a String cannot fail.
        let _ = write!(out, "e{exp_sign}{:02}", exp.unsigned_abs());
    } else if exp < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat('0').take((-exp - 1) as usize));
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat('0').take(int_len - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// The shortest decimal digits that round-trip to `x` (positive, finite)
/// and the decimal exponent of the first digit.
///
/// Rust's `{:e}` finds the same shortest digits as CPython's dtoa, except
/// when `x` lies exactly halfway between two shortest candidates: Rust
/// rounds the last digit up, dtoa to even (70400000000000.625 prints as
/// `70400000000000.62` in Python).
fn shortest_digits(x: f64) -> (String, i32) {
    let (digits, exp) = split_sci(&format!("{x:e}"));
    let n = digits.len();
    // A tie needs an exact expansion of n + 1 digits ending in 5; rounding
    // to n + 1 digits is a cheap filter before the exact expansion (at most
    // 767 significant digits for a double).
    if !split_sci(&format!("{x:.n$e}")).0.ends_with('5') {
        return (digits, exp);
    }
    let (exact, exact_exp) = split_sci(&format!("{x:.800e}"));
    let exact = exact.trim_end_matches('0');
    if exact.len() != n + 1 || !exact.ends_with('5') {
        return (digits, exp);
    }
    let lower = &exact[..n];
    let last = lower.as_bytes()[n - 1] - b'0';
    let (even, even_exp) = if last % 2 == 0 {
        (lower.to_owned(), exact_exp)
    } else {
        increment_digits(lower, exact_exp)
    };
    let candidate = format!("{}.{}e{even_exp}", &even[..1], &even[1..]);
    if candidate.parse::<f64>() == Ok(x) {
        let trimmed = even.trim_end_matches('0');
        (trimmed.to_owned(), even_exp)
    } else {
        (digits, exp)
    }
}

/// Splits Rust's `{:e}` output into its digits (without the point) and the
/// exponent.
fn split_sci(sci: &str) -> (String, i32) {
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` output has an 'e'");
    let exp = exp.parse().expect("`{:e}` exponent is an integer");
    (mantissa.chars().filter(|&c| c != '.').collect(), exp)
}

/// Adds one unit in the last place to a digit string, carrying into a new
/// leading digit (and exponent) when all digits are 9.
fn increment_digits(digits: &str, exp: i32) -> (String, i32) {
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return (String::from_utf8(bytes).expect("ASCII digits"), exp);
        }
    }
    bytes.insert(0, b'1');
    bytes.pop();
    (String::from_utf8(bytes).expect("ASCII digits"), exp + 1)
}

fn push_value(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => push_number(out, n),
        Value::String(s) => push_str(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_newline_indent(out, level + 1);
                push_value(out, item, level + 1);
            }
            push_newline_indent(out, level);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_newline_indent(out, level + 1);
                push_str(out, key);
                out.push_str(": ");
                push_value(out, item, level + 1);
            }
            push_newline_indent(out, level);
            out.push('}');
        }
    }
}

fn push_newline_indent(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str(INDENT);
    }
}

/// Python's decoder makes a number an `int` unless its text has a fraction
/// or an exponent, and the encoder prints it back with `int.__repr__` or
/// `float.__repr__`; this reproduces that round trip from the source text.
fn push_number(out: &mut String, n: &Number) {
    let text = n.to_string();
    if text.contains(['.', 'e', 'E']) {
        match text.parse::<f64>() {
            Ok(x) if x.is_nan() => out.push_str("NaN"),
            // Literals beyond f64 range overflow to infinity in `float()`,
            // which the encoder spells as JavaScript does.
            Ok(x) if x.is_infinite() => {
                out.push_str(if x < 0.0 { "-Infinity" } else { "Infinity" })
            }
            Ok(x) => out.push_str(&float_repr(x)),
            Err(_) => out.push_str(&text),
        }
    } else {
        push_int(out, &text);
    }
}

fn push_int(out: &mut String, text: &str) {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        // `int("-0")` is plain zero; the sign does not survive.
        out.push('0');
        return;
    }
    if negative {
        out.push('-');
    }
    out.push_str(digits);
}

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            // Everything else, DEL included, becomes `\uXXXX` (lowercase),
            // with astral characters split into a UTF-16 surrogate pair.
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(json: &str) -> String {
        dumps_indent4(&serde_json::from_str(json).expect("valid JSON"))
    }

    // Expected strings below were produced by CPython 3.11.7 with
    // `json.dumps(json.loads(text), indent=4)`.
    #[test]
    fn layout() {
        assert_eq!(roundtrip("[]"), "[]");
        assert_eq!(roundtrip("{}"), "{}");
        assert_eq!(roundtrip("[1, [], {}]"), "[\n    1,\n    [],\n    {}\n]");
        assert_eq!(
            roundtrip(r#"{"b": {"x": [true, null]}, "a": "s"}"#),
            "{\n    \"b\": {\n        \"x\": [\n            true,\n            null\n        ]\n    },\n    \"a\": \"s\"\n}"
        );
        assert_eq!(
            roundtrip(r#"{"k": 1, "j": 2, "k": 3}"#),
            "{\n    \"k\": 3,\n    \"j\": 2\n}"
        );
        assert_eq!(roundtrip("\"top\""), "\"top\"");
    }

    #[test]
    fn strings() {
        assert_eq!(dumps_str("a\"b\\c/"), r#""a\"b\\c/""#);
        assert_eq!(
            dumps_str("\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}"),
            r#""\n\r\t\b\f\u0000\u001f\u007f""#
        );
        assert_eq!(dumps_str("é€\u{FFFF}"), r#""\u00e9\u20ac\uffff""#);
        assert_eq!(dumps_str("😀\u{10FFFF}"), r#""\ud83d\ude00\udbff\udfff""#);
    }

    #[test]
    fn numbers() {
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("-12", "-12"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("1.5", "1.5"),
            ("1.50", "1.5"),
            ("1e2", "100.0"),
            ("1E2", "100.0"),
            ("-0.0", "-0.0"),
            ("0e0", "0.0"),
            ("1e16", "1e+16"),
            ("1e15", "1000000000000000.0"),
            ("123456789012345678", "123456789012345678"),
            ("123456789012345678.0", "1.2345678901234568e+17"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("1.5e-7", "1.5e-07"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("1e-400", "0.0"),
            ("0.1", "0.1"),
            ("2.5e-5", "2.5e-05"),
            ("1234.5e-2", "12.345"),
        ];
        for (input, expected) in cases {
            assert_eq!(roundtrip(input), expected, "input {input}");
        }
    }

    #[test]
    fn float_repr_specials() {
        assert_eq!(float_repr(f64::NAN), "nan");
        assert_eq!(float_repr(f64::NEG_INFINITY), "-inf");
        assert_eq!(float_repr(-0.0), "-0.0");
        assert_eq!(float_repr(1e22), "1e+22");
        assert_eq!(float_repr(9999999999999998.0), "9999999999999998.0");
        assert_eq!(float_repr(f64::MIN_POSITIVE), "2.2250738585072014e-308");
        // Exactly halfway between two shortest candidates: the even one.
        // The literals spell out the exact binary values on purpose.
        #[allow(clippy::excessive_precision)]
        let (tie_down, tie_up) = (70400000000000.625, 70400000000000.375);
        assert_eq!(float_repr(tie_down), "70400000000000.62");
        assert_eq!(float_repr(tie_up), "70400000000000.38");
    }
}
