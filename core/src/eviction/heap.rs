//! The lazily-deleted binary heap of candidates shared by the heap-ranked
//! policies ([`super::Belady`], [`super::Gdsf`]): each slot has at most one
//! current entry; an entry pushed for a slot supersedes the slot's older
//! one, and [`LazyHeap::forget`] makes it stale, without searching the heap.
//! Stale entries are skipped when they reach the top, and the heap is
//! compacted once they outnumber the current ones (plus a fixed slack).
//! An entry counts while its id (a stamp the policy bumps on every change,
//! or a key that never repeats for a slot) is its slot's current one.

use std::collections::BinaryHeap;

/// A heap entry: it names the slot it stands for and carries an id that
/// tells it from the slot's other entries (a stamp, or the whole key).
pub(crate) trait Entry: Ord + Copy {
    type Id: Copy + Eq + Default;
    fn slot(&self) -> u32;
    fn id(&self) -> Self::Id;
}

pub(crate) struct LazyHeap<E: Entry> {
    heap: BinaryHeap<E>,
    /// Per slot: whether it has a current entry in the heap, and that
    /// entry's id.
    in_heap: Vec<bool>,
    ids: Vec<E::Id>,
    /// Slots with a current entry.
    live: usize,
}

impl<E: Entry> Default for LazyHeap<E> {
    fn default() -> Self {
        LazyHeap {
            heap: BinaryHeap::new(),
            in_heap: Vec::new(),
            ids: Vec::new(),
            live: 0,
        }
    }
}

impl<E: Entry> LazyHeap<E> {
    /// Makes room for per-slot state up to slot `s`.
    #[inline]
    pub fn ensure(&mut self, s: usize) {
        if self.in_heap.len() <= s {
            self.in_heap.resize(s + 1, false);
            self.ids.resize(s + 1, E::Id::default());
        }
    }

    /// The id of the current entry of slot `s`, if it has one in the heap.
    #[inline]
    pub fn current(&self, s: usize) -> Option<E::Id> {
        self.in_heap[s].then(|| self.ids[s])
    }

    /// The id of the last entry pushed for slot `s`, current or stale
    /// (the default if none was).
    #[inline]
    pub fn last_id(&self, s: usize) -> E::Id {
        self.ids[s]
    }

    /// Pushes `e` as its slot's current entry; an older one goes stale.
    #[inline]
    pub fn push(&mut self, e: E) {
        let s = e.slot() as usize;
        self.heap.push(e);
        self.ids[s] = e.id();
        if !self.in_heap[s] {
            self.in_heap[s] = true;
            self.live += 1;
        }
        if self.heap.len() > 2 * self.live + 64 {
            let (in_heap, ids) = (&self.in_heap, &self.ids);
            self.heap.retain(|e| {
                let s = e.slot() as usize;
                ids[s] == e.id() && in_heap[s]
            });
        }
    }

    /// Makes the current entry of slot `s`, if any, stale.
    #[inline]
    pub fn forget(&mut self, s: usize) {
        if self.in_heap[s] {
            self.in_heap[s] = false;
            self.live -= 1;
        }
    }

    /// Pops the greatest current entry, skipping stale ones; its slot has
    /// no entry afterwards.
    #[inline]
    pub fn pop(&mut self) -> Option<E> {
        while let Some(e) = self.heap.pop() {
            let s = e.slot() as usize;
            if self.ids[s] == e.id() && self.in_heap[s] {
                self.in_heap[s] = false;
                self.live -= 1;
                return Some(e);
            }
        }
        None
    }

    /// Entries in the heap, stale ones included (tests only).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Slots with a current entry (tests only).
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::{Entry, LazyHeap};

    /// (key, slot, stamp)
    impl Entry for (u32, u32, u32) {
        type Id = u32;
        fn slot(&self) -> u32 {
            self.1
        }
        fn id(&self) -> u32 {
            self.2
        }
    }

    #[test]
    fn superseded_and_forgotten_entries_are_skipped() {
        let mut h = LazyHeap::<(u32, u32, u32)>::default();
        h.ensure(3);
        h.push((5, 0, 0));
        h.push((9, 1, 0));
        h.push((7, 2, 0));
        // Slot 1 drops to 1 (stamp 1); slot 2 is forgotten.
        h.push((1, 1, 1));
        h.forget(2);
        assert_eq!(h.current(1), Some(1));
        assert_eq!(h.current(2), None);
        assert_eq!(h.pop(), Some((5, 0, 0)));
        assert_eq!(h.pop(), Some((1, 1, 1)));
        assert_eq!(h.pop(), None);
        assert_eq!(h.live(), 0);
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut h = LazyHeap::<(u32, u32, u32)>::default();
        h.ensure(0);
        for t in 0..1000 {
            h.push((t, 0, t));
        }
        assert!(h.len() <= 2 * h.live() + 65);
        assert_eq!(h.pop(), Some((999, 0, 999)));
        assert_eq!(h.pop(), None);
    }
}
