//! Test doubles and helpers for the pageserver's integration tests: an in-process fake
//! safekeeper speaking `borealis_wire`, a redo history with its reference model, and a guard that
//! runs the real `pageserver` binary and kills it on drop.

#![allow(dead_code)]

use borealis_auth::{ClusterKeys, Role};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentId, SegmentLayout, TenantId, PAGE_SIZE_BYTES};
use borealis_wire::{read_frame, write_frame, Body, Client, Envelope, SegmentState};
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A tenant's log, written with consecutive LSNs, and every page's content at every LSN.
pub struct History {
    pub layout: SegmentLayout,
    pub records: Vec<RedoRecord>,
    model: BTreeMap<u32, BTreeMap<u64, Vec<u8>>>,
    last_of_segment: HashMap<SegmentId, Lsn>,
    rng: Rng,
}

impl History {
    pub fn new(layout: SegmentLayout, seed: u64) -> History {
        History {
            layout,
            records: Vec::new(),
            model: BTreeMap::new(),
            last_of_segment: HashMap::new(),
            rng: Rng(seed),
        }
    }

    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.records.len() as u64 + 1)
    }

    /// Appends a random change of `page` (a delta mostly, sometimes a full image).
    pub fn change(&mut self, page: u32) -> Lsn {
        let lsn = self.next_lsn();
        let history = self.model.entry(page).or_default();
        let old = history.values().next_back().cloned();
        let mut new = old.clone().unwrap_or_else(|| vec![0u8; PAGE_SIZE_BYTES]);
        if self.rng.below(4) == 0 {
            new.iter_mut().for_each(|b| *b = self.rng.next() as u8);
        } else {
            let at = self.rng.below(PAGE_SIZE_BYTES as u64 - 64) as usize;
            let len = 1 + self.rng.below(60) as usize;
            new[at..at + len]
                .iter_mut()
                .for_each(|b| *b = self.rng.next() as u8);
        }
        let body = RedoBody::between(old.as_deref(), &new);
        // Like the real writer, which forgets page tails beyond a bound: sometimes "unknown".
        let prev_lsn_page = match self.rng.below(5) {
            0 => Lsn::INVALID,
            _ => history.keys().next_back().map_or(Lsn::INVALID, |&l| Lsn(l)),
        };
        history.insert(lsn.0, new);
        let segment = self.layout.segment_of(PageNo(page));
        let prev_lsn_segment = self
            .last_of_segment
            .insert(segment, lsn)
            .unwrap_or(Lsn::INVALID);
        self.records.push(RedoRecord {
            lsn,
            prev_lsn_segment,
            prev_lsn_page,
            page_no: PageNo(page),
            is_cpl: true,
            body,
        });
        lsn
    }

    /// What GetPage@`lsn` must answer for `page`.
    pub fn page_at(&self, page: u32, lsn: Lsn) -> Option<Vec<u8>> {
        self.model
            .get(&page)?
            .range(..=lsn.0)
            .next_back()
            .map(|(_, img)| img.clone())
    }
}

/// One tenant's log as a fake safekeeper holds it.
#[derive(Clone)]
pub struct FakeLog {
    pub records: Vec<RedoRecord>,
    /// Records above this LSN are held but not complete (the SCL of a segment is its newest
    /// record at or below it).
    pub complete_upto: Lsn,
    pub known_vdl: Lsn,
}

/// A `Trim` a fake safekeeper received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrimRequest {
    pub tenant: TenantId,
    pub segment: SegmentId,
    pub epoch: u64,
    pub upto: Lsn,
}

pub struct FakeState {
    /// Where each segment's log was trimmed: records at or below are gone, reads below refused.
    pub trims: HashMap<(TenantId, SegmentId), Lsn>,
    pub trim_requests: Vec<TrimRequest>,
    pub epoch: u64,
    /// Flip a bit in the last record of every non-empty `ReadLog` answer (a disk or wire fault
    /// that the CRC must catch).
    pub corrupt_reads: bool,
    pub layout: SegmentLayout,
    pub tenants: HashMap<TenantId, FakeLog>,
    pub read_logs: u64,
}

/// A fake safekeeper: answers `ReadLog` and `GetState` from memory, honouring `min_epoch` and
/// `wait_ms` (a long poll checks for new records every 10 ms).
pub struct FakeSafekeeper {
    pub addr: String,
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeSafekeeper {
    pub async fn start(epoch: u64, layout: SegmentLayout) -> FakeSafekeeper {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(FakeState {
            trims: HashMap::new(),
            trim_requests: Vec::new(),
            epoch,
            corrupt_reads: false,
            layout,
            tenants: HashMap::new(),
            read_logs: 0,
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        FakeSafekeeper { addr, state }
    }

    /// Sets the tenant's log; records of trimmed segments at or below their trim point are left
    /// out (a real safekeeper never gets them back).
    pub fn set_log(&self, tenant: TenantId, mut log: FakeLog) {
        let mut st = self.state.lock().unwrap();
        let layout = st.layout;
        log.records.retain(|r| {
            let base = st
                .trims
                .get(&(tenant, layout.segment_of(r.page_no)))
                .copied()
                .unwrap_or(Lsn::INVALID);
            r.lsn > base
        });
        st.tenants.insert(tenant, log);
    }

    /// Where the segment's log was trimmed (0: never).
    pub fn trimmed(&self, tenant: TenantId, segment: SegmentId) -> Lsn {
        let st = self.state.lock().unwrap();
        st.trims
            .get(&(tenant, segment))
            .copied()
            .unwrap_or(Lsn::INVALID)
    }

    pub fn trim_requests(&self) -> Vec<TrimRequest> {
        self.state.lock().unwrap().trim_requests.clone()
    }

    /// LSNs of the records the fake still holds for the segment.
    pub fn held(&self, tenant: TenantId, segment: SegmentId) -> Vec<Lsn> {
        let st = self.state.lock().unwrap();
        st.tenants.get(&tenant).map_or(Vec::new(), |log| {
            segment_records(&st, log, segment)
                .iter()
                .map(|r| r.lsn)
                .collect()
        })
    }

    pub fn corrupt_reads(&self) {
        self.state.lock().unwrap().corrupt_reads = true;
    }

    pub fn read_logs(&self) -> u64 {
        self.state.lock().unwrap().read_logs
    }
}

async fn serve(sock: TcpStream, state: Arc<Mutex<FakeState>>) {
    let (mut rd, wr) = sock.into_split();
    let (answers, mut answers_rx) = tokio::sync::mpsc::channel::<Envelope>(64);
    tokio::spawn(async move {
        let mut wr = wr;
        while let Some(env) = answers_rx.recv().await {
            if write_frame(&mut wr, &env).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    });
    // Like the real safekeeper, requests of one connection are served concurrently.
    while let Ok(Some(env)) = read_frame(&mut rd).await {
        let (state, answers) = (state.clone(), answers.clone());
        tokio::spawn(async move {
            let body = answer(&state, env.body).await;
            let _ = answers
                .send(Envelope {
                    request_id: env.request_id,
                    body,
                })
                .await;
        });
    }
}

async fn answer(state: &Mutex<FakeState>, request: Body) -> Body {
    match request {
        Body::ReadLog {
            tenant,
            segment,
            min_epoch,
            after,
            upto,
            max_bytes,
            wait_ms,
            ..
        } => {
            state.lock().unwrap().read_logs += 1;
            let deadline = Instant::now() + Duration::from_millis(u64::from(wait_ms));
            loop {
                let answer = read_log(
                    &state.lock().unwrap(),
                    tenant,
                    segment,
                    min_epoch,
                    after,
                    upto,
                    max_bytes,
                );
                let waiting =
                    matches!(&answer, Body::Records { records, .. } if records.is_empty());
                if !waiting || Instant::now() >= deadline {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // The fake trusts everyone: the tests are about the pageserver.
        Body::Auth { .. } => Body::Authenticated {
            role: "fake".into(),
        },
        Body::GetState { tenant } => get_state(&state.lock().unwrap(), tenant),
        Body::Trim {
            tenant,
            segment,
            epoch,
            upto,
        } => trim(&mut state.lock().unwrap(), tenant, segment, epoch, upto),
        other => Body::error(
            ErrorKind::Invalid,
            format!("fake safekeeper: {}", other.name()),
        ),
    }
}

fn segment_records(st: &FakeState, log: &FakeLog, segment: SegmentId) -> Vec<RedoRecord> {
    log.records
        .iter()
        .filter(|r| st.layout.segment_of(r.page_no) == segment)
        .cloned()
        .collect()
}

fn scl_of(records: &[RedoRecord], complete_upto: Lsn) -> Lsn {
    records
        .iter()
        .map(|r| r.lsn)
        .filter(|l| *l <= complete_upto)
        .max()
        .unwrap_or(Lsn::INVALID)
}

fn base_of(st: &FakeState, tenant: TenantId, segment: SegmentId) -> Lsn {
    st.trims
        .get(&(tenant, segment))
        .copied()
        .unwrap_or(Lsn::INVALID)
}

/// Like a real safekeeper: trims through the newest held record at or below `upto` and its SCL,
/// and refuses while its epoch is older than the checkpoint's.
fn trim(st: &mut FakeState, tenant: TenantId, segment: SegmentId, epoch: u64, upto: Lsn) -> Body {
    st.trim_requests.push(TrimRequest {
        tenant,
        segment,
        epoch,
        upto,
    });
    if st.epoch < epoch {
        return Body::error(ErrorKind::Fenced, format!("epoch {} < {epoch}", st.epoch));
    }
    let base = base_of(st, tenant, segment);
    let Some(log) = st.tenants.get(&tenant) else {
        return Body::Trimmed { base };
    };
    let records = segment_records(st, log, segment);
    let scl = scl_of(&records, log.complete_upto).max(base);
    let new_base = records
        .iter()
        .map(|r| r.lsn)
        .filter(|l| *l <= upto.min(scl))
        .max()
        .unwrap_or(Lsn::INVALID)
        .max(base);
    let layout = st.layout;
    if let Some(log) = st.tenants.get_mut(&tenant) {
        log.records
            .retain(|r| layout.segment_of(r.page_no) != segment || r.lsn > new_base);
    }
    st.trims.insert((tenant, segment), new_base);
    Body::Trimmed { base: new_base }
}

fn read_log(
    st: &FakeState,
    tenant: TenantId,
    segment: SegmentId,
    min_epoch: u64,
    after: Lsn,
    upto: Lsn,
    max_bytes: u32,
) -> Body {
    if st.epoch < min_epoch {
        return Body::error(
            ErrorKind::Fenced,
            format!("epoch {} < {min_epoch}", st.epoch),
        );
    }
    let Some(log) = st.tenants.get(&tenant) else {
        return Body::Records {
            records: vec![],
            scl: Lsn::INVALID,
            known_vdl: Lsn::INVALID,
        };
    };
    let records = segment_records(st, log, segment);
    let base = base_of(st, tenant, segment);
    if after < base && after < upto {
        // As a real safekeeper answers (its last CPL is not modelled here).
        return Body::LogTrimmed {
            base,
            last_cpl: base,
        };
    }
    let scl = scl_of(&records, log.complete_upto).max(base);
    let mut out = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.lsn > after && r.lsn <= upto.min(scl))
    {
        if !out.is_empty() && out.len() + r.encoded_len() > max_bytes as usize {
            break;
        }
        r.encode_into(&mut out);
    }
    if st.corrupt_reads && !out.is_empty() {
        let last = out.len() - 1;
        out[last] ^= 0x40;
    }
    Body::Records {
        records: out,
        scl,
        known_vdl: log.known_vdl,
    }
}

fn get_state(st: &FakeState, tenant: TenantId) -> Body {
    let (known_vdl, segments) = match st.tenants.get(&tenant) {
        None => (Lsn::INVALID, vec![]),
        Some(log) => {
            let mut ids: Vec<SegmentId> = log
                .records
                .iter()
                .map(|r| st.layout.segment_of(r.page_no))
                .chain(
                    st.trims
                        .keys()
                        .filter(|(t, _)| *t == tenant)
                        .map(|(_, s)| *s),
                )
                .collect();
            ids.sort();
            ids.dedup();
            let segments = ids
                .into_iter()
                .map(|segment| {
                    let records = segment_records(st, log, segment);
                    let base = base_of(st, tenant, segment);
                    let scl = scl_of(&records, log.complete_upto).max(base);
                    let end_lsn = records
                        .iter()
                        .map(|r| r.lsn)
                        .max()
                        .unwrap_or(Lsn::INVALID)
                        .max(base);
                    SegmentState {
                        segment,
                        scl,
                        last_cpl: scl,
                        end_lsn,
                    }
                })
                .collect();
            (log.known_vdl, segments)
        }
    };
    Body::State {
        epoch: st.epoch,
        epoch_start_lsn: Lsn::INVALID,
        history: vec![],
        known_vdl,
        segments,
        promised_epoch: 0,
    }
}

/// A safekeeper that accepts connections and never answers (a hung process).
pub async fn hung_safekeeper() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    addr
}

/// A port nothing listens on (bound, then released), below the kernel's ephemeral range
/// (`borealis_utils::ports`): a port from that range may be taken by an outgoing connection
/// before the pageserver binds it.
pub fn free_addr() -> String {
    let port = borealis_utils::ports::free_port().expect("a free loopback port");
    format!("127.0.0.1:{port}")
}

/// The real `pageserver` binary, killed on drop. Its log goes to a file, printed if the test
/// fails (or always, with `PAGESERVER_TEST_LOG` set).
pub struct PageServerProcess {
    child: Child,
    pub wire: String,
    pub http: String,
    dir: tempfile::TempDir,
    /// A token with every role, for the test's own clients.
    pub token: String,
}

impl PageServerProcess {
    pub async fn start(safekeepers: &[String], extra: &[&str]) -> PageServerProcess {
        Self::start_with_keys(safekeepers, extra, None).await
    }

    /// Like [`PageServerProcess::start`], with the storage keys of `keys_root` (shared with the
    /// safekeepers it reads from) instead of keys of its own.
    pub async fn start_with_keys(
        safekeepers: &[String],
        extra: &[&str],
        keys_root: Option<&std::path::Path>,
    ) -> PageServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let (wire, http) = (free_addr(), free_addr());
        let log = std::fs::File::create(dir.path().join("pageserver.log")).unwrap();
        let keys = ClusterKeys::ensure(keys_root.unwrap_or(dir.path())).unwrap();
        let token_file = keys.node_token_file("ps-test", Role::Pageserver).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pageserver"))
            .args(["--id", "ps-test", "--listen", &wire, "--http", &http])
            .arg("--auth-verifying-key")
            .arg(keys.verifying_key_path())
            .arg("--token-file")
            .arg(token_file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--safekeepers", &safekeepers.join(",")])
            .args(extra)
            .env("RUST_LOG", "info,pageserver=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the pageserver binary");
        let ps = PageServerProcess {
            child,
            wire,
            http,
            dir,
            token: keys.all_roles_token(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ps = ps;
        while TcpStream::connect(&ps.wire).await.is_err() {
            let exited = ps.child.try_wait().ok().flatten();
            assert!(
                Instant::now() < deadline && exited.is_none(),
                "pageserver did not start listening on {} ({}); its log:\n{}",
                ps.wire,
                exited.map_or("still running".to_string(), |e| format!("exited: {e}")),
                ps.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ps
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory the process was given.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// SIGTERM (a clean stop), then waits for the process to exit, at most `within`.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the pageserver") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the pageserver did not stop within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit on its own (a crash point), at most `within`; `None` if
    /// it still runs.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the pageserver") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process's resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading /proc/<pid>/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// Every line of the process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pageserver.log")).unwrap_or_default()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.wire, &self.token, Duration::from_secs(2), None)
            .await
            .unwrap()
    }

    /// `GET path` on the HTTP listener; the body.
    pub async fn http_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(&self.http).await.unwrap();
        // As the operator, so `/status` lists tenants.
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n",
            self.token
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_string()
    }

    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.http_get("/status").await).unwrap()
    }

    /// A metric's value from `/metrics` (0 if absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.http_get("/metrics").await;
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .next()
            .unwrap_or(0.0)
    }
}

impl Drop for PageServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("PAGESERVER_TEST_LOG").is_some() {
            let log =
                std::fs::read_to_string(self.dir.path().join("pageserver.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("---- pageserver log (last 200 lines) ----");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// One `GetPages`: per page its image, `None` (never written), or the entry's error
/// (`Err((kind, message))`); a refusal of the whole request is the outer error.
#[allow(dead_code, clippy::type_complexity)] // not every test binary uses it
pub async fn get_pages(
    c: &Client,
    tenant: TenantId,
    pages: &[u32],
    lsn: Lsn,
    epoch: u64,
) -> Result<Vec<Result<Option<Vec<u8>>, (ErrorKind, String)>>, borealis_wire::WireError> {
    match c
        .call(
            Body::GetPages {
                tenant,
                lsn,
                epoch,
                pages: pages.iter().map(|p| PageNo(*p)).collect(),
            },
            Duration::from_secs(20),
        )
        .await?
    {
        Body::Pages { pages } => Ok(pages
            .into_iter()
            .map(|a| match a {
                borealis_wire::PageAnswer::Image(image) => Ok(Some(image)),
                borealis_wire::PageAnswer::NeverWritten => Ok(None),
                borealis_wire::PageAnswer::Failed { kind, message } => Err((kind, message)),
            })
            .collect()),
        other => panic!("unexpected answer {}", other.name()),
    }
}

/// Asks GetPage and returns the page or the error.
pub async fn get_page(
    c: &Client,
    tenant: TenantId,
    page: u32,
    lsn: Lsn,
    epoch: u64,
) -> Result<Option<Vec<u8>>, borealis_wire::WireError> {
    match c
        .call(
            Body::GetPage {
                tenant,
                page: PageNo(page),
                lsn,
                epoch,
            },
            Duration::from_secs(20),
        )
        .await?
    {
        Body::Page { image } => Ok(image),
        other => panic!("unexpected answer {}", other.name()),
    }
}
