//! `moonlab real delayline`: a testbed's one-way delay and loss where the
//! kernel has no `netem` qdisc. It forwards every Ethernet frame between
//! two interfaces of one namespace (raw AF_PACKET sockets, both ways),
//! holding each for the delay and dropping it at the loss rate (a seeded
//! generator: the same drops for the same seed). `real/testbed/testbed.sh`
//! puts one between each node's link and the bridge when `--delay` or
//! `--loss` is asked for without netem; rate stays with `tbf`.
//!
//! The interfaces must have segmentation offloads off (a frame larger than
//! the MTU cannot be sent back out): the script turns them off with
//! `ethtool`.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Args)]
pub struct DelayLineArgs {
    /// The two interfaces to join.
    a: String,
    b: String,
    /// One-way delay added to every frame, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Share of frames dropped, percent.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Seed of the drops.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A raw socket bound to one interface, receiving every frame on it.
struct Raw {
    fd: i32,
    ifindex: i32,
}

impl Raw {
    fn open(name: &str) -> Result<Raw> {
        let c = std::ffi::CString::new(name).map_err(|_| anyhow!("interface `{name}`"))?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        if ifindex == 0 {
            bail!("no interface `{name}` here");
        }
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        if fd < 0 {
            bail!(
                "a raw socket on `{name}`: {} (needs root)",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: a zeroed sockaddr_ll filled in, bound to our fd.
        let r = unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = ifindex;
            libc::bind(
                fd,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
            bail!("binding a raw socket to `{name}`: {e}");
        }
        Ok(Raw { fd, ifindex })
    }

    /// The next frame arriving on the interface (not one sent out of it).
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            // SAFETY: recvfrom into our buffer and a sockaddr_ll.
            let (n, kind) = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    self.fd,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut len,
                );
                (n, sll.sll_pkttype)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if kind == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(n as usize);
        }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: sendto of our bytes to our interface.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6.min(frame.len())]);
            libc::sendto(
                self.fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
        }
    }
}

/// Frames held for their time, in arrival order (one delay for all, so
/// the order of release is the order of arrival).
type Held = Arc<(Mutex<VecDeque<(u64, Vec<u8>)>>, Condvar)>;

fn now_ns() -> u64 {
    moonlab_real::clock::host_monotonic_ns()
}

/// One direction: frames from `from` are held `delay` and sent out of `to`.
fn direction(from: Arc<Raw>, to: Arc<Raw>, delay: u64, loss: f64, seed: u64) {
    let held: Held = Arc::new((Mutex::new(VecDeque::new()), Condvar::new()));
    let out = held.clone();
    std::thread::spawn(move || loop {
        let (lock, ready) = &*out;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        while q.is_empty() {
            q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        let due = q.front().map_or(0, |f| f.0);
        let now = now_ns();
        if due > now {
            drop(q);
            std::thread::sleep(Duration::from_nanos(due - now));
            continue;
        }
        let Some((_, frame)) = q.pop_front() else {
            continue;
        };
        drop(q);
        to.send(&frame);
    });
    let mut state = seed | 1;
    let mut buf = vec![0u8; 65536];
    let threshold = (loss / 100.0 * u64::MAX as f64) as u64;
    loop {
        let Ok(n) = from.recv(&mut buf) else { return };
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if loss > 0.0 && state < threshold {
            continue;
        }
        let (lock, ready) = &*held;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((now_ns() + delay, buf[..n].to_vec()));
        ready.notify_one();
    }
}

pub fn run(a: DelayLineArgs) -> Result<()> {
    if !(0.0..=10_000.0).contains(&a.delay_ms) {
        bail!("--delay-ms: expected 0 to 10000, got {}", a.delay_ms);
    }
    if !(0.0..100.0).contains(&a.loss) {
        bail!("--loss: expected a percentage below 100, got {}", a.loss);
    }
    let (ra, rb) = (Arc::new(Raw::open(&a.a)?), Arc::new(Raw::open(&a.b)?));
    let delay = (a.delay_ms * 1e6) as u64;
    let (ra2, rb2) = (ra.clone(), rb.clone());
    let (loss, seed) = (a.loss, a.seed);
    let back = std::thread::spawn(move || direction(rb2, ra2, delay, loss, seed ^ 0x5555));
    direction(ra, rb, delay, a.loss, a.seed);
    let _ = back.join();
    bail!("the delay line between {} and {} stopped", a.a, a.b)
}
