//! Fuzz harness of the trace readers (Mooncake JSONL, Azure and BurstGPT
//! CSV), on the stable toolchain (proptest): the committed corpus
//! (`tests/fuzz-corpus/`: lines of the shipped traces and edge cases), then
//! mutations of it and random bytes, `MOONLAB_FUZZ_CASES` cases per reader
//! (256 by default: CI's time stays bounded). Checked: every input ends in
//! requests or one error naming the file and line, never a panic; a reader
//! stops at its first error; no allocation beyond a fixed multiple of the
//! input (a counting allocator: a claimed length never becomes a buffer).

use moonlab_traces::csv::{AzureReader, BurstGptReader};
use moonlab_traces::mooncake::MooncakeReader;
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static GUARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCATED.fetch_add(n, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn cases() -> u32 {
    std::env::var("MOONLAB_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

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

fn inputs(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = corpus.len();
    let seeds = corpus.clone();
    let mutated = (
        0..n,
        prop::collection::vec((any::<u16>(), any::<u8>(), 0..5u8), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut b = seeds[i].clone();
            for (at, byte, kind) in edits {
                let at = if b.is_empty() {
                    0
                } else {
                    at as usize % (b.len() + 1)
                };
                match kind {
                    0 if at < b.len() => b[at] ^= byte | 1,
                    1 => b.truncate(at),
                    2 => b.insert(at, byte),
                    // Characters a parser cares about.
                    3 => b.insert(at, b"{}[],:\"\n9-.e"[byte as usize % 12]),
                    _ => {
                        let piece = b[at..].iter().take(40).copied().collect::<Vec<u8>>();
                        b.extend_from_slice(&piece);
                    }
                }
            }
            b
        });
    let whole = (0..n).prop_map(move |i| corpus[i].clone());
    prop_oneof![
        1 => whole,
        6 => mutated,
        2 => prop::collection::vec(any::<u8>(), 0..1024),
    ]
}

/// Reads `bytes` to the end with `read`; at most one error, and it is the
/// last item; allocation bounded by the input.
fn check<I, F>(bytes: &[u8], read: F)
where
    F: FnOnce(std::io::Cursor<Vec<u8>>, &Path) -> I,
    I: Iterator<Item = Result<moonlab_core::Request, moonlab_traces::TraceError>>,
{
    let _one = GUARD.lock().unwrap_or_else(|e| e.into_inner());
    let path = Path::new("fuzz.input");
    let input = std::io::Cursor::new(bytes.to_vec());
    ALLOCATED.store(0, Ordering::SeqCst);
    let mut errors = 0;
    let mut after_error = 0;
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
    let used = ALLOCATED.load(Ordering::SeqCst);
    // Blocks of a line are at most one per byte; requests hold them as
    // u64s: 64 bytes of allocation per input byte, plus a reader's buffers.
    let limit = 64 * bytes.len() + (256 << 10);
    assert!(
        used <= limit,
        "{} input bytes allocated {used}",
        bytes.len()
    );
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
    proptest!(ProptestConfig::with_cases(cases()), |(b in inputs(corpus.clone()), bt in 1u32..2048)| {
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
    proptest!(ProptestConfig::with_cases(cases()), |(b in inputs(corpus.clone()))| {
        check(&b, |i, p| AzureReader::new(i, p, true));
        check(&b, |i, p| BurstGptReader::new(i, p, true));
    });
}
