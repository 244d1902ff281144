//! Talking to safekeepers: one pipelined connection per safekeeper, shared by every follower of
//! every tenant ([`SafekeeperPool`]).
//!
//! ## Which safekeepers hold a segment
//!
//! `--safekeepers` lists the **pool** of safekeepers in AZ order, as the gateway's
//! `--safekeepers` and the safekeepers' `--pool` do: the first third in AZ a, the second in b, the
//! last in c ([`borealis_core::placement::ordered_pool_azs`]). When its length is a valid pool (a
//! multiple of three, at least six), segment `s` of tenant `t` is held by the six safekeepers of
//! its protection group, `choose_group(t, s, azs)` (RFC 0008 §3): the writer sends the segment's
//! records to those six only, and gossip fills it between those six only. So a follower reads only
//! from them, asks only them for the completeness proof (3 of the 6 are a read quorum: see
//! `crate::ingest`), and a checkpoint trims only them ([`sources`]). With six safekeepers every
//! group is all six, in the order listed: exactly the rule without a pool. A list that is no pool
//! (one address in a test, say) makes every safekeeper a source of every segment, and a proof then
//! needs all of them.
//!
//! ## Reading
//!
//! A follower reads from one safekeeper at a time (its [`LogSource`]) and keeps it while answers
//! are good; on an error, a hole or a protocol violation it turns to the next of the segment's
//! sources. Safekeepers serve a connection's `ReadLog` requests concurrently, so a long poll
//! parked on one does not hold up the fetches behind it. Connecting is bounded by
//! [`CONNECT_TIMEOUT`]; a safekeeper that is down costs one refused connection, then the next one
//! is tried; a broken connection is replaced on its next use.

use borealis_core::placement::{choose_group, ordered_pool_azs};
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

/// The safekeepers (indexes into `--safekeepers`) that hold `segment` of `tenant`, among `n`
/// listed AZ by AZ: the six of its protection group, in member order, if `n` is a valid pool;
/// otherwise all `n` (see the module docs).
pub fn sources(tenant: TenantId, segment: SegmentId, n: usize) -> Vec<usize> {
    match ordered_pool_azs(n) {
        Ok(azs) => choose_group(tenant, segment, &azs).0.to_vec(),
        Err(_) => (0..n).collect(),
    }
}

/// A follower's current safekeeper, one of its segment's [`sources`].
pub struct LogSource {
    pool: Arc<SafekeeperPool>,
    /// The segment's sources, as indexes into `--safekeepers`.
    nodes: Vec<usize>,
    /// The current one: `nodes[at]`.
    at: usize,
}

impl LogSource {
    /// Starts at the first of the segment's sources.
    pub fn new(pool: Arc<SafekeeperPool>, tenant: TenantId, segment: SegmentId) -> LogSource {
        let nodes = pool.sources(tenant, segment);
        assert!(!nodes.is_empty(), "at least one safekeeper");
        LogSource { pool, nodes, at: 0 }
    }

    /// How many safekeepers the segment may be read from.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The segment's sources (indexes into `--safekeepers`).
    pub fn nodes(&self) -> &[usize] {
        &self.nodes
    }

    /// The addresses of the segment's sources.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|&n| self.pool.addrs[n].clone())
            .collect()
    }

    pub fn addr(&self) -> &str {
        &self.pool.addrs[self.nodes[self.at]]
    }

    /// The current safekeeper, as an index into `--safekeepers`.
    pub fn node(&self) -> usize {
        self.nodes[self.at]
    }

    /// Turns to the next of the segment's sources.
    pub fn rotate(&mut self) {
        self.at = (self.at + 1) % self.nodes.len();
    }

    /// Turns to safekeeper `node` (an index into `--safekeepers`), if it is one of the segment's
    /// sources; says whether it is.
    pub fn switch_to(&mut self, node: usize) -> bool {
        match self.nodes.iter().position(|&n| n == node) {
            Some(at) => {
                self.at = at;
                true
            }
            None => false,
        }
    }

    pub async fn read_log(&self, req: LogRequest) -> Result<LogAnswer, WireError> {
        let client = self.pool.client(self.node()).await?;
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
    /// Which safekeeper: its index in `--safekeepers`.
    pub index: usize,
    pub known_vdl: Lsn,
    pub segments: Vec<SegmentState>,
}

/// Shared connections for short questions to every safekeeper.
pub struct SafekeeperPool {
    addrs: Arc<[String]>,
    /// The AZ of each safekeeper, if `addrs` is a valid pool listed AZ by AZ.
    azs: Option<Vec<u8>>,
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
            azs: ordered_pool_azs(addrs.len()).ok(),
            addrs,
            conns,
            token,
        }
    }

    /// Whether `--safekeepers` is a pool, each segment held by the six of its group only.
    pub fn is_placed(&self) -> bool {
        self.azs.is_some()
    }

    /// The safekeepers that hold `segment` of `tenant` ([`sources`]).
    pub fn sources(&self, tenant: TenantId, segment: SegmentId) -> Vec<usize> {
        match &self.azs {
            Some(azs) => choose_group(tenant, segment, azs).0.to_vec(),
            None => (0..self.addrs.len()).collect(),
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

    /// Tells every safekeeper that holds the segment ([`Self::sources`]), in parallel, that its
    /// log up to `upto` is checkpointed (see `Body::Trim`); returns each one's answer (its trim
    /// point after), by address.
    pub async fn trim_sources(
        self: &Arc<Self>,
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        upto: Lsn,
    ) -> Vec<(String, Result<Lsn, WireError>)> {
        let mut set = JoinSet::new();
        for index in self.sources(tenant, segment) {
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

    /// Asks the safekeepers `nodes` (indexes into `--safekeepers`: a segment's [`Self::sources`]),
    /// in parallel, what they hold of `tenant`; the answers can be taken as they arrive. Dropping
    /// the result abandons the questions still in flight.
    pub fn ask_states(self: &Arc<Self>, tenant: TenantId, nodes: &[usize]) -> StateAnswers {
        let mut set = JoinSet::new();
        for &index in nodes {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment_cursor::proof_quorum;

    fn pool(n: usize) -> Arc<SafekeeperPool> {
        let addrs: Arc<[String]> = (0..n)
            .map(|i| format!("127.0.0.1:{}", 7001 + i))
            .collect::<Vec<_>>()
            .into();
        Arc::new(SafekeeperPool::new(addrs, "token".into()))
    }

    const T: TenantId = TenantId(0x0bad_cafe_0042);

    #[test]
    fn six_safekeepers_are_every_segments_sources_in_the_order_listed() {
        for tenant in [TenantId(0), TenantId(1), T] {
            for s in 0..100 {
                assert_eq!(sources(tenant, SegmentId(s), 6), [0, 1, 2, 3, 4, 5]);
            }
        }
        assert!(pool(6).is_placed());
    }

    #[test]
    fn a_list_that_is_no_pool_makes_every_safekeeper_a_source() {
        for n in [1, 2, 4, 5, 7, 8, 10] {
            assert_eq!(
                sources(T, SegmentId(3), n),
                (0..n).collect::<Vec<_>>(),
                "{n}"
            );
            assert!(!pool(n).is_placed());
        }
        let one = LogSource::new(pool(1), T, SegmentId(0));
        assert_eq!((one.len(), one.addr()), (1, "127.0.0.1:7001"));
        assert_eq!(proof_quorum(one.len()), 1, "all must agree");
    }

    #[test]
    fn in_a_pool_of_nine_a_segment_is_read_from_its_group_only() {
        let nine = pool(9);
        let mut used = [0usize; 9];
        let mut differ = 0;
        for s in 0..300 {
            let segment = SegmentId(s);
            let group = sources(T, segment, 9);
            assert_eq!(nine.sources(T, segment), group);
            assert_eq!(
                group,
                choose_group(T, segment, &[0, 0, 0, 1, 1, 1, 2, 2, 2]).0,
                "the same six the writer sends the segment to"
            );
            // Two per AZ (nodes 0-2 are a, 3-5 b, 6-8 c), in member order.
            for (member, &node) in group.iter().enumerate() {
                assert_eq!(node / 3, member / 2, "segment {s}: {group:?}");
                used[node] += 1;
            }
            if group != sources(T, SegmentId(0), 9) {
                differ += 1;
            }

            // The follower reads from the group, turns only within it, asks only it for a
            // proof, and three answers of it make one.
            let mut source = LogSource::new(nine.clone(), T, segment);
            assert_eq!(source.nodes(), group);
            assert_eq!(source.len(), 6);
            assert_eq!(proof_quorum(source.len()), 3);
            let mut seen = Vec::new();
            for _ in 0..6 {
                seen.push(source.node());
                assert_eq!(source.addr(), format!("127.0.0.1:{}", 7001 + source.node()));
                source.rotate();
            }
            assert_eq!(seen, group, "one full turn visits the group once");
            assert_eq!(source.node(), group[0]);
            let outsider = (0..9)
                .find(|n| !group.contains(n))
                .expect("3 of 9 are not in it");
            assert!(!source.switch_to(outsider));
            assert_eq!(source.node(), group[0], "unchanged");
            assert!(source.switch_to(group[4]));
            assert_eq!(source.node(), group[4]);
            assert_eq!(
                source.addrs(),
                group
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", 7001 + n))
                    .collect::<Vec<_>>()
            );
        }
        // The segments spread over the pool: every safekeeper is a source of some, none of all.
        assert!(used.iter().all(|&u| u > 0 && u < 300), "{used:?}");
        assert!(
            differ > 200,
            "{differ} of 300 segments differ from segment 0's group"
        );
    }
}
