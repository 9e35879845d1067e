//! The master's own rules beyond one segment: replicas on distinct
//! segments, preferred segments, heartbeats and client expiry, unmounting,
//! writers, adopting reported objects, and invariants under random
//! operation sequences (checked from outside with `Master::check`).

use moonlab_core::types::Nanos;
use moonlab_real::error::ErrorCode;
use moonlab_real::master::{
    ClientId, Master, MasterConfig, PingStatus, PutOptions, ReportedObject, SegmentDesc,
};
use proptest::prelude::*;

const A: ClientId = ClientId(10);
const B: ClientId = ClientId(20);
const W: ClientId = ClientId(99);

fn seg(name: &str, size: u64) -> SegmentDesc {
    SegmentDesc {
        name: name.into(),
        endpoint: format!("{name}:1"),
        size,
        tier: moonlab_core::store::Tier::Dram,
    }
}

fn secs(s: u64) -> Nanos {
    Nanos::from_secs(s)
}

fn put(
    m: &Master,
    key: &str,
    size: u64,
    opts: &PutOptions,
    now: Nanos,
) -> Result<Vec<String>, ErrorCode> {
    let r = m.put_start(W, key, size, opts, now)?;
    m.put_end(W, key, Some(7), now)?;
    Ok(r.into_iter().map(|d| d.segment).collect())
}

#[test]
fn replicas_go_to_distinct_segments_most_free_first_and_preferred_first() {
    let m = Master::new(MasterConfig::default()).unwrap();
    m.mount_segment(A, seg("a", 64 << 10), secs(0)).unwrap();
    m.mount_segment(B, seg("b", 64 << 10), secs(0)).unwrap();
    m.mount_segment(B, seg("c", 128 << 10), secs(0)).unwrap();
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    // Most free first: c (128 KiB), then a (the lower id of the 64 KiB pair).
    assert_eq!(put(&m, "x", 4096, &two, secs(1)).unwrap(), ["c", "a"]);
    let pref = PutOptions {
        replicas: 2,
        preferred_segment: Some("b".into()),
        ..PutOptions::default()
    };
    assert_eq!(put(&m, "y", 4096, &pref, secs(1)).unwrap(), ["b", "c"]);
    // More replicas than segments: best effort, as upstream.
    let five = PutOptions {
        replicas: 5,
        ..PutOptions::default()
    };
    assert_eq!(put(&m, "z", 4096, &five, secs(1)).unwrap().len(), 3);
    let list = m.get_replica_list("z", secs(2)).unwrap();
    assert_eq!(list.replicas.len(), 3);
    assert_eq!(list.checksum, Some(7));
    assert_eq!(list.lease.until, secs(12), "a read is leased for 10 s");
    m.tick(secs(2));
    m.check_idle().unwrap();
}

#[test]
fn offsets_never_overlap_and_freed_space_is_reused() {
    let m = Master::new(MasterConfig::default()).unwrap();
    m.mount_segment(A, seg("a", 10_000), secs(0)).unwrap();
    let one = PutOptions::default();
    let mut offsets = Vec::new();
    for i in 0..9 {
        let r = m
            .put_start(W, &format!("k{i}"), 1000, &one, secs(0))
            .unwrap();
        offsets.push(r[0].offset);
        m.put_end(W, &format!("k{i}"), None, secs(0)).unwrap();
    }
    offsets.sort();
    assert_eq!(offsets, (0..9).map(|i| i * 1000).collect::<Vec<_>>());
    m.remove("k3", false, secs(0)).unwrap();
    let r = m.put_start(W, "again", 1000, &one, secs(0)).unwrap();
    assert_eq!(r[0].offset, 3000, "the freed range is reused");
    m.put_end(W, "again", None, secs(0)).unwrap();
    m.tick(secs(0));
    m.check().unwrap();
}

#[test]
fn only_the_writer_may_end_or_revoke_a_put() {
    let m = Master::new(MasterConfig::default()).unwrap();
    m.mount_segment(A, seg("a", 1 << 20), secs(0)).unwrap();
    m.put_start(W, "k", 100, &PutOptions::default(), secs(0))
        .unwrap();
    assert_eq!(
        m.put_end(A, "k", None, secs(0)),
        Err(ErrorCode::IllegalClient)
    );
    assert_eq!(m.put_revoke(A, "k", secs(0)), Err(ErrorCode::IllegalClient));
    m.put_end(W, "k", None, secs(0)).unwrap();
    assert_eq!(m.put_revoke(W, "k", secs(0)), Err(ErrorCode::InvalidWrite));
}

#[test]
fn bad_parameters_are_refused_with_their_code() {
    let m = Master::new(MasterConfig::default()).unwrap();
    m.mount_segment(A, seg("a", 1 << 20), secs(0)).unwrap();
    let one = PutOptions::default();
    assert_eq!(
        m.put_start(W, "", 1, &one, secs(0)),
        Err(ErrorCode::InvalidKey)
    );
    let long = "k".repeat(5000);
    assert_eq!(
        m.put_start(W, &long, 1, &one, secs(0)),
        Err(ErrorCode::InvalidKey)
    );
    assert_eq!(
        m.put_start(W, "k", 0, &one, secs(0)),
        Err(ErrorCode::InvalidParams)
    );
    let none = PutOptions {
        replicas: 0,
        ..one.clone()
    };
    assert_eq!(
        m.put_start(W, "k", 1, &none, secs(0)),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        m.put_start(W, "k", 2 << 20, &one, secs(0)),
        Err(ErrorCode::NoAvailableHandle)
    );
    assert_eq!(
        m.mount_segment(A, seg("tiny", 10), secs(0)),
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        m.mount_segment(B, seg("a", 1 << 20), secs(0)),
        Err(ErrorCode::SegmentAlreadyExists),
        "another client's segment name"
    );
    assert!(
        m.mount_segment(A, seg("a", 1 << 20), secs(0)).is_ok(),
        "a retry"
    );
}

/// The lease policy is core's, chosen by name as the simulator's is: with
/// `none` a read grants no lease, so removal is not refused after it.
#[test]
fn the_configured_lease_policy_decides_whether_a_read_leases() {
    for (kind, refused) in [
        (moonlab_core::lease::LeaseKind::Mooncake, true),
        (moonlab_core::lease::LeaseKind::None, false),
    ] {
        let m = Master::new(MasterConfig {
            lease_kind: kind,
            ..MasterConfig::default()
        })
        .unwrap();
        m.mount_segment(ClientId(1), seg("s0", 1 << 20), Nanos::ZERO)
            .unwrap();
        put(&m, "k", 100, &PutOptions::default(), Nanos::ZERO).unwrap();
        m.get_replica_list("k", Nanos::ZERO).unwrap();
        let r = m.remove("k", false, Nanos::ZERO);
        assert_eq!(r.is_err(), refused, "{kind:?}: {r:?}");
    }
}

#[test]
fn a_silent_client_loses_its_segments_and_their_objects() {
    let m = Master::new(MasterConfig::default()).unwrap();
    m.mount_segment(A, seg("a", 1 << 20), secs(0)).unwrap();
    m.mount_segment(B, seg("b", 1 << 20), secs(0)).unwrap();
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    put(&m, "both", 100, &two, secs(0)).unwrap();
    let only_a = PutOptions {
        preferred_segment: Some("a".into()),
        ..PutOptions::default()
    };
    put(&m, "only-a", 100, &only_a, secs(0)).unwrap();
    // A read lease does not keep a dead client's data (upstream).
    m.get_replica_list("only-a", secs(1)).unwrap();
    for t in 1..=12 {
        assert_eq!(m.ping(B, secs(t)), PingStatus::Ok);
        let report = m.tick(secs(t));
        if t < 10 {
            assert!(report.expired_clients.is_empty(), "t={t}");
        } else if t == 10 {
            assert_eq!(report.expired_clients, [A], "silent for the 10 s TTL");
        }
    }
    assert_eq!(
        m.get_replica_list("only-a", secs(12)),
        Err(ErrorCode::ObjectNotFound)
    );
    let both = m.get_replica_list("both", secs(12)).unwrap();
    assert_eq!(both.replicas.len(), 1);
    assert_eq!(both.replicas[0].segment, "b");
    assert_eq!(m.ping(A, secs(12)), PingStatus::NeedRemount);
    m.check().unwrap();
}

#[test]
fn unmounting_hides_replicas_at_once() {
    let m = Master::new(MasterConfig::default()).unwrap();
    m.mount_segment(A, seg("a", 1 << 20), secs(0)).unwrap();
    put(&m, "k", 100, &PutOptions::default(), secs(0)).unwrap();
    m.put_start(W, "w", 100, &PutOptions::default(), secs(0))
        .unwrap();
    m.unmount_segment("a", secs(0)).unwrap();
    assert_eq!(
        m.get_replica_list("k", secs(0)),
        Err(ErrorCode::ObjectNotFound)
    );
    assert_eq!(
        m.put_end(W, "w", None, secs(0)),
        Err(ErrorCode::ObjectNotFound)
    );
    assert_eq!(m.count(), 0);
    m.unmount_segment("a", secs(0)).unwrap();
}

#[test]
fn a_standby_adopts_reported_objects_where_they_lie() {
    let m = Master::new(MasterConfig::default()).unwrap();
    let report = |key: &str, offset, size, sum| ReportedObject {
        object: 1000 + sum,
        key: key.into(),
        offset,
        size,
        checksum: Some(sum),
    };
    let (_, rejected) = m
        .mount_segment_with_objects(
            A,
            seg("a", 10_000),
            vec![
                report("x", 0, 1000, 1),
                report("y", 5000, 2000, 2),
                report("overlap", 5500, 100, 3),
                report("outside", 9500, 1000, 4),
            ],
            secs(0),
        )
        .unwrap();
    let names: Vec<&str> = rejected.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(names, ["overlap", "outside"]);
    // The same object reported by a second segment gains a replica there;
    // one with another checksum is refused.
    let (_, rejected) = m
        .mount_segment_with_objects(
            B,
            seg("b", 10_000),
            vec![report("x", 100, 1000, 1), report("y", 0, 2000, 99)],
            secs(0),
        )
        .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].key, "y");
    let x = m.get_replica_list("x", secs(1)).unwrap();
    assert_eq!(x.replicas.len(), 2);
    assert_eq!(x.replicas[0].offset, 0);
    assert_eq!(x.replicas[1].offset, 100);
    // The allocator knows what is taken: new puts land in the gaps.
    let pref = PutOptions {
        preferred_segment: Some("a".into()),
        ..PutOptions::default()
    };
    let r = m.put_start(W, "new", 4000, &pref, secs(1)).unwrap();
    assert_eq!(r[0].segment, "a");
    assert_eq!(r[0].offset, 1000, "the gap 1000..5000");
    m.put_end(W, "new", None, secs(1)).unwrap();
    m.tick(secs(1));
    m.check().unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16, u8),
    Start(u8, u16),
    End(u8),
    Revoke(u8),
    Read(u8),
    Remove(u8, bool),
    Pin(u8),
    Unpin,
    Advance(u16),
    Tick,
    Unmount(u8),
    Mount(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..12, 1u16..5000, 1u8..4).prop_map(|(k, s, r)| Op::Put(k, s, r)),
        (0u8..12, 1u16..5000).prop_map(|(k, s)| Op::Start(k, s)),
        (0u8..12).prop_map(Op::End),
        (0u8..12).prop_map(Op::Revoke),
        (0u8..12).prop_map(Op::Read),
        (0u8..12, any::<bool>()).prop_map(|(k, f)| Op::Remove(k, f)),
        (0u8..12).prop_map(Op::Pin),
        Just(Op::Unpin),
        (1u16..40_000).prop_map(Op::Advance),
        Just(Op::Tick),
        (0u8..3).prop_map(Op::Unmount),
        (0u8..3).prop_map(Op::Mount),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the interleaving: ranges never overlap and agree with
    /// core's bytes, a pinned or leased object is never evicted, replicas
    /// of one object lie on distinct segments, and once every pin is
    /// released nothing stays pinned.
    #[test]
    fn invariants_hold_under_random_operations(ops in proptest::collection::vec(op(), 1..120)) {
        let config = MasterConfig {
            watermarks: moonlab_core::store::Watermarks { high: 0.7, low: 0.5 },
            // Segments leave only by the Unmount operation here; expiry
            // has its own test.
            client_ttl: Nanos(u64::MAX),
            ..MasterConfig::default()
        };
        let m = Master::new(config).unwrap();
        let sizes = [20_000u64, 30_000, 50_000];
        for (i, size) in sizes.iter().enumerate() {
            m.mount_segment(ClientId(i as u64), seg(&format!("s{i}"), *size), Nanos::ZERO).unwrap();
        }
        let mut now = Nanos::ZERO;
        let mut pins = Vec::new();
        let mut leased: Vec<(String, moonlab_real::master::Lease)> = Vec::new();
        for o in ops {
            match o {
                Op::Put(k, s, r) => {
                    let opts = PutOptions { replicas: r as u32, ..PutOptions::default() };
                    if m.put_start(W, &format!("k{k}"), s as u64, &opts, now).is_ok() {
                        m.put_end(W, &format!("k{k}"), None, now).unwrap();
                    }
                }
                Op::Start(k, s) => { let _ = m.put_start(W, &format!("k{k}"), s as u64, &PutOptions::default(), now); }
                Op::End(k) => { let _ = m.put_end(W, &format!("k{k}"), None, now); }
                Op::Revoke(k) => { let _ = m.put_revoke(W, &format!("k{k}"), now); }
                Op::Read(k) => {
                    if let Ok(l) = m.get_replica_list(&format!("k{k}"), now) {
                        leased.push((format!("k{k}"), l.lease));
                    }
                }
                Op::Remove(k, f) => { let _ = m.remove(&format!("k{k}"), f, now); }
                Op::Pin(k) => {
                    if let Ok(p) = m.pin(&format!("k{k}"), now) {
                        pins.push((format!("k{k}"), p));
                    }
                }
                Op::Unpin => {
                    if let Some((_, p)) = pins.pop() {
                        prop_assert!(m.unpin(p, now), "a pin went stale: its object left while pinned");
                    }
                }
                Op::Advance(ms) => now = now.saturating_add(Nanos::from_millis(ms as u64)),
                Op::Tick => {
                    m.tick(now);
                    m.check().map_err(TestCaseError::fail)?;
                    for (k, _) in &pins {
                        prop_assert!(m.is_readable(k), "{k} is pinned but was evicted");
                    }
                    for (k, l) in &leased {
                        if l.until > now && m.lease_valid(l, now) {
                            prop_assert!(m.is_readable(k), "{k} is leased but was evicted");
                        }
                    }
                }
                Op::Unmount(i) => {
                    // Pins and leases on an unmounted segment are void.
                    m.unmount_segment(&format!("s{i}"), now).unwrap();
                    pins.retain(|(k, _)| m.is_readable(k));
                }
                Op::Mount(i) => {
                    let _ = m.mount_segment(ClientId(i as u64), seg(&format!("s{i}"), sizes[i as usize]), now);
                }
            }
        }
        for (_, p) in pins.drain(..) {
            let _ = m.unpin(p, now);
        }
        m.tick(now);
        m.check_idle().map_err(TestCaseError::fail)?;
    }
}
