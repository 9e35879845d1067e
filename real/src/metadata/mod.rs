//! The metadata service: where a cluster's members find each other (the
//! master's address through leader election, store nodes and their
//! segments' endpoints), behind one trait with two implementations:
//!
//! - [`InProcess`]: a map in this process, the single-machine default;
//! - [`Etcd`]: an etcd cluster (v3 API: KV, leases, elections), as
//!   Mooncake uses it for multi-node clusters and master failover.
//!
//! Keys live under `moonlab/<cluster>/`: `master` (the election; its value
//! is the leader's RPC address), `nodes/<name>` (a store node's transfer
//! endpoint, under the node's lease: it disappears when the node dies),
//! `segments/<name>` (the master's view of mounted segments).

mod etcd;
mod inproc;

pub use etcd::Etcd;
pub use inproc::InProcess;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A metadata failure, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata: {0}")]
pub struct MetaError(pub String);

/// A lease kept alive in the background until dropped (or lost); keys put
/// under it vanish when it ends.
pub struct Lease {
    pub id: i64,
    lost: watch::Receiver<bool>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Lease {
    pub(crate) fn new(
        id: i64,
        lost: watch::Receiver<bool>,
        on_drop: Box<dyn FnOnce() + Send + Sync>,
    ) -> Lease {
        Lease {
            id,
            lost,
            on_drop: Some(on_drop),
        }
    }

    /// Resolves when the lease could not be kept alive (its keys may be
    /// gone: a leader must stop serving).
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|l| *l).await;
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

/// The metadata service.
#[tonic::async_trait]
pub trait Metadata: Send + Sync {
    async fn put(&self, key: &str, value: &str, lease: Option<&Lease>) -> Result<(), MetaError>;
    async fn get(&self, key: &str) -> Result<Option<String>, MetaError>;
    async fn delete(&self, key: &str) -> Result<(), MetaError>;
    /// Keys and values under `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, MetaError>;
    /// A lease of `ttl`, kept alive until dropped.
    async fn lease(&self, ttl: Duration) -> Result<Lease, MetaError>;
    /// Waits until this caller leads `election`, announcing `value`, for as
    /// long as `lease` lives.
    async fn campaign(&self, election: &str, value: &str, lease: &Lease) -> Result<(), MetaError>;
    /// The current leader's value.
    async fn leader(&self, election: &str) -> Result<Option<String>, MetaError>;
}

/// The keys of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            prefix: format!("moonlab/{cluster}/"),
        }
    }
    pub fn master(&self) -> String {
        format!("{}master", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }
    pub fn node(&self, name: &str) -> String {
        format!("{}nodes/{name}", self.prefix)
    }
    pub fn segment(&self, name: &str) -> String {
        format!("{}segments/{name}", self.prefix)
    }
    pub fn segments(&self) -> String {
        format!("{}segments/", self.prefix)
    }
}

/// Connects to the metadata service a URL names: `inproc` (a fresh map in
/// this process) or `etcd://host:port[,host:port…]`.
pub async fn connect(url: &str) -> Result<Arc<dyn Metadata>, MetaError> {
    if url == "inproc" {
        return Ok(Arc::new(InProcess::new()));
    }
    match url.strip_prefix("etcd://") {
        Some(eps) => Ok(Arc::new(Etcd::connect(eps).await?)),
        None => Err(MetaError(format!(
            "`{url}`: expected inproc or etcd://host:port[,host:port…]"
        ))),
    }
}
