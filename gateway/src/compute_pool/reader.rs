//! Read replicas: `"replica": true` requests, served by a tenant's **reader** at its read point,
//! never by the writer. Design and the alternatives we rejected: `docs/rfcs/0003-read-replicas.md`.
//!
//! ## What a reader is
//!
//! One OS thread per tenant with replica traffic, in the same gateway process as the tenant's
//! writer, with a bounded job queue (like the writer's, [`crate::compute_pool`]). It owns:
//!
//! - a [`ReplicaCache`]: host-side pages as of the reader's **read point**, a VDL the writer
//!   reached. The writer's [`VolumeWriter`] hands every MTR it ships to the reader's [`RedoTap`];
//!   the reader applies them, in LSN order, to the pages it holds, but only up to a VDL: so the
//!   read point is always a durable commit boundary, and an answer shows a prefix of the
//!   writer's commits, whole and in order (no Long Fork). Pages it lacks come from the
//!   pageserver by GetPage@read point.
//! - a compute instance (SQLite in wasm) opened on that cache. SQLite in our guest runs in
//!   exclusive locking mode and never re-reads a page it cached, so an instance is only good for
//!   the read point it was opened at: when the read point has moved, the next request gets a
//!   **fresh instance** (~0.1-0.2 ms) over the still-warm host cache. While the read point does
//!   not move, requests reuse the instance and its SQLite cache.
//!
//! ## A request
//!
//! 1. Make sure the reader follows a live writer. If the tenant's writer is not running, the
//!    reader asks the writer's thread to start one (recovery, like any cold start): a reader
//!    needs the VDL and the redo stream, and only a writer has them. Replica traffic keeps the
//!    writer from going idle.
//! 2. Catch up: read the writer's VDL, drain the tap, advance the cache to that VDL.
//! 3. Run the statements on the instance for that read point, with `PRAGMA query_only` set and
//!    a backend whose `commit` refuses: any write fails with `bad_request` "replicas are
//!    read-only", and nothing ever leaves a reader. A batch runs as separate statements (a
//!    transaction would need a write lock); all of them see the same read point anyway.
//! 4. Answer with the read point. No durability wait: the read point is durable already.
//!
//! Between requests the thread keeps following the stream every [`FOLLOW_INTERVAL`], so its
//! cache stays warm and its tap small; after the idle timeout it stops and drops everything.
//!
//! ## Lag
//!
//! Replica lag, measured when an answer leaves: the writer's VDL minus the read point, in LSNs
//! (gauge `borealis_gateway_replica_lag_lsn{tenant}`), and in time: how long ago the writer
//! shipped the oldest durable commit the answer does not show (histogram
//! `borealis_gateway_replica_lag_seconds`; 0 when nothing durable is missing).
//!
//! ## Failure
//!
//! - The writer fails or is replaced: the reader follows the new one from its recovered VDL
//!   (never below the read point: recovery never goes below an acknowledged VDL), dropping its
//!   cache, since the new stream starts there.
//! - The tap overflowed (the reader was too slow): the cache drops its pages and jumps to the
//!   current VDL.
//! - GetPage fails, the instance traps or times out: that request fails (`unavailable` /
//!   `timeout`), the instance is thrown away; the writer is never affected.

use super::ComputePool;
use crate::error::ApiError;
use crate::page_client::PageClient;
use crate::readahead::{ReadAhead, Window};
use crate::replica_cache::{Advanced, ReplicaCache};
use crate::volume_writer::{RedoTap, VolumeWriter};
use borealis_core::quorum::PG_MEMBERS;
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentId, TenantId};
use borealis_utils::LockExt;
use compute_abi::{ExecErrorKind, ExecRequest, ExecResponse, Statement};
use compute_host::{Backend, BackendError, Compute, ComputeError, Mtr};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// How often an idle reader drains its tap and moves its read point.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(20);
/// The message every refused replica write carries.
pub const READ_ONLY_MESSAGE: &str = "replicas are read-only: send writes without \"replica\": true";

/// What a replica request returns.
pub struct ReplicaOutput {
    pub response: ExecResponse,
    /// The LSN the answer was read at: a durable VDL of the writer.
    pub read_point: Lsn,
}

pub(crate) struct ReaderJob {
    pub request: ExecRequest,
    pub mode: ReadMode,
    pub reply: oneshot::Sender<Result<ReplicaOutput, ApiError>>,
}

/// Why a request runs on the reader; decides how a write in it is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// The client asked for a replica (`"replica": true`): a write is the client's mistake,
    /// `bad_request`.
    Replica,
    /// The writer is in limbo (write quorum lost with commits in flight): a write is refused
    /// `read_only`, like any write while the write quorum is lost.
    QuorumLost,
}

/// What the reader thread and its compute's backend share.
struct Shared {
    tenant: TenantId,
    cache: ReplicaCache,
    pageserver: PageClient,
    /// The epoch of the writer the cache follows (GetPage reads the log of that epoch or newer).
    epoch: u64,
    /// The instance tried to commit during the current request.
    write_refused: bool,
}

/// A reader compute's [`Backend`]: pages at the read point, commits refused.
struct ReplicaBackend {
    shared: Arc<Mutex<Shared>>,
    rt: Handle,
    /// Sequential read-ahead, as the writer's compute has: an instance lives at one read point,
    /// so a run never spans two.
    read_ahead: ReadAhead,
    /// The next run of a scan, being fetched in the background at the read point (at most one).
    window: Option<Window>,
}

impl Backend for ReplicaBackend {
    fn get_page(&mut self, page: PageNo) -> Result<Option<Vec<u8>>, BackendError> {
        let mut s = self.shared.locked();
        if let Some(img) = s.cache.get(page) {
            return Ok(img.map(|p| p.as_ref().clone()));
        }
        // The lock is held across the fetch: the read point cannot move (`advance` takes it), so
        // every page fetched is as of the cache's read point, which is what `insert` requires.
        // Pages read ahead are kept only where the cache has nothing (what it has is the same
        // version, perhaps with the stream's MTRs already applied to it).
        let (tenant, lsn, epoch) = (s.tenant, s.cache.read_point(), s.epoch);
        // A scan reaching the window fetched in the background (at this read point): land it,
        // and fetch the next one.
        if let Some(w) = self.window.take_if(|w| w.covers(page)) {
            let (end, len, asked_at) = (w.end(), w.len(), w.lsn());
            match w.land(&self.rt) {
                Ok(landed) if asked_at == lsn => {
                    s.pageserver
                        .metrics()
                        .readahead_windows_landed
                        .fetch_add(1, Ordering::Relaxed);
                    for (p, img) in landed {
                        if !s.cache.contains(p) {
                            s.cache.insert(p, img);
                        }
                    }
                    if let Some(end) = end {
                        // At full length again after a window cut at a segment's end.
                        self.read_ahead.resume(end, len);
                        let max = self.read_ahead.max();
                        let segment = s.pageserver.layout().segment_of(page);
                        self.window = issue_window(&s, &self.rt, end, max, segment);
                    }
                    if let Some(img) = s.cache.get(page) {
                        return Ok(img.map(|p| p.as_ref().clone()));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    s.pageserver
                        .metrics()
                        .readahead_windows_failed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%tenant, %page, error = %e.message, "a read-ahead window failed; reading synchronously");
                }
            }
        }
        let wanted = self.read_ahead.run(page, s.pageserver.layout());
        let fetched = s
            .pageserver
            .get_pages(&self.rt, tenant, &wanted, lsn, epoch)?;
        // A page read ahead that failed alone is dropped (read again if SQLite asks for it);
        // the page asked for answers with its own result.
        let mut asked = Ok(None);
        for (p, img) in wanted.iter().copied().zip(fetched) {
            if p == page {
                asked = img.clone();
            } else if s.cache.contains(p) {
                continue;
            }
            if let Ok(img) = img {
                s.cache.insert(p, img);
            }
        }
        // A scan at full speed: fetch its next run while SQLite reads this one. (A window in
        // flight elsewhere belongs to a scan given up: this one replaces it.)
        let max = self.read_ahead.max();
        if wanted.len() == max && self.read_ahead.windows() {
            if let Some(next) = page.0.checked_add(max as u32).map(PageNo) {
                self.window.take_if(|w| !w.covers(next));
                if self.window.is_none() {
                    let segment = s.pageserver.layout().segment_of(page);
                    self.window = issue_window(&s, &self.rt, next, max, segment);
                }
            }
        }
        Ok(asked?.map(|p| p.as_ref().clone()))
    }

    fn commit(&mut self, _mtr: Mtr) -> Result<(), BackendError> {
        self.shared.locked().write_refused = true;
        // ReadOnly: the guest rolls the transaction back cleanly; nothing left.
        Err(BackendError::new(ErrorKind::ReadOnly, READ_ONLY_MESSAGE))
    }
}

/// Starts fetching `len` pages from `start` at the cache's read point in the background: the
/// window a scan lands at its next miss there. Not past the end of `segment`, the scan's (the
/// next segment may not exist: see `Volume::issue_window`).
fn issue_window(
    s: &Shared,
    rt: &Handle,
    start: PageNo,
    len: usize,
    segment: SegmentId,
) -> Option<Window> {
    let layout = s.pageserver.layout();
    if layout.segment_of(start) != segment {
        return None;
    }
    let pages = ReadAhead::window(start, len, layout);
    if pages.is_empty() {
        return None;
    }
    let lsn = s.cache.read_point();
    let (answer, fetch) =
        s.pageserver
            .spawn_get_pages(rt, s.tenant, pages.clone(), lsn, s.epoch)?;
    Some(Window::new(pages, lsn, answer, Some(fetch)))
}

/// The reader thread's state.
struct Reader {
    pool: Arc<ComputePool>,
    tenant: TenantId,
    shared: Arc<Mutex<Shared>>,
    writer: Option<Arc<VolumeWriter>>,
    tap: Option<Arc<RedoTap>>,
    /// The instance and the read point it was opened at.
    compute: Option<(Compute, Lsn)>,
    /// Why the current request runs here (how a write in it is refused).
    mode: ReadMode,
}

/// The reader thread: serves jobs, follows the stream between them, stops when idle.
pub(crate) fn run_reader(
    pool: Arc<ComputePool>,
    tenant: TenantId,
    generation: u64,
    jobs: Receiver<ReaderJob>,
) {
    let _span = tracing::info_span!("reader", tenant = %tenant).entered();
    let metrics = pool.metrics().clone();
    metrics.running_readers.fetch_add(1, Ordering::Relaxed);
    let floor = pool.replica_read_point(tenant);
    let config = pool.config().clone();
    let mut reader = Reader {
        shared: Arc::new(Mutex::new(Shared {
            tenant,
            cache: ReplicaCache::new(config.host_cache_pages, floor),
            pageserver: pool.page_client(),
            epoch: 0,
            write_refused: false,
        })),
        pool,
        tenant,
        writer: None,
        tap: None,
        compute: None,
        mode: ReadMode::Replica,
    };
    info!(read_point = %floor, "reader started");
    let mut last_job = Instant::now();
    loop {
        match jobs.recv_timeout(FOLLOW_INTERVAL) {
            Ok(job) => {
                last_job = Instant::now();
                reader.answer(job);
            }
            Err(RecvTimeoutError::Timeout) => {
                reader.follow();
                if reader.compute.is_some() && reader.pool.give_back(last_job.elapsed()) {
                    reader.compute = None;
                }
                if last_job.elapsed() >= config.idle_timeout {
                    match reader.pool.retire_reader(tenant, generation, &jobs) {
                        Some(job) => {
                            last_job = Instant::now();
                            reader.answer(job);
                        }
                        None => {
                            info!("reader stopped after idle timeout");
                            break;
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                // Tenant deleted: not covered by `retire_reader`.
                metrics.forget_replica(tenant);
                break;
            }
        }
    }
    metrics.running_readers.fetch_sub(1, Ordering::Relaxed);
}

impl Reader {
    fn answer(&mut self, job: ReaderJob) {
        self.pool.note_replica_activity(self.tenant);
        self.mode = job.mode;
        let result = self.serve(job.request);
        if result.is_err() {
            // Whatever went wrong, the next request starts from a clean instance.
            self.compute = None;
        }
        let _ = job.reply.send(result);
    }

    fn serve(&mut self, mut request: ExecRequest) -> Result<ReplicaOutput, ApiError> {
        let writer = self.live_writer()?;
        self.catch_up(&writer);
        let read_point = self.shared.locked().cache.read_point();
        self.pool.set_replica_read_point(self.tenant, read_point);
        self.open_at(read_point)?;
        let timeout = self.pool.config().timeout_of(&request);
        // query_only before every request: a request may have switched it off.
        let guard = ExecRequest {
            statements: vec![Statement {
                sql: "PRAGMA query_only = 1".into(),
                params: vec![],
            }],
            transaction: false,
            result_bytes_max: 1024,
            timeout_ms: None,
            keyed: None,
        };
        match self.exec(&guard, timeout) {
            Ok(ExecResponse::Ok(_)) => {}
            Ok(ExecResponse::Err(e)) => {
                return Err(ApiError::internal(format!(
                    "could not make the replica query-only: {}",
                    e.message
                )))
            }
            Ok(other) => {
                return Err(ApiError::internal(format!(
                    "making the replica query-only answered {other:?}"
                )))
            }
            Err(e) => return Err(self.compute_error(e, timeout)),
        }
        // A transaction would take a write lock, which query_only refuses; every statement of
        // the request sees the same read point anyway, so a batch is as consistent as one.
        request.transaction = false;
        self.shared.locked().write_refused = false;
        let response = match self.exec(&request, timeout) {
            Ok(r) => r,
            Err(e) => return Err(self.compute_error(e, timeout)),
        };
        let response = match response {
            ExecResponse::Err(e)
                if e.kind == ExecErrorKind::Sql && e.message.contains("readonly database") =>
            {
                return Err(
                    self.write_refused(Some(format!("statement {}: {}", e.statement, e.message)))
                );
            }
            r => r,
        };
        self.observe_lag(&writer);
        Ok(ReplicaOutput {
            response,
            read_point,
        })
    }

    /// A write the reader refused (nothing left it), answered as the request's mode wants:
    /// the client's mistake for a replica, `read_only` for a writer in limbo.
    fn write_refused(&self, detail: Option<String>) -> ApiError {
        if self.mode == ReadMode::Replica {
            return ApiError::bad_request(match detail {
                Some(d) => format!("{READ_ONLY_MESSAGE} ({d})"),
                None => READ_ONLY_MESSAGE.to_string(),
            });
        }
        let reachable = self.writer.as_ref().map_or(0, |w| w.reachable_members());
        let why = self
            .writer
            .as_ref()
            .and_then(|w| w.refusing_summary())
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        let read_point = self.shared.locked().cache.read_point();
        ApiError::read_only(format!(
            "write refused, nothing was written: the write quorum was lost with commits in flight \
             ({reachable} of {PG_MEMBERS} safekeepers writable); reads are served at lsn \
             {read_point} until those commits settle{why}"
        ))
    }

    fn compute_error(&mut self, e: ComputeError, timeout: Duration) -> ApiError {
        self.compute = None;
        let refused = std::mem::take(&mut self.shared.locked().write_refused);
        match e {
            ComputeError::Backend(_) if refused => self.write_refused(None),
            ComputeError::Timeout { .. } => ApiError::timeout(format!(
                "statement exceeded the {} ms limit and was stopped",
                timeout.as_millis()
            )),
            ComputeError::RequestTooLarge { .. } | ComputeError::OutOfMemory { .. } => {
                ApiError::too_large(e.to_string())
            }
            ComputeError::Backend(be) => ApiError::from_kind(
                match be.kind {
                    // A page read failing is never the client's fault.
                    ErrorKind::Invalid | ErrorKind::Sql | ErrorKind::ReadOnly => {
                        ErrorKind::Unavailable
                    }
                    k => k,
                },
                format!("replica read failed: {}", be.message),
            ),
            other => ApiError::unavailable(format!("replica compute failed: {other}; retry")),
        }
    }

    /// The writer this reader follows, (re)subscribing when it changed.
    fn live_writer(&mut self) -> Result<Arc<VolumeWriter>, ApiError> {
        if let Some(w) = self.writer.as_ref().filter(|w| w.is_live()) {
            return Ok(w.clone());
        }
        self.writer = None;
        self.tap = None;
        let writer = self.pool.live_writer(self.tenant)?;
        let (tap, stream_after) = writer.subscribe();
        let mut s = self.shared.locked();
        let read_point = s.cache.read_point();
        let vdl = writer.vdl();
        if vdl < read_point {
            // Recovery never lands below a VDL a writer reached: a bug, not a fault.
            tracing::error!(%vdl, %read_point, epoch = writer.epoch(), "new writer's VDL is below the replica's read point");
            return Err(ApiError::internal(format!(
                "the writer's VDL {vdl} is below the replica's read point {read_point}"
            )));
        }
        s.cache.follow(stream_after);
        s.epoch = writer.epoch();
        drop(s);
        info!(epoch = writer.epoch(), %vdl, %stream_after, "reader follows a writer");
        self.compute = None;
        self.writer = Some(writer.clone());
        self.tap = Some(tap);
        Ok(writer)
    }

    /// Reads the VDL, drains the tap, advances the cache: in that order (see [`RedoTap`]).
    fn catch_up(&mut self, writer: &VolumeWriter) {
        let target = writer.vdl();
        self.drain();
        let advanced = self.shared.locked().cache.advance(target);
        if advanced == Advanced::Reset {
            self.pool
                .metrics()
                .replica_resets
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn drain(&mut self) {
        let Some(tap) = &self.tap else { return };
        let drained = tap.drain();
        let mut s = self.shared.locked();
        if drained.overflowed {
            warn!("reader fell behind the redo stream; dropping its cache");
            s.cache.stream_lost();
        }
        for m in drained.mtrs {
            s.cache.receive(m);
        }
    }

    /// Between requests: keep up with a live writer (never start one).
    fn follow(&mut self) {
        if let Some(w) = self.writer.clone().filter(|w| w.is_live()) {
            self.catch_up(&w);
            let lag = w
                .vdl()
                .0
                .saturating_sub(self.shared.locked().cache.read_point().0);
            self.pool.metrics().set_replica_lag_lsn(self.tenant, lag);
        }
    }

    fn exec(
        &mut self,
        request: &ExecRequest,
        timeout: Duration,
    ) -> Result<ExecResponse, ComputeError> {
        match &mut self.compute {
            Some((c, _)) => c.exec(request, timeout),
            None => Err(ComputeError::Poisoned("no replica instance is open".into())),
        }
    }

    /// Makes the instance the one for `read_point`: the current one if it was opened there
    /// (SQLite's cache is still right), else a new one.
    fn open_at(&mut self, read_point: Lsn) -> Result<(), ApiError> {
        let reusable =
            matches!(&self.compute, Some((c, rp)) if *rp == read_point && c.poisoned().is_none());
        if !reusable {
            self.compute = None;
            let c = self
                .pool
                .start_compute(|| {
                    Box::new(ReplicaBackend {
                        shared: self.shared.clone(),
                        rt: self.pool.runtime().clone(),
                        read_ahead: ReadAhead::for_cache(
                            self.pool.config().read_ahead_pages,
                            self.pool.config().host_cache_pages,
                        ),
                        window: None,
                    })
                })
                .map_err(|e| match e {
                    ComputeError::Backend(be) => ApiError::unavailable(format!(
                        "replica compute could not open the volume: {}",
                        be.message
                    )),
                    e @ ComputeError::Unopenable(_) => ApiError::from_kind(e.kind(), e.to_string()),
                    other => {
                        ApiError::unavailable(format!("replica compute failed to start: {other}"))
                    }
                })?;
            self.compute = Some((c, read_point));
        }
        Ok(())
    }

    /// Records replica lag at the moment an answer leaves.
    fn observe_lag(&mut self, writer: &VolumeWriter) {
        let vdl = writer.vdl();
        self.drain();
        let s = self.shared.locked();
        let lag_lsn = vdl.0.saturating_sub(s.cache.read_point().0);
        let lag_time = s
            .cache
            .oldest_unshown_shipped_at(vdl)
            .map(|t| t.elapsed())
            .unwrap_or_default();
        drop(s);
        let m = self.pool.metrics();
        m.set_replica_lag_lsn(self.tenant, lag_lsn);
        m.replica_lag.observe(lag_time);
    }
}
