//! The two public CSV request traces without prefix hashes:
//!
//! - **Azure LLM inference trace** (2023 and 2024 releases), header
//!   `TIMESTAMP,ContextTokens,GeneratedTokens`. 2023 timestamps look like
//!   `2023-11-16 18:15:46.6805900` (seven fractional digits, no zone), 2024
//!   ones like `2024-05-10 00:00:00.009930+00:00` (a zone offset, fraction
//!   optional). They are parsed here (civil date to days with Howard
//!   Hinnant's `days_from_civil`, the offset applied, nanoseconds kept;
//!   fraction digits past the ninth are dropped). `ContextTokens` is the
//!   prompt (1..=[`MAX_INPUT_TOKENS`]), `GeneratedTokens` the generation
//!   (0..=[`MAX_OUTPUT_TOKENS`]: 0 marks a failed or empty generation).
//! - **BurstGPT**, header
//!   `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`.
//!   `Timestamp` is seconds (a decimal) since the trace start. `Request
//!   tokens` is the prompt and must be at least 1 (a row with 0 request
//!   tokens has no prompt to replay and is an error naming its line);
//!   `Response tokens` is the generation and may be 0 (BurstGPT logs failed
//!   requests with 0 response tokens). Only these three columns are read and
//!   required; `Model`, `Total tokens` and `Log Type` are ignored.
//!
//! Neither format carries prefix hashes, so every request comes out with
//! empty `blocks`: these traces feed arrival and length statistics and the
//! synthesizer ([`crate::synth`]), never prefix-cache replay.
//!
//! Both readers stream, one line at a time. The arrival of a request is its
//! time since the file's first row (the first row arrives at 0). They
//! tolerate a UTF-8 byte-order mark, `\r\n` line ends, blank lines, double
//! quoted fields, and header columns in any order and case (columns are
//! found by name). Every bad row is a [`TraceError::Invalid`] naming the
//! 1-based line, the column and what was expected; after the first error the
//! iterator ends. With `check_order`, a timestamp earlier than the previous
//! row's is an error; without it (the caller sorts), rows are let through,
//! except one earlier than the first row, whose arrival would be negative.

use crate::error::{quote, TraceError};
use crate::lines::Lines;
use crate::{MAX_ARRIVAL, MAX_INPUT_TOKENS, MAX_OUTPUT_TOKENS};
use moonlab_core::{Nanos, Request};
use std::io::BufRead;
use std::path::Path;

const AZURE_HEADER: &str = "TIMESTAMP,ContextTokens,GeneratedTokens";
const BURSTGPT_HEADER: &str =
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type";

/// Splits one CSV line into trimmed fields. Fields may be double quoted
/// (`"a, b"`, with `""` for a quote inside).
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && cur.trim().is_empty() {
            cur.clear();
            in_quotes = true;
        } else if c == ',' {
            fields.push(cur.trim().to_string());
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    fields.push(cur.trim().to_string());
    fields
}

/// Finds each wanted column (case-insensitive) in the header line.
fn find_columns<const N: usize>(
    path: &Path,
    line: u64,
    header: &str,
    wanted: [&str; N],
    expected_header: &str,
) -> Result<[usize; N], TraceError> {
    let names = split_fields(header);
    let mut out = [0usize; N];
    for (slot, want) in out.iter_mut().zip(wanted) {
        match names.iter().position(|n| n.eq_ignore_ascii_case(want)) {
            Some(i) => *slot = i,
            None => {
                return Err(TraceError::invalid(
                    path,
                    line,
                    "(header)",
                    format!("missing column `{want}` (expected a header like `{expected_header}`; found `{}`)", quote(header)),
                ))
            }
        }
    }
    Ok(out)
}

/// The field at `index` of a data row, or an error naming the column.
fn field<'a>(
    path: &Path,
    line: u64,
    fields: &'a [String],
    index: usize,
    name: &str,
) -> Result<&'a str, TraceError> {
    match fields.get(index) {
        Some(f) if !f.is_empty() => Ok(f),
        Some(_) => Err(TraceError::invalid(
            path,
            line,
            name,
            "is empty (expected a value)",
        )),
        None => Err(TraceError::invalid(
            path,
            line,
            name,
            format!(
                "missing (the row has {} fields; the header puts `{name}` in field {})",
                fields.len(),
                index + 1
            ),
        )),
    }
}

/// Parses a token count in `min..=max`. Accepts a whole number, or a
/// decimal with a zero fraction (`512.0`, as some exports write).
fn parse_tokens(
    path: &Path,
    line: u64,
    name: &str,
    text: &str,
    min: u64,
    max: u64,
) -> Result<u32, TraceError> {
    let bad = |what: String| TraceError::invalid(path, line, name, what);
    let shown = quote(text);
    let value: Option<i128> = if let Ok(v) = text.parse::<i128>() {
        Some(v)
    } else {
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        if !frac.is_empty() && frac.bytes().all(|b| b == b'0') {
            int.parse::<i128>().ok()
        } else {
            None
        }
    };
    let Some(v) = value else {
        return Err(bad(format!(
            "`{shown}` is not a whole number of tokens (expected an integer in {min}..={max})"
        )));
    };
    if v < 0 {
        return Err(bad(format!(
            "{v} is negative (expected an integer in {min}..={max} tokens)"
        )));
    }
    if v < min as i128 || v > max as i128 {
        return Err(bad(format!(
            "{v} is out of range (expected {min}..={max} tokens)"
        )));
    }
    Ok(v as u32)
}

/// Order checking shared by both readers: the first row's time is the base;
/// later rows get their offset from it.
struct Clock {
    check_order: bool,
    base: Option<i128>,
    last: Option<(i128, u64, String)>,
}

impl Clock {
    fn new(check_order: bool) -> Self {
        Clock {
            check_order,
            base: None,
            last: None,
        }
    }

    /// `t` in nanoseconds on the file's own scale; `text` is the field as
    /// written (for messages).
    fn arrival(
        &mut self,
        path: &Path,
        line: u64,
        column: &str,
        t: i128,
        text: &str,
    ) -> Result<Nanos, TraceError> {
        let shown = quote(text);
        if self.check_order {
            if let Some((prev, prev_line, prev_text)) = &self.last {
                if t < *prev {
                    return Err(TraceError::invalid(
                        path,
                        line,
                        column,
                        format!(
                            "`{shown}` is earlier than line {prev_line}'s `{prev_text}` (expected non-decreasing timestamps; sort the file or pass --sort)"
                        ),
                    ));
                }
            }
        }
        let base = *self.base.get_or_insert(t);
        let rel = t - base;
        if rel < 0 {
            return Err(TraceError::invalid(
                path,
                line,
                column,
                format!(
                    "`{shown}` is earlier than the first row's timestamp (arrivals count from the first row, so it must be the earliest; sort the file)"
                ),
            ));
        }
        if rel > MAX_ARRIVAL.0 as i128 {
            return Err(TraceError::invalid(
                path,
                line,
                column,
                format!(
                    "`{shown}` is more than {} ms after the first row, beyond the latest representable arrival (about 317 years)",
                    crate::MAX_ARRIVAL_MS
                ),
            ));
        }
        self.last = Some((t, line, shown));
        Ok(Nanos(rel as u64))
    }
}

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d` (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fraction][zone]` (a `T` may separate date
/// and time; the zone is `Z`, `+HH:MM`, `+HHMM` or `+HH`, or absent for
/// UTC) into nanoseconds since 1970-01-01T00:00:00Z.
fn parse_datetime(text: &str) -> Result<i128, String> {
    let shown = quote(text);
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Option<u32> {
        let s = b.get(from..from + n)?;
        if s.iter().all(u8::is_ascii_digit) {
            Some(s.iter().fold(0u32, |acc, d| acc * 10 + (d - b'0') as u32))
        } else {
            None
        }
    };
    let shape = "expected a date-time like `2023-11-16 18:15:46.6805900` or `2024-05-10 00:00:00.009930+00:00`";
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0, 4),
        digits(5, 2),
        digits(8, 2),
        digits(11, 2),
        digits(14, 2),
        digits(17, 2),
    ) else {
        return Err(format!("`{shown}` is not a date-time ({shape})"));
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T' || b[10] == b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(format!("`{shown}` is not a date-time ({shape})"));
    }
    let year = year as i64;
    if !(1..=12).contains(&month) {
        return Err(format!("`{shown}` has month {month} (expected 01..=12)"));
    }
    let dim = days_in_month(year, month);
    if day < 1 || day > dim {
        return Err(format!(
            "`{shown}` has day {day} (expected 01..={dim} for that month)"
        ));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!(
            "`{shown}` has time {hour:02}:{minute:02}:{second:02} (expected 00:00:00..=23:59:59)"
        ));
    }
    let mut i = 19;
    let mut nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + (b[i] - b'0') as i128;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err(format!(
                "`{shown}` has a `.` without fraction digits ({shape})"
            ));
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_s: i128 = match b.get(i) {
        None => 0,
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &text[i + 1..];
            let (h, m) = match rest.len() {
                2 => (digits(i + 1, 2), Some(0)),
                4 => (digits(i + 1, 2), digits(i + 3, 2)),
                5 if rest.as_bytes()[2] == b':' => (digits(i + 1, 2), digits(i + 4, 2)),
                _ => (None, None),
            };
            match (h, m) {
                (Some(h), Some(m)) if h <= 23 && m <= 59 => {
                    let s = (h * 3600 + m * 60) as i128;
                    if sign == b'-' {
                        -s
                    } else {
                        s
                    }
                }
                _ => {
                    return Err(format!(
                        "`{shown}` has a bad zone offset `{}` (expected +HH:MM)",
                        quote(&text[i..])
                    ))
                }
            }
        }
        Some(_) => {
            return Err(format!(
                "`{shown}` has trailing text `{}` ({shape})",
                &text[i..]
            ))
        }
    };
    let days = days_from_civil(year, month, day) as i128;
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i128 - offset_s;
    Ok(secs * 1_000_000_000 + nanos)
}

/// Parses seconds written as a decimal (`12.5`, `-3`, `1e3`) into
/// nanoseconds; decimals are parsed exactly to the nanosecond.
fn parse_seconds(text: &str) -> Result<i128, String> {
    let shown = quote(text);
    let bad =
        || format!("`{shown}` is not a number of seconds (expected a decimal such as `12.345`)");
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let plain = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.bytes().all(|c| c.is_ascii_digit())
        && int.len() <= 18;
    let ns = if plain {
        let whole: i128 = if int.is_empty() {
            0
        } else {
            int.parse::<i128>().map_err(|_| bad())?
        };
        let mut f: i128 = 0;
        for (k, c) in frac.bytes().enumerate() {
            if k < 9 {
                f = f * 10 + (c - b'0') as i128;
            }
        }
        for _ in frac.len().min(9)..9 {
            f *= 10;
        }
        whole * 1_000_000_000 + f
    } else {
        let v: f64 = body.parse().map_err(|_| bad())?;
        if !v.is_finite() || v > 1e15 {
            return Err(bad());
        }
        (v * 1e9).round() as i128
    };
    Ok(if neg { -ns } else { ns })
}

/// What sets one CSV format apart: its header (for messages), the columns
/// read (timestamp, prompt tokens, generated tokens), how its timestamps
/// are written, and whether a row without a prompt gets its own message
/// (naming the tokens so) rather than the plain out-of-range one.
struct Format {
    header: &'static str,
    columns: [&'static str; 3],
    parse_time: fn(&str) -> Result<i128, String>,
    zero_prompt: Option<&'static str>,
}

const AZURE: Format = Format {
    header: AZURE_HEADER,
    columns: ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
    parse_time: parse_datetime,
    zero_prompt: None,
};

const BURSTGPT: Format = Format {
    header: BURSTGPT_HEADER,
    columns: ["Timestamp", "Request tokens", "Response tokens"],
    parse_time: parse_seconds,
    zero_prompt: Some("request tokens"),
};

/// The reader both formats share: the header, then one request per row,
/// ending after the first error (module docs).
struct CsvReader<R> {
    format: &'static Format,
    lines: Lines<R>,
    clock: Clock,
    columns: Option<[usize; 3]>,
    seen_any: bool,
    done: bool,
}

impl<R: BufRead> CsvReader<R> {
    fn new(format: &'static Format, input: R, path: &Path, check_order: bool) -> Self {
        CsvReader {
            format,
            lines: Lines::new(input, path),
            clock: Clock::new(check_order),
            columns: None,
            seen_any: false,
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<Request>, TraceError> {
        let format = self.format;
        let [ts_name, input_name, output_name] = format.columns;
        loop {
            let Some(current) = self.lines.next_line("a CSV text line")? else {
                if !self.seen_any {
                    return Err(TraceError::file(
                        &self.lines.path,
                        format!(
                            "holds no requests (expected a header `{}` followed by one row per request)",
                            format.header
                        ),
                    ));
                }
                return Ok(None);
            };
            let (path, line, text) = (current.path, current.no, current.text);
            let Some(cols) = self.columns else {
                self.columns = Some(find_columns(
                    path,
                    line,
                    text,
                    format.columns,
                    format.header,
                )?);
                continue;
            };
            self.seen_any = true;
            let fields = split_fields(text);
            let ts_text = field(path, line, &fields, cols[0], ts_name)?;
            let t = (format.parse_time)(ts_text)
                .map_err(|m| TraceError::invalid(path, line, ts_name, m))?;
            let input_text = field(path, line, &fields, cols[1], input_name)?;
            if let Some(tokens) = format.zero_prompt {
                if input_text.parse::<i128>() == Ok(0) {
                    return Err(TraceError::invalid(
                        path,
                        line,
                        input_name,
                        format!("0 {tokens} (expected 1..={MAX_INPUT_TOKENS}: a request without a prompt cannot be replayed)"),
                    ));
                }
            }
            let input = parse_tokens(path, line, input_name, input_text, 1, MAX_INPUT_TOKENS)?;
            let output_text = field(path, line, &fields, cols[2], output_name)?;
            let output = parse_tokens(path, line, output_name, output_text, 0, MAX_OUTPUT_TOKENS)?;
            let arrival = self.clock.arrival(path, line, ts_name, t, ts_text)?;
            return Ok(Some(Request {
                arrival,
                input_tokens: input,
                output_tokens: output,
                blocks: Vec::new(),
            }));
        }
    }
}

impl<R: BufRead> Iterator for CsvReader<R> {
    type Item = Result<Request, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Streams requests out of an Azure LLM inference trace CSV (module docs).
pub struct AzureReader<R>(CsvReader<R>);

impl<R: BufRead> AzureReader<R> {
    /// `check_order`: reject a timestamp earlier than the previous row's
    /// (callers that sort afterwards pass false).
    pub fn new(input: R, path: &Path, check_order: bool) -> Self {
        AzureReader(CsvReader::new(&AZURE, input, path, check_order))
    }
}

impl<R: BufRead> Iterator for AzureReader<R> {
    type Item = Result<Request, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

/// Streams requests out of a BurstGPT CSV (module docs).
pub struct BurstGptReader<R>(CsvReader<R>);

impl<R: BufRead> BurstGptReader<R> {
    /// `check_order`: reject a timestamp earlier than the previous row's
    /// (callers that sort afterwards pass false).
    pub fn new(input: R, path: &Path, check_order: bool) -> Self {
        BurstGptReader(CsvReader::new(&BURSTGPT, input, path, check_order))
    }
}

impl<R: BufRead> Iterator for BurstGptReader<R> {
    type Item = Result<Request, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(text: &str) -> Result<Vec<Request>, TraceError> {
        AzureReader::new(text.as_bytes(), Path::new("a.csv"), true).collect()
    }

    fn burst(text: &str) -> Result<Vec<Request>, TraceError> {
        BurstGptReader::new(text.as_bytes(), Path::new("b.csv"), true).collect()
    }

    fn req(ns: u64, input: u32, output: u32) -> Request {
        Request {
            arrival: Nanos(ns),
            input_tokens: input,
            output_tokens: output,
            blocks: Vec::new(),
        }
    }

    #[test]
    fn azure_2023_release() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                    2023-11-16 18:15:46.6805900,374,44\n\
                    2023-11-16 18:15:50.9951690,396,109\n\
                    2023-11-16 18:15:50.9951690,879,0\n\
                    2023-11-17 00:00:00.0000001,1,1\n";
        let r = azure(text).unwrap();
        assert_eq!(
            r,
            vec![
                req(0, 374, 44),
                req(4_314_579_000, 396, 109),
                req(4_314_579_000, 879, 0),
                // 5 h 44 min 13.3194101 s after the first row
                req(20_653_319_410_100, 1, 1),
            ]
        );
    }

    #[test]
    fn azure_2024_release_with_offsets_bom_crlf_and_reordered_columns() {
        let text = "\u{feff}contexttokens,GENERATEDTOKENS,Timestamp\r\n\
                    \r\n\
                    4808,10,2024-05-10 00:00:00.009930+00:00\r\n\
                    3180,8,2024-05-10 00:00:00.054005+00:00\r\n\
                    \r\n\
                    110,27,2024-05-10 02:00:01+02:00\r\n\
                    7,1,2024-05-10T00:00:02Z\r\n\
                    8,2,2024-05-09 19:00:03-0500\r\n";
        let r = azure(text).unwrap();
        assert_eq!(
            r,
            vec![
                req(0, 4808, 10),
                req(44_075_000, 3180, 8),
                req(990_070_000, 110, 27),
                req(1_990_070_000, 7, 1),
                req(2_990_070_000, 8, 2),
            ]
        );
    }

    #[test]
    fn burstgpt_release() {
        let text = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n\
                    5,ChatGPT,472,18,490,Conversation log\n\
                    45,ChatGPT,1087,0,1087,Conversation log\n\
                    45.000000001,GPT-4,\"417\",276,693,API log\n\
                    118.5,ChatGPT,1360.0,9,1369,Conversation log\n";
        let r = burst(text).unwrap();
        assert_eq!(
            r,
            vec![
                req(0, 472, 18),
                req(40_000_000_000, 1087, 0),
                req(40_000_000_001, 417, 276),
                req(113_500_000_000, 1360, 9),
            ]
        );
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 5, 10), 19_853);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(
            parse_datetime("2024-02-29 00:00:00").unwrap(),
            19_782 * 86_400 * 1_000_000_000
        );
    }

    fn azure_err(text: &str) -> String {
        azure(text).unwrap_err().to_string()
    }

    fn burst_err(text: &str) -> String {
        burst(text).unwrap_err().to_string()
    }

    #[test]
    fn each_bad_azure_input_names_line_and_column() {
        let h = "TIMESTAMP,ContextTokens,GeneratedTokens\n";
        let ok = "2023-11-16 18:15:46.6805900,374,44\n";
        let cases = [
            (format!("{h}{ok}2023-11-16 18:15:47,abc,1\n"), "a.csv:3: ContextTokens: `abc` is not a whole number of tokens"),
            (format!("{h}{ok}2023-11-16 18:15:47,-5,1\n"), "a.csv:3: ContextTokens: -5 is negative"),
            (format!("{h}2023-11-16 18:15:47,0,1\n"), "a.csv:2: ContextTokens: 0 is out of range (expected 1..=10000000"),
            (format!("{h}2023-11-16 18:15:47,99999999999,1\n"), "a.csv:2: ContextTokens: 99999999999 is out of range"),
            (format!("{h}2023-11-16 18:15:47,5,-1\n"), "a.csv:2: GeneratedTokens: -1 is negative"),
            (format!("{h}2023-11-16 18:15:47,5,2.5\n"), "a.csv:2: GeneratedTokens: `2.5` is not a whole number"),
            (format!("{h}2023-11-16 18:15:47,5\n"), "a.csv:2: GeneratedTokens: missing (the row has 2 fields"),
            (format!("{h}2023-11-16 18:15:47,,5\n"), "a.csv:2: ContextTokens: is empty"),
            (format!("{h}2023-13-16 18:15:47,5,5\n"), "a.csv:2: TIMESTAMP: `2023-13-16 18:15:47` has month 13"),
            (format!("{h}2023-02-29 18:15:47,5,5\n"), "a.csv:2: TIMESTAMP: `2023-02-29 18:15:47` has day 29 (expected 01..=28"),
            (format!("{h}2023-11-16 24:15:47,5,5\n"), "a.csv:2: TIMESTAMP: `2023-11-16 24:15:47` has time 24:15:47"),
            (format!("{h}16/11/2023 18:15,5,5\n"), "a.csv:2: TIMESTAMP: `16/11/2023 18:15` is not a date-time"),
            (format!("{h}2023-11-16 18:15:47.,5,5\n"), "a.csv:2: TIMESTAMP: `2023-11-16 18:15:47.` has a `.` without"),
            (format!("{h}2023-11-16 18:15:47+25:00,5,5\n"), "a.csv:2: TIMESTAMP: `2023-11-16 18:15:47+25:00` has a bad zone offset"),
            (format!("{h}2023-11-16 18:15:47 UTC,5,5\n"), "a.csv:2: TIMESTAMP: `2023-11-16 18:15:47 UTC` has trailing text"),
            (format!("{h}{ok}\n2023-11-16 18:15:40,5,5\n"), "a.csv:4: TIMESTAMP: `2023-11-16 18:15:40` is earlier than line 2's `2023-11-16 18:15:46.6805900` (expected non-decreasing timestamps; sort the file or pass --sort)"),
            ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:47,5\n".to_string(), "a.csv:1: (header): missing column `GeneratedTokens`"),
            ("\n\ntime,ContextTokens,GeneratedTokens\n".to_string(), "a.csv:3: (header): missing column `TIMESTAMP`"),
            (h.to_string(), "a.csv: holds no requests (expected a header `TIMESTAMP,ContextTokens,GeneratedTokens`"),
            (String::new(), "a.csv: holds no requests"),
            ("\r\n\n".to_string(), "a.csv: holds no requests"),
        ];
        for (text, want) in cases {
            let got = azure_err(&text);
            assert!(
                got.starts_with(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn each_bad_burstgpt_input_names_line_and_column() {
        let h = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n";
        let cases = [
            (format!("{h}5,ChatGPT,x1,18,490,Conversation log\n"), "b.csv:2: Request tokens: `x1` is not a whole number"),
            (format!("{h}5,ChatGPT,0,18,18,Conversation log\n"), "b.csv:2: Request tokens: 0 request tokens (expected 1..=10000000"),
            (format!("{h}5,ChatGPT,-4,18,18,Conversation log\n"), "b.csv:2: Request tokens: -4 is negative"),
            (format!("{h}5,ChatGPT,4,-18,18,Conversation log\n"), "b.csv:2: Response tokens: -18 is negative"),
            (format!("{h}five,ChatGPT,4,18,22,Conversation log\n"), "b.csv:2: Timestamp: `five` is not a number of seconds"),
            (format!("{h}nan,ChatGPT,4,18,22,Conversation log\n"), "b.csv:2: Timestamp: `nan` is not a number of seconds"),
            (format!("{h}5,ChatGPT,4\n"), "b.csv:2: Response tokens: missing (the row has 3 fields"),
            (format!("{h}5,ChatGPT,4,1,5,x\n3.5,ChatGPT,4,1,5,x\n"), "b.csv:3: Timestamp: `3.5` is earlier than line 2's `5` (expected non-decreasing timestamps; sort the file or pass --sort)"),
            ("Timestamp,Model,Request tokens,Total tokens\n".to_string(), "b.csv:1: (header): missing column `Response tokens`"),
            (h.to_string(), "b.csv: holds no requests (expected a header `Timestamp,Model"),
            (String::new(), "b.csv: holds no requests"),
        ];
        for (text, want) in cases {
            let got = burst_err(&text);
            assert!(
                got.starts_with(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn the_iterator_ends_after_the_first_error() {
        let text = "Timestamp,Model,Request tokens,Response tokens\n1,m,5,5\n2,m,zz,5\n3,m,5,5\n";
        let mut it = BurstGptReader::new(text.as_bytes(), Path::new("b.csv"), true);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
        assert!(it.next().is_none());
    }

    #[test]
    fn unsorted_rows_pass_when_the_caller_sorts_but_not_before_the_first() {
        let text = "Timestamp,Request tokens,Response tokens\n1,5,5\n9,5,5\n4,5,5\n";
        let r: Vec<_> = BurstGptReader::new(text.as_bytes(), Path::new("b.csv"), false)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            r.iter().map(|r| r.arrival.0).collect::<Vec<_>>(),
            vec![0, 8_000_000_000, 3_000_000_000]
        );
        let text = "Timestamp,Request tokens,Response tokens\n4,5,5\n1,5,5\n";
        let e = BurstGptReader::new(text.as_bytes(), Path::new("b.csv"), false)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("b.csv:3: Timestamp: `1` is earlier than the first row's timestamp"),
            "{e}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: [&[u8]; 8] = [
            b"\xff\xfe\x00garbage",
            b"TIMESTAMP,ContextTokens,GeneratedTokens\n\xff,1,1\n",
            b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.\xc3\xa9,1,1\n",
            b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46+,1,1\n",
            b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-1,1,1\n\"unterminated",
            b"TIMESTAMP,ContextTokens,GeneratedTokens\n9999-12-31 23:59:59.999999999999-23:59,1,1\n0001-01-01 00:00:00,1,1\n",
            b"Timestamp,Request tokens,Response tokens\n1e400,1,1\n-1e300,1,1\n",
            b"Timestamp,Request tokens,Response tokens\n0,1,1\n99999999999999999999999,1,1\n",
        ];
        for bytes in inputs {
            let a: Vec<_> = AzureReader::new(bytes, Path::new("x"), true).collect();
            let b: Vec<_> = BurstGptReader::new(bytes, Path::new("x"), false).collect();
            assert!(
                a.iter().chain(&b).any(|r| r.is_err()),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
