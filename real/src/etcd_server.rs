//! A private etcd server on loopback: a child process with its own data
//! folder and free ports, stopped (and its folder removed) when dropped.
//! `moonlab cluster --etcd` runs one, and so do the tests of the etcd
//! metadata service and of master failover.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running etcd.
pub struct EtcdServer {
    child: Child,
    dir: PathBuf,
    remove_dir: bool,
    /// `127.0.0.1:port` of its client endpoint.
    pub endpoint: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True if an `etcd` binary is on the PATH.
pub fn etcd_available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl EtcdServer {
    /// Starts etcd with its data in `dir` (created; removed on drop if
    /// `remove_dir`), and waits until it answers.
    pub fn start(dir: &Path, remove_dir: bool) -> Result<EtcdServer, String> {
        if !etcd_available() {
            return Err(
                "etcd is not installed (Debian: apt install etcd-server; or bash .ci/packages)"
                    .into(),
            );
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let (client, peer) = (
            free_port().map_err(|e| e.to_string())?,
            free_port().map_err(|e| e.to_string())?,
        );
        let curl = format!("http://127.0.0.1:{client}");
        let purl = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).map_err(|e| e.to_string())?;
        let child = Command::new("etcd")
            .arg("--name")
            .arg("moonlab")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &curl,
                "--advertise-client-urls",
                &curl,
            ])
            .args([
                "--listen-peer-urls",
                &purl,
                "--initial-advertise-peer-urls",
                &purl,
            ])
            .args(["--initial-cluster", &format!("moonlab={purl}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting etcd: {e}"))?;
        let mut server = EtcdServer {
            child,
            dir: dir.to_path_buf(),
            remove_dir,
            endpoint: format!("127.0.0.1:{client}"),
        };
        for _ in 0..200 {
            if let Ok(Some(st)) = server.child.try_wait() {
                return Err(format!(
                    "etcd exited ({st}); see {}",
                    server.dir.join("etcd.log").display()
                ));
            }
            if std::net::TcpStream::connect(&server.endpoint).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("etcd did not start within 10 s".into())
    }

    /// The URL the metadata service connects to.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
