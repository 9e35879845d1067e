//! The network as flows: every transfer (a prefix fetch between nodes, a
//! DRAM→HBM load, a KV stream to a decode node) is a flow over links (a
//! node's NIC send side, another's NIC receive side, a node's host-to-device
//! path). Rates are max-min fair shares, recomputed by progressive filling
//! whenever a flow starts or ends — not fixed delays. A flow carries what it
//! is for (the simulator's `FlowPurpose`), handed back when it completes.

use moonlab_core::Nanos;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u32);

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u32);

/// What kind of link, for byte accounting per link type.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    NicTx,
    NicRx,
    H2d,
    Ssd,
}

struct Link {
    capacity_bytes_per_s: f64,
    kind: LinkKind,
}

struct Flow<T> {
    links: Vec<LinkId>,
    total_bytes: f64,
    remaining_bytes: f64,
    rate_bytes_per_s: f64,
    tag: T,
}

/// Links, active flows and their max-min fair rates. `T` says what a flow
/// is for; it comes back when the flow completes.
pub struct Network<T> {
    links: Vec<Link>,
    flows: Vec<Option<Flow<T>>>,
    free: Vec<u32>,
    now: Nanos,
    /// Bytes carried, per link kind (NicTx, NicRx, H2d, Ssd).
    pub bytes_by_kind: [f64; 4],
    /// Bytes of every flow started, and of every flow completed.
    pub bytes_started: f64,
    pub bytes_completed: f64,
    /// Flows crossing each link now.
    users: Vec<u32>,
}

fn kind_index(k: LinkKind) -> usize {
    match k {
        LinkKind::NicTx => 0,
        LinkKind::NicRx => 1,
        LinkKind::H2d => 2,
        LinkKind::Ssd => 3,
    }
}

impl<T: Copy> Default for Network<T> {
    fn default() -> Self {
        Network::new()
    }
}

impl<T: Copy> Network<T> {
    pub fn new() -> Network<T> {
        Network {
            links: Vec::new(),
            flows: Vec::new(),
            free: Vec::new(),
            now: Nanos::ZERO,
            bytes_by_kind: [0.0; 4],
            bytes_started: 0.0,
            bytes_completed: 0.0,
            users: Vec::new(),
        }
    }

    pub fn add_link(&mut self, capacity_bytes_per_s: f64, kind: LinkKind) -> LinkId {
        self.links.push(Link {
            capacity_bytes_per_s,
            kind,
        });
        self.users.push(0);
        LinkId(self.links.len() as u32 - 1)
    }

    /// Bytes carried so far on the links of `kind`.
    pub fn bytes(&self, kind: LinkKind) -> f64 {
        self.bytes_by_kind[kind_index(kind)]
    }

    pub fn link_capacity(&self, l: LinkId) -> f64 {
        self.links[l.0 as usize].capacity_bytes_per_s
    }

    /// Flows crossing link `l` now.
    pub fn flows_on(&self, l: LinkId) -> usize {
        self.users[l.0 as usize] as usize
    }

    /// What a new flow over `l` would get there: an equal share of the link
    /// with the flows it already carries (its max-min share if they are all
    /// bottlenecked here; a lower bound otherwise).
    pub fn share_for_new_flow(&self, l: LinkId) -> f64 {
        self.link_capacity(l) / (self.flows_on(l) + 1) as f64
    }

    pub fn active_flows(&self) -> usize {
        self.flows.iter().filter(|f| f.is_some()).count()
    }

    /// Moves every flow forward to `now` at its current rate.
    fn advance(&mut self, now: Nanos) {
        debug_assert!(now >= self.now, "time went backwards in the network");
        let dt = now.saturating_sub(self.now).as_secs_f64();
        self.now = now;
        if dt == 0.0 {
            return;
        }
        for f in self.flows.iter_mut().flatten() {
            let moved = (f.rate_bytes_per_s * dt).min(f.remaining_bytes);
            f.remaining_bytes -= moved;
            for l in &f.links {
                self.bytes_by_kind[kind_index(self.links[l.0 as usize].kind)] += moved;
            }
        }
    }

    /// Progressive filling: repeatedly find the most constrained link, give
    /// its unfrozen flows an equal share of what is left, freeze them.
    fn recompute(&mut self) {
        let n_links = self.links.len();
        let mut left: Vec<f64> = self.links.iter().map(|l| l.capacity_bytes_per_s).collect();
        let mut users = vec![0u32; n_links];
        let mut frozen: Vec<bool> = self.flows.iter().map(|f| f.is_none()).collect();
        for f in self.flows.iter().flatten() {
            for l in &f.links {
                users[l.0 as usize] += 1;
            }
        }
        loop {
            let mut best: Option<(f64, usize)> = None;
            for (i, &u) in users.iter().enumerate() {
                if u > 0 {
                    let share = left[i] / u as f64;
                    if best.is_none_or(|b| share < b.0) {
                        best = Some((share, i));
                    }
                }
            }
            let Some((share, link)) = best else { break };
            debug_assert!(share >= -1e-6, "link {link} oversubscribed");
            for (fi, f) in self.flows.iter_mut().enumerate() {
                let Some(f) = f else { continue };
                if frozen[fi] || !f.links.iter().any(|l| l.0 as usize == link) {
                    continue;
                }
                f.rate_bytes_per_s = share;
                frozen[fi] = true;
                for l in &f.links {
                    left[l.0 as usize] -= share;
                    users[l.0 as usize] -= 1;
                }
            }
        }
    }

    /// Starts a flow of `bytes` over `links` at `now`; `tag` comes back when
    /// it completes.
    pub fn start(&mut self, now: Nanos, links: Vec<LinkId>, bytes: f64, tag: T) -> FlowId {
        self.advance(now);
        self.bytes_started += bytes.max(0.0);
        for l in &links {
            self.users[l.0 as usize] += 1;
        }
        let flow = Flow {
            links,
            total_bytes: bytes.max(0.0),
            remaining_bytes: bytes.max(0.0),
            rate_bytes_per_s: 0.0,
            tag,
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.flows[i as usize] = Some(flow);
                i
            }
            None => {
                self.flows.push(Some(flow));
                self.flows.len() as u32 - 1
            }
        };
        self.recompute();
        FlowId(id)
    }

    /// When the next flow completes at current rates.
    pub fn next_completion(&self) -> Option<Nanos> {
        self.flows
            .iter()
            .flatten()
            .map(|f| {
                if f.rate_bytes_per_s <= 0.0 {
                    Nanos::MAX
                } else {
                    let secs = f.remaining_bytes / f.rate_bytes_per_s;
                    self.now.saturating_add(Nanos((secs * 1e9).ceil() as u64))
                }
            })
            .min()
    }

    /// Advances to `now` and removes the flows that are done, pushing their
    /// tags (in flow-id order) to `done`.
    pub fn complete_due(&mut self, now: Nanos, done: &mut Vec<T>) {
        self.advance(now);
        let mut any = false;
        for (i, slot) in self.flows.iter_mut().enumerate() {
            let finished = slot
                .as_ref()
                .is_some_and(|f| f.remaining_bytes <= f.rate_bytes_per_s * 1e-9 + 1e-3);
            if finished {
                if let Some(f) = slot.take() {
                    self.bytes_completed += f.total_bytes;
                    for l in &f.links {
                        self.users[l.0 as usize] -= 1;
                    }
                    // Account the sliver below the completion tolerance.
                    for l in &f.links {
                        self.bytes_by_kind[kind_index(self.links[l.0 as usize].kind)] +=
                            f.remaining_bytes;
                    }
                    done.push(f.tag);
                }
                self.free.push(i as u32);
                any = true;
            }
        }
        if any {
            self.recompute();
        }
        debug_assert!(self.within_capacity());
    }

    /// True if no link carries more than its capacity (within rounding).
    pub fn within_capacity(&self) -> bool {
        self.link_loads()
            .iter()
            .zip(&self.links)
            .all(|(load, l)| *load <= l.capacity_bytes_per_s * (1.0 + 1e-9))
    }

    /// Sum of flow rates on each link (for invariant checks).
    pub fn link_loads(&self) -> Vec<f64> {
        let mut load = vec![0.0; self.links.len()];
        for f in self.flows.iter().flatten() {
            for l in &f.links {
                load[l.0 as usize] += f.rate_bytes_per_s;
            }
        }
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_flows_share_a_saturated_link_exactly() {
        // One 100 B/s link; flow A (100 B) starts at 0, flow B (50 B) at 0.5 s.
        // 0-0.5 s: A alone at 100 B/s -> 50 B left. Then both at 50 B/s:
        // B needs 1 s (ends 1.5 s), A's 50 B also end at 1.5 s.
        let mut n = Network::<u64>::new();
        let l = n.add_link(100.0, LinkKind::NicTx);
        n.start(Nanos::ZERO, vec![l], 100.0, 1);
        assert_eq!(n.next_completion(), Some(Nanos::from_millis(1000)));
        n.start(Nanos::from_millis(500), vec![l], 50.0, 2);
        assert_eq!(n.link_loads(), vec![100.0]);
        assert_eq!(n.next_completion(), Some(Nanos::from_millis(1500)));
        let mut done = vec![];
        n.complete_due(Nanos::from_millis(1500), &mut done);
        assert_eq!(done, vec![1, 2]);
        assert_eq!(n.active_flows(), 0);
        assert!((n.bytes_by_kind[0] - 150.0).abs() < 1e-6);
    }

    #[test]
    fn max_min_fairness_across_links() {
        // Links X (10) and Y (100). F1 uses X and Y, F2 uses Y only.
        // F1 is held to 10 by X; F2 gets the rest of Y: 90.
        let mut n = Network::<u64>::new();
        let x = n.add_link(10.0, LinkKind::NicTx);
        let y = n.add_link(100.0, LinkKind::NicRx);
        n.start(Nanos::ZERO, vec![x, y], 1e6, 1);
        n.start(Nanos::ZERO, vec![y], 1e6, 2);
        let loads = n.link_loads();
        assert_eq!(loads, vec![10.0, 100.0]);
    }
}
