//! The SSD tier's direct I/O, with io_uring and with the blocking
//! fallback: byte-exact round trips, many requests at once, and refusals
//! of unaligned or out-of-range requests. Files live under the build's
//! temporary folder (on disk: O_DIRECT does not work on tmpfs).

use moonlab_real::ssd::{IoEngine, SsdFile};
use moonlab_real::transfer::Region;
use std::sync::Arc;

async fn round_trip(io_uring: bool) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let f = SsdFile::open(&dir.path().join("ssd"), 8 << 20, io_uring, 8).unwrap();
    if io_uring && f.engine() != IoEngine::IoUring {
        eprintln!("NOTE: this kernel refuses io_uring; the blocking fallback was tested instead");
    }
    let buf = Arc::new(Region::new(2 << 20).unwrap());
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    buf.write_at(0, &data).unwrap();
    f.write(4096, &buf, 0, 2 << 20).await.unwrap();
    let back = Arc::new(Region::new(2 << 20).unwrap());
    f.read(4096, &back, 0, 2 << 20).await.unwrap();
    let mut got = vec![0u8; 2 << 20];
    back.read_at(0, &mut got).unwrap();
    assert!(got == data);
    // Many at once, then each read back.
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let (f, buf) = (f.clone(), buf.clone());
        tasks.push(tokio::spawn(async move {
            f.write(i * 65536, &buf, i * 4096, 65536).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for i in 0..32u64 {
        f.read(i * 65536, &back, 0, 65536).await.unwrap();
        let mut got = vec![0u8; 65536];
        back.read_at(0, &mut got).unwrap();
        let from = (i * 4096) as usize;
        assert!(got[..] == data[from..from + 65536], "block {i}");
    }
    let e = f.read(100, &back, 0, 4096).await.unwrap_err();
    assert!(e.to_string().contains("alignment"), "{e}");
    let e = f.read(8 << 20, &back, 0, 4096).await.unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    assert!(SsdFile::open(&dir.path().join("odd"), 1000, io_uring, 8).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_io_round_trips_with_io_uring() {
    round_trip(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_io_round_trips_without_io_uring() {
    round_trip(false).await;
}
