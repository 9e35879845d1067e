//! Helpers moonlab's test suites share (a dev-dependency only):
//!
//! - [`Counting`], a global allocator that counts bytes allocated, and
//!   [`bounded`], which fails a decode that allocates more than a fixed
//!   multiple of its input (a claimed length must never become a buffer);
//! - [`fuzz_cases`] and [`mutations`], the fuzz harnesses' budget and
//!   inputs (a committed corpus, mutations of it, random bytes);
//! - [`Rng`], a tiny deterministic generator for threads of a soak.

use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The system allocator, counting the bytes it hands out. A test binary
/// installs it with `#[global_allocator] static A: Counting = Counting;`.
pub struct Counting;

// SAFETY: every call goes to the system allocator unchanged.
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

/// Runs `f` on `input` (one such run at a time in the process) and panics
/// if it allocated more than `per_byte` bytes per input byte plus `base`
/// (with [`Counting`] installed; without it nothing is counted).
pub fn bounded<T>(input: &[u8], per_byte: usize, base: usize, f: impl FnOnce(&[u8]) -> T) -> T {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    ALLOCATED.store(0, Ordering::SeqCst);
    let out = f(input);
    let used = ALLOCATED.load(Ordering::SeqCst);
    let limit = per_byte * input.len() + base;
    assert!(
        used <= limit,
        "{} input bytes allocated {used} bytes (limit {limit})",
        input.len()
    );
    out
}

/// Cases per fuzz harness: `MOONLAB_FUZZ_CASES`, 256 by default (CI's
/// time stays bounded; raise it for a longer run).
pub fn fuzz_cases() -> u32 {
    std::env::var("MOONLAB_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// Fuzz inputs: the corpus as it is, mutations of it (byte flips,
/// truncations, insertions of random bytes or of the bytes in `tokens`,
/// repeated pieces), and random bytes up to `random_len`.
pub fn mutations(
    corpus: Vec<Vec<u8>>,
    tokens: &'static [u8],
    random_len: usize,
) -> impl Strategy<Value = Vec<u8>> {
    assert!(!corpus.is_empty() && !tokens.is_empty());
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
                    3 => b.insert(at, tokens[byte as usize % tokens.len()]),
                    _ => {
                        let piece: Vec<u8> = b[at..].iter().take(40).copied().collect();
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
        2 => prop::collection::vec(any::<u8>(), 0..random_len),
    ]
}

/// A small deterministic generator (xorshift64): no clock, no OS entropy.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value below `n` (> 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
