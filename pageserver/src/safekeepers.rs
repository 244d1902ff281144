//! Talking to safekeepers: one pipelined connection per safekeeper, shared by every follower of
//! every tenant ([`SafekeeperPool`]).
//!
//! A follower reads from one safekeeper at a time (its [`LogSource`]) and keeps it while answers
//! are good; on an error, a hole or a protocol violation it turns to the next one in the
//! `--safekeepers` list. Safekeepers serve a connection's `ReadLog` requests concurrently, so a
//! long poll parked on one does not hold up the fetches behind it. Connecting is bounded by
//! [`CONNECT_TIMEOUT`]; a safekeeper that is down costs one refused connection, then the next one
//! is tried; a broken connection is replaced on its next use.

use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_wire::{Body, Client, SegmentState, WireError};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on a `GetState` round trip (it answers from memory on the safekeeper).
pub const STATE_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on a `Trim` round trip: the safekeeper fsyncs its control file and rewrites the
/// segment's log file before it answers.
pub const TRIM_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A safekeeper's answer to `ReadLog`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogAnswer {
    pub records: Vec<u8>,
    pub scl: Lsn,
    pub known_vdl: Lsn,
}

/// What one `ReadLog` asks.
#[derive(Clone, Copy, Debug)]
pub struct LogRequest {
    pub tenant: TenantId,
    pub segment: SegmentId,
    /// Only safekeepers at this writer epoch or newer may answer (0: any).
    pub min_epoch: u64,
    pub after: Lsn,
    pub upto: Lsn,
    pub max_bytes: u32,
    pub wait_ms: u32,
    pub timeout: Duration,
}

/// A follower's current safekeeper.
pub struct LogSource {
    pool: Arc<SafekeeperPool>,
    index: usize,
}

impl LogSource {
    pub fn new(pool: Arc<SafekeeperPool>) -> LogSource {
        assert!(!pool.addrs.is_empty(), "at least one safekeeper");
        LogSource { pool, index: 0 }
    }

    pub fn len(&self) -> usize {
        self.pool.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pool.addrs.is_empty()
    }

    pub fn addr(&self) -> &str {
        &self.pool.addrs[self.index]
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn switch_to(&mut self, index: usize) {
        assert!(index < self.len(), "safekeeper index out of range");
        self.index = index;
    }

    pub async fn read_log(&self, req: LogRequest) -> Result<LogAnswer, WireError> {
        let client = self.pool.client(self.index).await?;
        let body = Body::ReadLog {
            tenant: req.tenant,
            segment: req.segment,
            epoch: None,
            min_epoch: req.min_epoch,
            after: req.after,
            upto: req.upto,
            max_bytes: req.max_bytes,
            wait_ms: req.wait_ms,
        };
        match client.call(body, req.timeout).await? {
            Body::Records {
                records,
                scl,
                known_vdl,
            } => Ok(LogAnswer {
                records,
                scl,
                known_vdl,
            }),
            other => Err(WireError::Unexpected(format!(
                "{} in answer to read_log",
                other.name()
            ))),
        }
    }
}

/// What one safekeeper said it holds of a tenant.
#[derive(Clone, Debug)]
pub struct HeldState {
    pub index: usize,
    pub known_vdl: Lsn,
    pub segments: Vec<SegmentState>,
}

/// Shared connections for short questions to every safekeeper.
pub struct SafekeeperPool {
    addrs: Arc<[String]>,
    conns: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
    /// This pageserver's storage token, presented on every connection.
    token: String,
}

impl SafekeeperPool {
    pub fn new(addrs: Arc<[String]>, token: String) -> SafekeeperPool {
        let conns = addrs
            .iter()
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        SafekeeperPool {
            addrs,
            conns,
            token,
        }
    }

    async fn client(&self, index: usize) -> Result<Arc<Client>, WireError> {
        let mut slot = self.conns[index].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            Client::connect(&self.addrs[index], &self.token, CONNECT_TIMEOUT, None).await?,
        );
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn state_of(&self, index: usize, tenant: TenantId) -> Result<HeldState, WireError> {
        let client = self.client(index).await?;
        match client
            .call(Body::GetState { tenant }, STATE_CALL_TIMEOUT)
            .await?
        {
            Body::State {
                known_vdl,
                segments,
                ..
            } => Ok(HeldState {
                index,
                known_vdl,
                segments,
            }),
            other => Err(WireError::Unexpected(format!(
                "{} in answer to get_state",
                other.name()
            ))),
        }
    }

    async fn trim_one(
        &self,
        index: usize,
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        upto: Lsn,
    ) -> Result<Lsn, WireError> {
        let client = self.client(index).await?;
        let body = Body::Trim {
            tenant,
            segment,
            epoch,
            upto,
        };
        match client.call(body, TRIM_CALL_TIMEOUT).await? {
            Body::Trimmed { base } => Ok(base),
            other => Err(WireError::Unexpected(format!(
                "{} in answer to trim",
                other.name()
            ))),
        }
    }

    /// Tells every safekeeper, in parallel, that the segment's log up to `upto` is checkpointed
    /// (see `Body::Trim`); returns each one's answer (its trim point after), by address.
    pub async fn trim_all(
        self: &Arc<Self>,
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        upto: Lsn,
    ) -> Vec<(String, Result<Lsn, WireError>)> {
        let mut set = JoinSet::new();
        for index in 0..self.addrs.len() {
            let pool = self.clone();
            set.spawn(async move {
                let answer = pool.trim_one(index, tenant, segment, epoch, upto).await;
                (index, answer)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((index, answer)) => out.push((self.addrs[index].clone(), answer)),
                Err(e) => tracing::error!(error = %e, "trim task failed"),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Asks every safekeeper, in parallel, what it holds of `tenant`; the answers can be taken as
    /// they arrive. Dropping the result abandons the questions still in flight.
    pub fn ask_states(self: &Arc<Self>, tenant: TenantId) -> StateAnswers {
        let mut set = JoinSet::new();
        for index in 0..self.addrs.len() {
            let pool = self.clone();
            set.spawn(async move { (index, pool.state_of(index, tenant).await) });
        }
        StateAnswers {
            pool: self.clone(),
            set,
        }
    }
}

/// Answers to [`SafekeeperPool::ask_states`], in order of arrival.
pub struct StateAnswers {
    pool: Arc<SafekeeperPool>,
    set: JoinSet<(usize, Result<HeldState, WireError>)>,
}

impl StateAnswers {
    /// The next answer; safekeepers that fail to answer are skipped. `None` when all are in.
    pub async fn next(&mut self) -> Option<HeldState> {
        while let Some(joined) = self.set.join_next().await {
            match joined {
                Ok((_, Ok(state))) => return Some(state),
                Ok((index, Err(e))) => {
                    tracing::debug!(safekeeper = %self.pool.addrs[index], error = %e, "get_state failed");
                }
                Err(e) => tracing::error!(error = %e, "get_state task failed"),
            }
        }
        None
    }
}
