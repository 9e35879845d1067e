//! The master as a core [`ObjectStore`], so that the store scenarios of
//! `core/tests/scenarios/*.scn` run against it unchanged: one client, one
//! mounted segment of the scenario's capacity, the scenario's rules as the
//! master's configuration. Lease tokens and pins are held by key, as a
//! client would hold them.

use super::{ClientId, Lease, Master, MasterConfig, ObjectPins, PutOptions, SegmentDesc};
use crate::error::ErrorCode;
use moonlab_core::store::scenario::{KeyState, ObjectStore, StoreError, StoreSetup};
use moonlab_core::types::Nanos;
use std::collections::HashMap;

/// The client id scenarios write as.
pub const SCENARIO_CLIENT: ClientId = ClientId(1);

/// The master configuration a scenario's `store` line describes.
pub fn config_for(setup: &StoreSetup) -> MasterConfig {
    MasterConfig {
        watermarks: setup.watermarks,
        policy: setup.policy,
        lease: setup.lease,
        soft_pin: setup.soft_pin,
        put_timeout: setup.put_timeout,
        preempt_after: setup.preempt_after,
        // Scenarios have no heartbeats: the client never expires.
        client_ttl: Nanos(u64::MAX),
        ..MasterConfig::default()
    }
}

/// A master with one segment, driven by a scenario.
pub struct MasterStore {
    master: Master,
    leases: HashMap<String, Lease>,
    pins: HashMap<String, Vec<ObjectPins>>,
}

fn to_store(e: ErrorCode) -> StoreError {
    // Errors a scenario cannot name are master bugs here; `busy` is the
    // closest refusal and the scenario line will say what it expected.
    e.as_store_error().unwrap_or(StoreError::Busy)
}

impl MasterStore {
    /// Builds the master and mounts one segment of the scenario's capacity.
    pub fn new(setup: &StoreSetup) -> Result<MasterStore, String> {
        let master = Master::new(config_for(setup))?;
        master
            .mount_segment(
                SCENARIO_CLIENT,
                SegmentDesc {
                    name: "scenario".into(),
                    endpoint: "local".into(),
                    size: setup.capacity_bytes,
                    tier: moonlab_core::store::Tier::Dram,
                },
                Nanos::ZERO,
            )
            .map_err(|e| format!("mount: {e}"))?;
        Ok(MasterStore {
            master,
            leases: HashMap::new(),
            pins: HashMap::new(),
        })
    }

    pub fn master(&self) -> &Master {
        &self.master
    }
}

impl ObjectStore for MasterStore {
    fn put_start(
        &mut self,
        key: &str,
        bytes: u64,
        soft_pin: bool,
        now: Nanos,
    ) -> Result<(), StoreError> {
        let opts = PutOptions {
            soft_pin,
            ..PutOptions::default()
        };
        self.master
            .put_start(SCENARIO_CLIENT, key, bytes, &opts, now)
            .map_err(to_store)?;
        Ok(())
    }

    fn put_end(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        self.master
            .put_end(SCENARIO_CLIENT, key, None, now)
            .map_err(to_store)
    }

    fn put_revoke(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        self.master
            .put_revoke(SCENARIO_CLIENT, key, now)
            .map_err(to_store)
    }

    fn read(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let list = self.master.get_replica_list(key, now).map_err(to_store)?;
        self.leases.insert(key.to_string(), list.lease);
        Ok(())
    }

    fn lease_valid(&self, key: &str, now: Nanos) -> bool {
        self.leases
            .get(key)
            .is_some_and(|l| self.master.lease_valid(l, now))
    }

    fn pin(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let p = self.master.pin(key, now).map_err(to_store)?;
        self.pins.entry(key.to_string()).or_default().push(p);
        Ok(())
    }

    fn unpin(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let p = self
            .pins
            .get_mut(key)
            .and_then(Vec::pop)
            .ok_or(StoreError::NotFound)?;
        if self.master.unpin(p, now) {
            Ok(())
        } else {
            Err(StoreError::Expired)
        }
    }

    fn remove(&mut self, key: &str, force: bool, now: Nanos) -> Result<(), StoreError> {
        self.master.remove(key, force, now).map_err(to_store)
    }

    fn evict(&mut self, now: Nanos) {
        self.master.tick(now);
    }

    fn state(&self, key: &str, now: Nanos) -> KeyState {
        if self.master.is_readable(key) {
            KeyState::Kept
        } else if self.master.is_writing(key, now) {
            KeyState::NotReady
        } else {
            KeyState::Missing
        }
    }

    fn used_bytes(&mut self, now: Nanos) -> u64 {
        self.master.used_bytes(now)
    }

    fn count(&mut self, _now: Nanos) -> u64 {
        self.master.count()
    }
}
