//! The pool of safekeepers this one belongs to (RFC 0008 §3), and which segments it shares with
//! each peer.
//!
//! A volume is cut into segments, and each segment is its own protection group: six safekeepers,
//! two per AZ, drawn from a **pool** of `N` (a multiple of three, at least six) by rendezvous
//! hashing ([`borealis_core::placement::choose_group`]). The pool is listed once, the same way
//! everywhere (`--pool` here, `--safekeepers` on the gateway and the pageservers): AZ by AZ, the
//! first third in AZ a, the second in b, the last in c
//! ([`borealis_core::placement::ordered_pool_azs`]). A node's place in that list is its **pool
//! index**, and the group of segment `s` of tenant `t` is `choose_group(t, s, azs)`: every node
//! computes the same six without asking anybody.
//!
//! What the safekeeper needs from this is [`Membership`]: its own pool index, and each `--peers`
//! entry's. Gossip ([`crate::gossip`]) uses it so that a node only ever holds the segments placed
//! on it: it looks at a peer's summary line for `(t, s)` only if both are members of the group of
//! `(t, s)`. With a pool of six every group is the whole pool, so nothing is filtered: exactly the
//! behaviour without `--pool`, where every peer shares every segment.
//!
//! Nodes are matched by address: an entry of `--pool` is this node if it is its `--listen`
//! address, and a peer if it is that peer's `--peers` address (the same text, or the same socket
//! address written another way: `[::1]:7001` is `[0:0:0:0:0:0:0:1]:7001`). Host names are
//! compared as text, nothing is resolved; so a safekeeper listening on `0.0.0.0` cannot find
//! itself in the pool: it must listen on the address the pool lists.
//!
//! Nothing here does I/O.

use borealis_core::placement::{choose_group, ordered_pool_azs, Group};
use borealis_core::{SegmentId, TenantId};
use std::net::SocketAddr;

/// The `--pool` list: the wire addresses of every safekeeper of the pool, in AZ order (empty: no
/// pool, every peer shares every segment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolList(pub Vec<String>);

/// Parses `host:port,host:port,...` (empty: no pool). Only the syntax: the count, duplicates and
/// this node's place are checked by [`Membership::new`].
pub fn parse_pool(s: &str) -> Result<PoolList, String> {
    let mut nodes = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            if s.trim().is_empty() {
                continue;
            }
            return Err(format!("--pool `{s}` has an empty entry"));
        }
        let port_ok = item
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("--pool entry `{item}` is not host:port"));
        }
        nodes.push(item.to_string());
    }
    Ok(PoolList(nodes))
}

/// Whether two addresses name the same node: the same text, or the same socket address.
pub fn same_addr(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return true;
    }
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// This safekeeper's place in the pool and its peers': which segments it shares with whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The AZ of every pool node, by pool index.
    azs: Vec<u8>,
    /// This node's pool index.
    me: usize,
    /// The pool index of each `--peers` entry, in `--peers` order.
    peers: Vec<usize>,
}

impl Membership {
    /// Places this node (`listen`) and its peers (`peers`, their addresses in `--peers` order) in
    /// the pool `pool` (addresses in AZ order). Refused, with a message that names the flag: a
    /// count that is not a pool (a multiple of three, at least six), an address listed twice,
    /// `listen` not in the pool, a peer not in the pool or at this node's own address.
    pub fn new(pool: &[String], listen: SocketAddr, peers: &[&str]) -> Result<Membership, String> {
        ordered_pool_azs(pool.len()).map_err(|e| format!("--pool: {e}"))?;
        for (i, addr) in pool.iter().enumerate() {
            if let Some(earlier) = pool[..i].iter().find(|a| same_addr(a, addr)) {
                return Err(if earlier == addr {
                    format!("--pool lists {addr} twice")
                } else {
                    format!("--pool lists one node twice: {earlier} and {addr}")
                });
            }
        }
        let listen_text = listen.to_string();
        let me = pool
            .iter()
            .position(|a| same_addr(a, &listen_text))
            .ok_or_else(|| {
                format!(
                    "--pool does not list this safekeeper's --listen address {listen}: list every \
                     safekeeper of the pool, this one included, by the address it listens on"
                )
            })?;
        let peers = peers
            .iter()
            .map(|addr| {
                let node = pool
                    .iter()
                    .position(|a| same_addr(a, addr))
                    .ok_or_else(|| {
                        format!(
                            "--peers lists {addr}, which --pool does not: every peer must be a \
                             safekeeper of the pool"
                        )
                    })?;
                if node == me {
                    return Err(format!(
                        "--peers lists {addr}, this safekeeper's own --listen address"
                    ));
                }
                Ok(node)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Membership::of_nodes(pool.len(), me, peers)
    }

    /// The same from pool indexes: a pool of `n` listed AZ by AZ, this node `me`, peer `i` at
    /// pool index `peers[i]` (each once, none of them `me`).
    pub fn of_nodes(n: usize, me: usize, peers: Vec<usize>) -> Result<Membership, String> {
        let azs = ordered_pool_azs(n).map_err(|e| format!("--pool: {e}"))?;
        if me >= n {
            return Err(format!("node {me} is not in a pool of {n}"));
        }
        for (i, &p) in peers.iter().enumerate() {
            if p >= n || p == me || peers[..i].contains(&p) {
                return Err(format!(
                    "peer {i} at pool node {p}: not another node of the pool of {n}, or listed twice"
                ));
            }
        }
        Ok(Membership { azs, me, peers })
    }

    /// This node's pool index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// How many safekeepers the pool has.
    pub fn pool_len(&self) -> usize {
        self.azs.len()
    }

    /// The pool index of peer `peer` (its place in `--peers`), if there is such a peer.
    pub fn peer_node(&self, peer: usize) -> Option<usize> {
        self.peers.get(peer).copied()
    }

    /// The pool nodes other than this one that no `--peers` entry names (gossip never hears
    /// from them).
    pub fn unreached(&self) -> Vec<usize> {
        (0..self.pool_len())
            .filter(|n| *n != self.me && !self.peers.contains(n))
            .collect()
    }

    /// The protection group of `segment` of `tenant`.
    pub fn group(&self, tenant: TenantId, segment: SegmentId) -> Group {
        choose_group(tenant, segment, &self.azs)
    }
}

/// Whether this node and `peer` are both members of `group` (see `gossip::plan_round_placed`).
pub fn shares_group(pool: &Membership, peer: usize, group: &Group) -> bool {
    group.contains(pool.me())
        && pool
            .peer_node(peer)
            .is_some_and(|node| group.contains(node))
}

/// Whether peer `peer`'s summary `line` counts for this node: always without a pool, else only if
/// both are members of the segment's group (as `gossip::plan_round_placed` counts lines).
pub fn shares_line(
    pool: Option<&Membership>,
    peer: usize,
    line: &borealis_wire::SegmentSummary,
) -> bool {
    pool.is_none_or(|pool| shares_group(pool, peer, &pool.group(line.tenant, line.segment)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 7001 + i)).collect()
    }

    fn listen(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_pool_parses_as_host_port_entries() {
        assert_eq!(parse_pool("").unwrap(), PoolList::default());
        assert_eq!(parse_pool("  ").unwrap(), PoolList::default());
        assert_eq!(
            parse_pool("a:1, b:2").unwrap(),
            PoolList(vec!["a:1".into(), "b:2".into()])
        );
        for bad in ["a", "a:1,,b:2", "a:1,", ":1", "a:x", "a:70000"] {
            assert!(parse_pool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn this_node_and_its_peers_are_found_by_address() {
        let pool = addrs(9);
        let peers = ["127.0.0.1:7001", "127.0.0.1:7009", "127.0.0.1:7005"];
        let m = Membership::new(&pool, listen(7004), &peers).unwrap();
        assert_eq!(m.me(), 3);
        assert_eq!(m.pool_len(), 9);
        assert_eq!(
            (
                m.peer_node(0),
                m.peer_node(1),
                m.peer_node(2),
                m.peer_node(3)
            ),
            (Some(0), Some(8), Some(4), None)
        );
        assert_eq!(m.unreached(), vec![1, 2, 5, 6, 7]);
        // The same socket address written another way is the same node.
        let v6: Vec<String> = (1..=6).map(|i| format!("[::1]:700{i}")).collect();
        let m = Membership::new(
            &v6,
            "[0:0:0:0:0:0:0:1]:7002".parse().unwrap(),
            &["[0::1]:7006"],
        )
        .unwrap();
        assert_eq!((m.me(), m.peer_node(0)), (1, Some(5)));
    }

    #[test]
    fn a_bad_pool_is_refused_with_a_message_naming_the_flag() {
        let err = |pool: &[String], me: u16, peers: &[&str]| {
            Membership::new(pool, listen(me), peers).unwrap_err()
        };
        for n in [3, 5, 7, 10] {
            let e = err(&addrs(n), 7001, &[]);
            assert!(e.starts_with("--pool: a pool of"), "{e}");
        }
        let mut twice = addrs(6);
        twice[4] = twice[1].clone();
        assert!(err(&twice, 7001, &[]).contains("twice"));
        assert!(err(&addrs(6), 7100, &[]).contains("does not list this safekeeper's --listen"));
        assert!(err(&addrs(6), 7001, &["127.0.0.1:7200"]).contains("which --pool does not"));
        assert!(err(&addrs(6), 7001, &["127.0.0.1:7001"]).contains("own --listen"));
        assert!(Membership::of_nodes(6, 6, vec![]).is_err());
        assert!(Membership::of_nodes(6, 0, vec![1, 1]).is_err());
        assert!(Membership::of_nodes(6, 0, vec![0]).is_err());
        assert!(Membership::of_nodes(6, 0, vec![6]).is_err());
    }

    #[test]
    fn in_a_pool_of_six_every_group_is_the_whole_pool() {
        let m = Membership::of_nodes(6, 2, vec![0, 1, 3, 4, 5]).unwrap();
        for s in 0..50 {
            assert_eq!(m.group(TenantId(7), SegmentId(s)).0, [0, 1, 2, 3, 4, 5]);
        }
    }
}
