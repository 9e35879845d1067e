//! Opening a trace of any supported format as a stream of requests, and
//! reading a whole trace into memory when an analysis needs it (sorting,
//! replay with an oracle).
//!
//! A trace is read once, front to back: the format is detected from the
//! first bytes, which are kept and replayed to the reader, so a pipe
//! (`<(zcat trace.gz)`, `/dev/stdin`) reads exactly like a file. The path
//! `-` is standard input (named `<stdin>` in messages).

use crate::csv::{AzureReader, BurstGptReader};
use crate::error::TraceError;
use crate::mooncake::MooncakeReader;
use moonlab_core::Request;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

/// The path that means standard input.
pub const STDIN: &str = "-";

/// How much of the input detection reads at most to find the first
/// non-blank line.
const SNIFF_BYTES: usize = 64 * 1024;

/// A supported trace format.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    /// Moonshot's JSONL with prefix hashes (`traces/data/`).
    Mooncake,
    /// Azure LLM inference trace CSV, 2023 and 2024 releases:
    /// `TIMESTAMP,ContextTokens,GeneratedTokens`. No prefix hashes.
    Azure,
    /// BurstGPT CSV: `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`.
    /// No prefix hashes.
    BurstGpt,
}

impl TraceFormat {
    pub fn name(self) -> &'static str {
        match self {
            TraceFormat::Mooncake => "mooncake",
            TraceFormat::Azure => "azure",
            TraceFormat::BurstGpt => "burstgpt",
        }
    }

    /// Whether requests carry prefix block hashes (needed for cache replay).
    pub fn has_prefix_hashes(self) -> bool {
        matches!(self, TraceFormat::Mooncake)
    }

    pub fn parse(name: &str) -> Option<TraceFormat> {
        match name.to_ascii_lowercase().as_str() {
            "mooncake" | "jsonl" => Some(TraceFormat::Mooncake),
            "azure" => Some(TraceFormat::Azure),
            "burstgpt" => Some(TraceFormat::BurstGpt),
            _ => None,
        }
    }

    /// Detects the format from the first non-blank line of `head` (the
    /// start of the input; a byte-order mark is skipped): a JSON object is
    /// Mooncake; a CSV header naming `ContextTokens` is Azure, one naming
    /// `Request tokens` is BurstGPT.
    pub fn detect(head: &[u8], path: &Path) -> Result<TraceFormat, TraceError> {
        let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        let text = String::from_utf8_lossy(head);
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let first = first.trim();
        if first.is_empty() {
            return Err(TraceError::file(
                path,
                "is empty (expected a trace: Mooncake JSONL, Azure CSV or BurstGPT CSV)",
            ));
        }
        if first.starts_with('{') {
            return Ok(TraceFormat::Mooncake);
        }
        let lower = first.to_ascii_lowercase();
        if lower.contains("contexttokens") {
            return Ok(TraceFormat::Azure);
        }
        if lower.contains("request tokens") {
            return Ok(TraceFormat::BurstGpt);
        }
        Err(TraceError::invalid(
            path,
            1,
            "(format)",
            format!(
                "not a known trace format: `{}` (expected a JSON object per line, an Azure CSV header `TIMESTAMP,ContextTokens,GeneratedTokens`, or a BurstGPT CSV header with `Request tokens`)",
                crate::error::quote(first)
            ),
        ))
    }
}

/// The name a path gets in messages: `<stdin>` for [`STDIN`].
pub fn display_name(path: &Path) -> PathBuf {
    if path.as_os_str() == STDIN {
        PathBuf::from("<stdin>")
    } else {
        path.to_path_buf()
    }
}

/// Opens the input (`-` is standard input), reads its start until the first
/// non-blank line is whole (at most [`SNIFF_BYTES`]), detects the format
/// from it unless `forced`, and returns the format with a reader that
/// replays the start and then continues with the rest.
fn open_detected(
    path: &Path,
    forced: Option<TraceFormat>,
) -> Result<(TraceFormat, Box<dyn BufRead + Send>), TraceError> {
    let name = display_name(path);
    let mut input: Box<dyn Read + Send> = if path.as_os_str() == STDIN {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).map_err(|e| TraceError::io(&name, e))?)
    };
    let mut head = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    while head.len() < SNIFF_BYTES && !holds_a_whole_nonblank_line(&head) {
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TraceError::io(&name, e)),
        };
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let format = match forced {
        Some(f) => f,
        None => TraceFormat::detect(&head, &name)?,
    };
    let rest = Cursor::new(head).chain(input);
    Ok((format, Box::new(BufReader::with_capacity(1 << 20, rest))))
}

fn holds_a_whole_nonblank_line(bytes: &[u8]) -> bool {
    bytes
        .split(|&b| b == b'\n')
        .rev()
        .skip(1)
        .any(|line| !line.iter().all(u8::is_ascii_whitespace))
}

/// How to read a trace.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    pub block_tokens: u32,
    /// Sort by arrival instead of rejecting out-of-order timestamps (needs
    /// the whole trace in memory; only [`read_all`] honours it).
    pub sort: bool,
    /// Force a format instead of detecting it.
    pub format: Option<TraceFormat>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            block_tokens: crate::DEFAULT_BLOCK_TOKENS,
            sort: false,
            format: None,
        }
    }
}

/// A streaming trace: the detected format and an iterator over requests.
pub struct TraceStream {
    pub format: TraceFormat,
    pub requests: Box<dyn Iterator<Item = Result<Request, TraceError>> + Send>,
}

/// Opens `path` (`-`: standard input) for streaming. With `check_order` false, out-of-order
/// timestamps are let through (the caller sorts).
pub fn open_trace_ordered(
    path: &Path,
    opts: &ReadOptions,
    check_order: bool,
) -> Result<TraceStream, TraceError> {
    let (format, input) = open_detected(path, opts.format)?;
    let path = &display_name(path);
    let requests: Box<dyn Iterator<Item = Result<Request, TraceError>> + Send> = match format {
        TraceFormat::Mooncake => Box::new(MooncakeReader::new(
            input,
            path,
            opts.block_tokens,
            check_order,
        )),
        TraceFormat::Azure => Box::new(AzureReader::new(input, path, check_order)),
        TraceFormat::BurstGpt => Box::new(BurstGptReader::new(input, path, check_order)),
    };
    Ok(TraceStream { format, requests })
}

/// Opens `path` for streaming, rejecting out-of-order timestamps.
pub fn open_trace(path: &Path, opts: &ReadOptions) -> Result<TraceStream, TraceError> {
    open_trace_ordered(path, opts, true)
}

/// Reads a whole trace, sorting it by arrival (stable) when `opts.sort`.
pub fn read_all(
    path: &Path,
    opts: &ReadOptions,
) -> Result<(TraceFormat, Vec<Request>), TraceError> {
    let stream = open_trace_ordered(path, opts, !opts.sort)?;
    let mut out: Vec<Request> = stream.requests.collect::<Result<_, _>>()?;
    if opts.sort {
        out.sort_by_key(|r| r.arrival);
    }
    Ok((stream.format, out))
}
