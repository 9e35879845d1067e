//! The RDMA transport (cargo feature `rdma`): a target serving a region
//! with an RDMA handshake, and the engine moving bytes by one-sided READ
//! and WRITE. Runs where an RDMA device exists (RoCE, InfiniBand or
//! Soft-RoCE); elsewhere it says it was skipped and why.
#![cfg(feature = "rdma")]

use moonlab_real::rpc::Secret;
use moonlab_real::transfer::rdma::{unavailable, Device, RdmaTarget, RdmaTransport};
use moonlab_real::transfer::tcp::{serve_with_catalog, Backing};
use moonlab_real::transfer::topology::Topology;
use moonlab_real::transfer::{
    EngineConfig, Opcode, Region, TaskStatus, TransferEngine, TransferRequest,
};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sided_reads_and_writes_are_byte_exact() {
    if let Some(why) = unavailable() {
        eprintln!("SKIP: RDMA transport test: {why}");
        return;
    }
    let secret = Secret::new("rdma-test-secret-0001").unwrap();
    let device = Device::open(None).unwrap();
    let region = Arc::new(Region::new(16 << 20).unwrap());
    let target = Arc::new(RdmaTarget::new(device.clone(), &region).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve_with_catalog(
        listener,
        Backing::Memory(region.clone()),
        secret.clone(),
        None,
        Some(target),
        std::future::pending::<()>(),
    ));
    let engine = TransferEngine::new(
        Arc::new(RdmaTransport::new(device, secret)),
        Topology::loopback(),
        EngineConfig {
            slice_bytes: 64 << 10,
            retries: 1,
        },
    );
    let seg = engine.open_segment(&addr).await.unwrap();
    assert_eq!(seg.len, 16 << 20);
    let local = Arc::new(Region::new(8 << 20).unwrap());
    let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 253) as u8).collect();
    local.write_at(0, &data).unwrap();
    let st = engine
        .transfer(vec![TransferRequest {
            opcode: Opcode::Write,
            local: local.clone(),
            local_offset: 0,
            target: seg.clone(),
            target_offset: 4096,
            length: 8 << 20,
        }])
        .await;
    assert_eq!(st, [TaskStatus::Completed]);
    let mut there = vec![0u8; 8 << 20];
    region.read_at(4096, &mut there).unwrap();
    assert!(there == data);
    let back = Arc::new(Region::new(8 << 20).unwrap());
    let st = engine
        .transfer(vec![TransferRequest {
            opcode: Opcode::Read,
            local: back.clone(),
            local_offset: 0,
            target: seg,
            target_offset: 4096,
            length: 8 << 20,
        }])
        .await;
    assert_eq!(st, [TaskStatus::Completed]);
    let mut got = vec![0u8; 8 << 20];
    back.read_at(0, &mut got).unwrap();
    assert!(got == data);
}
