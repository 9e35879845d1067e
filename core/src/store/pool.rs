//! [`Pool`]: the KVCache pool as a set of [`Segment`]s with what the
//! placement logic needs to know of each ([`SegmentInfo`]: which instance
//! owns it, which tier it is, whether other nodes may read it), and the
//! prefix index over all of them ([`Pool::prefix`]).
//!
//! Segments are not instances: a GPU node's DRAM, its SSD tier and a
//! storage-only node's memory are all segments, addressed by [`SegmentId`].
//! A prefix may have several replicas and may be spread over segments; a
//! [`PoolPrefix`] says, span by span, which segments hold each part.

use super::segment::Segment;
use crate::eviction::EvictionPolicy;
use crate::types::{BlockKey, InstanceId};
use serde::{Deserialize, Serialize};

/// A segment of the pool.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub u32);

/// The storage medium of a segment.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    Dram,
    Ssd,
    /// A GPU's HBM: a prefix cache local to one instance, in the KV blocks
    /// its running requests do not use (vLLM's automatic prefix caching).
    Hbm,
}

/// Where a segment lives and who may read it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The instance whose node contributes the segment (`None` for a
    /// storage-only node).
    pub owner: Option<InstanceId>,
    pub tier: Tier,
    /// True if other nodes may fetch from it over the network.
    pub shared: bool,
}

/// A run of prefix blocks `[start, end)` and the segments that hold all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixSpan {
    pub start: usize,
    pub end: usize,
    /// Every segment holding the whole span, lowest id first.
    pub replicas: Vec<SegmentId>,
}

/// The longest prefix of a request present in the pool, span by span.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolPrefix {
    pub spans: Vec<PrefixSpan>,
}

impl PoolPrefix {
    /// Leading blocks available somewhere in the pool.
    pub fn len(&self) -> usize {
        self.spans.last().map_or(0, |s| s.end)
    }
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
    /// The longest prefix one segment holds alone, and that segment (the
    /// lowest id among equals).
    pub fn best_single(&self) -> Option<(SegmentId, usize)> {
        let first = self.spans.first()?;
        first.replicas.first().map(|&s| (s, first.end))
    }
}

/// The prefix spans of a request of `blocks` blocks over `segments`, where
/// `holds(s, j)` says whether `segments[s]` holds block `j`: each span is as
/// long as the longest run any holder of its first block has, and lists
/// every segment holding all of it (in the order of `segments`). The one
/// definition of a pool prefix, for a core [`Pool`] and for the real
/// backend's metadata alike.
pub fn prefix_spans(
    blocks: usize,
    segments: &[SegmentId],
    holds: impl Fn(usize, usize) -> bool,
) -> PoolPrefix {
    let mut spans = Vec::new();
    let mut start = 0;
    while start < blocks {
        let mut best_end = start;
        let mut runs: Vec<(SegmentId, usize)> = Vec::new();
        for (s, &id) in segments.iter().enumerate() {
            if !holds(s, start) {
                continue;
            }
            let end = (start + 1..blocks)
                .find(|&j| !holds(s, j))
                .unwrap_or(blocks);
            best_end = best_end.max(end);
            runs.push((id, end));
        }
        if best_end == start {
            break;
        }
        spans.push(PrefixSpan {
            start,
            end: best_end,
            replicas: runs
                .into_iter()
                .filter(|&(_, e)| e == best_end)
                .map(|(id, _)| id)
                .collect(),
        });
        start = best_end;
    }
    PoolPrefix { spans }
}

pub struct Pool<P: EvictionPolicy = Box<dyn EvictionPolicy>> {
    segments: Vec<Segment<P>>,
    info: Vec<SegmentInfo>,
}

impl<P: EvictionPolicy> Default for Pool<P> {
    fn default() -> Self {
        Pool {
            segments: Vec::new(),
            info: Vec::new(),
        }
    }
}

impl<P: EvictionPolicy> Pool<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Mounts `segment` and returns its id.
    pub fn add(&mut self, segment: Segment<P>, info: SegmentInfo) -> SegmentId {
        self.segments.push(segment);
        self.info.push(info);
        SegmentId(self.segments.len() as u32 - 1)
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
    #[inline]
    pub fn segment(&self, id: SegmentId) -> &Segment<P> {
        &self.segments[id.0 as usize]
    }
    #[inline]
    pub fn segment_mut(&mut self, id: SegmentId) -> &mut Segment<P> {
        &mut self.segments[id.0 as usize]
    }
    pub fn info(&self, id: SegmentId) -> &SegmentInfo {
        &self.info[id.0 as usize]
    }
    pub fn ids(&self) -> impl Iterator<Item = SegmentId> {
        (0..self.segments.len() as u32).map(SegmentId)
    }
    pub fn iter(&self) -> impl Iterator<Item = (SegmentId, &Segment<P>, &SegmentInfo)> {
        self.segments
            .iter()
            .zip(&self.info)
            .enumerate()
            .map(|(i, (s, info))| (SegmentId(i as u32), s, info))
    }

    /// Leading `keys` each held by at least one of `segments` (an instance's
    /// DRAM and SSD tier together, say).
    pub fn prefix_over(&self, segments: &[SegmentId], keys: &[BlockKey]) -> usize {
        match segments {
            [only] => self.segment(*only).prefix_len(keys),
            _ => keys
                .iter()
                .take_while(|k| segments.iter().any(|&s| self.segment(s).contains(**k)))
                .count(),
        }
    }

    /// The longest prefix of `keys` held in the segments `eligible` accepts,
    /// as spans: each span is as long as the longest run any holder of its
    /// first block has, and lists every segment holding all of it.
    pub fn prefix(&self, keys: &[BlockKey], eligible: impl Fn(&SegmentInfo) -> bool) -> PoolPrefix {
        let segments: Vec<SegmentId> = self
            .iter()
            .filter(|(_, _, info)| eligible(info))
            .map(|(id, _, _)| id)
            .collect();
        prefix_spans(keys.len(), &segments, |s, j| {
            self.segment(segments[s]).contains(keys[j])
        })
    }

    /// Every segment's own bookkeeping check, naming the segment.
    pub fn check(&self) -> Result<(), String> {
        for (id, seg, _) in self.iter() {
            seg.check().map_err(|e| format!("segment {}: {e}", id.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::{Access, PolicyKind};
    use crate::store::SegmentConfig;
    use crate::Nanos;

    fn seg(keys: &[u64]) -> Segment {
        let mut s = Segment::new(PolicyKind::Lru.build(None), SegmentConfig::exact(None));
        for &k in keys {
            s.access(BlockKey(k), 1, &Access::at(Nanos::ZERO));
        }
        s
    }

    fn info(owner: u32) -> SegmentInfo {
        SegmentInfo {
            owner: Some(InstanceId(owner)),
            tier: Tier::Dram,
            shared: true,
        }
    }

    #[test]
    fn spans_replicas_and_a_prefix_spread_over_segments() {
        let mut pool = Pool::new();
        let a = pool.add(seg(&[0, 1, 2]), info(0));
        let b = pool.add(seg(&[0, 1, 2]), info(1));
        let c = pool.add(seg(&[0]), info(2));
        let d = pool.add(seg(&[3, 4]), info(3));
        let keys: Vec<BlockKey> = (0..6).map(BlockKey).collect();
        let p = pool.prefix(&keys, |_| true);
        assert_eq!(p.len(), 5);
        assert_eq!(
            p.spans,
            vec![
                PrefixSpan {
                    start: 0,
                    end: 3,
                    replicas: vec![a, b]
                },
                PrefixSpan {
                    start: 3,
                    end: 5,
                    replicas: vec![d]
                }
            ]
        );
        assert_eq!(p.best_single(), Some((a, 3)));
        // Only segments the filter accepts count.
        let p = pool.prefix(&keys, |i| i.owner != Some(InstanceId(0)));
        assert_eq!(p.best_single(), Some((b, 3)));
        assert_eq!(pool.prefix_over(&[c, d], &keys), 1);
        assert!(pool.prefix(&keys[5..], |_| true).is_empty());
        assert!(pool.check().is_ok());
    }
}
