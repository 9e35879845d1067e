//! Per-slot residency flags shared by the policies: one byte per slot that
//! says whether the slot holds a block ([`LIVE`]) and whether that block is
//! queued, i.e. a candidate for eviction ([`QUEUED`]); the low six bits
//! ([`OWN`]) are the policy's own. The methods are the state changes of the
//! trait contract, each reporting whether it applied, so a policy only adds
//! what it does to its own structures. A slot never used reads as 0.

/// The slot holds a block.
pub(crate) const LIVE: u8 = 0b1000_0000;
/// The block is evictable (in the policy's queue, list or heap).
pub(crate) const QUEUED: u8 = 0b0100_0000;
/// Bits a policy may use for its own per-block state.
pub(crate) const OWN: u8 = 0b0011_1111;

#[derive(Default)]
pub(crate) struct Flags(Vec<u8>);

impl Flags {
    /// Slot `s` now holds a new evictable block, with policy bits `own`.
    #[inline]
    pub fn insert(&mut self, s: u32, own: u8) {
        let i = s as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] = LIVE | QUEUED | (own & OWN);
    }

    /// The flags of slot `s` (0 if it was never used).
    #[inline]
    pub fn get(&self, s: u32) -> u8 {
        self.0.get(s as usize).copied().unwrap_or(0)
    }

    /// Sets the flags of a used slot.
    #[inline]
    pub fn set(&mut self, s: u32, f: u8) {
        self.0[s as usize] = f;
    }

    /// `evict`: the victim, a queued block, leaves; its flags are cleared.
    #[inline]
    pub fn evicted(&mut self, s: u32) {
        self.0[s as usize] = 0;
    }

    /// The flags of a used slot, to change in place.
    #[inline]
    pub fn get_mut(&mut self, s: u32) -> Option<&mut u8> {
        self.0.get_mut(s as usize)
    }

    #[inline]
    pub fn is_queued(&self, s: u32) -> bool {
        self.get(s) & QUEUED != 0
    }

    /// If the flags of slot `s` have `want` under `mask`, replaces them with
    /// `new(flags)`; returns the flags it had.
    #[inline]
    fn update(&mut self, s: u32, mask: u8, want: u8, new: impl FnOnce(u8) -> u8) -> Option<u8> {
        let f = self.0.get_mut(s as usize)?;
        let was = *f;
        if was & mask != want {
            return None;
        }
        *f = new(was);
        Some(was)
    }

    /// `on_unevictable`: if the block is queued, it no longer is; returns
    /// the flags it had.
    #[inline]
    pub fn unqueue(&mut self, s: u32) -> Option<u8> {
        self.update(s, QUEUED, QUEUED, |f| f & !QUEUED)
    }

    /// `on_evictable`: if the slot holds a block that is not queued, it is
    /// now; returns the flags it had.
    #[inline]
    pub fn requeue(&mut self, s: u32) -> Option<u8> {
        self.update(s, LIVE | QUEUED, LIVE, |f| f | QUEUED)
    }

    /// `on_remove`: if the slot holds a block, its flags are cleared;
    /// returns the flags it had.
    #[inline]
    pub fn clear(&mut self, s: u32) -> Option<u8> {
        self.update(s, LIVE, LIVE, |_| 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_transitions() {
        let mut f = Flags::default();
        assert_eq!(f.get(3), 0);
        assert_eq!((f.unqueue(3), f.requeue(3), f.clear(3)), (None, None, None));
        f.insert(3, 0b101);
        assert_eq!(f.get(3), LIVE | QUEUED | 0b101);
        assert_eq!(f.requeue(3), None);
        assert_eq!(f.unqueue(3), Some(LIVE | QUEUED | 0b101));
        assert_eq!(f.unqueue(3), None);
        assert_eq!(f.get(3), LIVE | 0b101);
        assert_eq!(f.requeue(3), Some(LIVE | 0b101));
        assert_eq!(f.clear(3), Some(LIVE | QUEUED | 0b101));
        assert_eq!((f.get(3), f.clear(3), f.requeue(3)), (0, None, None));
    }
}
