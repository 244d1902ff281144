//! `DIR/cluster.json`: the layout of a local cluster (docs/design.md §8), and how to start its nodes.

use crate::object_store_credentials;
use anyhow::{bail, Context};
use borealis_auth::{ClusterKeys, Role};
use serde::{Deserialize, Serialize};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const CLUSTER_FILE_VERSION: u32 = 1;
/// `borealis up --safekeepers` when not given: two per AZ, one protection group.
pub const SAFEKEEPERS_DEFAULT: usize = 6;
/// `borealis up --pageservers` when not given.
pub const PAGESERVERS_DEFAULT: usize = 2;
/// Pageservers (and safekeepers per AZ) a local cluster may have at most.
pub const NODES_PER_ROLE_MAX: usize = 30;
const AZS: [&str; 3] = ["a", "b", "c"];

/// The safekeepers of a pool of `n`, listed AZ by AZ as every node and gateway takes them:
/// `sk-a1 .. sk-aK, sk-b1 .., sk-c1 ..` (six: sk-a1, sk-a2, sk-b1, sk-b2, sk-c1, sk-c2).
pub fn safekeeper_ids(n: usize) -> anyhow::Result<Vec<(String, &'static str)>> {
    borealis_core::placement::ordered_pool_azs(n)
        .map_err(|e| anyhow::anyhow!("--safekeepers {n}: {e}"))?;
    if n / 3 > NODES_PER_ROLE_MAX {
        bail!("--safekeepers {n}: a local cluster has at most {NODES_PER_ROLE_MAX} per AZ");
    }
    Ok(AZS
        .iter()
        .flat_map(|az| (1..=n / 3).map(move |k| (format!("sk-{az}{k}"), *az)))
        .collect())
}

/// The pageservers of a pool of `n`: `ps-1 .. ps-n`, spread over the AZs a, b, c in turn.
pub fn pageserver_ids(n: usize) -> anyhow::Result<Vec<(String, &'static str)>> {
    if n == 0 || n > NODES_PER_ROLE_MAX {
        bail!("--pageservers {n}: between 1 and {NODES_PER_ROLE_MAX}");
    }
    Ok((1..=n)
        .map(|k| (format!("ps-{k}"), AZS[(k - 1) % 3]))
        .collect())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub role: String,
    pub az: String,
    /// Wire-protocol address (safekeepers, pageservers) or HTTP address (gateway).
    pub addr: String,
    /// Admin HTTP address (safekeepers, pageservers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    pub pid: Option<u32>,
    pub data_dir: PathBuf,
    /// The program and arguments that start this node.
    pub command: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Gateway {
    pub id: String,
    pub role: String,
    pub url: String,
    pub addr: String,
    pub pid: Option<u32>,
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cluster {
    pub version: u32,
    pub gateway: Gateway,
    pub admin_token: String,
    pub object_store: String,
    /// How volumes are cut into segments (`--segment-size`, fixed when the cluster is created:
    /// changing it would remap every page). Files written before it existed used the default.
    #[serde(default = "default_segment_size")]
    pub segment_size: String,
    pub nodes: Vec<Node>,
}

fn default_segment_size() -> String {
    DEFAULT_SEGMENT_SIZE.to_string()
}

/// `borealis up --segment-size` when not given: Aurora's 10 GB segments.
pub const DEFAULT_SEGMENT_SIZE: &str = "10GiB";

pub fn cluster_file(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

impl Cluster {
    pub fn load(dir: &Path) -> anyhow::Result<Cluster> {
        let path = cluster_file(dir);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (is a cluster set up there? `borealis up --data-dir {}`)",
                path.display(),
                dir.display()
            )
        })?;
        let mut c: Cluster = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        if c.version != CLUSTER_FILE_VERSION {
            bail!(
                "{} has version {}, this borealis reads {CLUSTER_FILE_VERSION}",
                path.display(),
                c.version
            );
        }
        migrate_credentials(dir, &mut c)?;
        c.pass_object_store_to_pageservers();
        Ok(c)
    }

    /// Files written before pageservers took `--object-store` start them without it; they must
    /// checkpoint to the cluster's object store, so the flag is added to their commands.
    fn pass_object_store_to_pageservers(&mut self) {
        for n in self.nodes.iter_mut().filter(|n| n.role == "pageserver") {
            if !n.command.iter().any(|a| a == "--object-store") {
                n.command.push("--object-store".into());
                n.command.push(self.object_store.clone());
            }
        }
    }

    /// Makes the cluster's storage keys and each node's token if they are missing
    /// (`DIR/keys/`, owner-only; see `borealis_auth::ClusterKeys`), and gives every node the
    /// flags that point at them: safekeepers and pageservers verify tokens with the public key
    /// and present their own; the gateway mints tokens with the signing key. A cluster file
    /// written before storage authentication existed is brought up to date the same way.
    pub fn provision_auth(&mut self, dir: &Path) -> anyhow::Result<()> {
        let keys = ClusterKeys::ensure(dir).context("making the cluster's storage keys")?;
        let verifying = keys.verifying_key_path().display().to_string();
        for n in &mut self.nodes {
            let flags: Vec<(&str, String)> = match n.role.as_str() {
                "safekeeper" | "pageserver" => {
                    let role = if n.role == "safekeeper" {
                        Role::Safekeeper
                    } else {
                        Role::Pageserver
                    };
                    let token = keys
                        .node_token_file(&n.id, role)
                        .with_context(|| format!("writing the token of {}", n.id))?;
                    vec![
                        ("--auth-verifying-key", verifying.clone()),
                        ("--token-file", token.display().to_string()),
                    ]
                }
                "gateway" => vec![(
                    "--auth-signing-key",
                    keys.signing_key_path().display().to_string(),
                )],
                _ => vec![],
            };
            for (flag, value) in flags {
                match n.command.iter().position(|a| a == flag) {
                    Some(i) if i + 1 < n.command.len() => n.command[i + 1] = value,
                    _ => {
                        n.command.push(flag.to_string());
                        n.command.push(value);
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the file atomically (temp, fsync, rename, fsync dir), owner-only: it holds the
    /// admin token (docs/design.md §8).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        borealis_auth::write_secret_file(&cluster_file(dir), &serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    pub fn node(&self, id: &str) -> anyhow::Result<&Node> {
        self.nodes.iter().find(|n| n.id == id).ok_or_else(|| {
            let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
            anyhow::anyhow!("no node {id:?} in this cluster; nodes: {}", ids.join(", "))
        })
    }

    pub fn node_mut(&mut self, id: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// Lays out a new cluster in `dir` on free loopback ports.
    pub fn plan(
        dir: &Path,
        bin_dir: &Path,
        object_store: Option<String>,
        idle_timeout: &str,
        segment_size: &str,
        safekeepers: usize,
        pageservers: usize,
    ) -> anyhow::Result<Cluster> {
        let safekeeper_ids = safekeeper_ids(safekeepers)?;
        let pageserver_ids = pageserver_ids(pageservers)?;
        borealis_core::SegmentLayout::parse_segment_size(segment_size)
            .map_err(|e| anyhow::anyhow!("--segment-size: {e}"))?;
        let dir = std::fs::canonicalize(dir)?;
        let mut ports = PortAllocator::default();
        let bin = |name: &str| bin_dir.join(name).display().to_string();
        let object_store =
            object_store.unwrap_or_else(|| format!("file://{}", dir.join("objects").display()));
        let sk_addrs: Vec<(String, String)> = safekeeper_ids
            .iter()
            .map(|(id, _)| Ok((id.clone(), format!("127.0.0.1:{}", ports.next()?))))
            .collect::<anyhow::Result<_>>()?;
        let mut nodes = Vec::new();
        let all_sk: Vec<String> = sk_addrs.iter().map(|(_, a)| a.clone()).collect();
        for (i, (id, az)) in safekeeper_ids.iter().enumerate() {
            let http = format!("127.0.0.1:{}", ports.next()?);
            let data_dir = dir.join(id);
            let peers: Vec<String> = sk_addrs
                .iter()
                .filter(|(pid, _)| pid != id)
                .map(|(pid, a)| format!("{pid}={a}"))
                .collect();
            let addr = sk_addrs[i].1.clone();
            nodes.push(Node {
                id: id.clone(),
                role: "safekeeper".into(),
                az: az.to_string(),
                command: vec![
                    bin("safekeeper"),
                    "--id".into(),
                    id.clone(),
                    "--listen".into(),
                    addr.clone(),
                    "--http".into(),
                    http.clone(),
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                    "--peers".into(),
                    peers.join(","),
                    "--pool".into(),
                    all_sk.join(","),
                ],
                addr,
                http_addr: Some(http),
                pid: None,
                data_dir,
            });
        }
        for (id, az) in &pageserver_ids {
            let addr = format!("127.0.0.1:{}", ports.next()?);
            let http = format!("127.0.0.1:{}", ports.next()?);
            let data_dir = dir.join(id);
            nodes.push(Node {
                id: id.clone(),
                role: "pageserver".into(),
                az: az.to_string(),
                command: vec![
                    bin("pageserver"),
                    "--id".into(),
                    id.clone(),
                    "--listen".into(),
                    addr.clone(),
                    "--http".into(),
                    http.clone(),
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                    "--safekeepers".into(),
                    all_sk.join(","),
                    "--object-store".into(),
                    object_store.clone(),
                    "--segment-size".into(),
                    segment_size.to_string(),
                ],
                addr,
                http_addr: Some(http),
                pid: None,
                data_dir,
            });
        }
        let gw_addr = format!("127.0.0.1:{}", ports.next()?);
        let gw_dir = dir.join("gateway");
        let ps: Vec<String> = nodes
            .iter()
            .filter(|n| n.role == "pageserver")
            .map(|n| n.addr.clone())
            .collect();
        nodes.push(Node {
            id: "gateway".into(),
            role: "gateway".into(),
            az: "a".into(),
            command: vec![
                bin("gateway"),
                "--listen".into(),
                gw_addr.clone(),
                "--data-dir".into(),
                gw_dir.display().to_string(),
                "--safekeepers".into(),
                all_sk.join(","),
                "--pageservers".into(),
                ps.join(","),
                "--admin-token-file".into(),
                dir.join("admin_token").display().to_string(),
                "--idle-timeout".into(),
                idle_timeout.to_string(),
                "--segment-size".into(),
                segment_size.to_string(),
            ],
            addr: gw_addr.clone(),
            http_addr: None,
            pid: None,
            data_dir: gw_dir.clone(),
        });
        Ok(Cluster {
            version: CLUSTER_FILE_VERSION,
            gateway: Gateway {
                id: "gateway".into(),
                role: "gateway".into(),
                url: format!("http://{gw_addr}"),
                addr: gw_addr,
                pid: None,
                data_dir: gw_dir,
            },
            admin_token: String::new(),
            object_store,
            segment_size: segment_size.to_string(),
            nodes,
        })
    }

    /// Starts node `id` in its own process group, logging to `DIR/logs/<id>.log`; records its pid.
    pub fn start_node(&mut self, dir: &Path, id: &str) -> anyhow::Result<std::process::Child> {
        let node = self.node(id)?.clone();
        if let Some(pid) = node.pid {
            if pid_alive(pid, &node.id) {
                bail!("node {id} is already running (pid {pid})");
            }
        }
        // Owner-only: node data, and logs that may name tenants and keys (docs/security.md).
        use std::os::unix::fs::OpenOptionsExt;
        borealis_utils::owner_only::create_dir_all(&node.data_dir)?;
        let logs = dir.join("logs");
        borealis_utils::owner_only::create_dir_all(&logs)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(borealis_utils::owner_only::FILE_MODE)
            .open(logs.join(format!("{id}.log")))?;
        let program = node.command.first().context("node has no command")?;
        if !Path::new(program).exists() {
            bail!(
                "{program} does not exist: build the workspace first (`cargo build --workspace`)"
            );
        }
        use std::os::unix::process::CommandExt;
        let child = Command::new(program)
            .args(&node.command[1..])
            .env("BOREALIS_NODE_ID", id)
            // Object-store credentials by environment, never on the command line.
            .envs(object_store_credentials::node_env(dir, &node.role)?)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {id}"))?;
        let pid = child.id();
        if let Some(n) = self.node_mut(id) {
            n.pid = Some(pid);
        }
        if id == self.gateway.id {
            self.gateway.pid = Some(pid);
        }
        if let Err(e) = self.save(dir) {
            // A process whose pid is recorded nowhere could be neither stopped nor seen by
            // `borealis status`, and would hold its data directory against the next start.
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            if let Some(n) = self.node_mut(id) {
                n.pid = None;
            }
            return Err(e.context(format!(
                "started {id} (pid {pid}) but could not record its pid; stopped it again"
            )));
        }
        Ok(child)
    }
}

/// Hands out free loopback ports, never the same one twice in one plan: each is held (bound)
/// until the plan is done. Ports are chosen below the kernel's ephemeral range
/// ([`borealis_utils::ports`] says why).
#[derive(Default)]
struct PortAllocator {
    held: Vec<TcpListener>,
}

impl PortAllocator {
    fn next(&mut self) -> anyhow::Result<u16> {
        let l = borealis_utils::ports::hold_free_port()?;
        let port = l.local_addr()?.port();
        self.held.push(l);
        Ok(port)
    }
}

/// A cluster file written before credentials were taken out of URLs may carry them in
/// `object_store` and in the pageservers' commands: move them to the credentials file (unless
/// one exists already) and take them out of `object_store` and every command argument.
fn migrate_credentials(dir: &Path, cluster: &mut Cluster) -> anyhow::Result<()> {
    // A URL `split` refuses was never given credentials this way: left as it is.
    let Ok((url, creds)) = object_store_credentials::split(&cluster.object_store) else {
        return Ok(());
    };
    if creds.is_empty() {
        return Ok(());
    }
    if object_store_credentials::Credentials::load(dir)?.is_none() {
        creds.save(dir)?;
    }
    for n in &mut cluster.nodes {
        for arg in n.command.iter_mut().filter(|a| **a == cluster.object_store) {
            *arg = url.clone();
        }
    }
    cluster.object_store = url;
    Ok(())
}

/// Whether `pid` is alive and is the node `id` (guards against pid reuse).
pub fn pid_alive(pid: u32, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // A zombie (or a dead task) has exited already: its files, and the data directory's lock,
    // are released.
    if stat
        .rsplit(')')
        .next()
        .is_some_and(|rest| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
    {
        return false;
    }
    // A process being torn down (after SIGKILL, say) has given back its memory, and with it
    // its command line, before it closes its files: it still holds the data directory's lock,
    // so it is alive until it is a zombie. (Reading "no command line" as "gone" let `borealis
    // node kill` return while the lock was held, and a `node start` right after failed with
    // "data directory is in use".)
    if cmdline.is_empty() {
        return true;
    }
    let cmd = String::from_utf8_lossy(&cmdline);
    id == "gateway" && cmd.contains("gateway") || cmd.contains(id)
}

#[allow(unsafe_code)] // libc calls, each with its SAFETY comment
pub fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// Restores SIGPIPE's default action (Rust ignores it, so a closed pipe turns into a failed print
/// and a panic): a command whose reader went away ends quietly.
#[allow(unsafe_code)] // libc call, with its SAFETY comment
pub fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler and has no memory-safety
    // preconditions; called at the start of main, before any thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pageservers_get_the_clusters_object_store_also_from_old_files() {
        // (infra has no tempfile dependency: a unique directory by hand, removed at the end.)
        let dir = std::env::temp_dir().join(format!("borealis-infra-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = std::path::Path::new("/bin");
        let url = "s3://b?endpoint=http://127.0.0.1:9&region=r";
        let mut c = Cluster::plan(&dir, bin, Some(url.into()), "60s", "10GiB", 6, 2).unwrap();
        let object_store_args = |c: &Cluster| -> Vec<String> {
            c.nodes
                .iter()
                .filter(|n| n.role == "pageserver")
                .map(|n| {
                    let i = n
                        .command
                        .iter()
                        .position(|a| a == "--object-store")
                        .unwrap();
                    n.command[i + 1].clone()
                })
                .collect()
        };
        assert_eq!(object_store_args(&c), [url, url]);
        // A file written before the flag existed: loading it adds the flag, once.
        for n in c.nodes.iter_mut().filter(|n| n.role == "pageserver") {
            let i = n
                .command
                .iter()
                .position(|a| a == "--object-store")
                .unwrap();
            n.command.drain(i..i + 2);
        }
        c.save(&dir).unwrap();
        let loaded = Cluster::load(&dir).unwrap();
        assert_eq!(object_store_args(&loaded), [url, url]);
        loaded.save(&dir).unwrap();
        let again = Cluster::load(&dir).unwrap();
        let flags = again
            .nodes
            .iter()
            .flat_map(|n| n.command.iter())
            .filter(|a| *a == "--object-store")
            .count();
        assert_eq!(flags, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
