//! Recovery of a volume of one or many segments (`borealis_quorum::volume_recovery`, RFC 0008):
//!
//! 1. a read quorum of safekeeper states: each member's epoch, history, `known_vdl` and per
//!    segment its SCL; the **anchor** is the highest `known_vdl` (durable, so nothing at or below
//!    it needs looking at);
//! 2. the sources: the new epoch, the newest history volume-wide, and per segment the member
//!    whose log under that history reaches highest ([`volume_recovery::plan_sources`]);
//! 3. each source's index of record headers above the anchor (`ReadLsns`, paged), and from them
//!    the volume's end: the highest CPL below which every LSN is held
//!    ([`volume_recovery::plan_end`]). No record bodies are read: recovery time does not grow
//!    with the log;
//! 4. the epoch installed on every member reachable (each truncates above the end), then a wait
//!    until a write quorum holds every segment up to its tail (gossip fills the gaps).
//!
//! Every segment's group is the six configured safekeepers (the pool of six; groups drawn from a
//! larger pool are RFC 0008 §3).

use super::{LogError, VolumeWriterConfig, CALL_TIMEOUT, CONNECT_TIMEOUT};
use borealis_core::quorum::{PG_MEMBERS, READ_QUORUM, WRITE_QUORUM};
use borealis_core::{ErrorKind, Lsn, SegmentId, TenantId};
use borealis_quorum::recovery::{self, MemberReport, RecoveryPlan};
use borealis_quorum::volume_recovery::{self, Index, IndexEntry, VolumeSources};
use borealis_wire::{Body, Client, WireError};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long recovery waits for a write quorum to hold the recovered log.
const RECOVERY_DURABLE_WAIT: Duration = Duration::from_secs(10);
/// Entries asked for per `ReadLsns` call (the safekeeper caps it too).
const INDEX_ENTRIES_PER_CALL: u32 = 65_536;
/// Index entries recovery reads per segment at most. The writer runs at most its LAL (16 Ki
/// LSNs) ahead of the VDL it tells members, so a source holds about that many above the anchor;
/// far more means a protocol violation, not a long log.
const INDEX_ENTRIES_PER_SEGMENT_MAX: usize = 1 << 20;

/// Steps 1-4 (see the module docs): read quorum of states, sources, indexes and the end,
/// install the epoch on every member reachable, wait for a write quorum of every segment.
pub(super) async fn recover_epoch(
    tenant: TenantId,
    config: &VolumeWriterConfig,
) -> Result<(u64, recovery::RecoveryPlan), LogError> {
    let token = config.tokens.tenant(tenant);
    let clients = futures::future::join_all(
        config
            .safekeepers
            .iter()
            .map(|a| Client::connect(a, &token, CONNECT_TIMEOUT, None)),
    )
    .await;
    let clients: Vec<Option<Client>> = clients.into_iter().map(|c| c.ok()).collect();
    let states = futures::future::join_all(clients.iter().enumerate().map(|(m, c)| async move {
        let c = c.as_ref()?;
        match c.call(Body::GetState { tenant }, CALL_TIMEOUT).await {
            Ok(Body::State {
                epoch,
                segments,
                history,
                known_vdl,
                ..
            }) => Some((
                MemberReport {
                    member: m,
                    epoch,
                    history,
                    segments: segments
                        .iter()
                        .map(|s| (s.segment, s.scl, s.last_cpl))
                        .collect(),
                },
                known_vdl,
            )),
            Ok(other) => {
                warn!(
                    member = m,
                    answer = other.name(),
                    "unexpected answer to GetState"
                );
                None
            }
            Err(e) => {
                debug!(member = m, error = %e, "GetState failed");
                None
            }
        }
    }))
    .await;
    let answered: Vec<(MemberReport, Lsn)> = states.into_iter().flatten().collect();
    if answered.len() < READ_QUORUM {
        return Err(LogError::Recovery(format!(
            "only {} of {PG_MEMBERS} safekeepers answered, {READ_QUORUM} needed",
            answered.len()
        )));
    }
    let anchor = answered
        .iter()
        .map(|(_, v)| *v)
        .max()
        .unwrap_or(Lsn::INVALID);
    let reports: Vec<MemberReport> = answered.into_iter().map(|(r, _)| r).collect();
    // Every segment's group is the six members: each report answers for every segment (a member
    // that lists no state for a segment holds nothing of it).
    let segments: std::collections::BTreeSet<SegmentId> = reports
        .iter()
        .flat_map(|r| r.segments.iter().map(|s| s.0))
        .collect();
    let groups: BTreeMap<SegmentId, Vec<MemberReport>> =
        segments.iter().map(|s| (*s, reports.clone())).collect();
    let sources = volume_recovery::plan_sources(&groups, anchor)
        .map_err(|e| LogError::Recovery(e.to_string()))?;
    let indexes = read_indexes(tenant, &clients, &sources).await?;
    let volume = volume_recovery::plan_end(&sources, &indexes)
        .map_err(|e| LogError::Recovery(format!("a source's LSN index is inconsistent: {e}")))?;
    if !volume.segment_tails.is_empty() || volume.vdl.is_valid() {
        info!(tenant = %tenant, epoch = volume.epoch, anchor = %anchor, end = %volume.vdl,
            segments = volume.segment_tails.len(),
            index_entries = indexes.values().map(|i| i.entries.len()).sum::<usize>(),
            "volume end found");
    }
    let plan = RecoveryPlan {
        epoch: volume.epoch,
        vdl: volume.vdl,
        history: volume.history,
        segment_tails: volume.segment_tails,
        source_member: None,
    };
    let epoch = plan.epoch;
    // Installing an epoch on fewer members than a write quorum cannot produce a writer, and
    // each attempt would durably burn an epoch on the members it reached (found by drill 3b:
    // epochs 1 → 150 during one outage). Stop before any Hello.
    if reports.len() < WRITE_QUORUM {
        return Err(LogError::Recovery(format!(
            "write quorum lost: only {} of {PG_MEMBERS} safekeepers answered, {WRITE_QUORUM} needed to start a writer",
            reports.len()
        )));
    }

    // Install the epoch: each member aligns its log to our history (truncating at least above
    // the VDL) before answering.
    let plan_ref = &plan;
    let hellos = futures::future::join_all(clients.iter().enumerate().map(|(m, c)| async move {
        let c = c.as_ref()?;
        let hello = Body::Hello {
            tenant,
            epoch,
            epoch_start_lsn: plan_ref.vdl,
            history: plan_ref.history.clone(),
        };
        match c.call(hello, CALL_TIMEOUT).await {
            Ok(Body::HelloOk { .. }) => Some(m),
            Ok(_) => None,
            Err(WireError::Remote {
                kind: ErrorKind::Fenced,
                message,
            }) => {
                warn!(member = m, %message, "a newer writer exists");
                None
            }
            Err(_) => None,
        }
    }))
    .await;
    let installed = hellos.iter().flatten().count();
    if installed < WRITE_QUORUM {
        return Err(LogError::Recovery(format!(
            "epoch {epoch} installed on {installed} of {PG_MEMBERS} safekeepers, {WRITE_QUORUM} needed (write quorum lost)"
        )));
    }

    // Wait until a write quorum holds everything up to the VDL (gossip fills the gaps).
    let deadline = tokio::time::Instant::now() + RECOVERY_DURABLE_WAIT;
    loop {
        let states =
            futures::future::join_all(clients.iter().enumerate().map(|(m, c)| async move {
                let c = c.as_ref()?;
                match c.call(Body::GetState { tenant }, CALL_TIMEOUT).await {
                    Ok(Body::State {
                        epoch: e, segments, ..
                    }) if e == epoch => Some(
                        segments
                            .into_iter()
                            .map(move |s| (m, s.segment, s.scl))
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                }
            }))
            .await;
        let scls: Vec<(usize, SegmentId, Lsn)> = states.into_iter().flatten().flatten().collect();
        if recovery::is_durable(&plan, &scls) {
            return Ok((epoch, plan));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(LogError::Recovery(format!(
                "the recovered log (VDL {}) did not reach a write quorum within {} s",
                plan.vdl,
                RECOVERY_DURABLE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each segment's source's index of record headers in `(anchor, usable SCL]`, read in pages of
/// [`INDEX_ENTRIES_PER_CALL`].
async fn read_indexes(
    tenant: TenantId,
    clients: &[Option<Client>],
    sources: &VolumeSources,
) -> Result<BTreeMap<SegmentId, Index>, LogError> {
    let reads = sources.sources.iter().map(|(&segment, source)| async move {
        let client = clients
            .get(source.member)
            .and_then(|c| c.as_ref())
            .ok_or_else(|| {
                LogError::Recovery(format!(
                    "segment {segment}: its source, safekeeper {}, is not connected",
                    source.member
                ))
            })?;
        let mut index: Option<Index> = None;
        let mut after = sources.anchor;
        loop {
            let ask = Body::ReadLsns {
                tenant,
                segment,
                after,
                upto: source.usable_scl,
                max_entries: INDEX_ENTRIES_PER_CALL,
            };
            let (before, entries) = match client.call(ask, CALL_TIMEOUT).await {
                Ok(Body::Lsns {
                    before, entries, ..
                }) => (before, entries),
                Ok(other) => {
                    return Err(LogError::Recovery(format!(
                        "segment {segment}: safekeeper {} answered ReadLsns with {}",
                        source.member,
                        other.name()
                    )))
                }
                Err(e) => {
                    return Err(LogError::Recovery(format!(
                        "segment {segment}: reading the LSN index from safekeeper {} failed: {e}",
                        source.member
                    )))
                }
            };
            let full = entries.len() >= INDEX_ENTRIES_PER_CALL as usize;
            let index = index.get_or_insert(Index {
                before,
                entries: Vec::new(),
            });
            index
                .entries
                .extend(entries.into_iter().map(|e| IndexEntry {
                    lsn: e.lsn,
                    prev_lsn_segment: e.prev_lsn_segment,
                    is_cpl: e.is_cpl,
                }));
            if index.entries.len() > INDEX_ENTRIES_PER_SEGMENT_MAX {
                return Err(LogError::Recovery(format!(
                    "segment {segment}: safekeeper {} holds more than {INDEX_ENTRIES_PER_SEGMENT_MAX} records above the anchor {}",
                    source.member, sources.anchor
                )));
            }
            match index.entries.last() {
                Some(last) if full && last.lsn < source.usable_scl => after = last.lsn,
                _ => break,
            }
        }
        Ok::<_, LogError>((segment, index.unwrap_or_default()))
    });
    futures::future::join_all(reads).await.into_iter().collect()
}

/// One segment of a tenant as its members report it, for the admin API: the SCL each member
/// holds it to (`None`: the member did not answer, or holds nothing of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentView {
    pub segment: SegmentId,
    /// In member order, as the six safekeepers are configured.
    pub scls: Vec<Option<Lsn>>,
}

/// Every segment of `tenant` some safekeeper holds, with each member's SCL of it: one `GetState`
/// per safekeeper, each given `timeout`.
pub async fn segment_views(
    tenant: TenantId,
    config: &VolumeWriterConfig,
    timeout: Duration,
) -> Vec<SegmentView> {
    let token = config.tokens.tenant(tenant);
    let states = futures::future::join_all(config.safekeepers.iter().map(|addr| {
        let token = token.clone();
        async move {
            let client = Client::connect(addr, &token, CONNECT_TIMEOUT.min(timeout), None)
                .await
                .ok()?;
            match client.call(Body::GetState { tenant }, timeout).await {
                Ok(Body::State { segments, .. }) => Some(
                    segments
                        .into_iter()
                        .map(|s| (s.segment, s.scl))
                        .collect::<BTreeMap<_, _>>(),
                ),
                _ => None,
            }
        }
    }))
    .await;
    let segments: std::collections::BTreeSet<SegmentId> = states
        .iter()
        .flatten()
        .flat_map(|m| m.keys().copied())
        .collect();
    segments
        .into_iter()
        .map(|segment| SegmentView {
            segment,
            scls: states
                .iter()
                .map(|m| m.as_ref().and_then(|m| m.get(&segment).copied()))
                .collect(),
        })
        .collect()
}
