//! Fuzz harness of the trace readers (Mooncake JSONL, Azure and BurstGPT
//! CSV), on the stable toolchain (proptest): the committed corpus
//! (`tests/fuzz-corpus/`: lines of the shipped traces and edge cases), then
//! mutations of it and random bytes, `MOONLAB_FUZZ_CASES` cases per reader
//! (256 by default: CI's time stays bounded). Checked: every input ends in
//! requests or one error naming the file and line, never a panic; a reader
//! stops at its first error; no allocation beyond a fixed multiple of the
//! input (a counting allocator: a claimed length never becomes a buffer).

use moonlab_testkit::{fuzz_cases as cases, mutations, Counting};
use moonlab_traces::csv::{AzureReader, BurstGptReader};
use moonlab_traces::mooncake::MooncakeReader;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

#[global_allocator]
static A: Counting = Counting;

fn corpus(ext: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .{ext} files in {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Reads `bytes` to the end with `read`; at most one error, and it is the
/// last item; allocation bounded by the input.
fn check<I, F>(bytes: &[u8], read: F)
where
    F: FnOnce(std::io::Cursor<Vec<u8>>, &Path) -> I,
    I: Iterator<Item = Result<moonlab_core::Request, moonlab_traces::TraceError>>,
{
    // Blocks of a line are at most one per byte; requests hold them as
    // u64s: 64 bytes of allocation per input byte, plus a reader's buffers.
    let (errors, after_error) = moonlab_testkit::bounded(bytes, 64, 256 << 10, |bytes| {
        let path = Path::new("fuzz.input");
        let input = std::io::Cursor::new(bytes.to_vec());
        let (mut errors, mut after_error) = (0, 0);
        for item in read(input, path).take(100_000) {
            if errors > 0 {
                after_error += 1;
            }
            if let Err(e) = item {
                errors += 1;
                let msg = e.to_string();
                assert!(
                    msg.contains("fuzz.input"),
                    "an error without its file: {msg}"
                );
            }
        }
        (errors, after_error)
    });
    assert!(
        errors <= 1 && after_error == 0,
        "reading went on after an error"
    );
}

#[test]
fn the_mooncake_reader_turns_any_input_into_requests_or_one_error() {
    let corpus = corpus("jsonl");
    for c in &corpus {
        check(c, |i, p| MooncakeReader::new(i, p, 512, true));
    }
    proptest!(ProptestConfig::with_cases(cases()), |(b in mutations(corpus.clone(), b"{}[],:\"\n9-.e", 1024), bt in 1u32..2048)| {
        check(&b, |i, p| MooncakeReader::new(i, p, bt, true));
    });
}

#[test]
fn the_csv_readers_turn_any_input_into_requests_or_one_error() {
    let corpus = corpus("csv");
    for c in &corpus {
        check(c, |i, p| AzureReader::new(i, p, true));
        check(c, |i, p| BurstGptReader::new(i, p, true));
    }
    proptest!(ProptestConfig::with_cases(cases()), |(b in mutations(corpus.clone(), b"{}[],:\"\n9-.e", 1024))| {
        check(&b, |i, p| AzureReader::new(i, p, true));
        check(&b, |i, p| BurstGptReader::new(i, p, true));
    });
}
