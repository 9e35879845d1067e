//! Fuzz harnesses for every decoder of a message that reaches the real
//! backend from the network, on the stable toolchain (proptest): the
//! master's and the replay workers' protobuf messages (every message
//! type), the transfer engine's wire headers, its writer's notes and its
//! hello, and the master's adoption of a store node's report (a report is
//! a peer's claim: garbage must be refused, never trusted).
//!
//! Each harness runs the committed corpus (`tests/fuzz-corpus/`, valid
//! encodings; `MOONLAB_BLESS=1` rewrites it from the seeds below, and a
//! test fails when it is stale) and then mutations of it and random bytes,
//! `MOONLAB_FUZZ_CASES` cases each (256 by default, so CI's time is
//! bounded). Checked: no panic, no hang (each case is bounded work), and no
//! allocation beyond a fixed multiple of the input (a counting allocator),
//! and what decodes re-encodes to a message that decodes the same.

use moonlab_core::store::Tier;
use moonlab_core::Nanos;
use moonlab_real::master::{ClientId, Master, MasterConfig, ReportedObject, SegmentDesc};
use moonlab_real::replay::pb as wpb;
use moonlab_real::rpc::pb as mpb;
use moonlab_real::transfer::wire::{Note, ReplyHeader, RequestHeader, REPLY_BYTES, REQUEST_BYTES};
use moonlab_testkit::{fuzz_cases as cases, mutations, Counting};
use proptest::prelude::*;
use prost::Message;
use std::path::PathBuf;

#[global_allocator]
static A: Counting = Counting;

/// `f` on `input`, failing if it allocated more than 64 bytes per input
/// byte plus 64 KiB (decoded structures are a few times their encoding;
/// anything grown from a claimed length instead of the bytes present is
/// caught).
fn bounded<T>(input: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    moonlab_testkit::bounded(input, 64, 64 << 10, f)
}

fn corpus_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(name)
}

/// The committed corpus of `name`: checked against `seeds` (rewritten with
/// MOONLAB_BLESS=1), returned for mutation.
fn corpus(name: &str, seeds: &[(&str, Vec<u8>)]) -> Vec<Vec<u8>> {
    let dir = corpus_dir(name);
    if std::env::var_os("MOONLAB_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (file, bytes) in seeds {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
    }
    let mut out = Vec::new();
    for (file, bytes) in seeds {
        let path = dir.join(file);
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (MOONLAB_BLESS=1 cargo test --test fuzz writes the corpus)",
                path.display()
            )
        });
        assert_eq!(
            &committed,
            bytes,
            "{} is stale (MOONLAB_BLESS=1 rewrites it)",
            path.display()
        );
        out.push(committed);
    }
    out
}

/// Decodes `bytes` as every message type of both protocols; what decodes
/// must re-encode to bytes that decode to the same message.
fn decode_all(bytes: &[u8]) {
    macro_rules! each {
        ($($t:ty),* $(,)?) => {$(
            if let Ok(m) = <$t>::decode(bytes) {
                let again = <$t>::decode(&m.encode_to_vec()[..]).expect("re-encoded message");
                assert_eq!(m, again);
            }
        )*};
    }
    each!(
        mpb::ServiceReadyRequest,
        mpb::ServiceReadyReply,
        mpb::CodeReply,
        mpb::BatchCodeReply,
        mpb::SegmentDesc,
        mpb::ReportedObject,
        mpb::MountSegmentRequest,
        mpb::MountSegmentReply,
        mpb::UnmountSegmentRequest,
        mpb::PingRequest,
        mpb::PingReply,
        mpb::PutOptions,
        mpb::ReplicaDesc,
        mpb::PutStartRequest,
        mpb::PutStartReply,
        mpb::PutEndRequest,
        mpb::KeyRequest,
        mpb::BatchPutStartRequest,
        mpb::BatchPutStartReply,
        mpb::BatchPutEndRequest,
        mpb::BatchKeyRequest,
        mpb::LeaseToken,
        mpb::GetReplicaListReply,
        mpb::BatchGetReplicaListReply,
        mpb::CheckLeaseRequest,
        mpb::CheckLeaseReply,
        mpb::ExistReply,
        mpb::BatchContainsReply,
        mpb::RemoveRequest,
        mpb::PinReply,
        mpb::UnpinRequest,
        mpb::ListRequest,
        mpb::ObjectInfo,
        mpb::ListReply,
        mpb::StatsRequest,
        mpb::SegmentStats,
        mpb::StatsReply,
        wpb::SendJob,
        wpb::SendReply,
        wpb::DescribeRequest,
        wpb::DescribeReply,
        wpb::PrefillJob,
        wpb::PrefillStarted,
        wpb::PrefillDone,
        wpb::PrefillEvent,
        wpb::DecodeJob,
        wpb::DecodeFirstToken,
        wpb::DecodeDone,
        wpb::DecodeEvent,
        wpb::PrefillEnded,
        wpb::LoadRequest,
        wpb::RequestLoad,
        wpb::LoadReply,
    );
}

fn protobuf_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "mount.bin",
            mpb::MountSegmentRequest {
                client_id: 7,
                segment: Some(mpb::SegmentDesc {
                    name: "store-0".into(),
                    endpoint: "127.0.0.1:7001".into(),
                    size: 1 << 30,
                    tier: 1,
                }),
                objects: vec![mpb::ReportedObject {
                    object: 42,
                    key: "k".into(),
                    offset: 4096,
                    size: 100,
                    checksum: Some(9),
                }],
            }
            .encode_to_vec(),
        ),
        (
            "put-start.bin",
            mpb::BatchPutStartRequest {
                client_id: 1,
                keys: vec!["run/b0/0000000000000001".into(), "k2".into()],
                sizes: vec![16384, 7],
                options: Some(mpb::PutOptions {
                    replicas: 2,
                    preferred_segment: Some("prefill-0".into()),
                    soft_pin: true,
                    only_preferred: true,
                }),
            }
            .encode_to_vec(),
        ),
        (
            "replicas.bin",
            mpb::GetReplicaListReply {
                code: 0,
                size: 100,
                checksum: Some(1),
                replicas: vec![mpb::ReplicaDesc {
                    segment: "store-1".into(),
                    endpoint: "10.77.0.10:4000".into(),
                    offset: 0,
                    size: 100,
                    object: 3,
                    tier: 1,
                }],
                lease_ttl_ns: 10_000_000_000,
                lease: vec![mpb::LeaseToken {
                    segment: 1,
                    object: 3,
                    slot: 4,
                    generation: 5,
                    expiry_ns: 6,
                }],
            }
            .encode_to_vec(),
        ),
        (
            "prefill-job.bin",
            wpb::PrefillJob {
                request: 3,
                run: "r0123456789ab".into(),
                blocks: vec![1, 2, 3],
                input_tokens: 1500,
                output_tokens: 20,
                fetch_from: 1,
                fetch_start: 0,
                fetch_end: 2,
                decode_segment: "decode-0".into(),
                seq: 9,
            }
            .encode_to_vec(),
        ),
        (
            "prefill-done.bin",
            wpb::PrefillEvent {
                event: Some(wpb::prefill_event::Event::Done(wpb::PrefillDone {
                    fetch_start_ns: 1,
                    fetch_end_ns: 2,
                    fetched_blocks: 2,
                    start_ns: 3,
                    end_ns: 4,
                    kv_ns: 5,
                    compute_ns: 6,
                    prefix_blocks: 2,
                    read_bytes: 7,
                    kv_bytes: 8,
                    ..Default::default()
                })),
            }
            .encode_to_vec(),
        ),
        (
            "decode-event.bin",
            wpb::DecodeEvent {
                event: Some(wpb::decode_event::Event::Done(wpb::DecodeDone {
                    finish_ns: 9,
                    tbt_s: 0.01,
                    tokens: 20,
                    kv_bytes: 100,
                    wrong_bytes: 0,
                })),
            }
            .encode_to_vec(),
        ),
    ]
}

fn wire_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use moonlab_real::transfer::wire::{encode_hello, Opcode};
    vec![
        (
            "request.bin",
            RequestHeader {
                opcode: Opcode::Write,
                id: 7,
                offset: 4096,
                len: 65536,
            }
            .encode()
            .to_vec(),
        ),
        (
            "reply.bin",
            ReplyHeader { id: 7, status: 0 }.encode().to_vec(),
        ),
        (
            "note.bin",
            Note {
                object: 1,
                offset: 2,
                size: 3,
                checksum: 4,
                key: "run/kv/3".into(),
            }
            .encode(),
        ),
        ("hello.bin", encode_hello(b"0123456789abcdef0123")),
    ]
}

#[test]
fn every_protocol_message_decodes_garbage_to_an_error_never_a_crash() {
    let corpus = corpus("protobuf", &protobuf_seeds());
    for c in &corpus {
        bounded(c, decode_all);
    }
    proptest!(ProptestConfig::with_cases(cases()), |(b in mutations(corpus.clone(), &[0x08, 0x0a, 0x10, 0x12, 0x1a, 0x22, 0xff, 0x80, 0x00], 2048))| {
        bounded(&b, decode_all);
    });
}

#[test]
fn transfer_wire_headers_notes_and_hellos_refuse_garbage() {
    let corpus = corpus("wire", &wire_seeds());
    let secret = moonlab_real::rpc::Secret::new("0123456789abcdef0123").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let check = |b: &[u8]| {
        if let Ok(h) = <[u8; REQUEST_BYTES]>::try_from(&b[..REQUEST_BYTES.min(b.len())]) {
            if let Ok(d) = RequestHeader::decode(&h) {
                assert_eq!(RequestHeader::decode(&d.encode()), Ok(d));
            }
        }
        if let Ok(h) = <[u8; REPLY_BYTES]>::try_from(&b[..REPLY_BYTES.min(b.len())]) {
            let d = ReplyHeader::decode(&h);
            assert_eq!(ReplyHeader::decode(&d.encode()), d);
        }
        if let Some(n) = Note::decode(b) {
            assert_eq!(Note::decode(&n.encode()), Some(n));
        }
        // The hello a server reads first: the right secret or an error,
        // over bytes that may end anywhere.
        let mut r = b;
        let _ = rt.block_on(moonlab_real::transfer::tcp::read_hello(&mut r, &secret));
    };
    for c in &corpus {
        bounded(c, check);
    }
    // The committed hello is accepted; one byte off is not.
    let mut hello = &corpus[3][..];
    assert!(rt
        .block_on(moonlab_real::transfer::tcp::read_hello(&mut hello, &secret))
        .is_ok());
    proptest!(ProptestConfig::with_cases(cases()), |(b in mutations(corpus.clone(), &[0x08, 0x0a, 0x10, 0x12, 0x1a, 0x22, 0xff, 0x80, 0x00], 2048))| {
        bounded(&b, check);
    });
}

/// A store node's report, decoded from the wire, is adopted only where it
/// makes sense: whatever it claims, the master stays consistent (its own
/// `check`), adopts nothing outside the segment or overlapping, and an
/// adopted object reads back with the reported size.
#[test]
fn a_master_adopting_garbage_reports_stays_consistent() {
    let corpus = corpus("protobuf", &protobuf_seeds());
    proptest!(ProptestConfig::with_cases(cases()), |(b in mutations(corpus.clone(), &[0x08, 0x0a, 0x10, 0x12, 0x1a, 0x22, 0xff, 0x80, 0x00], 2048))| {
        let Ok(req) = mpb::MountSegmentRequest::decode(&b[..]) else { return Ok(()) };
        let master = Master::new(MasterConfig::default()).unwrap();
        let seg = req.segment.unwrap_or_default();
        let desc = SegmentDesc {
            name: if seg.name.is_empty() { "s".into() } else { seg.name.chars().take(64).collect() },
            endpoint: seg.endpoint.chars().take(64).collect(),
            size: seg.size.clamp(1, 1 << 32),
            tier: if seg.tier == 2 { Tier::Ssd } else { Tier::Dram },
        };
        let objects: Vec<ReportedObject> = req
            .objects
            .into_iter()
            .map(|o| ReportedObject {
                object: o.object,
                key: o.key,
                offset: o.offset,
                size: o.size,
                checksum: o.checksum,
            })
            .collect();
        let size = desc.size;
        if let Ok((_, rejected)) =
            master.mount_segment_with_objects(ClientId(1), desc, objects.clone(), Nanos::ZERO)
        {
            master.check().map_err(TestCaseError::fail)?;
            for o in objects.iter().filter(|o| !rejected.contains(o)) {
                prop_assert!(o.offset.saturating_add(o.size) <= size);
            }
        }
    });
}
