//! A store node's catalog: what its segment holds, as writers noted it
//! (key, object id, offset, size, checksum), pruned by the objects the
//! master reports freed. It is what lets a standby master that takes over
//! rebuild its object table without losing an object that still has a live
//! replica: on mounting again the node reports the entries whose bytes
//! still match their checksum ([`Catalog::report`]), and the master adopts
//! them where they lie.

use crate::master::ReportedObject;
use crate::transfer::wire::Note;
use crate::transfer::Region;
use std::collections::{BTreeMap, HashMap};

/// The catalog of one segment.
#[derive(Default, Debug)]
pub struct Catalog {
    /// offset → note.
    by_offset: BTreeMap<u64, Note>,
    /// object id → offset.
    by_object: HashMap<u64, u64>,
}

impl Catalog {
    pub fn new() -> Catalog {
        Catalog::default()
    }

    pub fn len(&self) -> usize {
        self.by_offset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty()
    }

    /// Records a writer's note; entries it overlaps are stale (their range
    /// was freed and reused) and go. A note of size 0 withdraws the
    /// object's entry (a put that failed after noting; objects are never
    /// empty).
    pub fn record(&mut self, note: Note) {
        if note.size == 0 {
            self.release(note.object);
            return;
        }
        let end = note.offset.saturating_add(note.size);
        let stale: Vec<u64> = self
            .by_offset
            .range(..end)
            .rev()
            .take_while(|(_, n)| n.offset.saturating_add(n.size) > note.offset)
            .map(|(&o, _)| o)
            .collect();
        for o in stale {
            if let Some(n) = self.by_offset.remove(&o) {
                self.by_object.remove(&n.object);
            }
        }
        if let Some(old) = self.by_object.insert(note.object, note.offset) {
            self.by_offset.remove(&old);
        }
        self.by_offset.insert(note.offset, note);
    }

    /// Forgets object `object` (the master freed it).
    pub fn release(&mut self, object: u64) {
        if let Some(o) = self.by_object.remove(&object) {
            self.by_offset.remove(&o);
        }
    }

    /// The entries whose bytes in `region` still match their checksum, for
    /// a master that does not know this segment. Entries that do not match
    /// (overwritten, torn) are dropped from the catalog.
    pub fn report(&mut self, region: &Region) -> Vec<ReportedObject> {
        self.report_verified(|n| {
            // SAFETY: reading bytes to hash them; a concurrent writer would
            // only make the checksum fail.
            unsafe { region.bytes(n.offset, n.size) }
                .map(|b| crate::client::checksum(b) == n.checksum)
                .unwrap_or(false)
        })
    }

    /// As [`Catalog::report`], with `verify` telling whether a note's bytes
    /// still match its checksum (an SSD segment reads them from disk).
    pub fn report_verified(&mut self, verify: impl Fn(&Note) -> bool) -> Vec<ReportedObject> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for n in self.by_offset.values() {
            if verify(n) {
                out.push(ReportedObject {
                    object: n.object,
                    key: n.key.clone(),
                    offset: n.offset,
                    size: n.size,
                    checksum: Some(n.checksum),
                });
            } else {
                bad.push(n.object);
            }
        }
        for o in bad {
            self.release(o);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(object: u64, offset: u64, size: u64, region: &Region, fill: u8) -> Note {
        let bytes = vec![fill; size as usize];
        region.write_at(offset, &bytes).unwrap();
        Note {
            object,
            offset,
            size,
            checksum: crate::client::checksum(&bytes),
            key: format!("k{object}"),
        }
    }

    #[test]
    fn overlaps_and_releases_prune_and_reports_verify() {
        let r = Region::new(10_000).unwrap();
        let mut c = Catalog::new();
        c.record(note(1, 0, 1000, &r, 1));
        c.record(note(2, 1000, 1000, &r, 2));
        c.record(note(3, 5000, 1000, &r, 3));
        // Object 4 reuses part of 1's and 2's ranges: both are stale.
        c.record(note(4, 500, 1000, &r, 4));
        // A failed put's note withdrawn: its bytes are whole, yet it goes.
        c.record(note(5, 8000, 1000, &r, 5));
        c.record(Note {
            size: 0,
            checksum: 0,
            ..note(5, 8000, 1000, &r, 5)
        });
        let keys: Vec<String> = c.report(&r).into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["k4", "k3"]);
        c.release(3);
        assert_eq!(c.len(), 1);
        // Bytes changed behind the catalog's back: not reported.
        r.write_at(600, &[9]).unwrap();
        assert!(c.report(&r).is_empty());
        assert!(c.is_empty());
    }
}
