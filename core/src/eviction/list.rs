//! Intrusive doubly-linked lists over slot indices, shared by the queue-based
//! policies. One [`Links`] arena holds the links of every slot; a slot is in
//! at most one [`List`] of that arena at a time. Front = newest, back = oldest.
//! [`TwoQueues`] is the resident side of the two-queue policies built on
//! them (ARC's T1 and T2, S3-FIFO's S and M).

use super::slots::{Flags, QUEUED};
use crate::types::BlockKey;

pub(crate) const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
pub(crate) struct List {
    pub head: u32,
    pub tail: u32,
    pub len: usize,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

#[derive(Default, Debug)]
pub(crate) struct Links {
    prev: Vec<u32>,
    next: Vec<u32>,
}

impl Links {
    #[inline]
    pub fn ensure(&mut self, slot: u32) {
        let need = slot as usize + 1;
        if self.prev.len() < need {
            self.prev.resize(need, NIL);
            self.next.resize(need, NIL);
        }
    }

    /// Towards the front (newer).
    #[inline]
    pub fn prev(&self, slot: u32) -> u32 {
        self.prev[slot as usize]
    }

    /// Towards the back (older).
    // Only tests walk lists front to back so far.
    #[cfg_attr(not(test), allow(dead_code))]
    #[inline]
    pub fn next(&self, slot: u32) -> u32 {
        self.next[slot as usize]
    }

    #[inline]
    pub fn push_front(&mut self, list: &mut List, slot: u32) {
        self.ensure(slot);
        let s = slot as usize;
        self.prev[s] = NIL;
        self.next[s] = list.head;
        if list.head != NIL {
            self.prev[list.head as usize] = slot;
        } else {
            list.tail = slot;
        }
        list.head = slot;
        list.len += 1;
    }

    // No policy queues at the back so far.
    #[cfg_attr(not(test), allow(dead_code))]
    #[inline]
    pub fn push_back(&mut self, list: &mut List, slot: u32) {
        self.ensure(slot);
        let s = slot as usize;
        self.next[s] = NIL;
        self.prev[s] = list.tail;
        if list.tail != NIL {
            self.next[list.tail as usize] = slot;
        } else {
            list.head = slot;
        }
        list.tail = slot;
        list.len += 1;
    }

    #[inline]
    pub fn unlink(&mut self, list: &mut List, slot: u32) {
        let s = slot as usize;
        let (p, n) = (self.prev[s], self.next[s]);
        if p != NIL {
            self.next[p as usize] = n;
        } else {
            list.head = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        } else {
            list.tail = p;
        }
        self.prev[s] = NIL;
        self.next[s] = NIL;
        list.len -= 1;
    }

    #[inline]
    pub fn move_to_front(&mut self, list: &mut List, slot: u32) {
        if list.head != slot {
            self.unlink(list, slot);
            self.push_front(list, slot);
        }
    }

    #[inline]
    pub fn pop_back(&mut self, list: &mut List) -> Option<u32> {
        let t = list.tail;
        if t == NIL {
            return None;
        }
        self.unlink(list, t);
        Some(t)
    }
}

/// Per-slot flag (one of [`Flags`]' own bits): the block belongs to
/// [`TwoQueues::second`].
pub(crate) const SECOND: u8 = 0b10_0000;

/// Two queues over one arena: every resident block belongs to the first or
/// the second ([`SECOND`]) and is linked in it while evictable; a set-aside
/// block keeps its membership and returns to the front of its queue. Also
/// keeps each slot's key, for the policies' ghosts. The policy moves blocks
/// between the queues and keeps its own counts.
#[derive(Default)]
pub(crate) struct TwoQueues {
    pub links: Links,
    /// Evictable blocks of each queue; front = newest.
    pub first: List,
    pub second: List,
    /// Per slot: residency, [`SECOND`] and the policy's own bits below it.
    pub flags: Flags,
    pub keys: Vec<BlockKey>,
}

impl TwoQueues {
    /// The arena and the list of one queue.
    #[inline]
    fn parts(&mut self, second: bool) -> (&mut Links, &mut List) {
        let list = if second {
            &mut self.second
        } else {
            &mut self.first
        };
        (&mut self.links, list)
    }

    #[inline]
    pub fn push_front(&mut self, s: u32, second: bool) {
        let (links, list) = self.parts(second);
        links.push_front(list, s);
    }

    #[inline]
    pub fn unlink(&mut self, s: u32, second: bool) {
        let (links, list) = self.parts(second);
        links.unlink(list, s);
    }

    #[inline]
    pub fn move_to_front(&mut self, s: u32, second: bool) {
        let (links, list) = self.parts(second);
        links.move_to_front(list, s);
    }

    /// Unlinks the oldest evictable block of a queue; its flags are the
    /// caller's to change.
    #[inline]
    pub fn pop_back(&mut self, second: bool) -> Option<u32> {
        let (links, list) = self.parts(second);
        links.pop_back(list)
    }

    /// `on_insert`: a new evictable block at the front of its queue.
    #[inline]
    pub fn insert(&mut self, s: u32, key: BlockKey, second: bool) {
        let i = s as usize;
        if self.keys.len() <= i {
            self.keys.resize(i + 1, BlockKey(0));
        }
        self.keys[i] = key;
        self.flags.insert(s, if second { SECOND } else { 0 });
        self.push_front(s, second);
    }

    /// `on_unevictable`: a queued block leaves its list.
    #[inline]
    pub fn set_aside(&mut self, s: u32) {
        if let Some(f) = self.flags.unqueue(s) {
            self.unlink(s, f & SECOND != 0);
        }
    }

    /// `on_evictable`: a set-aside block returns to the front of its queue.
    #[inline]
    pub fn give_back(&mut self, s: u32) {
        if let Some(f) = self.flags.requeue(s) {
            self.push_front(s, f & SECOND != 0);
        }
    }

    /// `on_remove`: the block leaves, linked or not. Returns whether it
    /// belonged to the second queue, if the slot held a block.
    #[inline]
    pub fn remove(&mut self, s: u32) -> Option<bool> {
        let f = self.flags.clear(s)?;
        let second = f & SECOND != 0;
        if f & QUEUED != 0 {
            self.unlink(s, second);
        }
        Some(second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(links: &Links, list: &List) -> Vec<u32> {
        let mut v = vec![];
        let mut c = list.head;
        while c != NIL {
            v.push(c);
            c = links.next(c);
        }
        v
    }

    #[test]
    fn push_unlink_pop() {
        let mut l = Links::default();
        let mut a = List::default();
        l.push_front(&mut a, 1);
        l.push_front(&mut a, 2);
        l.push_back(&mut a, 3);
        assert_eq!(collect(&l, &a), vec![2, 1, 3]);
        l.unlink(&mut a, 1);
        assert_eq!(collect(&l, &a), vec![2, 3]);
        l.move_to_front(&mut a, 3);
        assert_eq!(collect(&l, &a), vec![3, 2]);
        assert_eq!(l.pop_back(&mut a), Some(2));
        assert_eq!(l.pop_back(&mut a), Some(3));
        assert_eq!(l.pop_back(&mut a), None);
        assert_eq!(a.len, 0);
    }
}
