//! Choosing loopback ports for servers that are started later (local clusters, tests, benchmarks).
//!
//! A port the kernel hands out with `bind(:0)` comes from the **ephemeral range**
//! (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by default): the range every outgoing
//! connection's local port comes from too. Between choosing the port and the server's own `bind`,
//! any connection on the machine (another cluster's gateway talking to its safekeepers, say) can
//! take it, and the server fails to start with "address already in use" (seen in CI with two test
//! clusters starting at once). Below the range only another listener can take it, and a random
//! choice makes two clusters planning at once unlikely to meet. So ports are chosen at random in
//! `[PLANNED_PORT_MIN, start of the ephemeral range)`, and from the kernel only when that range is
//! too small or full.

use rand::Rng;
use std::net::TcpListener;

/// The lowest port chosen.
pub const PLANNED_PORT_MIN: u16 = 10_000;

/// Random tries below the ephemeral range before asking the kernel for any port.
const TRIES_MAX: usize = 1_000;

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_min() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768)
}

/// A loopback listener on a free port chosen as the module explains. Keep it bound until the
/// port is handed to its server, so that one plan never hands out the same port twice.
pub fn hold_free_port() -> std::io::Result<TcpListener> {
    let top = ephemeral_min();
    if top > PLANNED_PORT_MIN + 1_000 {
        let mut rng = rand::rng();
        for _ in 0..TRIES_MAX {
            let port = rng.random_range(PLANNED_PORT_MIN..top);
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                return Ok(l);
            }
        }
    }
    // No room below the ephemeral range (or all of it taken): any free port.
    TcpListener::bind("127.0.0.1:0")
}

/// A free loopback port, released at once (see [`hold_free_port`] to keep it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(hold_free_port()?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_bindable() {
        let top = ephemeral_min();
        let held: Vec<TcpListener> = (0..20).map(|_| hold_free_port().unwrap()).collect();
        let mut ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        if top > PLANNED_PORT_MIN + 1_000 {
            assert!(
                ports.iter().all(|&p| (PLANNED_PORT_MIN..top).contains(&p)),
                "{ports:?} not all in {PLANNED_PORT_MIN}..{top}"
            );
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 20, "a held port is never handed out twice");
        drop(held);
        let p = free_port().unwrap();
        TcpListener::bind(("127.0.0.1", p)).expect("a released port can be bound");
    }
}
