//! A small text language of store scenarios, so that the rules of a store
//! are written once and checked against every implementation: a
//! [`Segment`] here, the real master later. A scenario is a list of lines:
//!
//! ```text
//! # comments start with '#'
//! store capacity=16KiB high=0.9 ratio=0.05 lease=10s soft_pin=30min put_timeout=600s preempt_after=30s policy=lru
//! put a 1KiB                 # PutStart + PutEnd (add `soft` to soft-pin it)
//! start b 1KiB               # PutStart only: b is written but not visible
//! end b                      # PutEnd
//! revoke b                   # PutRevoke
//! read a                     # a read: grants a lease, keeps its token
//! pin a / unpin a            # in use by a transfer
//! remove a [force]
//! advance 5s                 # the clock
//! evict                      # one eviction run: by the watermarks, and
//!                            # room for a put that found none since the last

//! expect a kept | missing | not-ready
//! expect lease a valid | expired   # the token of a's last read, now
//! expect used 3KiB | expect count 3
//! ```
//!
//! An operation must succeed unless it ends with `-> ERROR`, the error the
//! store must give: `exists`, `no-space`, `not-found`, `not-ready`,
//! `leased`, `busy`, `expired`. Keys may carry a range, `obj{0..9}`, which
//! repeats the line for obj0 … obj9. Errors name the line.
//!
//! The `store` line configures the store under test; [`run`] builds it with
//! a factory, so the same scenario files run against any [`ObjectStore`].

use super::segment::{
    CommitError, LeaseToken, Pin, RemoveError, Reservation, ReserveError, Segment,
};
use super::{SegmentConfig, Watermarks};
use crate::eviction::{Access, NeedsFuture, PolicyKind};
use crate::lease::{LeaseKind, LeaseParams, LeasePolicy};
use crate::types::{BlockKey, Nanos};
use std::collections::HashMap;

/// The errors a store operation may give, by their scenario names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("exists")]
    Exists,
    #[error("no-space")]
    NoSpace,
    #[error("not-found")]
    NotFound,
    #[error("not-ready")]
    NotReady,
    #[error("leased")]
    Leased,
    #[error("busy")]
    Busy,
    #[error("expired")]
    Expired,
}

impl StoreError {
    const ALL: [StoreError; 7] = [
        StoreError::Exists,
        StoreError::NoSpace,
        StoreError::NotFound,
        StoreError::NotReady,
        StoreError::Leased,
        StoreError::Busy,
        StoreError::Expired,
    ];
    fn parse(s: &str) -> Option<StoreError> {
        Self::ALL.into_iter().find(|e| e.to_string() == s)
    }
}

/// The state of a key as a scenario checks it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Committed and readable.
    Kept,
    /// Not in the store (never written, evicted, removed, revoked).
    Missing,
    /// Written but not committed.
    NotReady,
}

/// The store's configuration, from a scenario's `store` line.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreSetup {
    pub capacity_bytes: u64,
    pub watermarks: Watermarks,
    pub lease: Nanos,
    pub soft_pin: Nanos,
    pub put_timeout: Nanos,
    pub preempt_after: Nanos,
    pub policy: PolicyKind,
}

impl Default for StoreSetup {
    fn default() -> Self {
        let l = LeaseParams::default();
        StoreSetup {
            capacity_bytes: 16 << 20,
            watermarks: Watermarks::MOONCAKE,
            lease: l.lease,
            soft_pin: l.soft_pin,
            put_timeout: Nanos::from_secs(600),
            preempt_after: Nanos::from_secs(30),
            policy: PolicyKind::Lru,
        }
    }
}

/// What a store offers to a scenario. Every call carries the scenario's
/// clock; a store that evicts in the background evicts in [`ObjectStore::evict`].
pub trait ObjectStore {
    fn put_start(
        &mut self,
        key: &str,
        bytes: u64,
        soft_pin: bool,
        now: Nanos,
    ) -> Result<(), StoreError>;
    fn put_end(&mut self, key: &str, now: Nanos) -> Result<(), StoreError>;
    fn put_revoke(&mut self, key: &str, now: Nanos) -> Result<(), StoreError>;
    /// A read: grants a lease; the store keeps the token for `lease_valid`.
    fn read(&mut self, key: &str, now: Nanos) -> Result<(), StoreError>;
    /// True if the token of `key`'s last read is still covered at `now`.
    fn lease_valid(&self, key: &str, now: Nanos) -> bool;
    fn pin(&mut self, key: &str, now: Nanos) -> Result<(), StoreError>;
    fn unpin(&mut self, key: &str, now: Nanos) -> Result<(), StoreError>;
    fn remove(&mut self, key: &str, force: bool, now: Nanos) -> Result<(), StoreError>;
    fn evict(&mut self, now: Nanos);
    fn state(&self, key: &str, now: Nanos) -> KeyState;
    /// Bytes in use at `now` (reservations that timed out are gone).
    fn used_bytes(&mut self, now: Nanos) -> u64;
    fn count(&mut self, now: Nanos) -> u64;
}

/// A scenario failure, naming the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {message}")]
pub struct ScenarioError {
    pub source_name: String,
    pub line: usize,
    pub message: String,
}

/// The largest size a scenario may name: 1 PiB.
const MAX_SIZE: u64 = 1 << 50;

/// A size as scenarios and the real backend's flags write it: `16KiB`,
/// `3MB`, `7` (bytes); at most 1 PiB.
pub fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v <= MAX_SIZE)
}

/// A duration such as `10s`, `1.5ms`, `30min`.
pub fn parse_duration(s: &str) -> Option<Nanos> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let ns_per: f64 = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "min" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    let v = n * ns_per;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then(|| Nanos(v.round() as u64))
}

fn parse_setup(words: &[&str]) -> Result<StoreSetup, String> {
    let mut s = StoreSetup::default();
    let mut ratio = None;
    let mut low = None;
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("`{w}`: expected key=value"))?;
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(|| format!("{k}: `{v}` is not a fraction in [0, 1]"))
        };
        let dur = |v: &str| {
            parse_duration(v).ok_or_else(|| format!("{k}: `{v}` is not a duration such as 10s"))
        };
        match k {
            "capacity" => {
                s.capacity_bytes = parse_size(v).ok_or_else(|| format!("capacity: `{v}` is not a size such as 16KiB"))?
            }
            "high" => s.watermarks.high = num(v)?,
            "low" => low = Some(num(v)?),
            "ratio" => ratio = Some(num(v)?),
            "lease" => s.lease = dur(v)?,
            "soft_pin" => s.soft_pin = dur(v)?,
            "put_timeout" => s.put_timeout = dur(v)?,
            "preempt_after" => s.preempt_after = dur(v)?,
            "policy" => s.policy = PolicyKind::parse(v).map_err(|e| e.to_string())?,
            _ => {
                return Err(format!(
                    "unknown store key `{k}` (expected capacity, high, low, ratio, lease, soft_pin, put_timeout, preempt_after, policy)"
                ))
            }
        }
    }
    s.watermarks.low = match (low, ratio) {
        (Some(l), None) => l,
        (None, Some(r)) => Watermarks::from_ratio(s.watermarks.high, r).low,
        (None, None) => s.watermarks.low.min(s.watermarks.high),
        (Some(_), Some(_)) => return Err("give low or ratio, not both".into()),
    };
    if !s.watermarks.is_valid() {
        return Err("expected 0 <= low <= high <= 1".into());
    }
    if s.policy.needs_future() {
        // A store serves whatever comes: it has no trace to look ahead in.
        return Err(NeedsFuture {
            policy: s.policy.name(),
            context: "a store has no trace to look ahead in".into(),
        }
        .to_string());
    }
    Ok(s)
}

/// Expands `name{a..b}` into name{a} … name{b}.
fn expand(key: &str) -> Result<Vec<String>, String> {
    let Some(open) = key.find('{') else {
        return Ok(vec![key.to_string()]);
    };
    let close = key
        .find('}')
        .filter(|&c| c > open)
        .ok_or_else(|| format!("`{key}`: expected name{{a..b}}"))?;
    let (a, b) = key[open + 1..close]
        .split_once("..")
        .ok_or_else(|| format!("`{key}`: expected name{{a..b}}"))?;
    let (a, b): (u64, u64) = match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) if a <= b && b - a < 1_000_000 => (a, b),
        _ => return Err(format!("`{key}`: expected a range a..b with a <= b")),
    };
    Ok((a..=b)
        .map(|i| format!("{}{i}{}", &key[..open], &key[close + 1..]))
        .collect())
}

/// Runs the scenario `text` (named `source_name` in errors) against a store
/// built by `make` from its `store` line.
pub fn run(
    text: &str,
    source_name: &str,
    make: &mut dyn FnMut(&StoreSetup) -> Box<dyn ObjectStore>,
) -> Result<(), ScenarioError> {
    let mut store: Option<Box<dyn ObjectStore>> = None;
    let mut now = Nanos::ZERO;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let fail = |message: String| ScenarioError {
            source_name: source_name.to_string(),
            line,
            message,
        };
        let body = raw.split('#').next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        let (body, want_err) = match body.split_once("->") {
            Some((b, e)) => {
                let e = e.trim();
                let err = StoreError::parse(e).ok_or_else(|| {
                    fail(format!(
                        "`-> {e}`: unknown error (expected exists, no-space, not-found, not-ready, leased, busy, expired)"
                    ))
                })?;
                (b.trim(), Some(err))
            }
            None => (body, None),
        };
        let words: Vec<&str> = body.split_whitespace().collect();
        if words.is_empty() {
            return Err(fail("expected a command before `->`".into()));
        }
        if words[0] == "store" {
            if store.is_some() {
                return Err(fail("a second `store` line".into()));
            }
            let setup = parse_setup(&words[1..]).map_err(fail)?;
            store = Some(make(&setup));
            continue;
        }
        let Some(st) = store.as_mut() else {
            return Err(fail("the first command must be `store ...`".into()));
        };
        let arg = |n: usize| {
            words
                .get(n)
                .copied()
                .ok_or_else(|| fail(format!("`{}`: missing argument {n}", words[0])))
        };
        let check = |result: Result<(), StoreError>, what: &str| -> Result<(), ScenarioError> {
            match (result, want_err) {
                (Ok(()), None) => Ok(()),
                (Err(e), Some(w)) if e == w => Ok(()),
                (Ok(()), Some(w)) => Err(fail(format!("{what}: succeeded, expected `{w}`"))),
                (Err(e), _) => Err(fail(format!(
                    "{what}: failed with `{e}`, expected {}",
                    want_err.map_or("success".to_string(), |w| format!("`{w}`"))
                ))),
            }
        };
        match words[0] {
            "advance" => {
                let d = parse_duration(arg(1)?).ok_or_else(|| fail("advance: expected a duration such as 5s".into()))?;
                now = now.saturating_add(d);
            }
            "evict" => st.evict(now),
            "put" | "start" => {
                let bytes = parse_size(arg(2)?).ok_or_else(|| fail(format!("{}: expected a size such as 1KiB", words[0])))?;
                let soft = match words.get(3) {
                    None => false,
                    Some(&"soft") => true,
                    Some(w) => return Err(fail(format!("`{w}`: expected `soft` or nothing"))),
                };
                for key in expand(arg(1)?).map_err(fail)? {
                    let r = st.put_start(&key, bytes, soft, now);
                    let r = if words[0] == "put" {
                        r.and_then(|()| st.put_end(&key, now))
                    } else {
                        r
                    };
                    check(r, &format!("{} {key}", words[0]))?;
                }
            }
            "end" | "revoke" | "read" | "pin" | "unpin" => {
                for key in expand(arg(1)?).map_err(fail)? {
                    let r = match words[0] {
                        "end" => st.put_end(&key, now),
                        "revoke" => st.put_revoke(&key, now),
                        "read" => st.read(&key, now),
                        "pin" => st.pin(&key, now),
                        _ => st.unpin(&key, now),
                    };
                    check(r, &format!("{} {key}", words[0]))?;
                }
            }
            "remove" => {
                let force = match words.get(2) {
                    None => false,
                    Some(&"force") => true,
                    Some(w) => return Err(fail(format!("`{w}`: expected `force` or nothing"))),
                };
                for key in expand(arg(1)?).map_err(fail)? {
                    let r = st.remove(&key, force, now);
                    check(r, &format!("remove {key}"))?;
                }
            }
            "expect" => {
                if want_err.is_some() {
                    return Err(fail("`expect` takes no `->`".into()));
                }
                match (arg(1)?, words.get(2).copied()) {
                    ("used", Some(v)) => {
                        let want = parse_size(v).ok_or_else(|| fail(format!("`{v}`: expected a size")))?;
                        let got = st.used_bytes(now);
                        if got != want {
                            return Err(fail(format!("used: {got} bytes, expected {want}")));
                        }
                    }
                    ("count", Some(v)) => {
                        let want: u64 = v.parse().map_err(|_| fail(format!("`{v}`: expected a number")))?;
                        let got = st.count(now);
                        if got != want {
                            return Err(fail(format!("count: {got} objects, expected {want}")));
                        }
                    }
                    ("lease", Some(key)) => {
                        let want = match words.get(3) {
                            Some(&"valid") => true,
                            Some(&"expired") => false,
                            _ => return Err(fail("expect lease KEY valid|expired".into())),
                        };
                        for key in expand(key).map_err(fail)? {
                            let got = st.lease_valid(&key, now);
                            if got != want {
                                return Err(fail(format!(
                                    "lease of {key}: {}, expected {}",
                                    if got { "valid" } else { "expired" },
                                    if want { "valid" } else { "expired" }
                                )));
                            }
                        }
                    }
                    (key, Some(state)) => {
                        let want = match state {
                            "kept" => KeyState::Kept,
                            "missing" | "evicted" => KeyState::Missing,
                            "not-ready" => KeyState::NotReady,
                            _ => return Err(fail(format!("`{state}`: expected kept, missing, evicted or not-ready"))),
                        };
                        for key in expand(key).map_err(fail)? {
                            let got = st.state(&key, now);
                            if got != want {
                                return Err(fail(format!("{key}: {got:?}, expected {want:?}")));
                            }
                        }
                    }
                    _ => return Err(fail("expect: expected `expect KEY STATE`, `expect used SIZE`, `expect count N` or `expect lease KEY valid|expired`".into())),
                }
            }
            other => {
                return Err(fail(format!(
                    "unknown command `{other}` (expected put, start, end, revoke, read, pin, unpin, remove, advance, evict, expect)"
                )))
            }
        }
    }
    Ok(())
}

/// A [`Segment`] as an [`ObjectStore`]: names map to keys; reservations,
/// pins and lease tokens are held by name, as a client would hold them.
pub struct SegmentStore {
    segment: Segment,
    leases: Box<dyn LeasePolicy>,
    soft_pin: Nanos,
    names: HashMap<String, BlockKey>,
    reservations: HashMap<BlockKey, (Reservation, bool)>,
    pins: HashMap<BlockKey, Vec<Pin>>,
    tokens: HashMap<BlockKey, LeaseToken>,
    /// Bytes a put could not find since the last eviction run: the next
    /// run makes room for them even below the high watermark (upstream's
    /// `need_mem_eviction_`).
    pending_room: u64,
}

impl SegmentStore {
    pub fn new(setup: &StoreSetup) -> SegmentStore {
        let leases = LeaseKind::Mooncake.build(LeaseParams {
            lease: setup.lease,
            soft_pin: setup.soft_pin,
            hot_after_reads: 0,
        });
        SegmentStore {
            segment: Segment::new(
                setup.policy.build(None),
                SegmentConfig {
                    capacity_bytes: Some(setup.capacity_bytes),
                    watermarks: setup.watermarks,
                    put_timeout: setup.put_timeout,
                    preempt_after: setup.preempt_after,
                },
            ),
            leases,
            soft_pin: setup.soft_pin,
            names: HashMap::new(),
            reservations: HashMap::new(),
            pins: HashMap::new(),
            tokens: HashMap::new(),
            pending_room: 0,
        }
    }

    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    fn key(&mut self, name: &str) -> BlockKey {
        let n = self.names.len() as u64;
        *self.names.entry(name.to_string()).or_insert(BlockKey(n))
    }

    fn known(&self, name: &str) -> Option<BlockKey> {
        self.names.get(name).copied()
    }
}

impl ObjectStore for SegmentStore {
    fn put_start(
        &mut self,
        key: &str,
        bytes: u64,
        soft_pin: bool,
        now: Nanos,
    ) -> Result<(), StoreError> {
        let k = self.key(key);
        match self.segment.reserve(k, bytes, now) {
            Ok(r) => {
                // A reservation reclaimed meanwhile leaves a stale entry: replace it.
                self.reservations.insert(k, (r, soft_pin));
                Ok(())
            }
            Err(ReserveError::Exists) => Err(StoreError::Exists),
            Err(ReserveError::NoSpace { .. }) => {
                self.pending_room = self.pending_room.max(bytes);
                Err(StoreError::NoSpace)
            }
        }
    }

    fn put_end(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let k = self.known(key).ok_or(StoreError::NotFound)?;
        let Some((r, soft)) = self.reservations.remove(&k) else {
            // PutEnd of a committed object is an idempotent retry (upstream).
            return if self.segment.contains(k) {
                Ok(())
            } else {
                Err(StoreError::NotFound)
            };
        };
        match self.segment.commit(r, &Access::at(now), now) {
            Ok(()) => {
                if soft && self.soft_pin > Nanos::ZERO {
                    self.segment.soft_pin(k, now.saturating_add(self.soft_pin));
                }
                Ok(())
            }
            Err(CommitError::Expired) => Err(StoreError::Expired),
        }
    }

    fn put_revoke(&mut self, key: &str, _now: Nanos) -> Result<(), StoreError> {
        let k = self.known(key).ok_or(StoreError::NotFound)?;
        let (r, _) = self.reservations.remove(&k).ok_or(StoreError::NotFound)?;
        if self.segment.revoke(r) {
            Ok(())
        } else {
            Err(StoreError::Expired)
        }
    }

    fn read(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let k = self.known(key).ok_or(StoreError::NotFound)?;
        match self.segment.read(k, now, self.leases.as_ref()) {
            Some(t) => {
                self.tokens.insert(k, t);
                Ok(())
            }
            None if self.reservations.contains_key(&k)
                && self.state(key, now) == KeyState::NotReady =>
            {
                Err(StoreError::NotReady)
            }
            None => Err(StoreError::NotFound),
        }
    }

    fn lease_valid(&self, key: &str, now: Nanos) -> bool {
        self.known(key)
            .and_then(|k| self.tokens.get(&k))
            .is_some_and(|t| self.segment.lease_valid(t, now))
    }

    fn pin(&mut self, key: &str, _now: Nanos) -> Result<(), StoreError> {
        let k = self.known(key).ok_or(StoreError::NotFound)?;
        let p = self.segment.pin(k).ok_or(StoreError::NotFound)?;
        self.pins.entry(k).or_default().push(p);
        Ok(())
    }

    fn unpin(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let k = self.known(key).ok_or(StoreError::NotFound)?;
        let p = self
            .pins
            .get_mut(&k)
            .and_then(Vec::pop)
            .ok_or(StoreError::NotFound)?;
        if self.segment.unpin(p, now) {
            Ok(())
        } else {
            Err(StoreError::Expired)
        }
    }

    fn remove(&mut self, key: &str, force: bool, now: Nanos) -> Result<(), StoreError> {
        let k = self.known(key).ok_or(StoreError::NotFound)?;
        match self.segment.remove(k, now, force) {
            Ok(_) => Ok(()),
            Err(RemoveError::NotFound) => Err(StoreError::NotFound),
            Err(RemoveError::NotReady) => Err(StoreError::NotReady),
            Err(RemoveError::Leased) => Err(StoreError::Leased),
            Err(RemoveError::Busy) => Err(StoreError::Busy),
        }
    }

    fn evict(&mut self, now: Nanos) {
        let mut out = Vec::new();
        if self.pending_room > 0 {
            self.segment.make_room(self.pending_room, now, &mut out);
            self.pending_room = 0;
        }
        self.segment.evict(now, &mut out);
    }

    fn state(&self, key: &str, now: Nanos) -> KeyState {
        let Some(k) = self.known(key) else {
            return KeyState::Missing;
        };
        if self.segment.contains(k) {
            return KeyState::Kept;
        }
        // A reservation is written but invisible, until its timeout.
        match self.reservations.get(&k) {
            Some(_) if self.segment.reserved_until(k).is_some_and(|d| now < d) => {
                KeyState::NotReady
            }
            _ => KeyState::Missing,
        }
    }

    fn used_bytes(&mut self, now: Nanos) -> u64 {
        self.segment.advance(now);
        self.segment.used_bytes()
    }

    fn count(&mut self, now: Nanos) -> u64 {
        self.segment.advance(now);
        self.segment.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_on_segment(text: &str) -> Result<(), ScenarioError> {
        run(text, "t.scn", &mut |s| Box::new(SegmentStore::new(s)))
    }

    #[test]
    fn errors_name_the_line_and_what_was_expected() {
        let e = run_on_segment("put a 1KiB\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.scn:1: the first command must be `store ...`"
        );
        let e = run_on_segment("store capacity=4KiB\nput a 1KiB\nexpect a missing\n").unwrap_err();
        assert_eq!(e.to_string(), "t.scn:3: a: Kept, expected Missing");
        let e = run_on_segment("store capacity=4KiB\nput a 1KiB -> exists\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.scn:2: put a: succeeded, expected `exists`"
        );
        let e = run_on_segment("store capacity=4KiB\nfrobnicate a\n").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("t.scn:2: unknown command `frobnicate`"));
        let e = run_on_segment("store capacity=4KiB\n-> exists\n").unwrap_err();
        assert_eq!(e.to_string(), "t.scn:2: expected a command before `->`");
        let e = run_on_segment("store capacity=4KiB colour=blue\n").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("t.scn:1: unknown store key `colour`"));
        let e = run_on_segment("store capacity=4KiB policy=belady\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.scn:1: eviction policy `belady` needs to know the future"),
            "{e}"
        );
        let e = run_on_segment("store capacity=4KiB\nput a{3..1} 1KiB\n").unwrap_err();
        assert!(e.to_string().contains("a <= b"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("16KiB"), Some(16384));
        assert_eq!(parse_size("3MB"), Some(3_000_000));
        assert_eq!(parse_size("7"), Some(7));
        assert_eq!(parse_size("1TiB"), None);
        assert_eq!(parse_size("18446744073709551615"), None, "over 1 PiB");
        assert_eq!(parse_duration("1.5s"), Some(Nanos(1_500_000_000)));
        assert_eq!(parse_duration("30min"), Some(Nanos::from_secs(1800)));
        assert_eq!(parse_duration("10"), None);
    }
}
