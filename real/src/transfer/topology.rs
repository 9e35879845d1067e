//! Which network paths a transfer may take: the node's NICs, each with the
//! address it sends from and the NUMA node it hangs off. A batch's slices
//! are striped across the NICs nearest the local buffer (the paper's
//! topology-aware path selection, §3.3); a slice that fails on one path is
//! retried on the next, nearest first.

use std::net::IpAddr;

/// One network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    /// The address connections through this NIC are bound to.
    pub addr: IpAddr,
    pub numa_node: u32,
}

/// The NICs of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    nics: Vec<Nic>,
}

impl Topology {
    /// One NIC: loopback, on NUMA node 0.
    pub fn loopback() -> Topology {
        Topology {
            nics: vec![Nic {
                name: "lo".into(),
                addr: IpAddr::from([127, 0, 0, 1]),
                numa_node: 0,
            }],
        }
    }

    /// Parses `name=addr@numa,…`, e.g. `nic0=10.0.0.1@0,nic1=10.0.1.1@1`
    /// (`@numa` may be left out: node 0).
    pub fn parse(s: &str) -> Result<Topology, String> {
        let mut nics = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, rest) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected name=address[@numa]"))?;
            let (addr, numa) = match rest.split_once('@') {
                Some((a, n)) => (
                    a,
                    n.parse::<u32>()
                        .map_err(|_| format!("`{part}`: `{n}` is not a NUMA node number"))?,
                ),
                None => (rest, 0),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{part}`: `{addr}` is not an IP address"))?;
            if nics.iter().any(|n: &Nic| n.name == name) {
                return Err(format!("`{name}`: named twice"));
            }
            nics.push(Nic {
                name: name.to_string(),
                addr,
                numa_node: numa,
            });
        }
        if nics.is_empty() {
            return Err("expected at least one NIC".into());
        }
        Ok(Topology { nics })
    }

    pub fn nics(&self) -> &[Nic] {
        &self.nics
    }

    /// The NICs (indices) a buffer on `numa_node` uses, nearest first: the
    /// NICs on its node, then the rest. The first group is what slices are
    /// striped over; the rest are for retries.
    pub fn order_for(&self, numa_node: u32) -> (Vec<usize>, Vec<usize>) {
        let (near, far): (Vec<usize>, Vec<usize>) =
            (0..self.nics.len()).partition(|&i| self.nics[i].numa_node == numa_node);
        if near.is_empty() {
            // No NIC on the buffer's node: all are equally far.
            (far, Vec::new())
        } else {
            (near, far)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_nics_first() {
        let t = Topology::parse("a=127.0.0.1@0, b=127.0.0.2@1, c=127.0.0.3@0").unwrap();
        assert_eq!(t.order_for(0), (vec![0, 2], vec![1]));
        assert_eq!(t.order_for(1), (vec![1], vec![0, 2]));
        assert_eq!(t.order_for(7), (vec![0, 1, 2], vec![]));
        assert!(Topology::parse("a=1.2.3.4@x").unwrap_err().contains("NUMA"));
        assert!(Topology::parse("a=nope")
            .unwrap_err()
            .contains("IP address"));
        assert!(Topology::parse("a=1.1.1.1,a=1.1.1.2")
            .unwrap_err()
            .contains("twice"));
        assert!(Topology::parse("").is_err());
    }
}
