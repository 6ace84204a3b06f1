//! Python 3.11's `datetime.fromisoformat()`, `datetime.isoformat()` and
//! `int(datetime.timestamp())`.
//!
//! `stream_layered_image.py` reads the `created` setting with
//! `datetime.fromisoformat`, stores `created.isoformat()` in the image
//! configuration and uses `int(created.timestamp())` as the mtime of every
//! file in the layers.  To produce the same bytes the tool must accept
//! exactly the strings Python 3.11 accepts and print and truncate the result
//! the same way.
//!
//! The parser follows the byte-level behaviour of CPython 3.11's C
//! implementation (`_datetime`), which is what `datetime` uses, including
//! its leniencies: any single character as the date/time separator, ISO
//! week dates, `,` as decimal mark, fractions longer than six digits
//! truncated, a stray character accepted before the UTC offset, and a
//! fractional-second offset ignored when its whole seconds are zero.

use crate::pycompat::repr::repr_str;
use std::time::{SystemTime, UNIX_EPOCH};

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A date and time as Python's `datetime` holds it after `fromisoformat`.
///
/// Values produced by [`parse`] and [`IsoDateTime::now_utc`] are always in
/// Python's ranges (years 1 to 9999, offsets strictly within ±24 hours);
/// the methods assume that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IsoDateTime {
    /// Year, 1 to 9999.
    pub year: u16,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, starting at 1.
    pub day: u8,
    /// Hour, 0 to 23.
    pub hour: u8,
    /// Minute, 0 to 59.
    pub minute: u8,
    /// Second, 0 to 59.
    pub second: u8,
    /// Microsecond, 0 to 999999.
    pub microsecond: u32,
    /// Offset from UTC in microseconds (whole seconds for ordinary inputs;
    /// Python keeps sub-second offsets such as `+01:00:00.5` too), or `None`
    /// for a naive datetime.
    pub utc_offset_micros: Option<i64>,
}

/// Why a string was rejected; the message quotes the input as Python's
/// `repr` would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoTimeError {
    /// The string is not in a format `datetime.fromisoformat` accepts.
    #[error("Invalid isoformat string: {}", repr_str(.0))]
    Invalid(String),
    /// The string is well formed but a field is out of range (month 13,
    /// February 30, hour 24, an offset of 24 hours or more, ...).
    #[error("{reason} in isoformat string {}", repr_str(.input))]
    OutOfRange {
        /// The string that was parsed.
        input: String,
        /// What is out of range, worded as Python words it.
        reason: String,
    },
}

impl std::str::FromStr for IsoDateTime {
    type Err = IsoTimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parses `s` as Python 3.11's `datetime.fromisoformat(s)` does.
///
/// Accepted, as in Python: a date `YYYY-MM-DD`, `YYYYMMDD`, `YYYY-Www`,
/// `YYYYWww`, `YYYY-Www-D` or `YYYYWwwD`, optionally followed by any one
/// character and a time `HH[:MM[:SS]]` or `HH[MM[SS]]` with an optional
/// fraction after `.` or `,` (digits past the sixth are dropped), then
/// optionally `Z` or `±HH[:MM[:SS[.ffffff]]]` (or without colons).
pub fn parse(s: &str) -> Result<IsoDateTime, IsoTimeError> {
    let invalid = || IsoTimeError::Invalid(s.to_owned());
    let out_of_range = |reason: String| IsoTimeError::OutOfRange {
        input: s.to_owned(),
        reason,
    };

    if s.chars().count() < 7 {
        return Err(invalid());
    }
    let b = s.as_bytes();
    let sep = find_separator(b).ok_or_else(invalid)?;
    let (year, month, day) = parse_date(b, sep).ok_or_else(invalid)?;

    let mut time = ParsedTime::default();
    if b.len() > sep {
        // The separator may be any character; skip all of its UTF-8 bytes
        // the way CPython does, from the lead byte alone.
        let width = match b[sep] {
            lead if lead & 0x80 == 0 => 1,
            lead if lead & 0xf0 == 0xe0 => 3,
            lead if lead & 0xf0 == 0xf0 => 4,
            _ => 2,
        };
        let start = sep + width;
        if start > b.len() {
            return Err(invalid());
        }
        time = parse_time(b, start, b.len()).ok_or_else(invalid)?;
    }

    let utc_offset_micros = match time.offset {
        None => None,
        // CPython maps a zero whole-second offset straight to UTC, dropping
        // any fraction (`-00:00:00.5` is UTC).
        Some((0, _)) => Some(0),
        Some((seconds, micros)) => {
            let total = seconds * MICROS_PER_SECOND + micros;
            if total.abs() >= SECONDS_PER_DAY * MICROS_PER_SECOND {
                return Err(out_of_range(
                    "offset must be a timedelta strictly between \
                     -timedelta(hours=24) and timedelta(hours=24)"
                        .to_owned(),
                ));
            }
            Some(total)
        }
    };

    if !(1..=9999).contains(&year) {
        return Err(out_of_range(format!("year {year} is out of range")));
    }
    if !(1..=12).contains(&month) {
        return Err(out_of_range("month must be in 1..12".to_owned()));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(out_of_range("day is out of range for month".to_owned()));
    }
    if time.hour > 23 {
        return Err(out_of_range("hour must be in 0..23".to_owned()));
    }
    if time.minute > 59 {
        return Err(out_of_range("minute must be in 0..59".to_owned()));
    }
    if time.second > 59 {
        return Err(out_of_range("second must be in 0..59".to_owned()));
    }

    // The range checks above make these conversions lossless.
    Ok(IsoDateTime {
        year: year as u16,
        month: month as u8,
        day: day as u8,
        hour: time.hour as u8,
        minute: time.minute as u8,
        second: time.second as u8,
        microsecond: time.microsecond,
        utc_offset_micros,
    })
}

impl IsoDateTime {
    /// Returns Python's `datetime.isoformat()`:
    /// `YYYY-MM-DDTHH:MM:SS`, then `.ffffff` if the microsecond is not
    /// zero, then for an aware value the offset as `±HH:MM`, extended by
    /// `:SS` and `.ffffff` only when those are not zero (`Z` prints as
    /// `+00:00`).
    pub fn isoformat(&self) -> String {
        let mut out = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.microsecond != 0 {
            out.push_str(&format!(".{:06}", self.microsecond));
        }
        if let Some(offset) = self.utc_offset_micros {
            let sign = if offset < 0 { '-' } else { '+' };
            let magnitude = offset.unsigned_abs();
            let micros = magnitude % 1_000_000;
            let seconds = magnitude / 1_000_000;
            let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
            out.push_str(&format!("{sign}{hours:02}:{minutes:02}"));
            if micros != 0 {
                out.push_str(&format!(":{seconds:02}.{micros:06}"));
            } else if seconds != 0 {
                out.push_str(&format!(":{seconds:02}"));
            }
        }
        out
    }

    /// Returns Python's `int(dt.timestamp())`: seconds since the Unix epoch
    /// as a float, truncated toward zero.
    ///
    /// Python raises "year 0 is out of range" for a naive value on
    /// 0001-01-01, because it probes the local time a day earlier; this
    /// returns the UTC result instead.
    ///
    /// A naive value is taken as UTC.  Python would use the local time zone,
    /// but the tool runs in build sandboxes where `TZ` is unset and there is
    /// no `/etc/localtime`, which makes local time UTC.
    pub fn unix_seconds(&self) -> i64 {
        let days = days_from_civil(
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        );
        let seconds = days * SECONDS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        match self.utc_offset_micros {
            // CPython adds the fraction to the whole seconds in double
            // precision, which can round up to the next second.
            None => (seconds as f64 + f64::from(self.microsecond) / 1e6).trunc() as i64,
            // CPython divides the exact microsecond count by 10**6 with
            // correct rounding, which can also round up.
            Some(offset) => {
                let micros = seconds * MICROS_PER_SECOND + i64::from(self.microsecond) - offset;
                truncate_rounded_seconds(micros)
            }
        }
    }

    /// The same instant in UTC, to the second, as `YYYY-MM-DDThh:mm:ssZ`:
    /// the form SPDX and CycloneDX documents require.
    pub fn utc_text(&self) -> String {
        let seconds = self.unix_seconds();
        let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
        let time = seconds.rem_euclid(SECONDS_PER_DAY);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            time / 3600,
            time % 3600 / 60,
            time % 60
        )
    }

    /// Returns the current time in UTC with microsecond precision, like
    /// Python's `datetime.now(tz=timezone.utc)`.
    pub fn now_utc() -> Self {
        let micros: i128 = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => since.as_micros() as i128,
            // Python floors to the microsecond, also before the epoch.
            Err(err) => {
                let before = err.duration();
                -((before.as_nanos() as i128 + 999) / 1000)
            }
        };
        let micros = i64::try_from(micros).expect("system clock within ±292000 years");
        let seconds = micros.div_euclid(MICROS_PER_SECOND);
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        IsoDateTime {
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: (second_of_day / 3600) as u8,
            minute: (second_of_day / 60 % 60) as u8,
            second: (second_of_day % 60) as u8,
            microsecond: micros.rem_euclid(MICROS_PER_SECOND) as u32,
            utc_offset_micros: Some(0),
        }
    }
}

/// Returns `trunc(round_to_f64(micros / 10**6))` exactly.
///
/// The nearest double to the quotient is either its truncation `q` or the
/// next integer `n` away from zero (both are representable), so the answer
/// is `n` exactly when the quotient lies at or beyond the midpoint between
/// `n` and the double just below it (ties go to `n`, whose significand is
/// even).
fn truncate_rounded_seconds(micros: i64) -> i64 {
    let q = micros / MICROS_PER_SECOND;
    if micros % MICROS_PER_SECOND == 0 {
        return q;
    }
    let magnitude = u128::from(micros.unsigned_abs());
    let n = u128::from(q.unsigned_abs()) + 1;
    // Exponent of the binade holding the doubles just below n.
    let e: i32 = if n == 1 {
        -1
    } else {
        (127 - (n - 1).leading_zeros()) as i32
    };
    // magnitude / 1e6 >= n - 2^(e-53), scaled by 2^(53-e) * 1e6.
    let shift = (53 - e) as u32;
    let rounds_up = magnitude << shift >= 1_000_000 * ((n << shift) - 1);
    let truncated = if rounds_up { n } else { n - 1 } as i64;
    if micros < 0 {
        -truncated
    } else {
        truncated
    }
}

#[derive(Default)]
struct ParsedTime {
    hour: u32,
    minute: u32,
    second: u32,
    microsecond: u32,
    /// Whole seconds and microseconds of the offset, both carrying its sign.
    offset: Option<(i64, i64)>,
}

/// Reads like C does from a NUL-terminated buffer: past the end is `\0`.
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn parse_digits(b: &[u8], pos: &mut usize, count: usize) -> Option<u32> {
    let mut value = 0;
    for _ in 0..count {
        let digit = at(b, *pos).wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u32::from(digit);
        *pos += 1;
    }
    Some(value)
}

/// Where the date ends; CPython decides from the date's shape alone.
fn find_separator(b: &[u8]) -> Option<usize> {
    let len = b.len();
    if len == 7 {
        return Some(7);
    }
    if at(b, 4) == b'-' {
        if at(b, 5) != b'W' {
            return Some(10);
        }
        if len > 8 && at(b, 8) == b'-' {
            if len == 9 {
                return None;
            }
            // `YYYY-Www-` followed by two digits is read as a date without
            // weekday, '-' as separator and a time, as CPython guesses.
            if len > 10 && at(b, 10).is_ascii_digit() {
                return Some(8);
            }
            return Some(10);
        }
        return Some(8);
    }
    if at(b, 4) != b'W' {
        return Some(8);
    }
    // `YYYYWww` or `YYYYWwwD`: times have an even number of digits, so the
    // parity of the digit run tells whether a weekday digit precedes it.
    let run_end = (7..len).find(|&i| !b[i].is_ascii_digit()).unwrap_or(len);
    if run_end < 9 {
        Some(run_end)
    } else if run_end % 2 == 0 {
        Some(7)
    } else {
        Some(8)
    }
}

/// Returns year, month and day, which may still be out of range: like
/// CPython, that is only checked once the time has parsed.
fn parse_date(b: &[u8], len: usize) -> Option<(u32, u32, u32)> {
    let mut p = 0;
    let year = parse_digits(b, &mut p, 4)?;
    let dashed = at(b, p) == b'-';
    if dashed {
        p += 1;
    }
    if at(b, p) == b'W' {
        p += 1;
        let week = parse_digits(b, &mut p, 2)?;
        let weekday = if p < len {
            if dashed {
                if at(b, p) != b'-' {
                    return None;
                }
                p += 1;
            }
            parse_digits(b, &mut p, 1)?
        } else {
            1
        };
        return iso_week_to_ymd(year, week, weekday);
    }
    let month = parse_digits(b, &mut p, 2)?;
    if dashed {
        if at(b, p) != b'-' {
            return None;
        }
        p += 1;
    }
    let day = parse_digits(b, &mut p, 2)?;
    Some((year, month, day))
}

fn iso_week_to_ymd(year: u32, week: u32, weekday: u32) -> Option<(u32, u32, u32)> {
    let jan1 = days_from_civil(i64::from(year), 1, 1);
    // Monday is 0; 1970-01-01 was a Thursday.
    let jan1_weekday = (jan1 + 3).rem_euclid(7);
    let long_year = jan1_weekday == 3 || (jan1_weekday == 2 && is_leap(year));
    let week_exists = (1..=52).contains(&week) || (week == 53 && long_year);
    if !week_exists || !(1..=7).contains(&weekday) {
        return None;
    }
    // Every week of ISO year 0 ends before 0001-01-01 (a Monday); CPython
    // computes some impossible date for them, rejected after the time.
    if year == 0 {
        return Some((0, 1, 1));
    }
    let week1_monday = jan1 - jan1_weekday + if jan1_weekday > 3 { 7 } else { 0 };
    let days = week1_monday + i64::from((week - 1) * 7 + weekday - 1);
    let (y, m, d) = civil_from_days(days);
    Some((y as u32, m, d))
}

/// Parses `HH[:MM[:SS[.fff]]]` between `start` and `end`; the flag is true
/// when a character other than `\0` follows, which callers treat as an
/// error unless an offset comes next.  Reads may run past `end` just as
/// CPython's do.
fn parse_hh_mm_ss_ff(b: &[u8], start: usize, end: usize) -> Option<([u32; 4], bool)> {
    let mut fields = [0u32; 4];
    let mut p = start;
    let mut colons = true;
    for (i, field) in fields.iter_mut().take(3).enumerate() {
        *field = parse_digits(b, &mut p, 2)?;
        let c = at(b, p);
        p += 1;
        if i == 0 {
            colons = c == b':';
        }
        if p >= end {
            return Some((fields, c != 0));
        } else if colons && c == b':' {
            continue;
        } else if c == b'.' || c == b',' {
            break;
        } else if !colons {
            p -= 1;
        } else {
            return None;
        }
    }

    let digits = (end - p).min(6);
    let mut micros = parse_digits(b, &mut p, digits)?;
    micros *= 10u32.pow(6 - digits as u32);
    while at(b, p).is_ascii_digit() {
        p += 1;
    }
    fields[3] = micros;
    Some((fields, at(b, p) != 0))
}

fn parse_time(b: &[u8], start: usize, end: usize) -> Option<ParsedTime> {
    let mut tz = start;
    loop {
        if matches!(at(b, tz), b'Z' | b'+' | b'-') {
            break;
        }
        tz += 1;
        if tz >= end {
            break;
        }
    }

    let ([hour, minute, second, microsecond], trailing) = parse_hh_mm_ss_ff(b, start, tz)?;
    let mut time = ParsedTime {
        hour,
        minute,
        second,
        microsecond,
        offset: None,
    };
    if tz == end {
        return (!trailing).then_some(time);
    }
    if at(b, tz) == b'Z' {
        // CPython only checks the one byte after `Z` against its string
        // terminator, so an embedded NUL there ends the string.
        time.offset = Some((0, 0));
        return (at(b, tz + 1) == 0).then_some(time);
    }
    let sign = if at(b, tz) == b'-' { -1 } else { 1 };
    let ([h, m, s, us], trailing) = parse_hh_mm_ss_ff(b, tz + 1, end)?;
    if trailing {
        return None;
    }
    let seconds = i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s);
    time.offset = Some((sign * seconds, sign * i64::from(us)));
    Some(time)
}

fn is_leap(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Counting years from March puts the leap day last, so the day of the
    // year follows from the month by a linear formula.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(s: &str) -> String {
        parse(s).unwrap_or_else(|e| panic!("{e}")).isoformat()
    }

    // Expected values below were produced by CPython 3.11.7.
    #[test]
    fn formats() {
        let cases = [
            ("2024-01-02", "2024-01-02T00:00:00"),
            ("20240102", "2024-01-02T00:00:00"),
            ("2024-01-02 03", "2024-01-02T03:00:00"),
            ("2024-01-02T0304", "2024-01-02T03:04:00"),
            ("2024-01-02T030405", "2024-01-02T03:04:05"),
            ("2024-01-02é03:04", "2024-01-02T03:04:00"),
            ("2024-01-02😀03:04", "2024-01-02T03:04:00"),
            ("2024-01-02T03:04:05,1", "2024-01-02T03:04:05.100000"),
            (
                "2024-01-02T03:04:05.123456789",
                "2024-01-02T03:04:05.123456",
            ),
            ("2024-01-02T03:04:05.000000", "2024-01-02T03:04:05"),
            ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05+00:00"),
            ("2024-01-02T03:04:05-00:00", "2024-01-02T03:04:05+00:00"),
            ("2024-01-02T03:04:05+0130", "2024-01-02T03:04:05+01:30"),
            ("2024-01-02T03:04:05-01", "2024-01-02T03:04:05-01:00"),
            (
                "2024-01-02T03:04:05+013015.5",
                "2024-01-02T03:04:05+01:30:15.500000",
            ),
            ("2024-01-02T03:04:05+01:00:00", "2024-01-02T03:04:05+01:00"),
            (
                "2024-01-02T03:04:05-00:00:00.5",
                "2024-01-02T03:04:05+00:00",
            ),
            (
                "2024-01-02T03:04:05-00:00:01.5",
                "2024-01-02T03:04:05-00:00:01.500000",
            ),
            ("2024-01-02T03:04:05:123", "2024-01-02T03:04:05.123000"),
            ("2024-01-02T03x+01:00", "2024-01-02T03:00:00+01:00"),
            ("2024-W01", "2024-01-01T00:00:00"),
            ("2024W011", "2024-01-01T00:00:00"),
            ("2020-W53-7", "2021-01-03T00:00:00"),
            ("2024W01103", "2024-01-01T03:00:00"),
            ("9999-W52-5", "9999-12-31T00:00:00"),
            (
                "0001-01-01T00:00:00+23:59:59.999999",
                "0001-01-01T00:00:00+23:59:59.999999",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(iso(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn rejects() {
        for input in [
            "2024-1-02",
            "2024-0102",
            "2024-01-02T",
            "2024-01-02T3:04",
            "2024-01-02T03:0405",
            "2024-01-02T03:04:05.",
            "2024-01-02T03:04:05z",
            "2024-01-02T03:04:05+1",
            "2024-01-02T03:04:05+013",
            "2024-01-02 03:04:05 ",
            "2024-W53-1",
            "2024-W01-8",
            "２０２４-01-02",
        ] {
            assert!(
                matches!(parse(input), Err(IsoTimeError::Invalid(_))),
                "{input:?}"
            );
        }
        for input in [
            "0000-01-01",
            "2024-13-01",
            "2024-02-30",
            "2023-02-29",
            "2024-01-02T24:00",
            "2024-01-02T03:60",
            "2024-01-02T03:04:60",
            "2024-01-02T03:04:05+24:00",
            "9999-W52-6",
        ] {
            assert!(
                matches!(parse(input), Err(IsoTimeError::OutOfRange { .. })),
                "{input:?}"
            );
        }
    }

    #[test]
    fn error_message_quotes_input() {
        assert_eq!(
            parse("it's").unwrap_err().to_string(),
            "Invalid isoformat string: \"it's\""
        );
    }

    #[test]
    fn timestamps() {
        let cases = [
            ("1970-01-01", 0),
            ("1970-01-01T00:00:00.5-00:00", 0),
            ("1969-12-31T23:59:59.5Z", 0),
            ("1969-12-31T23:59:59Z", -1),
            ("2024-01-02T03:04:05+01:00", 1_704_161_045),
            ("0001-01-01T00:00:00Z", -62_135_596_800),
            ("9999-12-31T23:59:59.999999+00:00", 253_402_300_800),
            ("9999-12-31T23:59:59.999999", 253_402_300_800),
            ("2200-01-01T00:00:00.9999999", 7_258_118_400),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input).unwrap().unix_seconds(), expected, "{input}");
        }
    }

    #[test]
    fn rounding_matches_f64_division_where_exact() {
        for micros in [
            1,
            999_999,
            -999_999,
            1_700_000_000_999_999,
            -4_000_000_000_000_001,
        ] {
            let expected = (micros as f64 / 1e6).trunc() as i64;
            assert_eq!(truncate_rounded_seconds(micros), expected, "{micros}");
        }
    }

    #[test]
    fn utc_text_applies_the_offset() {
        let t = parse("2024-03-01T01:30:15+02:00").unwrap();
        assert_eq!(t.utc_text(), "2024-02-29T23:30:15Z");
        assert_eq!(
            parse("1970-01-01T00:00:01").unwrap().utc_text(),
            "1970-01-01T00:00:01Z"
        );
    }

    #[test]
    fn civil_roundtrip() {
        for days in [-719_162, -1, 0, 59, 365, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }

    #[test]
    fn now_is_plausible() {
        let now = IsoDateTime::now_utc();
        assert_eq!(now.utc_offset_micros, Some(0));
        assert!(now.year >= 2024);
        assert_eq!(parse(&now.isoformat()).unwrap(), now);
    }
}
