//! Helpers the binary's integration tests share.

use std::process::Child;
use std::time::Duration;

/// Stops a child the way a user would: SIGTERM (a cluster stops its own
/// children in order), up to 10 s to exit, then SIGKILL.
pub fn stop(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
