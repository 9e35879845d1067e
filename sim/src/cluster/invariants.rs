//! End-of-run invariants, checked from outside the code under test: after a
//! run the checker reads the world's final state and reports every rule
//! that does not hold, in words. Every run is checked (debug builds also
//! assert); the tests check them on the bundled traces.
//!
//! 1. Every request ended exactly once: served, or rejected at arrival.
//! 2. Nothing held by finished requests remains: no pin and no reservation
//!    in any segment, no hold or fetch left in any request.
//! 3. Every segment was within its capacity at every eviction point, and
//!    is at the end; every segment's own bookkeeping adds up. On a vLLM
//!    node with prefix caching, the HBM cache's blocks and the running
//!    requests' other KV fit the node's KV memory at every admission and
//!    every write (unless one request larger than all of it runs alone).
//! 4. Bytes sent equal bytes received: no flow is left, every started flow
//!    completed, and the NICs' send and receive sides carried the same bytes.
//! 5. Decode KV reservations returned to zero, and every queue and batch
//!    is empty.
//! 6. The replica change log behind Figure 11 adds up, key by key, to what
//!    the DRAM segments hold.
//! 7. With elastic roles, no node is left draining: every switch asked for
//!    completed once the node had drained.
//! 8. A vLLM node ends idle: no iteration running, no prompt half done.

use super::flows::LinkKind;
use super::request::Phase;
use super::world::World;

pub fn check(w: &World<'_>) -> Vec<String> {
    let mut v = Vec::new();
    for (i, st) in w.reqs.iter().enumerate() {
        let rec = &w.records[i];
        if st.ends != 1 {
            v.push(format!("request {i} ended {} times", st.ends));
        }
        match st.phase {
            Phase::Done if rec.served => {}
            Phase::Rejected if !rec.served && rec.reject_reason.is_some() => {}
            phase => v.push(format!(
                "request {i} finished the run in phase {phase:?} (served: {})",
                rec.served
            )),
        }
        if !(st.prefix.is_empty() && st.fetched.is_empty()) || st.fetch.is_some() {
            v.push(format!("request {i} still holds pins or a fetch"));
        }
        if st.kv.is_some() {
            v.push(format!("request {i} still holds a decode KV reservation"));
        }
    }
    if let Err(e) = w.store.pool.check() {
        v.push(e);
    }
    for (id, seg, info) in w.store.pool.iter() {
        let h = seg.held();
        if h.pins > 0 || h.reserved_objects > 0 {
            v.push(format!(
                "segment {} ({:?} of instance {:?}): {} objects still pinned ({} pins), {} reserved",
                id.0,
                info.tier,
                info.owner.map(|o| o.0),
                h.pinned_objects,
                h.pins,
                h.reserved_objects
            ));
        }
        if !seg.within_capacity() {
            v.push(format!(
                "segment {} ends over capacity: {} of {:?} bytes",
                id.0,
                seg.used_bytes(),
                seg.capacity_bytes()
            ));
        }
    }
    v.extend(w.store.over_capacity.iter().cloned());
    // Figure 11's change log must add up to what the DRAM segments hold.
    let mut logged: rustc_hash::FxHashMap<moonlab_core::BlockKey, i64> = Default::default();
    for &(_, key, d) in &w.store.changes {
        *logged.entry(key).or_default() += d as i64;
    }
    let mut held: rustc_hash::FxHashMap<moonlab_core::BlockKey, i64> = Default::default();
    for p in 0..w.prefill.len() {
        for key in w.store.pool.segment(w.store.dram(p)).keys() {
            *held.entry(key).or_default() += 1;
        }
    }
    let mut drift: Vec<_> = logged
        .iter()
        .filter(|(k, &n)| held.get(k).copied().unwrap_or(0) != n)
        .map(|(k, &n)| (k.0, n, held.get(k).copied().unwrap_or(0)))
        .chain(
            held.iter()
                .filter(|(k, _)| !logged.contains_key(k))
                .map(|(k, &n)| (k.0, 0, n)),
        )
        .collect();
    drift.sort_unstable();
    if let Some(&(key, logged, held)) = drift.first() {
        v.push(format!(
            "the replica log disagrees with DRAM for {} keys (key {key}: logged {logged} replicas, {held} held)",
            drift.len()
        ));
    }
    if w.net.active_flows() != 0 {
        v.push(format!("{} flows still running", w.net.active_flows()));
    }
    let tol = 1e-6 * w.net.bytes_started.max(1.0);
    if (w.net.bytes_started - w.net.bytes_completed).abs() > tol {
        v.push(format!(
            "flows started with {} bytes but completed {}",
            w.net.bytes_started, w.net.bytes_completed
        ));
    }
    let (tx, rx) = (w.net.bytes(LinkKind::NicTx), w.net.bytes(LinkKind::NicRx));
    if (tx - rx).abs() > 1e-6 * tx.max(1.0) {
        v.push(format!("NICs sent {tx} bytes but received {rx}"));
    }
    for (d, inst) in w.decode.iter().enumerate() {
        if inst.kv.reserved_tokens() != 0 || inst.kv.reservations() != 0 {
            v.push(format!(
                "decode instance {d}: {} KV tokens still reserved by {} reservations",
                inst.kv.reserved_tokens(),
                inst.kv.reservations()
            ));
        }
        if inst.context_tokens != 0
            || !inst.batch.is_empty()
            || !inst.waiting.is_empty()
            || !inst.incoming.is_empty()
        {
            v.push(format!("decode instance {d} still has requests"));
        }
    }
    if let Some(e) = &w.roles {
        for (k, d) in e.draining.iter().enumerate() {
            if let Some(to) = d {
                v.push(format!(
                    "node {k} was still draining towards {to:?} at the end"
                ));
            }
        }
    }
    for (p, inst) in w.prefill.iter().enumerate() {
        if inst.running.is_some() || !inst.queue.is_empty() {
            v.push(format!("prefill instance {p} still has requests"));
        }
    }
    for (n, node) in w.vllm.iter().enumerate() {
        if node.busy || !node.prefilling.is_empty() {
            v.push(format!(
                "vLLM node {n} ended busy or with {} prompts half prefilled",
                node.prefilling.len()
            ));
        }
    }
    v
}
