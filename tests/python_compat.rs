//! Checks `pyjson`, `pyrepr` and `isotime` against the real Python.
//!
//! Each test starts one `python3` process and asks it, one JSON line per
//! case, what CPython makes of a hand-picked table and of proptest-generated
//! inputs.  The tests skip (and say why) when `python3` is missing or is not
//! 3.11, the version the tool reproduces: newer versions differ in the
//! Unicode tables and in `datetime.fromisoformat`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use stream_layered_image::{isotime, pyjson, pyrepr};

const ORACLE: &str = r#"
import json, sys
from datetime import datetime, timezone

def answer(op, arg):
    if op == "json":
        return json.dumps(json.loads(arg), indent=4)
    if op == "repr":
        return repr(arg)
    if op == "iso":
        try:
            dt = datetime.fromisoformat(arg)
        except ValueError as e:
            return {"error": str(e)}
        try:
            ts = int(dt.timestamp())
        except (ValueError, OverflowError):
            ts = None
        return {"iso": dt.isoformat(), "ts": ts}
    if op == "now":
        return int(datetime.now(tz=timezone.utc).timestamp())
    raise ValueError(op)

print(json.dumps(list(sys.version_info[:2])), flush=True)
for line in sys.stdin.buffer:
    op, arg = json.loads(line.decode("utf-8"))
    print(json.dumps(answer(op, arg)), flush=True)
"#;

struct Python {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Python {
    /// Starts the oracle, or explains why the test cannot run.
    fn start() -> Result<Python, String> {
        let mut child = Command::new("python3")
            .args(["-c", ORACLE])
            // Naive datetimes are local time in Python; the tool assumes UTC.
            .env("TZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut python = Python {
            child,
            stdin,
            stdout,
        };
        let version = python.read_line();
        if version != json!([3, 11]) {
            return Err(format!("python3 is {version}, not 3.11"));
        }
        Ok(python)
    }

    fn read_line(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from python3");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("python3 said {line:?}: {e}"))
    }

    fn ask(&mut self, op: &str, arg: Value) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{}", json!([op, arg])).expect("write to python3");
        self.read_line()
    }

    fn ask_str(&mut self, op: &str, arg: Value) -> String {
        match self.ask(op, arg) {
            Value::String(s) => s,
            other => panic!("expected a string from python3, got {other}"),
        }
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

macro_rules! python_or_skip {
    () => {
        match Python::start() {
            Ok(python) => RefCell::new(python),
            Err(reason) => {
                eprintln!("skipping: {reason}");
                return;
            }
        }
    };
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(e) = runner(cases).run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------- strings

/// Characters weighted toward the ones whose escaping is interesting.
fn interesting_char() -> impl Strategy<Value = char> {
    let specials = vec![
        '\'',
        '"',
        '\\',
        '\0',
        '\u{7f}',
        '\u{80}',
        '\u{9f}',
        '\u{a0}',
        '\u{ad}',
        '\u{ff}',
        '\u{100}',
        '\u{378}',
        '\u{2028}',
        '\u{2029}',
        '\u{200b}',
        '\u{3000}',
        '\u{d7ff}',
        '\u{e000}',
        '\u{fdd0}',
        '\u{feff}',
        '\u{fffd}',
        '\u{ffff}',
        '\u{10000}',
        '\u{1f600}',
        '\u{1fae7}',
        '\u{1fae8}',
        '\u{e0001}',
        '\u{f0000}',
        '\u{10ffff}',
    ];
    prop_oneof![
        4 => proptest::char::range(' ', '~'),
        1 => proptest::char::range('\0', '\u{1f}'),
        2 => proptest::sample::select(specials),
        1 => proptest::char::range('\u{80}', '\u{ff}'),
        1 => proptest::char::range('\u{100}', '\u{ffff}'),
        1 => proptest::char::range('\u{10000}', '\u{10ffff}'),
        2 => any::<char>(),
    ]
}

fn interesting_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(interesting_char(), 0..12).prop_map(String::from_iter)
}

const STRING_TABLE: &[&str] = &[
    "",
    "plain",
    "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12",
    "it's",
    "say \"hi\"",
    "both ' and \"",
    "back\\slash",
    "\t\n\r\u{b}\u{c}\0\u{1b}\u{7f}",
    "\u{80}\u{9f}\u{a0}\u{a1}\u{ad}\u{ff}",
    "é日本語😀",
    "\u{378}\u{2028}\u{feff}\u{fffe}\u{ffff}\u{e000}",
    "\u{1fae7}\u{1fae8}\u{e0001}\u{10ffff}",
    "\u{200d}\u{0301}\u{3000}\u{1680}",
];

#[test]
fn repr_matches_python() {
    let python = python_or_skip!();
    for s in STRING_TABLE {
        assert_eq!(
            pyrepr::repr_str(s),
            python.borrow_mut().ask_str("repr", json!(s)),
            "{s:?}"
        );
    }
    assert_eq!(
        pyrepr::repr_str_list(STRING_TABLE),
        python.borrow_mut().ask_str("repr", json!(STRING_TABLE))
    );
    check(3000, interesting_string(), |s| {
        let expected = python.borrow_mut().ask_str("repr", json!(s));
        prop_assert_eq!(pyrepr::repr_str(&s), expected);
        Ok(())
    });
    check(
        300,
        proptest::collection::vec(interesting_string(), 0..5),
        |items| {
            let expected = python.borrow_mut().ask_str("repr", json!(items));
            let refs: Vec<&str> = items.iter().map(String::as_str).collect();
            prop_assert_eq!(pyrepr::repr_str_list(&refs), expected);
            Ok(())
        },
    );
}

#[test]
fn isprintable_matches_python_for_every_code_point() {
    let python = python_or_skip!();
    // repr() keeps exactly the printable characters, so comparing the repr
    // of every code point, a block at a time, checks the whole table.
    let all: Vec<char> = (0x80..=0x10ffff).filter_map(char::from_u32).collect();
    for block in all.chunks(4096) {
        let text = String::from_iter(block);
        let expected = python.borrow_mut().ask_str("repr", json!(text));
        let actual = pyrepr::repr_str(&text);
        if actual != expected {
            let wrong = block
                .iter()
                .find(|c| {
                    pyrepr::repr_str(&c.to_string())
                        != python.borrow_mut().ask_str("repr", json!(c.to_string()))
                })
                .expect("some character differs");
            panic!("repr of U+{:04X} differs from python3", u32::from(*wrong));
        }
    }
}

// ------------------------------------------------------------------- json

#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn render(&self, out: &mut String) {
        match self {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Number(text) => out.push_str(text),
            Node::String(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Node::Object(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push_str(": ");
                    value.render(out);
                }
                out.push('}');
            }
        }
    }
}

/// JSON number literals: exact and huge integers, decimals, exponents that
/// underflow or overflow, and the shortest forms of arbitrary doubles.
fn number_text() -> impl Strategy<Value = String> {
    let specials = vec![
        "-0",
        "-0.0",
        "0e0",
        "0.0e-5",
        "1e400",
        "-1e400",
        "1e-400",
        "5e-324",
        "2.4703282292062328e-324",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "9007199254740993",
        "9007199254740993.0",
        "1e16",
        "1e15",
        "0.0001",
        "0.00001",
        "123456789012345678901234567890",
    ];
    let finite_double = any::<u64>()
        .prop_map(f64::from_bits)
        .prop_filter("finite", |x| x.is_finite());
    prop_oneof![
        2 => "-?(0|[1-9][0-9]{0,30})",
        2 => "-?(0|[1-9][0-9]{0,18})\\.[0-9]{1,18}([eE][-+]?[0-9]{1,3})?",
        1 => "-?(0|[1-9][0-9]{0,3})[eE][-+]?[0-9]{1,3}",
        2 => finite_double.clone().prop_map(|x| format!("{x:e}")),
        1 => finite_double.prop_map(|x| format!("{x:?}")),
        1 => (-30i32..30, 1u32..1000).prop_map(|(e, m)| format!("{m}e{e}")),
        1 => proptest::sample::select(specials).prop_map(str::to_owned),
        2 => exact_binary_fraction(),
        1 => (1u64..1 << 53, 0u32..=24).prop_map(|(m, e)| format!("{}.0", u128::from(m) << e)),
    ]
}

/// The exact decimal text of `i + k / 2^j` (odd `k`), a double whose
/// expansion is short enough to sit exactly halfway between two shortest
/// candidates, where the choice of the even digit shows.
fn exact_binary_fraction() -> impl Strategy<Value = String> {
    (1u32..=10, any::<u64>(), any::<u64>()).prop_map(|(j, i, k)| {
        let i = (i >> (j + 11)) | (1 << (52 - j));
        let k = (k % (1 << j)) | 1;
        let fraction = u128::from(k) * 5u128.pow(j);
        format!("{i}.{fraction:0width$}", width = j as usize)
    })
}

fn json_key() -> impl Strategy<Value = String> {
    // A small pool makes duplicate keys, whose handling must match too.
    prop_oneof![
        proptest::sample::select(vec!["a", "b", "Env", ""]).prop_map(str::to_owned),
        interesting_string(),
    ]
}

fn json_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        1 => Just(Node::Null),
        1 => any::<bool>().prop_map(Node::Bool),
        3 => number_text().prop_map(Node::Number),
        2 => interesting_string().prop_map(Node::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Node::Array),
            proptest::collection::vec((json_key(), inner), 0..6).prop_map(Node::Object),
        ]
    })
}

fn json_via_rust(text: &str) -> String {
    let value: Value = serde_json::from_str(text).expect("generated JSON is valid");
    pyjson::dumps_indent4(&value)
}

#[test]
fn json_matches_python() {
    let python = python_or_skip!();
    let table = [
        "[]",
        "{}",
        "[[], {}, [[]], {\"a\": {}}]",
        "{\"z\": 1, \"a\": 2, \"z\": 3}",
        r#"{"architecture": "amd64", "config": {"Env": ["PATH=/bin"], "Cmd": null}, "created": "1970-01-01T00:00:01+00:00", "os": "linux", "history": [{"created": "1970-01-01T00:00:01+00:00", "comment": "store paths: ['/nix/store/x']"}]}"#,
        r#""\u00e9\ud83d\ude00\u2028\u0000\u007f""#,
        "[-0, -0.0, 0.0, 1E2, 1e+2, 2.50, 1e16, 1e-5, 123e-7, 1e400, -1e400, 1e-400]",
        "[123456789012345678901234567890, -98765432109876543210, 9007199254740993.0]",
        "[5e-324, 1.7976931348623157e308, 0.1, 0.30000000000000004, 100, 1.0]",
        "true",
        "null",
        "3.14",
    ];
    for text in table {
        let expected = python.borrow_mut().ask_str("json", json!(text));
        assert_eq!(json_via_rust(text), expected, "{text}");
    }
    check(400, json_node(), |node| {
        let mut text = String::new();
        node.render(&mut text);
        let expected = python.borrow_mut().ask_str("json", json!(text));
        prop_assert_eq!(json_via_rust(&text), expected, "input {}", text);
        Ok(())
    });
    check(2000, number_text(), |text| {
        let expected = python.borrow_mut().ask_str("json", json!(text));
        prop_assert_eq!(json_via_rust(&text), expected, "input {}", text);
        Ok(())
    });
}

#[test]
fn dumps_str_matches_python() {
    let python = python_or_skip!();
    check(2000, interesting_string(), |s| {
        // Python's answer is the JSON text for a JSON string, i.e. dumps(s).
        let quoted = serde_json::to_string(&s).unwrap();
        let expected = python.borrow_mut().ask_str("json", json!(quoted));
        prop_assert_eq!(pyjson::dumps_str(&s), expected);
        Ok(())
    });
}

// ---------------------------------------------------------------- isotime

fn iso_via_rust(input: &str) -> Value {
    match isotime::parse(input) {
        Ok(dt) => json!({"iso": dt.isoformat(), "ts": dt.unix_seconds()}),
        Err(e) => {
            json!({"error": e.to_string(), "invalid": matches!(e, isotime::IsoTimeError::Invalid(_))})
        }
    }
}

/// Compares one input; errors must agree on being a malformed string
/// (same message as Python) or an out-of-range field.
fn compare_iso(python: &RefCell<Python>, input: &str) -> Result<(), String> {
    let expected = python.borrow_mut().ask("iso", json!(input));
    let actual = iso_via_rust(input);
    let same = match (&expected["error"], &actual["error"]) {
        (Value::String(py_err), Value::String(rs_err)) => {
            if py_err.starts_with("Invalid isoformat string") {
                rs_err == py_err
            } else {
                actual["invalid"] == json!(false)
            }
        }
        (Value::Null, Value::Null) => {
            // Python cannot give a timestamp for naive times on 0001-01-01.
            expected["iso"] == actual["iso"]
                && (expected["ts"] == actual["ts"]
                    || (expected["ts"].is_null()
                        && actual["iso"].as_str().unwrap().starts_with("0001-01-01T")))
        }
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(format!("{input:?}: python {expected}, rust {actual}"))
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn fraction() -> impl Strategy<Value = String> {
    (proptest::sample::select(vec!['.', ',']), "[0-9]{1,9}")
        .prop_map(|(mark, digits)| format!("{mark}{digits}"))
}

fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (1u32..=9999, 1u32..=12, 1u32..=31, any::<bool>()).prop_map(|(y, m, d, dashed)| {
            let d = d.min(days_in_month(y, m));
            if dashed {
                format!("{y:04}-{m:02}-{d:02}")
            } else {
                format!("{y:04}{m:02}{d:02}")
            }
        }),
        1 => (0u32..=9999, 0u32..=13, 0u32..=32, any::<bool>()).prop_map(|(y, m, d, dashed)| {
            if dashed {
                format!("{y:04}-{m:02}-{d:02}")
            } else {
                format!("{y:04}{m:02}{d:02}")
            }
        }),
        2 => (
            prop_oneof![Just(0u32), Just(9999u32), 1u32..=9999],
            0u32..=54,
            proptest::option::of(0u32..=8),
            any::<bool>(),
        )
            .prop_map(|(y, w, d, dashed)| match (d, dashed) {
                (None, true) => format!("{y:04}-W{w:02}"),
                (None, false) => format!("{y:04}W{w:02}"),
                (Some(d), true) => format!("{y:04}-W{w:02}-{d}"),
                (Some(d), false) => format!("{y:04}W{w:02}{d}"),
            }),
    ]
}

fn time_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![9 => 0u32..=23, 1 => Just(24u32)],
        prop_oneof![9 => 0u32..=59, 1 => Just(60u32)],
        prop_oneof![9 => 0u32..=59, 1 => Just(60u32)],
        0usize..5,
        proptest::option::of(fraction()),
    )
        .prop_map(|(h, m, s, style, frac)| {
            let mut t = match style {
                0 => format!("{h:02}"),
                1 => format!("{h:02}:{m:02}"),
                2 => format!("{h:02}:{m:02}:{s:02}"),
                3 => format!("{h:02}{m:02}"),
                _ => format!("{h:02}{m:02}{s:02}"),
            };
            t.push_str(&frac.unwrap_or_default());
            t
        })
}

fn offset_text() -> impl Strategy<Value = String> {
    let numeric = (
        proptest::sample::select(vec!['+', '-']),
        prop_oneof![4 => 0u32..=23, 1 => Just(0u32), 1 => Just(24u32)],
        prop_oneof![3 => 0u32..=59, 1 => Just(0u32)],
        prop_oneof![1 => 0u32..=59, 3 => Just(0u32)],
        0usize..5,
        proptest::option::of(fraction()),
    )
        .prop_map(|(sign, h, m, s, style, frac)| {
            let mut t = match style {
                0 => format!("{sign}{h:02}"),
                1 => format!("{sign}{h:02}{m:02}"),
                2 => format!("{sign}{h:02}:{m:02}"),
                3 => format!("{sign}{h:02}:{m:02}:{s:02}"),
                _ => format!("{sign}{h:02}{m:02}{s:02}"),
            };
            if style >= 3 {
                t.push_str(&frac.unwrap_or_default());
            }
            t
        });
    prop_oneof![
        2 => Just(String::new()),
        1 => Just("Z".to_owned()),
        4 => numeric,
    ]
}

fn datetime_text() -> impl Strategy<Value = String> {
    let separator =
        proptest::sample::select(vec!['T', 'T', ' ', 't', 'x', '-', '0', 'é', '—', '😀']);
    (
        date_text(),
        proptest::option::weighted(0.85, (separator, time_text(), offset_text())),
    )
        .prop_map(|(date, rest)| match rest {
            None => date,
            Some((sep, time, offset)) => format!("{date}{sep}{time}{offset}"),
        })
}

/// Valid-looking strings with a few characters inserted, deleted or
/// replaced, to compare where exactly Python draws the line.
fn mutated_datetime_text() -> impl Strategy<Value = String> {
    let alphabet = "0123456789-:.,+ZzTW \u{0}é😀".chars().collect::<Vec<_>>();
    let edit = (
        0u8..3,
        any::<proptest::sample::Index>(),
        proptest::sample::select(alphabet),
    );
    (datetime_text(), proptest::collection::vec(edit, 1..4)).prop_map(|(text, edits)| {
        let mut chars: Vec<char> = text.chars().collect();
        for (kind, index, c) in edits {
            match kind {
                0 => chars.insert(index.index(chars.len() + 1), c),
                1 if !chars.is_empty() => {
                    chars.remove(index.index(chars.len()));
                }
                _ if !chars.is_empty() => {
                    let i = index.index(chars.len());
                    chars[i] = c;
                }
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    })
}

/// Times a hair before a whole second, far from 1970 too, where the float
/// arithmetic behind `int(dt.timestamp())` can round up to the next second.
fn near_whole_second_text() -> impl Strategy<Value = String> {
    let offsets = vec![
        "",
        "Z",
        "+05:30",
        "-11:59:59",
        "+00:00:00.000001",
        "-00:00:01.999999",
        "+01:00:00.000001",
        "-23:59:59.999999",
    ];
    (
        1u32..=9999,
        1u32..=12,
        1u32..=28,
        (0u32..24, 0u32..60, 0u32..60),
        "9{3,6}[0-9]{0,3}",
        proptest::sample::select(offsets),
    )
        .prop_map(|(y, mo, d, (h, mi, s), frac, offset)| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac}{offset}")
        })
}

const DATETIME_TABLE: &[&str] = &[
    "1970-01-01",
    "1970-01-01T00:00:01+00:00",
    "2024-01-02",
    "20240102",
    "2024-01-02T03",
    "2024-01-02T03:04",
    "2024-01-02T0304",
    "2024-01-02T03:04:05",
    "2024-01-02T030405",
    "2024-01-02 03:04:05",
    "2024-01-02x03:04:05",
    "2024-01-02é03:04:05",
    "2024-01-02T03:04:05.1",
    "2024-01-02T03:04:05,123",
    "2024-01-02T03:04:05.123456",
    "2024-01-02T03:04:05.1234567",
    "2024-01-02T03:04:05.123456789Z",
    "2024-01-02T03:04:05.1234567x",
    "2024-01-02T03:04:05.",
    "2024-01-02T03:04:05Z",
    "2024-01-02T03:04:05z",
    "2024-01-02T03:04:05+01",
    "2024-01-02T03:04:05+0130",
    "2024-01-02T03:04:05+01:30",
    "2024-01-02T03:04:05-01:30",
    "2024-01-02T03:04:05+01:30:15",
    "2024-01-02T03:04:05+01:30:15.5",
    "2024-01-02T03:04:05+013015,25",
    "2024-01-02T03:04:05-00:00",
    "2024-01-02T03:04:05-00:00:00.5",
    "2024-01-02T03:04:05-00:00:01.5",
    "2024-01-02T03:04:05+23:59:59.999999",
    "2024-01-02T03:04:05+24:00",
    "2024-01-02T03:04:05-24:00",
    "2024-01-02T03:04:05+99:99",
    "2024-01-02T03:04:05+1",
    "2024-01-02T03:04:05+013",
    "2024-01-02T03:04:05+",
    "2024-01-02T03:04:05Z+01",
    "2024-01-02T03:04:05ZZ",
    "2024-01-02T03:04:05 +01:00",
    "2024-01-02T03:04:05:123",
    "2024-01-02T030405123",
    "2024-01-02T03:+01:00",
    "2024-01-02T03x+01:00",
    "2024-01-02T03\u{0}",
    "2024-01-02T03:04Z\u{0}junk",
    "2024-01-02\u{0}03",
    "2024-01-02T24:00",
    "2024-01-02T23:60",
    "2024-01-02T23:59:60",
    "2024-13-01",
    "2024-00-01",
    "2024-02-30",
    "2023-02-29",
    "2024-02-29",
    "1900-02-29",
    "2000-02-29",
    "0000-01-01",
    "0001-01-01",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59.999999",
    "9999-12-31T23:59:59.999999-23:59",
    "2024-W01",
    "2024W01",
    "2024-W01-1",
    "2024W011",
    "2024-W01-7",
    "2024-W52-7",
    "2024-W53-1",
    "2020-W53-7",
    "2026-W53",
    "2024-W00",
    "2024-W01-0",
    "2024-W01-8",
    "2024-W011",
    "2024W01-1",
    "2024-W01T03",
    "2024-W01-1T03",
    "2024-W01-103",
    "2024W01103",
    "0000-W01-1",
    "0000-W53-1",
    "9999-W52-5",
    "9999-W52-6",
    "2024-0102",
    "202401-02",
    "2024-01-0203",
    "2024-01-02-03",
    "2024010203",
    "2024-01-02T",
    "2024-01-02T3:04",
    "2024-01-02T03:4",
    "2024-01-02T03:0405",
    "2024-01-02T0304:05",
    " 2024-01-02",
    "2024-01-02 ",
    "２０２４-01-02",
    "2024-1-2",
    "2024",
    "",
    "now",
    "1969-12-31T23:59:59.5Z",
    "1969-12-31T23:59:59.999999",
    "2255-06-05T23:47:34.999999Z",
    "1677-09-21T00:12:43.145224Z",
];

#[test]
fn isotime_table_matches_python() {
    let python = python_or_skip!();
    let failures: Vec<String> = DATETIME_TABLE
        .iter()
        .filter_map(|input| compare_iso(&python, input).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn isotime_generated_matches_python() {
    let python = python_or_skip!();
    check(4000, datetime_text(), |input| {
        compare_iso(&python, &input).map_err(TestCaseError::fail)
    });
    check(4000, mutated_datetime_text(), |input| {
        compare_iso(&python, &input).map_err(TestCaseError::fail)
    });
    check(2000, near_whole_second_text(), |input| {
        compare_iso(&python, &input).map_err(TestCaseError::fail)
    });
}

#[test]
fn now_utc_agrees_with_python_clock() {
    let python = python_or_skip!();
    let python_now = python.borrow_mut().ask("now", Value::Null);
    let now = isotime::IsoDateTime::now_utc();
    let python_now = python_now.as_i64().expect("an integer timestamp");
    assert!(
        (now.unix_seconds() - python_now).abs() <= 5,
        "rust {now:?}, python {python_now}"
    );
    let reparsed = python.borrow_mut().ask("iso", json!(now.isoformat()));
    assert_eq!(reparsed["iso"], json!(now.isoformat()));
    assert_eq!(reparsed["ts"], json!(now.unix_seconds()));
}
