//! The in-process metadata service: a map and elections in this process's
//! memory (one machine, one process: tests and single-process setups).

use super::{Lease, MetaError, Metadata};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

#[derive(Default)]
struct State {
    /// key → (value, lease id or 0).
    kv: BTreeMap<String, (String, i64)>,
    /// election → (leader's value, its lease).
    leaders: BTreeMap<String, (String, i64)>,
}

/// The in-process metadata service (clones share one map).
#[derive(Clone, Default)]
pub struct InProcess {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    next_lease: Arc<AtomicI64>,
}

impl InProcess {
    pub fn new() -> InProcess {
        InProcess {
            next_lease: Arc::new(AtomicI64::new(1)),
            ..InProcess::default()
        }
    }
}

#[tonic::async_trait]
impl Metadata for InProcess {
    async fn put(&self, key: &str, value: &str, lease: Option<&Lease>) -> Result<(), MetaError> {
        self.state.lock().kv.insert(
            key.to_string(),
            (value.to_string(), lease.map_or(0, |l| l.id)),
        );
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, MetaError> {
        Ok(self.state.lock().kv.get(key).map(|v| v.0.clone()))
    }

    async fn delete(&self, key: &str) -> Result<(), MetaError> {
        self.state.lock().kv.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, MetaError> {
        Ok(self
            .state
            .lock()
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect())
    }

    async fn lease(&self, _ttl: Duration) -> Result<Lease, MetaError> {
        let id = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        let state = self.state.clone();
        let changed = self.changed.clone();
        Ok(Lease::new(
            id,
            rx,
            Box::new(move || {
                drop(tx);
                let mut s = state.lock();
                s.kv.retain(|_, v| v.1 != id);
                s.leaders.retain(|_, v| v.1 != id);
                changed.notify_waiters();
            }),
        ))
    }

    async fn campaign(&self, election: &str, value: &str, lease: &Lease) -> Result<(), MetaError> {
        loop {
            let notified = self.changed.notified();
            {
                let mut s = self.state.lock();
                if !s.leaders.contains_key(election) {
                    s.leaders
                        .insert(election.to_string(), (value.to_string(), lease.id));
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    async fn leader(&self, election: &str) -> Result<Option<String>, MetaError> {
        Ok(self.state.lock().leaders.get(election).map(|v| v.0.clone()))
    }
}
