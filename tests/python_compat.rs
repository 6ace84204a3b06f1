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
use stream_layered_image::pycompat::json::JsonErrorKind;
use stream_layered_image::pycompat::{isotime, json as pyjson, repr as pyrepr};

const ORACLE: &str = r#"
import io, json, sys
from datetime import datetime, timezone

def load(data, binary):
    try:
        if binary:
            obj = json.loads(data)
        else:
            # What the script does with the spec: open(path, "r") under a
            # UTF-8 locale, which also translates \r\n and \r to \n.
            obj = json.load(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        return {"out": json.dumps(obj, indent=4)}
    except json.JSONDecodeError as e:
        return {"error": [e.msg, e.lineno, e.colno, e.pos]}
    except (ValueError, RecursionError) as e:
        return {"exception": [type(e).__name__, str(e)]}

def answer(op, arg):
    if op == "json":
        return json.dumps(json.loads(arg), indent=4)
    if op in ("load", "loadb"):
        return load(bytes.fromhex(arg), op == "loadb")
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

// ------------------------------------------------------- json.load (loads)

/// One piece of a JSON string literal, kept apart so that escapes (lone
/// surrogates above all) survive into the text.
#[derive(Debug, Clone)]
enum Piece {
    /// A character written as itself (never `"`, `\` or a control).
    Raw(char),
    /// `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r` or `\t`.
    Short(char),
    /// `\uXXXX`, in upper- or lowercase hex.
    Unit(u16, bool),
}

fn render_pieces(pieces: &[Piece], out: &mut String) {
    out.push('"');
    for piece in pieces {
        match piece {
            Piece::Raw(c) => out.push(*c),
            Piece::Short(c) => {
                out.push('\\');
                out.push(*c);
            }
            Piece::Unit(unit, true) => out.push_str(&format!("\\u{unit:04X}")),
            Piece::Unit(unit, false) => out.push_str(&format!("\\u{unit:04x}")),
        }
    }
    out.push('"');
}

fn pieces() -> impl Strategy<Value = Vec<Piece>> {
    let unit = prop_oneof![
        3 => 0xD800u16..0xDC00,
        3 => 0xDC00u16..0xE000,
        1 => 0u16..0x20,
        1 => 0x20u16..0x80,
        2 => any::<u16>(),
    ];
    let group = prop_oneof![
        4 => interesting_char()
            .prop_filter("needs no escape", |c| !matches!(c, '"' | '\\' | '\0'..='\u{1f}'))
            .prop_map(|c| vec![Piece::Raw(c)]),
        2 => proptest::sample::select(vec!['"', '\\', '/', 'b', 'f', 'n', 'r', 't'])
            .prop_map(|c| vec![Piece::Short(c)]),
        3 => (unit, any::<bool>()).prop_map(|(u, upper)| vec![Piece::Unit(u, upper)]),
        // A well-formed pair, which Python combines into one code point.
        2 => (0xD800u16..0xDC00, 0xDC00u16..0xE000, any::<bool>())
            .prop_map(|(hi, lo, upper)| vec![Piece::Unit(hi, upper), Piece::Unit(lo, !upper)]),
    ];
    proptest::collection::vec(group, 0..8).prop_map(|groups| groups.concat())
}

/// Keys from a small pool, spelled in different ways that decode to the
/// same `str`, so duplicates are frequent and must be recognised as Python
/// does: by the decoded text.
fn tree_key() -> impl Strategy<Value = Vec<Piece>> {
    let pool = vec![
        vec![],
        vec![Piece::Raw('a')],
        vec![Piece::Unit(0x61, false)],
        vec![Piece::Unit(0xD800, false)],
        vec![Piece::Unit(0xD800, true)],
        vec![Piece::Unit(0xD83D, false), Piece::Unit(0xDE00, false)],
        vec![Piece::Raw('😀')],
        vec![Piece::Raw('E'), Piece::Raw('n'), Piece::Raw('v')],
        vec![Piece::Short('/')],
        vec![Piece::Raw('/')],
    ];
    prop_oneof![3 => proptest::sample::select(pool), 1 => pieces()]
}

#[derive(Debug, Clone)]
enum Tree {
    Literal(String),
    Str(Vec<Piece>),
    Array(Vec<Tree>),
    Object(Vec<(Vec<Piece>, Tree)>),
}

/// Hands out the whitespace to put between tokens, round-robin from a
/// generated pool (mostly empty, sometimes `\r\n` and friends).
struct Spacer<'a> {
    pool: &'a [String],
    next: usize,
}

impl Spacer<'_> {
    fn push(&mut self, out: &mut String) {
        if !self.pool.is_empty() {
            out.push_str(&self.pool[self.next % self.pool.len()]);
            self.next += 1;
        }
    }
}

impl Tree {
    fn render(&self, out: &mut String, ws: &mut Spacer) {
        match self {
            Tree::Literal(text) => out.push_str(text),
            Tree::Str(pieces) => render_pieces(pieces, out),
            Tree::Array(items) => {
                out.push('[');
                ws.push(out);
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        ws.push(out);
                    }
                    item.render(out, ws);
                    ws.push(out);
                }
                out.push(']');
            }
            Tree::Object(entries) => {
                out.push('{');
                ws.push(out);
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        ws.push(out);
                    }
                    render_pieces(key, out);
                    ws.push(out);
                    out.push(':');
                    ws.push(out);
                    value.render(out, ws);
                    ws.push(out);
                }
                out.push('}');
            }
        }
    }
}

/// An integer literal of up to `int()`'s 4300-digit limit.
fn big_int_text() -> impl Strategy<Value = String> {
    (any::<bool>(), 1usize..=4300, any::<u64>()).prop_map(|(negative, len, seed)| {
        let mut state = seed | 1;
        let mut text = String::from(if negative { "-" } else { "" });
        for i in 0..len {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let digit = (state >> 33) % 10;
            let digit = if i == 0 { digit.max(1) } else { digit };
            text.push(char::from(b'0' + digit as u8));
        }
        text
    })
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        1 => proptest::sample::select(vec!["null", "true", "false"]).prop_map(|s| Tree::Literal(s.into())),
        1 => proptest::sample::select(vec!["NaN", "Infinity", "-Infinity"]).prop_map(|s| Tree::Literal(s.into())),
        3 => number_text().prop_map(Tree::Literal),
        1 => big_int_text().prop_map(Tree::Literal),
        3 => pieces().prop_map(Tree::Str),
    ];
    let nested = leaf.prop_recursive(5, 80, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::Array),
            proptest::collection::vec((tree_key(), inner), 0..6).prop_map(Tree::Object),
        ]
    });
    // Now and then a tall tower of containers around the rest.
    (
        nested,
        prop_oneof![4 => Just(0usize), 1 => 1usize..150],
        any::<u64>(),
    )
        .prop_map(|(mut tree, height, kinds)| {
            for level in 0..height {
                tree = if kinds >> (level % 64) & 1 == 0 {
                    Tree::Array(vec![tree])
                } else {
                    Tree::Object(vec![(vec![Piece::Raw('k')], tree)])
                };
            }
            tree
        })
}

fn whitespace_pool() -> impl Strategy<Value = Vec<String>> {
    let ws = proptest::sample::select(vec!["", "", "", " ", "\t", "\n", "\r", "\r\n", " \n\t "]);
    proptest::collection::vec(ws.prop_map(str::to_owned), 0..6)
}

fn json_text() -> impl Strategy<Value = String> {
    (tree(), whitespace_pool()).prop_map(|(tree, pool)| {
        let mut text = String::new();
        let mut ws = Spacer {
            pool: &pool,
            next: 0,
        };
        ws.push(&mut text);
        tree.render(&mut text, &mut ws);
        ws.push(&mut text);
        text
    })
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `loads` (op "load") or `loads_binary` (op "loadb") does with
/// `data` exactly what Python does: the same output, or the same error at
/// the same place.
fn compare_load(python: &RefCell<Python>, op: &str, data: &[u8]) -> Result<(), String> {
    let ours = match op {
        "load" => pyjson::loads(data),
        _ => pyjson::loads_binary(data),
    };
    let answer = python.borrow_mut().ask(op, json!(hex(data)));
    let same = match (&ours, &answer) {
        (Ok(value), _) => answer["out"] == json!(pyjson::dumps_value_indent4(value)),
        (Err(e), _) if !answer["error"].is_null() => {
            e.kind == JsonErrorKind::Syntax
                && answer["error"] == json!([e.message, e.line, e.column, e.pos])
        }
        (Err(e), _) => match answer["exception"][0].as_str() {
            Some("UnicodeDecodeError") => {
                e.kind == JsonErrorKind::Decode && answer["exception"][1] == json!(e.message)
            }
            Some("ValueError") => {
                e.kind == JsonErrorKind::IntTooLong && answer["exception"][1] == json!(e.message)
            }
            Some("RecursionError") => true,
            _ => false,
        },
    };
    if same {
        Ok(())
    } else {
        let ours = match ours {
            Ok(value) => format!("{:?}", pyjson::dumps_value_indent4(&value)),
            Err(e) => format!("{e:?}"),
        };
        Err(format!(
            "{op} {:?}\n  python: {answer}\n  rust:   {ours}",
            String::from_utf8_lossy(data)
        ))
    }
}

#[test]
fn load_roundtrip_matches_python() {
    let python = python_or_skip!();
    let table = [
        "[NaN, Infinity, -Infinity, -0, 1e400, -1e400, 1e-400]",
        r#"["\ud800", "\udfff\ud800", "\ud83d\ude00", "\uD83D\uDE00", "\ud800\u0041"]"#,
        r#"["\ud800\ud800\udc00", "\udc00\ud800", "\ud800\\ud800", "\ud800\/"]"#,
        r#"{"a": 1, "\u0061": 2, "\ud800": 3, "\uD800": 4, "b": 5, "a": 6}"#,
        " \t\r\n[\r\n1 ,\r2\n]\r\n ",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "\"é日本語😀\u{7f}\u{80}\u{2028}\u{ffff}\"",
        "0.1",
        "{}",
    ];
    for text in table {
        compare_load(&python, "load", text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
    // A dict big enough to be indexed while it is built, full of repeats.
    let entries: Vec<String> = (0..300)
        .map(|i| format!("\"k{}\": {i}", (i * 7) % 90))
        .collect();
    let big = format!("{{{}}}", entries.join(", "));
    compare_load(&python, "load", big.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    check(2000, json_text(), |text| {
        compare_load(&python, "load", text.as_bytes()).map_err(TestCaseError::fail)
    });
}

/// Texts Python rejects, with the line and column it reports.
const INVALID_TEXTS: &[&[u8]] = &[
    b"",
    b"   ",
    b"\n\n  ",
    b"[",
    b"{",
    b"[1,]",
    b"[1,,2]",
    b"[,1]",
    b"{\"a\":1,}",
    b"{\"a\" 1}",
    b"{\"a\":}",
    b"{'a': 1}",
    b"{\"a\":1 \"b\":2}",
    b"{1: 2}",
    b"[1 2]",
    b"[1]x",
    b"[1] [2]",
    b"1.",
    b"1.e5",
    b".5",
    b"1e",
    b"1e+",
    b"01",
    b"-",
    b"-x",
    b"- 1",
    b"+1",
    b"0x10",
    b"nul",
    b"nulll",
    b"True",
    b"NaNa",
    b"nan",
    b"Infinit",
    b"-Inf",
    b"-infinity",
    b"\"ab",
    b"\"a\\",
    b"\"\\",
    b"\"a\tb\"",
    b"\"a\nb\"",
    b"\"a\r\nb\"",
    b"\"\x00\"",
    b"\"\x1f\"",
    b"\"\\x\"",
    b"\"\\U0041\"",
    b"\"\\'\"",
    b"\"\\u\"",
    b"\"\\u00e\"",
    b"\"\\u0041",
    b"\"\\u004",
    b"\"\\u00g1\"",
    b"\"\\u+041\"",
    b"\"\\u 041\"",
    b"\"\\ud800\\udc00",
    b"\"\\ud800\\udc0\"x",
    b"\"\\ud800\\uzzzz\"",
    b"\"\\ud800\\x\"",
    b"\"\\ud800\\u\"",
    b"\"\\ud800\\",
    "\"\\u０041\"".as_bytes(),
    "\"é\\x\"".as_bytes(),
    "[\"日本\", ?]".as_bytes(),
    "\u{a0}1".as_bytes(),
    "1\u{3000}".as_bytes(),
    "\u{feff}{}".as_bytes(),
    "\u{feff}".as_bytes(),
    b"[1,\r\n2 x]",
    b"[1,\r2 x]",
    b"[1,\n\r2 x]",
    b"\r\r\n\n x",
    b"{\r\n  \"a\": 1,\r\n  oops\r\n}",
    b"\"\xff\"",
    b"a\xe2\x82",
    b"\xe0\x80",
    b"\"\xed\xa0\x80\"",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"[1, \"\xc3\"]",
];

#[test]
fn load_errors_match_python() {
    let python = python_or_skip!();
    let mut failures = Vec::new();
    for text in INVALID_TEXTS {
        if pyjson::loads(text).is_ok() {
            failures.push(format!("accepted {:?}", String::from_utf8_lossy(text)));
        }
        failures.extend(compare_load(&python, "load", text).err());
    }
    let too_long = format!("[1, {}]", "7".repeat(4301));
    failures.extend(compare_load(&python, "load", too_long.as_bytes()).err());
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Valid texts with a few characters inserted, deleted or replaced:
    // whatever Python makes of them, error or not, must be what we make.
    let alphabet: Vec<char> = "\"\\u/ud8dcDE0aA,:[]{}  \n\r\t-+.eE019NIn\u{1}é😀"
        .chars()
        .collect();
    let char_edit = (
        0u8..3,
        any::<proptest::sample::Index>(),
        proptest::sample::select(alphabet),
    );
    let mutated =
        (json_text(), proptest::collection::vec(char_edit, 1..4)).prop_map(|(text, edits)| {
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
            String::from_iter(chars)
        });
    check(3000, mutated, |text| {
        compare_load(&python, "load", text.as_bytes()).map_err(TestCaseError::fail)
    });

    // Raw bytes that break UTF-8.
    let byte_edit = (any::<proptest::sample::Index>(), 0x80u8..=0xFF);
    let broken =
        (json_text(), proptest::collection::vec(byte_edit, 1..3)).prop_map(|(text, edits)| {
            let mut bytes = text.into_bytes();
            for (index, b) in edits {
                bytes.insert(index.index(bytes.len() + 1), b);
            }
            bytes
        });
    check(500, broken, |bytes| {
        compare_load(&python, "load", &bytes).map_err(TestCaseError::fail)
    });
}

/// `text` in one of the encodings `json.loads(bytes)` detects, lone
/// surrogates (`surrogatepass`) included.
fn encode(points: &[u32], encoding: u8) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        0 | 1 => {
            if encoding == 1 {
                out.extend([0xEF, 0xBB, 0xBF]);
            }
            for &cp in points {
                let mut buf = [0; 4];
                match char::from_u32(cp) {
                    Some(c) => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
                    None => out.extend([
                        0xE0 | (cp >> 12) as u8,
                        0x80 | ((cp >> 6) & 0x3F) as u8,
                        0x80 | (cp & 0x3F) as u8,
                    ]),
                }
            }
        }
        2..=5 => {
            let big = encoding % 2 == 1;
            let push = |out: &mut Vec<u8>, unit: u16| {
                out.extend(if big {
                    unit.to_be_bytes()
                } else {
                    unit.to_le_bytes()
                })
            };
            if encoding >= 4 {
                push(&mut out, 0xFEFF);
            }
            for &cp in points {
                if cp >= 0x10000 {
                    push(&mut out, (0xD800 + ((cp - 0x10000) >> 10)) as u16);
                    push(&mut out, (0xDC00 + ((cp - 0x10000) & 0x3FF)) as u16);
                } else {
                    push(&mut out, cp as u16);
                }
            }
        }
        _ => {
            let big = encoding % 2 == 1;
            let with_bom = encoding >= 8;
            for cp in with_bom
                .then_some(0xFEFF)
                .into_iter()
                .chain(points.iter().copied())
            {
                out.extend(if big {
                    cp.to_be_bytes()
                } else {
                    cp.to_le_bytes()
                });
            }
        }
    }
    out
}

#[test]
fn load_binary_matches_python() {
    let python = python_or_skip!();
    let table: &[&[u8]] = &[
        b"\xef\xbb\xbf\"a\"",
        b"\"\xed\xa0\x80x\"",
        b"\"\xed\xb0\x80\"",
        b"\"\xed\xa0\"",
        b"\"\xed",
        b"\xed\xa0\x80",
        b"\xef\xbb\xbf\"\xff\"",
        b"\xef\xbb\xbf\xef\xbb\xbf1",
        b"\xff\xfe\x00\xd8",
        b"\xff\xfe\"\x00\x00\xd8\"\x00",
        b"\xff\xfe\"\x00\x00\xd8\x00\xd8\x00\xdc\"\x00",
        b"\xff\xfe\x00\xd8\x41",
        b"\xfe\xff\x001\xd8",
        b"\xff\xfe\x00\x00\"\x00\x00\x00\x00\x00\x11\x00",
        b"\xff\xfe\x00\x00\"\x00\x00\x00\x00\x00",
        b"\xff\xfe\x00\x00\"\x00\x00\x00\x00\x00\x00",
        b"\xff\xfe\x00\x00\"\x00\x00\x00\x00\xd8\x00\x00\"\x00\x00\x00",
        b"1\x002\x00",
        b"\x00\x00\x001",
        b"\x001",
        b"1\x00",
        b"[\x00\x00\x00]",
        b"\x00",
        b"\x00\x00",
        b"1\x00\x00",
        b"\x00\x00\x00",
        b"\xff\xfe",
        b"\xfe\xff",
        b"\xef\xbb\xbf",
        b"1\r\n2",
        b"[1,\r\n2 x]",
    ];
    let failures: Vec<String> = table
        .iter()
        .filter_map(|data| compare_load(&python, "loadb", data).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Generated texts, sometimes with a raw lone surrogate spliced into a
    // string, in every detected encoding, sometimes with a byte chopped off.
    let case = (
        json_text(),
        proptest::option::of(0xD800u32..0xE000),
        0u8..10,
        any::<bool>(),
    );
    check(1500, case, |(text, surrogate, encoding, chop)| {
        let mut points: Vec<u32> = text.chars().map(u32::from).collect();
        if let Some(cp) = surrogate {
            // `["<lone surrogate>",` + text + `]`
            points.splice(0..0, [0x5B, 0x22, cp, 0x22, 0x2C]);
            points.push(0x5D);
        }
        let mut data = encode(&points, encoding);
        if chop {
            data.pop();
        }
        compare_load(&python, "loadb", &data).map_err(TestCaseError::fail)
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
