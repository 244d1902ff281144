//! Shared harness of the safekeeper's acceptance tests: real `safekeeper` processes on free
//! loopback ports with temporary data directories, killed (SIGKILL) when dropped.

#![allow(dead_code)]

use borealis_auth::{ClusterKeys, Role};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{EpochStart, Lsn, PageNo, SegmentId, TenantId, PAGE_SIZE_BYTES};
use borealis_wire::{Body, Client, SegmentState};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(5);
pub const TENANT: TenantId = TenantId(0x00c0_ffee);

/// A free loopback address (bound, then released), below the kernel's ephemeral range
/// (`borealis_utils::ports`): one from that range may be taken by an outgoing connection before
/// the safekeeper binds it.
pub fn free_addr() -> String {
    let port = borealis_utils::ports::free_port().expect("a free loopback port");
    format!("127.0.0.1:{port}")
}

/// One safekeeper process.
pub struct Sk {
    pub id: String,
    pub listen: String,
    pub http: String,
    pub data_dir: PathBuf,
    peers: String,
    /// More flags for [`Sk::start`], e.g. `--disk-budget-bytes`.
    extra_args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// `--auth-verifying-key` and `--token-file` (the root's `keys/`, shared by its members).
    auth_args: Vec<String>,
    /// A token with every role, for the test's own clients.
    pub token: String,
}

/// The cluster keys in `root/keys` (made on first use) and `id`'s own token file.
fn auth_for(id: &str, root: &Path) -> (Vec<String>, String) {
    let keys = ClusterKeys::ensure(root).expect("make storage keys");
    let token_file = keys
        .node_token_file(id, Role::Safekeeper)
        .expect("write a token file");
    let args = vec![
        "--auth-verifying-key".to_string(),
        keys.verifying_key_path().display().to_string(),
        "--token-file".to_string(),
        token_file.display().to_string(),
    ];
    (args, keys.all_roles_token())
}

impl Sk {
    /// Addresses are allocated now, the process is started by [`Sk::start`] (so peers can name
    /// each other first).
    pub fn new(id: &str, root: &Path) -> Sk {
        let (auth_args, token) = auth_for(id, root);
        // A new node, as `borealis up` makes one: it never acknowledged anything. (Deleting the
        // directory later makes it a replaced disk, which rebuilds: `safekeeper::rebuild`.)
        std::fs::create_dir_all(root.join(id)).unwrap();
        std::fs::write(
            root.join(id).join(safekeeper::rebuild::NEW_NODE_MARKER),
            b"",
        )
        .unwrap();
        Sk {
            auth_args,
            token,
            id: id.to_string(),
            listen: free_addr(),
            http: free_addr(),
            data_dir: root.join(id),
            peers: String::new(),
            extra_args: Vec::new(),
            log: root.join(format!("{id}.log")),
            child: None,
        }
    }

    pub fn set_peers(&mut self, peers: &[&Sk]) {
        self.peers = peers
            .iter()
            .map(|p| format!("{}={}", p.id, p.listen))
            .collect::<Vec<_>>()
            .join(",");
    }

    /// Flags added to every later [`Sk::start`].
    pub fn set_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log file");
        let child = Command::new(env!("CARGO_BIN_EXE_safekeeper"))
            .args([
                "--id",
                &self.id,
                "--listen",
                &self.listen,
                "--http",
                &self.http,
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--peers", &self.peers, "--gossip-interval", "100ms"])
            .args(&self.auth_args)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn safekeeper");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(&self.listen).is_ok()
                && std::net::TcpStream::connect(&self.http).is_ok()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited at start-up ({status}):\n{}",
                    self.id,
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start listening:\n{}",
                self.id,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or clean up anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn segment_file(&self, tenant: TenantId, segment: u32) -> PathBuf {
        self.data_dir
            .join("tenants")
            .join(tenant.to_string())
            .join(format!("seg-{segment}.log"))
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.listen, &self.token, T, None)
            .await
            .expect("connect to safekeeper")
    }

    /// A client whose unsolicited messages (acks, append errors) go to the returned channel.
    pub async fn client_with_acks(&self) -> (Client, tokio::sync::mpsc::Receiver<Body>) {
        let (tx, rx) = tokio::sync::mpsc::channel(100_000);
        (
            Client::connect(&self.listen, &self.token, T, Some(tx))
                .await
                .expect("connect to safekeeper"),
            rx,
        )
    }

    /// `GET path` on the admin HTTP server, as the operator (so `/status` lists tenants).
    pub fn http_get(&self, path: &str) -> String {
        http_get_with(&self.http, path, Some(&self.token))
    }

    /// The value of a counter on `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.http_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }
}

impl Drop for Sk {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.id, self.logs());
        }
    }
}

pub fn http_get(addr: &str, path: &str) -> String {
    http_get_with(addr, path, None)
}

/// `GET path`, with `Authorization: Bearer <token>` if a token is given.
pub fn http_get_with(addr: &str, path: &str, token: Option<&str>) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to admin http");
    s.set_read_timeout(Some(T)).expect("set timeout");
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    body.to_string()
}

/// The segment of a test record: odd LSNs in segment 1, even in segment 0.
pub fn segment_of(lsn: u64) -> SegmentId {
    SegmentId((lsn % 2) as u32)
}

/// The test record at `lsn` when records alternate between two segments.
pub fn two_segment_record(lsn: u64) -> RedoRecord {
    record(lsn, lsn.saturating_sub(2))
}

/// A record with an image unique to its LSN.
pub fn record(lsn: u64, prev: u64) -> RedoRecord {
    let mut image = vec![(lsn % 251) as u8; PAGE_SIZE_BYTES];
    image[..8].copy_from_slice(&lsn.to_le_bytes());
    RedoRecord {
        lsn: Lsn(lsn),
        prev_lsn_segment: Lsn(prev),
        prev_lsn_page: Lsn::INVALID,
        page_no: PageNo((lsn % 13) as u32),
        is_cpl: lsn.is_multiple_of(3),
        body: RedoBody::Image(image),
    }
}

/// A chain of records `from..=to` in one segment, each linking to the one before.
pub fn chain(from: u64, to: u64) -> Vec<RedoRecord> {
    (from..=to).map(|l| record(l, l - 1)).collect()
}

pub fn encode(records: &[RedoRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.encode_into(&mut out);
    }
    out
}

/// Hello with the history `[(1, 0), (2, 0), ..., (epoch, start)]`: every earlier epoch started
/// at LSN 0 (true for these tests, which never skip an epoch with data).
pub async fn hello(
    c: &Client,
    epoch: u64,
    start: u64,
) -> Result<Vec<SegmentState>, borealis_wire::WireError> {
    let mut history: Vec<EpochStart> = (1..epoch)
        .map(|e| EpochStart {
            epoch: e,
            start: Lsn(0),
        })
        .collect();
    history.push(EpochStart {
        epoch,
        start: Lsn(start),
    });
    hello_with_history(c, &history).await
}

pub async fn hello_with_history(
    c: &Client,
    history: &[EpochStart],
) -> Result<Vec<SegmentState>, borealis_wire::WireError> {
    let last = *history
        .last()
        .expect("a history ends with the writer's epoch");
    let body = Body::Hello {
        tenant: TENANT,
        epoch: last.epoch,
        epoch_start_lsn: last.start,
        history: history.to_vec(),
    };
    let epoch = last.epoch;
    match c.call(body, T).await? {
        Body::HelloOk {
            epoch: e, segments, ..
        } => {
            assert_eq!(e, epoch);
            Ok(segments)
        }
        other => panic!("unexpected answer to hello: {other:?}"),
    }
}

/// Sends an append (fire-and-forget).
pub async fn append(c: &Client, segment: u32, epoch: u64, records: &[RedoRecord]) {
    let body = Body::Append {
        tenant: TENANT,
        segment: SegmentId(segment),
        epoch,
        vdl: Lsn(0),
        records: encode(records),
    };
    c.send(body).await.expect("send append");
}

/// Waits for acks until segment `segment`'s acked SCL reaches `lsn`.
pub async fn wait_ack(acks: &mut tokio::sync::mpsc::Receiver<Body>, segment: u32, lsn: u64) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match tokio::time::timeout_at(deadline, acks.recv()).await {
            Ok(Some(Body::Ack {
                segment: s, scl, ..
            })) if s == SegmentId(segment) && scl >= Lsn(lsn) => return,
            Ok(Some(Body::Ack { .. })) => {}
            Ok(Some(other)) => panic!("unexpected unsolicited message: {other:?}"),
            Ok(None) => panic!("connection closed while waiting for ack {lsn}"),
            Err(_) => panic!("no ack for lsn {lsn} of segment {segment} within {T:?}"),
        }
    }
}

pub struct StateOf {
    pub epoch: u64,
    pub epoch_start_lsn: Lsn,
    pub segments: Vec<SegmentState>,
}

impl StateOf {
    pub fn scl(&self, segment: u32) -> Lsn {
        self.segments
            .iter()
            .find(|s| s.segment == SegmentId(segment))
            .map_or(Lsn(0), |s| s.scl)
    }
}

pub async fn get_state(c: &Client) -> StateOf {
    match c
        .call(Body::GetState { tenant: TENANT }, T)
        .await
        .expect("get state")
    {
        Body::State {
            epoch,
            epoch_start_lsn,
            segments,
            ..
        } => StateOf {
            epoch,
            epoch_start_lsn,
            segments,
        },
        other => panic!("unexpected answer to get_state: {other:?}"),
    }
}

/// Reads every record of `segment` in `(0, upto]` the safekeeper will give, page by page.
pub async fn read_all(c: &Client, segment: u32, upto: u64) -> Vec<RedoRecord> {
    let mut out: Vec<RedoRecord> = Vec::new();
    loop {
        let after = out.last().map_or(Lsn(0), |r| r.lsn);
        let body = Body::ReadLog {
            tenant: TENANT,
            segment: SegmentId(segment),
            epoch: None,
            min_epoch: 0,
            after,
            upto: Lsn(upto),
            max_bytes: 1 << 20,
            wait_ms: 0,
        };
        match c.call(body, T).await.expect("read log") {
            Body::Records { records, .. } => {
                let batch = RedoRecord::decode_all(&records).expect("records from ReadLog decode");
                if batch.is_empty() {
                    return out;
                }
                out.extend(batch);
            }
            other => panic!("unexpected answer to read_log: {other:?}"),
        }
    }
}

/// Polls `f` every 50 ms until it returns true, at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
