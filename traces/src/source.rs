//! Opening a trace file of any supported format as a stream of requests,
//! and reading a whole trace into memory when an analysis needs it (sorting,
//! replay with an oracle).

use crate::csv::{AzureReader, BurstGptReader};
use crate::error::TraceError;
use crate::mooncake::MooncakeReader;
use moonlab_core::Request;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

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

    /// Detects the format from the first non-blank line: a JSON object is
    /// Mooncake; a CSV header naming `ContextTokens` is Azure, one naming
    /// `Request tokens` is BurstGPT.
    pub fn detect(path: &Path) -> Result<TraceFormat, TraceError> {
        let file = File::open(path).map_err(|e| TraceError::io(path, e))?;
        let mut head = Vec::with_capacity(4096);
        file.take(64 * 1024)
            .read_to_end(&mut head)
            .map_err(|e| TraceError::io(path, e))?;
        let text = String::from_utf8_lossy(&head);
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let first = first.trim_start_matches('\u{feff}').trim();
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
            "not a known trace format (expected a JSON object per line, an Azure CSV header `TIMESTAMP,ContextTokens,GeneratedTokens`, or a BurstGPT CSV header with `Request tokens`)",
        ))
    }
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

/// Opens `path` for streaming. With `check_order` false, out-of-order
/// timestamps are let through (the caller sorts).
pub fn open_trace_ordered(
    path: &Path,
    opts: &ReadOptions,
    check_order: bool,
) -> Result<TraceStream, TraceError> {
    let format = match opts.format {
        Some(f) => f,
        None => TraceFormat::detect(path)?,
    };
    let file = File::open(path).map_err(|e| TraceError::io(path, e))?;
    let input: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, file));
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
