//! The safekeeper's configuration: long flags, or `SAFEKEEPER_*` environment variables.

use crate::disk_budget::{human_bytes, DISK_BUDGET_BYTES_MIN};
use crate::pool::{parse_pool, Membership, PoolList};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The longest gossip interval accepted: beyond it holes stay open for too long to be useful.
const GOSSIP_INTERVAL_MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Parser)]
#[command(
    name = "safekeeper",
    version,
    about = "The Borealis safekeeper: a durable, fenced, self-healing redo log."
)]
pub struct Config {
    /// This member's id, e.g. `sk-a1`.
    #[arg(long, env = "SAFEKEEPER_ID")]
    pub id: String,
    /// Address of the wire protocol (writers, pageservers, peers).
    #[arg(long, env = "SAFEKEEPER_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,
    /// Address of the admin HTTP server (/status, /metrics, /healthz).
    #[arg(long, env = "SAFEKEEPER_HTTP", default_value = "127.0.0.1:7081")]
    pub http: SocketAddr,
    /// Where the segment logs and control files live.
    #[arg(long, env = "SAFEKEEPER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The other members of the protection group: `id=host:port,id=host:port,...`.
    #[arg(long, env = "SAFEKEEPER_PEERS", default_value = "", value_parser = parse_peers)]
    pub peers: PeerList,
    /// The wire addresses of every safekeeper of the pool, this one included, AZ by AZ:
    /// `host:port,host:port,...` (a multiple of three, at least six: the first third in AZ a,
    /// then b, then c; the same list, in the same order, as the gateway's and the pageservers'
    /// `--safekeepers`). Each segment is then held by the six of its protection group only, and
    /// gossip fills a segment only between members of its group (`crate::pool`). This node is the
    /// entry equal to `--listen`; every `--peers` address must be listed. Empty (the default):
    /// every peer shares every segment.
    #[arg(long, env = "SAFEKEEPER_POOL", default_value = "", value_parser = parse_pool)]
    pub pool: PoolList,
    /// How often to exchange summaries with peers and fill holes, e.g. `200ms`.
    #[arg(long, env = "SAFEKEEPER_GOSSIP_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub gossip_interval: Duration,
    /// The most log (bytes of segment files, over all tenants) this safekeeper keeps. Records
    /// can only be dropped once a pageserver has checkpointed them to object storage; while it
    /// cannot (the object store is down), writers' appends that would go past this are refused
    /// with `read_only` ("disk budget exhausted ..."), until trims free space again. Fills from
    /// peers are never refused. 16 GiB by default.
    #[arg(long, env = "SAFEKEEPER_DISK_BUDGET_BYTES", default_value_t = crate::disk_budget::DISK_BUDGET_BYTES_DEFAULT)]
    pub disk_budget_bytes: u64,
    /// The cluster's public key (`keys/verifying.key`, made by `borealis up`): every connection
    /// must present a storage token it verifies (docs/security.md). Required: a safekeeper
    /// does not run open.
    #[arg(long, env = "SAFEKEEPER_AUTH_VERIFYING_KEY")]
    pub auth_verifying_key: PathBuf,
    /// This safekeeper's own storage token (`keys/<id>.token`, 0600), presented to its peers
    /// when it gossips.
    #[arg(long, env = "SAFEKEEPER_TOKEN_FILE")]
    pub token_file: PathBuf,
}

/// A peer of the protection group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub addr: String,
}

/// The `--peers` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerList(pub Vec<Peer>);

/// Parses `id=host:port,id=host:port` (empty: no peers).
pub fn parse_peers(s: &str) -> Result<PeerList, String> {
    let mut peers = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("peer `{item}` is not id=host:port"))?;
        let (id, addr) = (id.trim(), addr.trim());
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if id.is_empty() || !port_ok {
            return Err(format!("peer `{item}` is not id=host:port"));
        }
        peers.push(Peer {
            id: id.to_string(),
            addr: addr.to_string(),
        });
    }
    Ok(PeerList(peers))
}

impl Config {
    /// Checks what clap cannot: relationships between values.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("--id must not be empty".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.peers.0 {
            if p.id == self.id {
                return Err(format!("--peers lists this member itself ({})", p.id));
            }
            if !ids.insert(&p.id) {
                return Err(format!("--peers lists {} twice", p.id));
            }
        }
        if self.gossip_interval.is_zero() || self.gossip_interval > GOSSIP_INTERVAL_MAX {
            return Err(format!(
                "--gossip-interval must be within (0, {GOSSIP_INTERVAL_MAX:?}]"
            ));
        }
        if self.disk_budget_bytes < DISK_BUDGET_BYTES_MIN {
            return Err(format!(
                "--disk-budget-bytes must be at least {DISK_BUDGET_BYTES_MIN} ({}, one maximal record)",
                human_bytes(DISK_BUDGET_BYTES_MIN)
            ));
        }
        if self.listen == self.http {
            return Err("--listen and --http must differ".into());
        }
        self.membership()?;
        Ok(())
    }

    /// This node's and its peers' places in `--pool` (`None`: no pool given).
    pub fn membership(&self) -> Result<Option<Membership>, String> {
        if self.pool.0.is_empty() {
            return Ok(None);
        }
        let peers: Vec<&str> = self.peers.0.iter().map(|p| p.addr.as_str()).collect();
        Membership::new(&self.pool.0, self.listen, &peers).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_validate() {
        let c = Config::try_parse_from([
            "safekeeper",
            "--id",
            "sk-a1",
            "--data-dir",
            "/tmp/x",
            "--auth-verifying-key",
            "/k",
            "--token-file",
            "/t",
            "--peers",
            "sk-a2=127.0.0.1:7002, sk-b1=localhost:7003",
            "--gossip-interval",
            "150ms",
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(c.gossip_interval, Duration::from_millis(150));
        assert_eq!(c.peers.0.len(), 2);
        assert_eq!(c.disk_budget_bytes, 16 << 30, "16 GiB by default");
        assert_eq!(
            c.peers.0[1],
            Peer {
                id: "sk-b1".into(),
                addr: "localhost:7003".into()
            }
        );
        c.validate().unwrap();
    }

    #[test]
    fn a_safekeeper_does_not_start_without_its_keys() {
        let err = Config::try_parse_from(["safekeeper", "--id", "a", "--data-dir", "d"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--auth-verifying-key"), "{err}");
    }

    #[test]
    fn bad_peers_are_refused() {
        assert_eq!(parse_peers("").unwrap(), PeerList::default());
        assert!(parse_peers("sk-a2").is_err());
        assert!(parse_peers("=127.0.0.1:1").is_err());
        assert!(parse_peers("a=127.0.0.1").is_err());
        assert!(parse_peers("a=:80").is_err());
        let mut c = Config::try_parse_from([
            "safekeeper",
            "--id",
            "a",
            "--data-dir",
            "d",
            "--auth-verifying-key",
            "/k",
            "--token-file",
            "/t",
            "--peers",
            "a=h:1",
        ])
        .unwrap();
        assert!(c.validate().is_err());
        c.peers = parse_peers("b=h:1,b=h:2").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_pool_places_this_node_and_its_peers() {
        let parse = |listen: &str, peers: &str, pool: &str| {
            Config::try_parse_from([
                "safekeeper",
                "--id",
                "sk-b1",
                "--data-dir",
                "d",
                "--auth-verifying-key",
                "/k",
                "--token-file",
                "/t",
                "--listen",
                listen,
                "--peers",
                peers,
                "--pool",
                pool,
            ])
        };
        let nine = (1..=9)
            .map(|i| format!("127.0.0.1:700{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let c = parse(
            "127.0.0.1:7004",
            "sk-a1=127.0.0.1:7001,sk-c3=127.0.0.1:7009",
            &nine,
        )
        .unwrap();
        c.validate().unwrap();
        let m = c.membership().unwrap().unwrap();
        assert_eq!(
            (m.me(), m.peer_node(0), m.peer_node(1)),
            (3, Some(0), Some(8))
        );
        // Without --pool: no membership, every peer shares every segment.
        let c = parse("127.0.0.1:7004", "sk-a1=127.0.0.1:7001", "").unwrap();
        assert_eq!(c.membership(), Ok(None));
        c.validate().unwrap();
        // Not in the pool; a peer outside it; a count that is no pool; a malformed entry.
        let err = |listen, peers, pool| parse(listen, peers, pool).unwrap().validate().unwrap_err();
        assert!(err("127.0.0.1:7100", "", &nine).contains("--listen"));
        assert!(err("127.0.0.1:7004", "x=127.0.0.1:7100", &nine).contains("--peers"));
        let seven = (1..=7)
            .map(|i| format!("127.0.0.1:700{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(err("127.0.0.1:7004", "", &seven).contains("a pool of 7"));
        assert!(parse("127.0.0.1:7004", "", "127.0.0.1").is_err());
    }

    #[test]
    fn the_disk_budget_is_a_number_of_bytes_of_at_least_one_record() {
        let parse = |budget: &str| {
            Config::try_parse_from([
                "safekeeper",
                "--id",
                "a",
                "--data-dir",
                "d",
                "--auth-verifying-key",
                "/k",
                "--token-file",
                "/t",
                "--disk-budget-bytes",
                budget,
            ])
        };
        let c = parse("262144").unwrap();
        assert_eq!(c.disk_budget_bytes, 256 * 1024);
        c.validate().unwrap();
        assert!(parse("16GiB").is_err(), "bytes, as the name says");
        assert!(parse("-1").is_err());
        let tiny = parse("100").unwrap();
        let err = tiny.validate().unwrap_err();
        assert!(err.contains("--disk-budget-bytes"), "{err}");
    }
}
