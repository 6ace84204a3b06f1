//! Python 3.11's `json.load` and `json.dumps(obj, indent=4)`.
//!
//! `stream_layered_image.py` loads the spec with `json.load` on a file
//! opened in text mode, and the base image's `manifest.json` and config with
//! `json.load` on binary tar members; parts of both end up in the image
//! configuration it writes back with `json.dumps(..., indent=4)`.  The
//! config blob's sha256 is the image id, so the text must be byte-identical.
//!
//! Reproducing that exactly needs more than a JSON parser: Python accepts
//! `NaN`, `Infinity` and `-Infinity`, keeps `\ud800`-style escapes that do
//! not form a pair as lone surrogates in its `str`, turns numbers into an
//! arbitrary-precision `int` or a `float`, and lets a duplicate key keep its
//! first position with the last value.  [`PyValue`] and [`PyStr`] hold
//! exactly what Python holds, [`loads`] and [`loads_binary`] build them the
//! way the two `json.load` calls do (same accepted inputs, same error
//! positions and messages), and [`dumps_value_indent4`] writes them back.
//!
//! [`dumps_indent4`] does the same for `serde_json` values built with
//! `arbitrary_precision` (so a number still carries its source text) and
//! `preserve_order`; it converts to [`PyValue`] first.

use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::{self, Write as _};

const INDENT: &str = "    ";

/// Deepest nesting of arrays and objects [`loads`] accepts.
///
/// Python gives up with a `RecursionError` before 1000 levels; a limit
/// above that loses nothing Python can load, and keeps the recursive
/// [`dumps_value_indent4`] and the drop of a parsed value well within any
/// thread's stack.
pub const MAX_DEPTH: usize = 2048;

/// `int()` refuses decimal strings longer than this since CPython 3.11
/// (`sys.get_int_max_str_digits()`), and `json.loads` inherits the limit.
const INT_MAX_STR_DIGITS: usize = 4300;

// ------------------------------------------------------------------ PyStr

/// A Python `str`: any sequence of code points, lone surrogates included.
///
/// It is stored as "generalised UTF-8": every code point, surrogates too,
/// encoded as UTF-8 encodes scalar values (a surrogate takes the three bytes
/// `ED A0 80` to `ED BF BF`), and a high and a low surrogate next to each
/// other are never merged.  That maps one-to-one onto Python's code point
/// sequences, so `==`, hashing and ordering (code point order, like
/// `sorted()`) agree with Python, and a string without lone surrogates is
/// plain UTF-8: [`PyStr::as_str`] returns it without copying.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyStr(Repr);

// Invariant: `Text` exactly when there is no surrogate, so the derived
// equality and hash never compare across variants.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Text(String),
    Wide(Box<[u8]>),
}

impl PyStr {
    /// The empty string.
    pub fn new() -> PyStr {
        PyStr(Repr::Text(String::new()))
    }

    /// Builds a string from code points, surrogates allowed; `None` if one
    /// is beyond U+10FFFF.
    ///
    /// `crate::pycompat::str::code_points` gives the code points Python sees for a
    /// file name, so the two compose.
    pub fn from_code_points<I: IntoIterator<Item = u32>>(points: I) -> Option<PyStr> {
        let mut bytes = Vec::new();
        for cp in points {
            if cp > 0x10FFFF {
                return None;
            }
            push_code_point(&mut bytes, cp);
        }
        Some(PyStr::from_generalised(bytes))
    }

    /// The text, if it has no lone surrogates (the usual case).
    pub fn as_str(&self) -> Option<&str> {
        match &self.0 {
            Repr::Text(s) => Some(s),
            Repr::Wide(_) => None,
        }
    }

    /// The text with each lone surrogate replaced by U+FFFD, for messages.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        match &self.0 {
            Repr::Text(s) => Cow::Borrowed(s),
            Repr::Wide(_) => Cow::Owned(
                self.code_points()
                    .map(|cp| char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect(),
            ),
        }
    }

    /// The text as a `String`, or the string itself back if it has lone
    /// surrogates.
    pub fn into_string(self) -> Result<String, PyStr> {
        match self.0 {
            Repr::Text(s) => Ok(s),
            wide => Err(PyStr(wide)),
        }
    }

    /// Whether the string holds a surrogate code point (U+D800 to U+DFFF).
    pub fn has_surrogates(&self) -> bool {
        matches!(self.0, Repr::Wide(_))
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The code points, in order, as Python indexes them.
    pub fn code_points(&self) -> impl Iterator<Item = u32> + '_ {
        let mut rest = self.bytes();
        std::iter::from_fn(move || {
            let (cp, len) = decode_code_point(rest)?;
            rest = &rest[len..];
            Some(cp)
        })
    }

    /// The bytes `os.fsencode()` gives on Linux (UTF-8 with
    /// `surrogateescape`): U+DC80 to U+DCFF stand for the raw bytes 0x80 to
    /// 0xFF; `None` for any other surrogate, where Python raises
    /// `UnicodeEncodeError`.
    pub fn fsencode(&self) -> Option<Cow<'_, [u8]>> {
        match &self.0 {
            Repr::Text(s) => Some(Cow::Borrowed(s.as_bytes())),
            Repr::Wide(_) => {
                let mut out = Vec::new();
                for cp in self.code_points() {
                    match cp {
                        0xDC80..=0xDCFF => out.push((cp - 0xDC00) as u8),
                        0xD800..=0xDFFF => return None,
                        _ => push_code_point(&mut out, cp),
                    }
                }
                Some(Cow::Owned(out))
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Text(s) => s.as_bytes(),
            Repr::Wide(b) => b,
        }
    }

    /// Wraps well-formed generalised UTF-8.
    fn from_generalised(bytes: Vec<u8>) -> PyStr {
        match String::from_utf8(bytes) {
            Ok(s) => PyStr(Repr::Text(s)),
            Err(e) => PyStr(Repr::Wide(e.into_bytes().into_boxed_slice())),
        }
    }
}

impl Default for PyStr {
    fn default() -> PyStr {
        PyStr::new()
    }
}

impl Ord for PyStr {
    /// Code point order, as Python compares `str`s: UTF-8, generalised or
    /// not, sorts bytewise in code point order.
    fn cmp(&self, other: &PyStr) -> Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl PartialOrd for PyStr {
    fn partial_cmp(&self, other: &PyStr) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl From<&str> for PyStr {
    fn from(s: &str) -> PyStr {
        PyStr(Repr::Text(s.to_owned()))
    }
}

impl From<String> for PyStr {
    fn from(s: String) -> PyStr {
        PyStr(Repr::Text(s))
    }
}

impl PartialEq<str> for PyStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for PyStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl fmt::Debug for PyStr {
    /// Like `str`'s `Debug`, with lone surrogates shown as `\u{d800}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.as_str() {
            return fmt::Debug::fmt(s, f);
        }
        f.write_char('"')?;
        for cp in self.code_points() {
            match char::from_u32(cp) {
                Some(c) => write!(f, "{}", c.escape_debug())?,
                None => write!(f, "\\u{{{cp:x}}}")?,
            }
        }
        f.write_char('"')
    }
}

impl fmt::Display for PyStr {
    /// The lossy text (see [`PyStr::to_string_lossy`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

/// Appends the (generalised) UTF-8 encoding of `cp`, which is at most
/// U+10FFFF; surrogates get the three bytes strict UTF-8 forbids.
fn push_code_point(out: &mut Vec<u8>, cp: u32) {
    // The casts keep the low bits on purpose: each byte takes its share.
    match cp {
        0..=0x7F => out.push(cp as u8),
        0x80..=0x7FF => out.extend([0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
        0x800..=0xFFFF => out.extend([
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
        _ => out.extend([
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
    }
}

/// Decodes the first code point of well-formed generalised UTF-8 and its
/// length in bytes; `None` at the end.
fn decode_code_point(bytes: &[u8]) -> Option<(u32, usize)> {
    let &first = bytes.first()?;
    let len = match first {
        0..=0x7F => return Some((u32::from(first), 1)),
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    };
    let lead = u32::from(first) & (0x7F >> len);
    let cp = bytes[1..len]
        .iter()
        .fold(lead, |cp, &b| (cp << 6) | u32::from(b & 0x3F));
    Some((cp, len))
}

// ---------------------------------------------------------------- PyValue

/// A value as Python's `json.loads` builds it.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    Null,
    /// `True` or `False`.
    Bool(bool),
    /// An `int`, as its decimal digits with an optional leading `-` and no
    /// leading zeros, as `repr(int)` prints it (`-0` reads as `0`).
    Int(String),
    /// A `float`: any double, NaN and the infinities included.
    Float(f64),
    /// A `str`.
    Str(PyStr),
    /// A `list`.
    List(Vec<PyValue>),
    /// A `dict`, in insertion order; keys are unique.
    Dict(Vec<(PyStr, PyValue)>),
}

impl PyValue {
    /// `self[key]` for a dict; `None` if the key is absent or `self` is not
    /// a dict.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Like [`PyValue::get`], for changing the value in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut PyValue> {
        match self {
            PyValue::Dict(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// `self[key] = value` for a dict: an existing key keeps its position
    /// and gets the new value (the old one is returned), a new key goes at
    /// the end.  If `self` is not a dict, nothing changes and `value` comes
    /// back as the error, where Python would raise `TypeError`.
    pub fn set(
        &mut self,
        key: impl Into<PyStr>,
        value: PyValue,
    ) -> Result<Option<PyValue>, PyValue> {
        match self {
            PyValue::Dict(entries) => Ok(dict_set(entries, key.into(), value)),
            _ => Err(value),
        }
    }

    /// The text of a `str` without lone surrogates.
    pub fn as_str(&self) -> Option<&str> {
        self.as_pystr().and_then(PyStr::as_str)
    }

    /// The `str`, whatever it holds.
    pub fn as_pystr(&self) -> Option<&PyStr> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a `list`.
    pub fn as_list(&self) -> Option<&[PyValue]> {
        match self {
            PyValue::List(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a `dict`, in order.
    pub fn as_dict(&self) -> Option<&[(PyStr, PyValue)]> {
        match self {
            PyValue::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value of a `bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PyValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Whether this is a `dict`.
    pub fn is_dict(&self) -> bool {
        matches!(self, PyValue::Dict(_))
    }

    /// Whether this is `None`.
    pub fn is_null(&self) -> bool {
        matches!(self, PyValue::Null)
    }

    /// Python's name for the type, as in `type(x).__name__`.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::Null => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::List(_) => "list",
            PyValue::Dict(_) => "dict",
        }
    }
}

fn dict_set(entries: &mut Vec<(PyStr, PyValue)>, key: PyStr, value: PyValue) -> Option<PyValue> {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some((_, slot)) => Some(std::mem::replace(slot, value)),
        None => {
            entries.push((key, value));
            None
        }
    }
}

impl From<&str> for PyValue {
    fn from(s: &str) -> PyValue {
        PyValue::Str(s.into())
    }
}

impl From<String> for PyValue {
    fn from(s: String) -> PyValue {
        PyValue::Str(s.into())
    }
}

impl From<PyStr> for PyValue {
    fn from(s: PyStr) -> PyValue {
        PyValue::Str(s)
    }
}

impl From<bool> for PyValue {
    fn from(b: bool) -> PyValue {
        PyValue::Bool(b)
    }
}

impl From<i64> for PyValue {
    fn from(n: i64) -> PyValue {
        PyValue::Int(n.to_string())
    }
}

impl From<u64> for PyValue {
    fn from(n: u64) -> PyValue {
        PyValue::Int(n.to_string())
    }
}

impl From<f64> for PyValue {
    fn from(x: f64) -> PyValue {
        PyValue::Float(x)
    }
}

impl From<Vec<PyValue>> for PyValue {
    fn from(items: Vec<PyValue>) -> PyValue {
        PyValue::List(items)
    }
}

impl From<&Value> for PyValue {
    /// What Python's `json.loads` makes of the text `value` was parsed from:
    /// numbers go by their source text (which `arbitrary_precision` keeps),
    /// so `1.0` is a `float` and `10` an `int`.
    fn from(value: &Value) -> PyValue {
        match value {
            Value::Null => PyValue::Null,
            Value::Bool(b) => PyValue::Bool(*b),
            Value::Number(n) => number_value(&n.to_string()),
            Value::String(s) => PyValue::Str(s.as_str().into()),
            Value::Array(items) => PyValue::List(items.iter().map(PyValue::from).collect()),
            Value::Object(map) => PyValue::Dict(
                map.iter()
                    .map(|(k, v)| (k.as_str().into(), v.into()))
                    .collect(),
            ),
        }
    }
}

/// The `int` or `float` Python makes of a JSON number literal: a fraction
/// or an exponent makes it a `float`.
fn number_value(text: &str) -> PyValue {
    if text.contains(['.', 'e', 'E']) {
        // `float()` rounds correctly and overflows to infinity, as Rust's
        // parser does; a JSON literal always parses.
        PyValue::Float(text.parse().unwrap_or(f64::NAN))
    } else {
        PyValue::Int(normalise_int(text))
    }
}

fn normalise_int(text: &str) -> String {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        // `int("-0")` is plain zero; the sign does not survive.
        "0".to_owned()
    } else if negative {
        format!("-{digits}")
    } else {
        digits.to_owned()
    }
}

// ------------------------------------------------------------------ errors

/// Why [`loads`] or [`loads_binary`] refused a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// 1-based line, as Python's `JSONDecodeError.lineno`.
    pub line: usize,
    /// 1-based column in characters (code points), as `colno`.
    pub column: usize,
    /// 0-based offset in characters from the start of the decoded text, as
    /// `pos`.
    pub pos: usize,
    /// Which Python exception this stands for.
    pub kind: JsonErrorKind,
    /// Python's message, without the position: "Expecting value",
    /// "Expecting ',' delimiter", "Unterminated string starting at", ...
    pub message: String,
}

/// The Python exception a [`JsonError`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// `json.JSONDecodeError`; position and message are Python's.
    Syntax,
    /// `UnicodeDecodeError` while decoding the bytes; the message is
    /// Python's, the position that of the first undecodable byte.
    Decode,
    /// `ValueError` from `int()` for an integer literal with more than 4300
    /// digits; the position is the literal's.
    IntTooLong,
    /// Nesting deeper than [`MAX_DEPTH`] (Python raises `RecursionError`
    /// even sooner); the position is the bracket that went too deep.
    TooDeep,
}

impl fmt::Display for JsonError {
    /// "line L, column C: MESSAGE".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for JsonError {}

/// How the text reached `json.loads`, which decides what counts as a line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Newlines {
    /// Read from a file opened in text mode: `\r\n` and a lone `\r` were
    /// translated to `\n` before Python saw the text.
    Universal,
    /// Decoded from bytes: only `\n` ends a line.
    Untranslated,
}

/// Python's line, column and offset for byte `at` of the generalised UTF-8
/// `text`, all counted in (translated) characters.
fn locate(text: &[u8], at: usize, newlines: Newlines) -> (usize, usize, usize) {
    let (mut line, mut column, mut pos) = (1, 1, 0);
    let mut i = 0;
    while i < at.min(text.len()) {
        let b = text[i];
        i += 1;
        if b & 0xC0 == 0x80 {
            continue;
        }
        pos += 1;
        let newline = match b {
            b'\n' => true,
            b'\r' if newlines == Newlines::Universal => {
                if text.get(i) == Some(&b'\n') {
                    i += 1;
                }
                true
            }
            _ => false,
        };
        if newline {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column, pos)
}

fn error_at(
    text: &[u8],
    at: usize,
    newlines: Newlines,
    kind: JsonErrorKind,
    message: impl Into<String>,
) -> JsonError {
    let (line, column, pos) = locate(text, at, newlines);
    JsonError {
        line,
        column,
        pos,
        kind,
        message: message.into(),
    }
}

// ---------------------------------------------------------------- loading

/// Python's `json.load(f)` for `f = open(path, "r")` holding `text`, under
/// a UTF-8 locale: what `stream_layered_image.py` does with the spec.
///
/// The bytes must be strict UTF-8 (else `UnicodeDecodeError`), a leading
/// byte order mark is an error ("Unexpected UTF-8 BOM"), and since text mode
/// translates `\r\n` and `\r` to `\n`, error lines and columns count those
/// as Python then does.  Everything `json.loads` accepts is accepted,
/// `NaN`, `Infinity`, `-Infinity` and lone surrogate escapes included.
pub fn loads(text: &[u8]) -> Result<PyValue, JsonError> {
    if let Err(e) = std::str::from_utf8(text) {
        let at = e.valid_up_to();
        let message = utf8_error_message(text, at, e.error_len());
        return Err(error_at(
            text,
            at,
            Newlines::Universal,
            JsonErrorKind::Decode,
            message,
        ));
    }
    if text.starts_with("\u{feff}".as_bytes()) {
        return Err(error_at(
            text,
            0,
            Newlines::Universal,
            JsonErrorKind::Syntax,
            "Unexpected UTF-8 BOM (decode using utf-8-sig)",
        ));
    }
    Parser::new(text, Newlines::Universal).document()
}

/// Python's `json.loads(data)` for `bytes`, which is what `json.load` does
/// with a file opened in binary mode: the base image's `manifest.json` and
/// config, read from tar members.
///
/// The encoding is guessed as Python does (UTF-8, UTF-8 with a BOM, UTF-16
/// or UTF-32 of either byte order, from BOMs and zero bytes) and decoded
/// with `surrogatepass`, so encoded surrogates become lone surrogates.  No
/// newline translation happens.  Decoding errors carry Python's message.
pub fn loads_binary(data: &[u8]) -> Result<PyValue, JsonError> {
    let text = decode_binary(data).map_err(|(prefix, message)| {
        error_at(
            &prefix,
            prefix.len(),
            Newlines::Untranslated,
            JsonErrorKind::Decode,
            message,
        )
    })?;
    Parser::new(&text, Newlines::Untranslated).document()
}

/// `UnicodeDecodeError`'s message for the UTF-8 codec failing at `at`, for
/// an invalid sequence of `len` bytes or (`None`) a truncated one at the
/// end.  Rust and CPython agree on the length of the maximal invalid
/// subpart, which is what both report.
fn utf8_error_message(data: &[u8], at: usize, len: Option<usize>) -> String {
    let (end, reason) = match len {
        // A byte that can never start a sequence: continuation bytes, the
        // overlong leads C0 and C1, and leads beyond U+10FFFF.
        Some(len) if matches!(data[at], 0x80..=0xC1 | 0xF5..=0xFF) => {
            (at + len, "invalid start byte")
        }
        Some(len) => (at + len, "invalid continuation byte"),
        None => (data.len(), "unexpected end of data"),
    };
    codec_error_message("utf-8", data, at, end, reason)
}

fn codec_error_message(codec: &str, data: &[u8], start: usize, end: usize, reason: &str) -> String {
    if end - start == 1 {
        format!(
            "'{codec}' codec can't decode byte 0x{:02x} in position {start}: {reason}",
            data[start]
        )
    } else {
        format!(
            "'{codec}' codec can't decode bytes in position {start}-{}: {reason}",
            end - 1
        )
    }
}

/// Decodes bytes the way `json.loads` does (`detect_encoding`, then
/// `surrogatepass`) into generalised UTF-8.  On failure, returns what was
/// decoded before the bad bytes and Python's message.
fn decode_binary(data: &[u8]) -> Result<Cow<'_, [u8]>, (Vec<u8>, String)> {
    const UTF32_BE_BOM: &[u8] = &[0, 0, 0xFE, 0xFF];
    const UTF32_LE_BOM: &[u8] = &[0xFF, 0xFE, 0, 0];
    const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];
    // The order matters: the UTF-32 LE BOM starts with the UTF-16 LE one.
    if data.starts_with(UTF32_BE_BOM) {
        return decode_utf32(data, 4, true).map(Cow::Owned);
    }
    if data.starts_with(UTF32_LE_BOM) {
        return decode_utf32(data, 4, false).map(Cow::Owned);
    }
    if data.starts_with(&[0xFE, 0xFF]) {
        return decode_utf16(data, 2, true).map(Cow::Owned);
    }
    if data.starts_with(&[0xFF, 0xFE]) {
        return decode_utf16(data, 2, false).map(Cow::Owned);
    }
    if data.starts_with(UTF8_BOM) {
        // `utf-8-sig` decodes what follows the BOM with the plain codec, so
        // error positions count from there.
        return decode_utf8_surrogatepass(&data[3..]);
    }
    // Without a BOM, the zero bytes that ASCII text has in UTF-16 or UTF-32
    // give the encoding away.
    let decoded = match *data {
        [0, 0, _, _, ..] => decode_utf32(data, 0, true),
        [0, _, _, _, ..] | [0, _] => decode_utf16(data, 0, true),
        [_, 0, 0, 0, ..] => decode_utf32(data, 0, false),
        [_, 0, _, _, ..] | [_, 0] => decode_utf16(data, 0, false),
        _ => return decode_utf8_surrogatepass(data),
    };
    decoded.map(Cow::Owned)
}

/// UTF-8 where the encoded surrogates that strict UTF-8 rejects (`ED A0 80`
/// to `ED BF BF`) are let through, as `surrogatepass` does.
fn decode_utf8_surrogatepass(data: &[u8]) -> Result<Cow<'_, [u8]>, (Vec<u8>, String)> {
    let mut start = 0;
    while let Err(e) = std::str::from_utf8(&data[start..]) {
        let at = start + e.valid_up_to();
        if !matches!(data[at..], [0xED, 0xA0..=0xBF, 0x80..=0xBF, ..]) {
            let message = utf8_error_message(data, at, e.error_len());
            return Err((data[..at].to_vec(), message));
        }
        // Generalised UTF-8 spells a surrogate with these very bytes, so the
        // input can be parsed as it is.
        start = at + 3;
    }
    Ok(Cow::Borrowed(data))
}

/// UTF-16 (after a `skip`-byte BOM) with `surrogatepass`: valid pairs
/// combine, any other surrogate stays as it is.
fn decode_utf16(data: &[u8], skip: usize, big_endian: bool) -> Result<Vec<u8>, (Vec<u8>, String)> {
    let codec = if big_endian { "utf-16-be" } else { "utf-16-le" };
    let body = &data[skip..];
    let unit_at = |i: usize| {
        let pair = [body[i], body[i + 1]];
        if big_endian {
            u16::from_be_bytes(pair)
        } else {
            u16::from_le_bytes(pair)
        }
    };
    let units = body.len() / 2;
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < units {
        let unit = u32::from(unit_at(2 * i));
        i += 1;
        if (0xD800..0xDC00).contains(&unit) && i < units {
            let low = u32::from(unit_at(2 * i));
            if (0xDC00..0xE000).contains(&low) {
                i += 1;
                push_code_point(&mut out, 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00));
                continue;
            }
        }
        push_code_point(&mut out, unit);
    }
    if body.len() % 2 == 1 {
        let at = data.len() - 1;
        let message = codec_error_message(codec, data, at, data.len(), "truncated data");
        return Err((out, message));
    }
    Ok(out)
}

/// UTF-32 (after a `skip`-byte BOM) with `surrogatepass`: surrogates stay
/// as they are, one code point per unit.
fn decode_utf32(data: &[u8], skip: usize, big_endian: bool) -> Result<Vec<u8>, (Vec<u8>, String)> {
    let codec = if big_endian { "utf-32-be" } else { "utf-32-le" };
    let mut out = Vec::with_capacity(data.len() / 4);
    let mut at = skip;
    for chunk in data[skip..].chunks(4) {
        let Ok(unit) = <[u8; 4]>::try_from(chunk) else {
            let message = codec_error_message(codec, data, at, data.len(), "truncated data");
            return Err((out, message));
        };
        let cp = if big_endian {
            u32::from_be_bytes(unit)
        } else {
            u32::from_le_bytes(unit)
        };
        if cp > 0x10FFFF {
            let message =
                codec_error_message(codec, data, at, at + 4, "code point not in range(0x110000)");
            return Err((out, message));
        }
        push_code_point(&mut out, cp);
        at += 4;
    }
    Ok(out)
}

/// An array or object whose items are still being read.
enum Frame {
    List(Vec<PyValue>),
    Dict(DictBuilder, PyStr),
}

/// A dict under construction: past a few entries, an index keeps duplicate
/// detection from going quadratic.
struct DictBuilder {
    entries: Vec<(PyStr, PyValue)>,
    index: HashMap<PyStr, usize>,
}

impl DictBuilder {
    const LINEAR: usize = 16;

    fn new() -> DictBuilder {
        DictBuilder {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Python's `d[key] = value`: a repeated key keeps its first position.
    fn insert(&mut self, key: PyStr, value: PyValue) {
        if self.entries.len() < Self::LINEAR {
            dict_set(&mut self.entries, key, value);
            return;
        }
        if self.index.is_empty() {
            for (i, (k, _)) in self.entries.iter().enumerate() {
                self.index.insert(k.clone(), i);
            }
        }
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }
}

/// The decoder of `json.loads`, over generalised UTF-8.
///
/// It keeps its own stack of open containers instead of recursing, so no
/// input can exhaust the thread's stack.
struct Parser<'a> {
    text: &'a [u8],
    newlines: Newlines,
}

type Parsed<T> = Result<(T, usize), JsonError>;

impl<'a> Parser<'a> {
    fn new(text: &'a [u8], newlines: Newlines) -> Parser<'a> {
        Parser { text, newlines }
    }

    fn error(&self, at: usize, kind: JsonErrorKind, message: impl Into<String>) -> JsonError {
        error_at(self.text, at, self.newlines, kind, message)
    }

    fn syntax(&self, at: usize, message: &str) -> JsonError {
        self.error(at, JsonErrorKind::Syntax, message)
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.text.get(at).copied()
    }

    /// JSON whitespace only: Unicode spaces are not skipped.
    fn skip_ws(&self, mut at: usize) -> usize {
        while matches!(self.byte(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            at += 1;
        }
        at
    }

    /// One value, surrounded by optional whitespace, and nothing else.
    fn document(&self) -> Result<PyValue, JsonError> {
        let (value, end) = self.value(self.skip_ws(0))?;
        let end = self.skip_ws(end);
        if end != self.text.len() {
            return Err(self.syntax(end, "Extra data"));
        }
        Ok(value)
    }

    /// The value starting at `at` (whitespace already skipped) and the
    /// offset just past it.
    fn value(&self, mut at: usize) -> Parsed<PyValue> {
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            // `at` is where a value must start.
            let opener = self.byte(at);
            if matches!(opener, Some(b'[' | b'{')) && stack.len() >= MAX_DEPTH {
                return Err(self.error(
                    at,
                    JsonErrorKind::TooDeep,
                    format!("Nesting deeper than {MAX_DEPTH} arrays and objects"),
                ));
            }
            let mut value = match opener {
                Some(b'[') => {
                    at = self.skip_ws(at + 1);
                    if self.byte(at) != Some(b']') {
                        stack.push(Frame::List(Vec::new()));
                        continue;
                    }
                    at += 1;
                    PyValue::List(Vec::new())
                }
                Some(b'{') => {
                    at = self.skip_ws(at + 1);
                    if self.byte(at) != Some(b'}') {
                        let (key, next) = self.key(at)?;
                        stack.push(Frame::Dict(DictBuilder::new(), key));
                        at = next;
                        continue;
                    }
                    at += 1;
                    PyValue::Dict(Vec::new())
                }
                _ => {
                    let (value, next) = self.scalar(at)?;
                    at = next;
                    value
                }
            };
            // Hand the finished value to the innermost open container,
            // closing containers for as long as their closer follows.
            loop {
                let Some(frame) = stack.pop() else {
                    return Ok((value, at));
                };
                at = self.skip_ws(at);
                match frame {
                    Frame::List(mut items) => {
                        items.push(value);
                        match self.byte(at) {
                            Some(b']') => {
                                at += 1;
                                value = PyValue::List(items);
                            }
                            Some(b',') => {
                                at = self.skip_ws(at + 1);
                                stack.push(Frame::List(items));
                                break;
                            }
                            _ => return Err(self.syntax(at, "Expecting ',' delimiter")),
                        }
                    }
                    Frame::Dict(mut dict, key) => {
                        dict.insert(key, value);
                        match self.byte(at) {
                            Some(b'}') => {
                                at += 1;
                                value = PyValue::Dict(dict.entries);
                            }
                            Some(b',') => {
                                let (key, next) = self.key(self.skip_ws(at + 1))?;
                                stack.push(Frame::Dict(dict, key));
                                at = next;
                                break;
                            }
                            _ => return Err(self.syntax(at, "Expecting ',' delimiter")),
                        }
                    }
                }
            }
        }
    }

    /// An object key at `at`, the colon after it, and the whitespace up to
    /// the value.
    fn key(&self, at: usize) -> Parsed<PyStr> {
        if self.byte(at) != Some(b'"') {
            return Err(self.syntax(at, "Expecting property name enclosed in double quotes"));
        }
        let (key, next) = self.string(at)?;
        let colon = self.skip_ws(next);
        if self.byte(colon) != Some(b':') {
            return Err(self.syntax(colon, "Expecting ':' delimiter"));
        }
        Ok((key, self.skip_ws(colon + 1)))
    }

    fn scalar(&self, at: usize) -> Parsed<PyValue> {
        let rest = &self.text[at.min(self.text.len())..];
        let constants: [(&[u8], PyValue); 6] = [
            (b"null", PyValue::Null),
            (b"true", PyValue::Bool(true)),
            (b"false", PyValue::Bool(false)),
            (b"NaN", PyValue::Float(f64::NAN)),
            (b"Infinity", PyValue::Float(f64::INFINITY)),
            (b"-Infinity", PyValue::Float(f64::NEG_INFINITY)),
        ];
        if rest.first() == Some(&b'"') {
            let (s, next) = self.string(at)?;
            return Ok((PyValue::Str(s), next));
        }
        for (word, value) in constants {
            if rest.starts_with(word) {
                return Ok((value, at + word.len()));
            }
        }
        self.number(at)
    }

    /// A number literal, matched like the regular expression
    /// `(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?`: a fraction or exponent
    /// that is not complete is left for the caller (to fail as extra data).
    fn number(&self, start: usize) -> Parsed<PyValue> {
        let digits_from = |mut at: usize| {
            while self.byte(at).is_some_and(|b| b.is_ascii_digit()) {
                at += 1;
            }
            at
        };
        let int_start = if self.byte(start) == Some(b'-') {
            start + 1
        } else {
            start
        };
        let int_end = match self.byte(int_start) {
            Some(b'0') => int_start + 1,
            Some(b'1'..=b'9') => digits_from(int_start + 1),
            _ => return Err(self.syntax(start, "Expecting value")),
        };
        let mut end = int_end;
        if self.byte(end) == Some(b'.') && self.byte(end + 1).is_some_and(|b| b.is_ascii_digit()) {
            end = digits_from(end + 1);
        }
        if matches!(self.byte(end), Some(b'e' | b'E')) {
            let mut exp = end + 1;
            if matches!(self.byte(exp), Some(b'-' | b'+')) {
                exp += 1;
            }
            let exp_end = digits_from(exp);
            if exp_end > exp {
                end = exp_end;
            }
        }
        // The literal is ASCII, so this cannot fail.
        let literal = std::str::from_utf8(&self.text[start..end]).unwrap_or("0");
        if end > int_end {
            return Ok((number_value(literal), end));
        }
        let digits = int_end - int_start;
        if digits > INT_MAX_STR_DIGITS {
            return Err(self.error(
                start,
                JsonErrorKind::IntTooLong,
                format!(
                    "Exceeds the limit ({INT_MAX_STR_DIGITS} digits) for integer string \
                     conversion: value has {digits} digits; use sys.set_int_max_str_digits() \
                     to increase the limit"
                ),
            ));
        }
        Ok((PyValue::Int(normalise_int(literal)), end))
    }

    /// The string whose opening quote is at `quote`, with Python's strict
    /// rules: no raw control characters, only the standard escapes, and
    /// `\uXXXX` escapes combined only when a high surrogate is directly
    /// followed by an escaped low one.
    fn string(&self, quote: usize) -> Parsed<PyStr> {
        let text = self.text;
        let mut out = Vec::new();
        let mut at = quote + 1;
        loop {
            let run = at;
            while let Some(b) = self.byte(at) {
                if b == b'"' || b == b'\\' {
                    break;
                }
                if b < 0x20 {
                    return Err(self.syntax(at, "Invalid control character at"));
                }
                at += 1;
            }
            out.extend_from_slice(&text[run..at]);
            match self.byte(at) {
                None => return Err(self.syntax(quote, "Unterminated string starting at")),
                Some(b'"') => return Ok((PyStr::from_generalised(out), at + 1)),
                _ => {}
            }
            let backslash = at;
            let Some(escape) = self.byte(backslash + 1) else {
                return Err(self.syntax(quote, "Unterminated string starting at"));
            };
            if escape != b'u' {
                let unescaped = match escape {
                    b'"' | b'\\' | b'/' => escape,
                    b'b' => 0x08,
                    b'f' => 0x0C,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    _ => return Err(self.syntax(backslash, "Invalid \\escape")),
                };
                out.push(unescaped);
                at = backslash + 2;
                continue;
            }
            let u = backslash + 1;
            // Python wants the four digits and at least one more character
            // (the closing quote, at the very least) before it looks at them.
            let Some(mut cp) = self.hex4(u + 1).filter(|_| u + 5 < text.len()) else {
                return Err(self.syntax(u, "Invalid \\uXXXX escape"));
            };
            at = u + 5;
            // A pair is only tried with room for `\uXXXX` and one more
            // character; a second escape that is not four hex digits is
            // then an error even though the first one was fine.
            if (0xD800..0xDC00).contains(&cp)
                && at + 6 < text.len()
                && text[at] == b'\\'
                && text[at + 1] == b'u'
            {
                let Some(low) = self.hex4(at + 2) else {
                    return Err(self.syntax(at + 1, "Invalid \\uXXXX escape"));
                };
                if (0xDC00..0xE000).contains(&low) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    at += 6;
                }
            }
            push_code_point(&mut out, cp);
        }
    }

    /// Four ASCII hex digits at `at`.
    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.text.get(at..at + 4)?;
        digits.iter().try_fold(0, |cp, &b| {
            let digit = char::from(b).to_digit(16)?;
            Some(cp << 4 | digit)
        })
    }
}

// ---------------------------------------------------------------- dumping

/// Returns the text of Python's `json.dumps(obj, indent=4)` for the object
/// [`PyValue`] stands for.
pub fn dumps_value_indent4(value: &PyValue) -> String {
    let mut out = String::new();
    push_value(&mut out, value, 0);
    out
}

/// Returns the text of Python's `json.dumps(obj, indent=4)` for the object
/// Python's `json.loads` would have produced from the same JSON text (see
/// `impl From<&Value> for PyValue`).
pub fn dumps_indent4(value: &Value) -> String {
    dumps_value_indent4(&PyValue::from(value))
}

/// Returns `s` as a JSON string literal escaped like Python's
/// `json.dumps(s)` with the default `ensure_ascii=True`.
pub fn dumps_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_str(&mut out, s.as_bytes());
    out
}

fn push_value(out: &mut String, value: &PyValue, level: usize) {
    match value {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(true) => out.push_str("true"),
        PyValue::Bool(false) => out.push_str("false"),
        PyValue::Int(digits) => out.push_str(&normalise_int(digits)),
        PyValue::Float(x) => push_float(out, *x),
        PyValue::Str(s) => push_str(out, s.bytes()),
        PyValue::List(items) => {
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
        PyValue::Dict(entries) => {
            if entries.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_newline_indent(out, level + 1);
                push_str(out, key.bytes());
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

/// The encoder spells the values that JSON lacks as JavaScript does, and
/// everything else with `float.__repr__`.
fn push_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x < 0.0 { "-Infinity" } else { "Infinity" });
    } else {
        out.push_str(&float_repr(x));
    }
}

/// Writes generalised UTF-8 as an ASCII-only JSON string literal.
fn push_str(out: &mut String, mut bytes: &[u8]) {
    out.push('"');
    while let Some((cp, len)) = decode_code_point(bytes) {
        bytes = &bytes[len..];
        match cp {
            0x22 => out.push_str("\\\""),
            0x5C => out.push_str("\\\\"),
            0x0A => out.push_str("\\n"),
            0x0D => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0C => out.push_str("\\f"),
            // Printable ASCII; the range makes the cast exact.
            0x20..=0x7E => out.push(char::from(cp as u8)),
            // Everything else, DEL and lone surrogates included, becomes
            // `\uXXXX` (lowercase), with astral characters split into a
            // UTF-16 surrogate pair.
            0..=0xFFFF => push_u_escape(out, cp),
            _ => {
                let offset = cp - 0x10000;
                push_u_escape(out, 0xD800 | (offset >> 10));
                push_u_escape(out, 0xDC00 | (offset & 0x3FF));
            }
        }
    }
    out.push('"');
}

fn push_u_escape(out: &mut String, unit: u32) {
    // Writing to a String cannot fail.
    let _ = write!(out, "\\u{unit:04x}");
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
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
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

    fn load(text: &str) -> String {
        dumps_value_indent4(&loads(text.as_bytes()).expect("valid JSON"))
    }

    fn load_err(text: &[u8]) -> (usize, usize, String) {
        let e = loads(text).expect_err("invalid JSON");
        (e.line, e.column, e.message)
    }

    // Expected strings below were produced by CPython 3.11.7.
    #[test]
    fn loads_python_extensions() {
        assert_eq!(
            load("[NaN, Infinity, -Infinity]"),
            "[\n    NaN,\n    Infinity,\n    -Infinity\n]"
        );
        assert_eq!(load(r#""\ud800""#), r#""\ud800""#);
        assert_eq!(load(r#""\udfff\ud800""#), r#""\udfff\ud800""#);
        assert_eq!(load(r#""\ud83d\ude00""#), r#""\ud83d\ude00""#);
        assert_eq!(load(r#""\uD83D\uDE00x""#), r#""\ud83d\ude00x""#);
        assert_eq!(load(r#""\ud800\u0041""#), r#""\ud800A""#);
        assert_eq!(load(r#""\ud800\ud800\udc00""#), r#""\ud800\ud800\udc00""#);
        assert_eq!(
            load("[-0, 1E400, 1e-400, 10]"),
            "[\n    0,\n    Infinity,\n    0.0,\n    10\n]"
        );
        assert_eq!(
            load(r#"{"a": 1, "\u0061": 2, "b": 3}"#),
            "{\n    \"a\": 2,\n    \"b\": 3\n}"
        );
    }

    #[test]
    fn lone_surrogates_stay_distinct() {
        let PyValue::Str(lone) = loads(br#""\ud83d""#).unwrap() else {
            panic!("a string");
        };
        assert!(lone.has_surrogates());
        assert_eq!(lone.as_str(), None);
        assert_eq!(lone.code_points().collect::<Vec<_>>(), [0xD83D]);
        assert_eq!(lone.to_string_lossy(), "\u{fffd}");
        assert_eq!(format!("{lone:?}"), r#""\u{d83d}""#);
        let PyValue::Str(pair) = loads(br#""\ud83d\ude00""#).unwrap() else {
            panic!("a string");
        };
        assert_eq!(pair.as_str(), Some("😀"));
        let split = PyStr::from_code_points([0xD83D, 0xDE00]).unwrap();
        assert_ne!(split, pair);
        assert_eq!(
            dumps_value_indent4(&PyValue::Str(split)),
            r#""\ud83d\ude00""#
        );
        assert!(PyStr::from_code_points([0x110000]).is_none());
        // Code point order, as Python sorts: U+E000 after the surrogate but
        // before an astral character, which UTF-16 order would put first.
        let (private_use, astral) = (PyStr::from("\u{e000}"), PyStr::from("😀"));
        assert!(lone < private_use && private_use < astral);
        let escaped = PyStr::from_code_points([0x61, 0xDCFF, 0xDC80]).unwrap();
        assert_eq!(escaped.fsencode().unwrap().as_ref(), b"a\xff\x80");
        assert!(lone.fsencode().is_none());
    }

    #[test]
    fn dict_access() {
        let mut v = loads(br#"{"Env": ["A=1"], "Cmd": null, "Env": ["B=2"]}"#).unwrap();
        assert!(v.is_dict());
        assert_eq!(
            v.get("Env").and_then(PyValue::as_list).map(<[_]>::len),
            Some(1)
        );
        assert_eq!(
            v.get("Env").unwrap().as_list().unwrap()[0].as_str(),
            Some("B=2")
        );
        assert_eq!(v.set("Cmd", "sh".into()), Ok(Some(PyValue::Null)));
        assert_eq!(v.set("User", "root".into()), Ok(None));
        assert_eq!(
            dumps_value_indent4(&v),
            "{\n    \"Env\": [\n        \"B=2\"\n    ],\n    \"Cmd\": \"sh\",\n    \"User\": \"root\"\n}"
        );
        assert_eq!(PyValue::Null.set("k", PyValue::Null), Err(PyValue::Null));
        assert_eq!(v.get("nope"), None);
        assert_eq!(PyValue::from(3i64).type_name(), "int");
    }

    #[test]
    fn many_duplicate_keys() {
        let mut text = String::from("{");
        for round in 0..3 {
            for k in 0..100 {
                text.push_str(&format!("\"k{k}\": {round},"));
            }
        }
        text.push_str("\"k0\": 9}");
        let v = loads(text.as_bytes()).unwrap();
        let entries = v.as_dict().unwrap();
        assert_eq!(entries.len(), 100);
        assert_eq!(entries[0], (PyStr::from("k0"), PyValue::Int("9".into())));
        assert_eq!(entries[99], (PyStr::from("k99"), PyValue::Int("2".into())));
    }

    #[test]
    fn errors_like_python() {
        let cases: &[(&[u8], usize, usize, &str)] = &[
            (b"", 1, 1, "Expecting value"),
            (b"  ", 1, 3, "Expecting value"),
            (b"[1,]", 1, 4, "Expecting value"),
            (
                b"{\"a\":1,}",
                1,
                8,
                "Expecting property name enclosed in double quotes",
            ),
            (b"{\"a\" 1}", 1, 6, "Expecting ':' delimiter"),
            (b"[1 2]", 1, 4, "Expecting ',' delimiter"),
            (b"[1]x", 1, 4, "Extra data"),
            (b"1.", 1, 2, "Extra data"),
            (b"\"ab", 1, 1, "Unterminated string starting at"),
            (b"\"a\tb\"", 1, 3, "Invalid control character at"),
            (b"\"\\x\"", 1, 2, "Invalid \\escape"),
            (b"\"\\u0041", 1, 3, "Invalid \\uXXXX escape"),
            (b"\"\\ud800\\udc0\"x", 1, 9, "Invalid \\uXXXX escape"),
            (b"\"\\ud800\\udc00", 1, 9, "Invalid \\uXXXX escape"),
            (
                b"\xef\xbb\xbf1",
                1,
                1,
                "Unexpected UTF-8 BOM (decode using utf-8-sig)",
            ),
            (b"[1,\r\n2 x]", 2, 3, "Expecting ',' delimiter"),
            (b"\r\r\n\n x", 4, 2, "Expecting value"),
            ("[\"é\", x]".as_bytes(), 1, 7, "Expecting value"),
            (
                b"a\xe2\x82",
                1,
                2,
                "'utf-8' codec can't decode bytes in position 1-2: unexpected end of data",
            ),
            (
                b"\xc0\xaf",
                1,
                1,
                "'utf-8' codec can't decode byte 0xc0 in position 0: invalid start byte",
            ),
        ];
        for &(text, line, column, message) in cases {
            assert_eq!(
                load_err(text),
                (line, column, message.to_owned()),
                "{text:?}"
            );
        }
        let e = loads(format!("[{}]", "1".repeat(4301)).as_bytes()).unwrap_err();
        assert_eq!((e.kind, e.column), (JsonErrorKind::IntTooLong, 2));
        assert!(loads(format!("-{}", "1".repeat(4300)).as_bytes()).is_ok());
        assert_eq!(e.to_string(), format!("line 1, column 2: {}", e.message));
    }

    #[test]
    fn binary_input_like_python() {
        let utf16: Vec<u8> = "\u{feff}[\"é\"]"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(
            dumps_value_indent4(&loads_binary(&utf16).unwrap()),
            "[\n    \"\\u00e9\"\n]"
        );
        assert_eq!(
            dumps_value_indent4(&loads_binary(b"\"\xed\xa0\x80x\"").unwrap()),
            r#""\ud800x""#
        );
        assert_eq!(
            loads_binary(b"\xef\xbb\xbf1").unwrap(),
            PyValue::Int("1".into())
        );
        assert_eq!(
            loads_binary(b"1\x002\x00").unwrap(),
            PyValue::Int("12".into())
        );
        let e = loads_binary(b"\xef\xbb\xbf\"\xff\"").unwrap_err();
        assert_eq!(
            e.message,
            "'utf-8' codec can't decode byte 0xff in position 1: invalid start byte"
        );
        let e = loads_binary(b"\xff\xfe\x00\x00\"\x00\x00\x00\x00\x00\x11\x00").unwrap_err();
        assert_eq!(
            e.message,
            "'utf-32-le' codec can't decode bytes in position 8-11: code point not in range(0x110000)"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let deep = format!("{}{}", open.repeat(100_000), close.repeat(100_000));
            let e = loads(deep.as_bytes()).unwrap_err();
            assert_eq!(e.kind, JsonErrorKind::TooDeep);
            assert_eq!(e.pos, MAX_DEPTH * open.len());
            let unclosed = open.repeat(100_000);
            assert_eq!(
                loads(unclosed.as_bytes()).unwrap_err().kind,
                JsonErrorKind::TooDeep
            );
            let ok = format!(
                "{}{open}{close}{}",
                open.repeat(MAX_DEPTH - 1),
                close.repeat(MAX_DEPTH - 1)
            )
            .replace("{\"a\":}", "{}");
            let value = loads(ok.as_bytes()).unwrap();
            assert!(dumps_value_indent4(&value).ends_with(close));
        }
    }

    #[test]
    fn float_text_extremes() {
        assert_eq!(load("1e99999999999999999999"), "Infinity");
        assert_eq!(load("-1e-99999999999999999999"), "-0.0");
        let long = format!("0.{}1e5", "0".repeat(5000));
        assert_eq!(load(&long), "0.0");
        let exact = format!("{}.5e-100", "1".repeat(400));
        assert_eq!(load(&exact), "1.1111111111111112e+299");
    }
}
