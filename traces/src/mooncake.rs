//! The Mooncake trace format: JSON Lines, one request per line, as released
//! with the paper (`traces/data/SOURCE.md`):
//!
//! ```text
//! {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, 2353]}
//! ```
//!
//! `timestamp` is the arrival in milliseconds from the start of the trace
//! (whole numbers upstream; fractions are accepted and kept to the
//! nanosecond), `hash_ids` has one prefix-chained key per `block_tokens`
//! (512) tokens of the prompt. The reader checks, line by line: valid JSON;
//! the four fields present with the right types; `input_length` in
//! 1..=[`MAX_INPUT_TOKENS`]; `output_length` in 1..=[`MAX_OUTPUT_TOKENS`];
//! `len(hash_ids) == ceil(input_length / block_tokens)`; timestamps
//! non-decreasing (unless the caller sorts). Blank lines are skipped; other
//! keys are ignored. The writer emits the same format.

use crate::error::quote;
use crate::error::TraceError;
use crate::lines::Lines;
use crate::{MAX_ARRIVAL_MS, MAX_INPUT_TOKENS, MAX_OUTPUT_TOKENS};
use moonlab_core::types::blocks_for_tokens;
use moonlab_core::{BlockKey, Nanos, Request};
use serde::Deserialize;
use std::io::{BufRead, Write};
use std::path::Path;

#[derive(Deserialize)]
struct RawLine {
    timestamp: Option<f64>,
    input_length: Option<i64>,
    output_length: Option<i64>,
    hash_ids: Option<Vec<u64>>,
}

/// Streams requests out of a Mooncake JSONL file.
pub struct MooncakeReader<R> {
    lines: Lines<R>,
    parser: LineParser,
    seen_any: bool,
    done: bool,
}

/// What parsing one line needs besides the line: the block size and the
/// order check's memory.
struct LineParser {
    block_tokens: u32,
    check_order: bool,
    last_arrival: Option<(Nanos, u64)>,
}

impl<R: BufRead> MooncakeReader<R> {
    /// `check_order`: reject a timestamp earlier than the previous one
    /// (callers that sort afterwards pass false).
    pub fn new(input: R, path: &Path, block_tokens: u32, check_order: bool) -> Self {
        MooncakeReader {
            lines: Lines::new(input, path),
            parser: LineParser {
                block_tokens,
                check_order,
                last_arrival: None,
            },
            seen_any: false,
            done: false,
        }
    }
}

impl LineParser {
    fn parse(&mut self, path: &Path, line: u64, text: &str) -> Result<Request, TraceError> {
        let text = text.trim();
        if !text.starts_with('{') {
            return Err(TraceError::invalid(
                path,
                line,
                "(line)",
                "expected a JSON object",
            ));
        }
        let raw: RawLine = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(e) => return Err(explain_json_error(path, line, text, e)),
        };
        let missing = |field: &str, what: &str| {
            TraceError::invalid(path, line, field, format!("missing (expected {what})"))
        };
        let ts = raw
            .timestamp
            .ok_or_else(|| missing("timestamp", "arrival in milliseconds"))?;
        if !ts.is_finite() || ts < 0.0 {
            return Err(TraceError::invalid(
                path,
                line,
                "timestamp",
                format!("{ts} is not a non-negative number of milliseconds"),
            ));
        }
        if ts > MAX_ARRIVAL_MS as f64 {
            return Err(TraceError::invalid(
                path,
                line,
                "timestamp",
                format!("{ts} ms is beyond the latest representable arrival (expected at most {MAX_ARRIVAL_MS} ms, about 317 years)"),
            ));
        }
        let input = raw
            .input_length
            .ok_or_else(|| missing("input_length", "prompt tokens, a positive integer"))?;
        if input < 1 || input as u64 > MAX_INPUT_TOKENS {
            return Err(TraceError::invalid(
                path,
                line,
                "input_length",
                format!("{input} is out of range (expected 1..={MAX_INPUT_TOKENS} tokens)"),
            ));
        }
        let output = raw
            .output_length
            .ok_or_else(|| missing("output_length", "generated tokens, a positive integer"))?;
        if output < 1 || output as u64 > MAX_OUTPUT_TOKENS {
            return Err(TraceError::invalid(
                path,
                line,
                "output_length",
                format!("{output} is out of range (expected 1..={MAX_OUTPUT_TOKENS} tokens)"),
            ));
        }
        let hashes = raw
            .hash_ids
            .ok_or_else(|| missing("hash_ids", "an array of block hashes"))?;
        let want = blocks_for_tokens(input as u64, self.block_tokens);
        if hashes.len() as u64 != want {
            return Err(TraceError::invalid(
                path,
                line,
                "hash_ids",
                format!(
                    "has {} ids but input_length {input} needs ceil({input} / {}) = {want}",
                    hashes.len(),
                    self.block_tokens
                ),
            ));
        }
        let arrival = Nanos((ts * 1e6).round() as u64);
        if self.check_order {
            if let Some((prev, prev_line)) = self.last_arrival {
                if arrival < prev {
                    return Err(TraceError::invalid(
                        path,
                        line,
                        "timestamp",
                        format!(
                            "{ts} is earlier than line {prev_line}'s {} (expected non-decreasing timestamps; sort the file or pass --sort)",
                            format_ms(prev)
                        ),
                    ));
                }
            }
        }
        self.last_arrival = Some((arrival, line));
        Ok(Request {
            arrival,
            input_tokens: input as u32,
            output_tokens: output as u32,
            blocks: hashes.into_iter().map(BlockKey).collect(),
        })
    }
}

/// Turns a serde_json failure into an error that names the field when the
/// line is valid JSON with a wrongly typed field.
fn explain_json_error(path: &Path, line: u64, text: &str, e: serde_json::Error) -> TraceError {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let Some(obj) = value.as_object() else {
            return TraceError::invalid(path, line, "(line)", "expected a JSON object");
        };
        let expect = [
            ("timestamp", "a non-negative number of milliseconds"),
            ("input_length", "a positive integer"),
            ("output_length", "a positive integer"),
            ("hash_ids", "an array of non-negative integers"),
        ];
        for (field, what) in expect {
            if let Some(v) = obj.get(field) {
                let ok = match field {
                    "timestamp" => v.is_number(),
                    "hash_ids" => v.as_array().is_some_and(|a| a.iter().all(|x| x.is_u64())),
                    _ => v.is_i64(),
                };
                if !ok {
                    let v = quote(&v.to_string());
                    return TraceError::invalid(path, line, field, format!("{v} is not {what}"));
                }
            }
        }
    }
    TraceError::invalid(path, line, "(line)", format!("not valid JSON: {e}"))
}

fn format_ms(t: Nanos) -> String {
    let ms = t.0 as f64 / 1e6;
    if ms.fract() == 0.0 {
        format!("{}", ms as u64)
    } else {
        format!("{ms}")
    }
}

impl<R: BufRead> Iterator for MooncakeReader<R> {
    type Item = Result<Request, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = match self.lines.next_line("a JSON object") {
            Ok(Some(line)) => {
                self.seen_any = true;
                self.parser.parse(line.path, line.no, line.text)
            }
            Ok(None) => {
                self.done = true;
                if self.seen_any {
                    return None;
                }
                Err(TraceError::file(
                    &self.lines.path,
                    "holds no requests (expected one JSON object per line)",
                ))
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

/// Writes requests in the Mooncake format. Timestamps are written as whole
/// milliseconds when they are whole, otherwise with nanosecond precision.
pub struct MooncakeWriter<W: Write> {
    out: W,
    line: String,
}

impl<W: Write> MooncakeWriter<W> {
    pub fn new(out: W) -> Self {
        MooncakeWriter {
            out,
            line: String::with_capacity(256),
        }
    }

    pub fn write(&mut self, r: &Request) -> std::io::Result<()> {
        use std::fmt::Write as _;
        self.line.clear();
        let ns = r.arrival.0;
        let _ = if ns.is_multiple_of(1_000_000) {
            write!(self.line, "{{\"timestamp\": {}", ns / 1_000_000)
        } else {
            write!(
                self.line,
                "{{\"timestamp\": {}.{:06}",
                ns / 1_000_000,
                ns % 1_000_000
            )
        };
        let _ = write!(
            self.line,
            ", \"input_length\": {}, \"output_length\": {}, \"hash_ids\": [",
            r.input_tokens, r.output_tokens
        );
        for (i, b) in r.blocks.iter().enumerate() {
            if i > 0 {
                self.line.push_str(", ");
            }
            let _ = write!(self.line, "{}", b.0);
        }
        self.line.push_str("]}\n");
        self.out.write_all(self.line.as_bytes())
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Request>, TraceError> {
        MooncakeReader::new(text.as_bytes(), Path::new("t.jsonl"), 512, true).collect()
    }

    fn err(text: &str) -> String {
        read(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_the_released_format() {
        let r = read(
            "{\"timestamp\": 27482, \"input_length\": 1100, \"output_length\": 52, \"hash_ids\": [46, 47, 2353]}\n\n",
        )
        .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].arrival, Nanos::from_millis(27482));
        assert_eq!(
            r[0].blocks,
            vec![BlockKey(46), BlockKey(47), BlockKey(2353)]
        );
    }

    #[test]
    fn each_bad_input_names_line_and_field() {
        let ok =
            "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}\n";
        let cases = [
            ("{\"timestamp\": 0, \"input_length\": 10", "t.jsonl:1: (line): not valid JSON"),
            ("{\"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}", "t.jsonl:1: timestamp: missing"),
            ("{\"timestamp\": 0, \"output_length\": 5, \"hash_ids\": [1]}", "t.jsonl:1: input_length: missing"),
            ("{\"timestamp\": 0, \"input_length\": 10, \"hash_ids\": [1]}", "t.jsonl:1: output_length: missing"),
            ("{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5}", "t.jsonl:1: hash_ids: missing"),
            ("{\"timestamp\": 0, \"input_length\": -3, \"output_length\": 5, \"hash_ids\": []}", "t.jsonl:1: input_length: -3 is out of range"),
            ("{\"timestamp\": 0, \"input_length\": 99999999999, \"output_length\": 5, \"hash_ids\": [1]}", "t.jsonl:1: input_length: 99999999999 is out of range"),
            ("{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 0, \"hash_ids\": [1]}", "t.jsonl:1: output_length: 0 is out of range"),
            ("{\"timestamp\": -1, \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}", "t.jsonl:1: timestamp: -1 is not a non-negative"),
            ("{\"timestamp\": \"x\", \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}", "t.jsonl:1: timestamp: \"x\" is not"),
            ("{\"timestamp\": 0, \"input_length\": 10.5, \"output_length\": 5, \"hash_ids\": [1]}", "t.jsonl:1: input_length: 10.5 is not a positive integer"),
            ("{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [-1]}", "t.jsonl:1: hash_ids: [-1] is not"),
            ("{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [1]}", "t.jsonl:1: hash_ids: has 1 ids but input_length 600 needs ceil(600 / 512) = 2"),
            ("[1, 2]", "t.jsonl:1: (line): expected a JSON object"),
            ("[0, 10, 5, [1]]", "t.jsonl:1: (line): expected a JSON object"),
        ];
        for (line, want) in cases {
            let got = err(line);
            assert!(
                got.starts_with(want),
                "for {line}\n got: {got}\nwant: {want}"
            );
        }
        let later = ok.replace("\"timestamp\": 0", "\"timestamp\": 7");
        let unsorted = format!("{ok}{later}{ok}");
        let got = err(&unsorted);
        assert!(
            got.starts_with("t.jsonl:3: timestamp: 0 is earlier than line 2's 7"),
            "{got}"
        );
        let beyond = ok.replace("\"timestamp\": 0", "\"timestamp\": 1e14");
        assert!(
            err(&beyond).starts_with("t.jsonl:1: timestamp: 100000000000000 ms is beyond the latest representable arrival"),
            "{}",
            err(&beyond)
        );
        let huge_field = format!(
            "{{\"timestamp\": \"{}\", \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}}",
            "9".repeat(10_000_000)
        );
        let got = err(&huge_field);
        assert!(
            got.len() < 300 && got.contains("bytes)"),
            "{}",
            &got[..300.min(got.len())]
        );
        assert!(err("").contains("holds no requests"));
        assert!(err("\n\n").contains("holds no requests"));
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_bad_utf8_names_its_line() {
        let ok =
            "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1]}\n";
        let with_bom = format!("\u{feff}{ok}{ok}");
        assert_eq!(read(&with_bom).unwrap().len(), 2);
        let mut bytes = format!("{ok}\n{ok}").into_bytes();
        bytes.extend_from_slice(b"{\"timestamp\": 9\xff}\n");
        let e: Result<Vec<_>, _> =
            MooncakeReader::new(&bytes[..], Path::new("t.jsonl"), 512, true).collect();
        assert_eq!(
            e.unwrap_err().to_string(),
            "t.jsonl:4: (line): not valid UTF-8 at byte 16 of the line (expected a JSON object)"
        );
    }

    #[test]
    fn unsorted_is_accepted_when_the_caller_sorts() {
        let text = "{\"timestamp\": 5, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n{\"timestamp\": 1, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [2]}\n";
        let r: Result<Vec<_>, _> =
            MooncakeReader::new(text.as_bytes(), Path::new("t"), 512, false).collect();
        assert_eq!(r.unwrap().len(), 2);
    }

    #[test]
    fn writer_round_trips() {
        let reqs = vec![
            Request {
                arrival: Nanos::from_millis(3),
                input_tokens: 513,
                output_tokens: 9,
                blocks: vec![BlockKey(0), BlockKey(u64::MAX)],
            },
            Request {
                arrival: Nanos(3_500_001),
                input_tokens: 1,
                output_tokens: 1,
                blocks: vec![BlockKey(7)],
            },
        ];
        let mut w = MooncakeWriter::new(Vec::new());
        for r in &reqs {
            w.write(r).unwrap();
        }
        let bytes = w.finish().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("{\"timestamp\": 3, \"input_length\": 513"));
        assert_eq!(read(&text).unwrap(), reqs);
    }
}
