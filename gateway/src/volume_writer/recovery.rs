//! Recovery of a volume of one or many segments (`borealis_quorum::volume_recovery`, RFC 0008):
//!
//! 1. **fence, then read** (RFC 0014 §2): `GetState` finds the highest epoch installed or
//!    promised anywhere; the new epoch is one above it, and `Fence` asks every node to promise it
//!    durably and answer its state under the same lock. A node that promised refuses every older
//!    writer's appends and `Hello`s and acks only in the new epoch, so a writer still running
//!    (another gateway's, paused or unaware) cannot make durable anything the answers do not
//!    cover. No `Fence` is sent unless the `GetState` answers meet the quorums below, and the
//!    plan needs the same of the `Fence` answers: a write quorum of every group holding data and
//!    enough of the pool to fence every group. They give each member's epoch, history,
//!    `known_vdl` and per segment its SCL; the **anchor** is the highest `known_vdl` (durable, so nothing
//!    at or below it needs looking at);
//! 2. the sources: the new epoch, the newest history volume-wide, and per segment the member
//!    whose log under that history reaches highest ([`volume_recovery::plan_sources`]);
//! 3. each source's index of record headers above the anchor (`ReadLsns`, paged), and from them
//!    the volume's end: the highest CPL below which every LSN is held
//!    ([`volume_recovery::plan_end`]). No record bodies are read: recovery time does not grow
//!    with the log;
//! 4. the epoch installed on every node reachable (each truncates above the end): on a write
//!    quorum of every segment's group, and on enough of the pool that **every group it can form**
//!    has at most three members outside the new epoch
//!    ([`borealis_core::placement::fences_every_group`]) — so a writer of an older epoch still
//!    running cannot gather a write quorum anywhere, not even in a segment nobody has written
//!    yet, whose group recovery had nothing to ask; then a wait until a write quorum of every
//!    group holds its segment up to its tail (gossip fills the gaps).
//!
//! The safekeepers form a pool (`--safekeepers`, listed AZ by AZ); each segment's group is six of
//! them chosen by rendezvous hashing ([`Placement`]), and every quorum above is counted in the
//! segment's own group. With six safekeepers every group is all six.

use super::{LogError, VolumeWriterConfig, CALL_TIMEOUT, CONNECT_TIMEOUT};
use borealis_core::membership::Config;
use borealis_core::placement::fences_every_group;
use borealis_core::quorum::{PG_MEMBERS, WRITE_QUORUM};
use borealis_core::{ErrorKind, Lsn, SegmentId, TenantId};
use borealis_quorum::acceptor::TrimPoint;
use borealis_quorum::placement::Placement;
use borealis_quorum::recovery::MemberReport;
use borealis_quorum::volume_recovery::{self, Index, IndexEntry, VolumePlan, VolumeSources};
use borealis_wire::{Body, Client, WireError};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long recovery waits for a write quorum to hold the recovered log.
const RECOVERY_DURABLE_WAIT: Duration = Duration::from_secs(10);
/// How many times a trimmed source may raise the anchor in one recovery.
const ANCHOR_RAISES_MAX: usize = 8;
/// Entries asked for per `ReadLsns` call (the safekeeper caps it too).
const INDEX_ENTRIES_PER_CALL: u32 = 65_536;
/// Index entries recovery reads per segment at most. The writer runs at most its LAL (16 Ki
/// LSNs) ahead of the VDL it tells members, so a source holds about that many above the anchor;
/// far more means a protocol violation, not a long log.
const INDEX_ENTRIES_PER_SEGMENT_MAX: usize = 1 << 20;

/// Steps 1-4 (see the module docs): read quorum of states, sources, indexes and the end,
/// install the epoch on every node reachable, wait for a write quorum of every segment's group.
/// Node indexes are positions in `config.safekeepers`; `placement` gives each segment's group.
pub(super) async fn recover_epoch(
    tenant: TenantId,
    config: &VolumeWriterConfig,
    placement: &Placement,
) -> Result<VolumePlan, LogError> {
    let pool = config.safekeepers.len();
    let token = config.tokens.tenant(tenant);
    let clients = futures::future::join_all(
        config
            .safekeepers
            .iter()
            .map(|a| Client::connect(a, &token, CONNECT_TIMEOUT, None)),
    )
    .await;
    let clients: Vec<Option<Client>> = clients.into_iter().map(|c| c.ok()).collect();
    // 1a. Where the epochs are: the new one goes above every installed and promised epoch.
    //     Promising an epoch on fewer members than can start a writer would durably burn it on
    //     those it reached, at every attempt (drill 3b saw epochs 1 → 150 during one outage
    //     before recovery stopped short of its Hello): the quorums are checked on these reads
    //     first, and no `Fence` is sent without them.
    let read = states(&clients, || Body::GetState { tenant }).await;
    let read_reports: Vec<MemberReport> = read.iter().map(|s| s.report.clone()).collect();
    quorum_groups(&read_reports, placement, pool, "answered")?;
    let highest = read
        .iter()
        .map(|s| s.report.epoch.max(s.promised_epoch))
        .max()
        .unwrap_or(0);
    let epoch = highest
        .checked_add(1)
        .ok_or_else(|| LogError::Recovery(format!("epoch {highest} is the last one")))?;
    // 1b. Fence: each node promises the new epoch durably and answers its state under the same
    //     lock; from then on it refuses every older writer and acks only in the new epoch, so a
    //     writer still running cannot make durable anything these answers do not cover (RFC
    //     0014 §2). The plan is made from these answers, never from the reads of 1a, and they
    //     must meet the same quorums: a write quorum of every group holding data and enough of
    //     the pool to fence every group (so two recoveries can never both hold one epoch).
    let answered = states(&clients, || Body::Fence { tenant, epoch }).await;
    let anchor = answered
        .iter()
        .map(|s| s.known_vdl)
        .max()
        .unwrap_or(Lsn::INVALID);
    // Every node holds the tenant's epoch, whether or not it holds a segment; each promised
    // `epoch`, so the plan's epoch is `epoch`.
    let epoch_floor = epoch - 1;
    let reports: Vec<MemberReport> = answered.into_iter().map(|s| s.report).collect();
    let groups = quorum_groups(&reports, placement, pool, "promised epoch")?;
    let pool_azs = placement.pool_azs();
    let mut sources =
        volume_recovery::plan_sources(&groups, |s| config_of(placement, s), anchor, epoch_floor)
            .map_err(|e| LogError::Recovery(e.to_string()))?;
    // A source trimmed past the anchor proves a higher one (`VolumeSources::raise_anchor`); each
    // raise reads every index again, from higher up.
    let mut raises = 0;
    let indexes = loop {
        match read_indexes(tenant, &clients, &sources).await? {
            Ok(indexes) => break indexes,
            Err(trim) if raises < ANCHOR_RAISES_MAX && sources.raise_anchor(trim) => {
                info!(tenant = %tenant, anchor = %sources.anchor, "a source is trimmed past the anchor: raised to its trim point");
                raises += 1;
            }
            Err(trim) => {
                return Err(LogError::Recovery(format!(
                    "a source's log is trimmed through lsn {} and the anchor is {}: the index cannot be read",
                    trim.base, sources.anchor
                )))
            }
        }
    };
    let volume = volume_recovery::plan_end(&sources, &indexes)
        .map_err(|e| LogError::Recovery(format!("a source's LSN index is inconsistent: {e}")))?;
    if !volume.segment_tails.is_empty() {
        info!(tenant = %tenant, epoch = volume.epoch, anchor = %sources.anchor, end = %volume.vdl,
            segments = volume.segment_tails.len(),
            index_entries = indexes.values().map(|i| i.entries.len()).sum::<usize>(),
            "volume end found");
    }
    if volume.epoch != epoch {
        return Err(LogError::Recovery(format!(
            "the plan's epoch {} is not the epoch {epoch} the nodes promised",
            volume.epoch
        )));
    }

    // Install the epoch on every node reached: each aligns its log to our history (truncating at
    // least above the end) before answering.
    let volume_ref = &volume;
    let hellos =
        futures::future::join_all(clients.iter().enumerate().map(|(node, c)| async move {
            let c = c.as_ref()?;
            let hello = Body::Hello {
                tenant,
                epoch,
                epoch_start_lsn: volume_ref.vdl,
                history: volume_ref.history.clone(),
            };
            match c.call(hello, CALL_TIMEOUT).await {
                Ok(Body::HelloOk { .. }) => Some(node),
                Ok(_) => None,
                Err(WireError::Remote {
                    kind: ErrorKind::Fenced,
                    message,
                }) => {
                    warn!(node, %message, "a newer writer exists");
                    None
                }
                Err(_) => None,
            }
        }))
        .await;
    let installed: Vec<usize> = hellos.into_iter().flatten().collect();
    for segment in volume.segment_tails.keys() {
        let config = &volume.configs[segment];
        if !config.is_write_quorum(|n| installed.contains(&n)) {
            let n = installed.iter().filter(|n| config.contains(**n)).count();
            return Err(LogError::Recovery(format!(
                "epoch {epoch} installed on {n} of segment {segment}'s {PG_MEMBERS} safekeepers, {WRITE_QUORUM} needed (write quorum lost)"
            )));
        }
    }
    if installed.len() < WRITE_QUORUM || !fences_every_group(pool_azs, &installed) {
        return Err(LogError::Recovery(format!(
            "epoch {epoch} installed on {} of {pool} safekeepers ({installed:?}): too few to fence every group of the pool (write quorum lost)",
            installed.len()
        )));
    }

    // Wait until a write quorum of every segment's group holds it up to its tail (gossip fills
    // the gaps).
    let deadline = tokio::time::Instant::now() + RECOVERY_DURABLE_WAIT;
    loop {
        let states =
            futures::future::join_all(clients.iter().enumerate().map(|(node, c)| async move {
                let c = c.as_ref()?;
                match c.call(Body::GetState { tenant }, CALL_TIMEOUT).await {
                    Ok(Body::State {
                        epoch: e, segments, ..
                    }) if e == epoch => Some(
                        segments
                            .into_iter()
                            .map(move |s| (node, s.segment, s.scl))
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                }
            }))
            .await;
        let scls: Vec<(usize, SegmentId, Lsn)> = states.into_iter().flatten().flatten().collect();
        if volume.is_durable(&scls) {
            return Ok(volume);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(LogError::Recovery(format!(
                "the recovered log (VDL {}) did not reach a write quorum within {} s",
                volume.vdl,
                RECOVERY_DURABLE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per segment that any node reports, the reports of its group's members (a member that lists
/// nothing of the segment answered too: it holds nothing of it), if `reports` can start a
/// writer: a write quorum of every such group, and enough of the pool that every group it can
/// form, written or not, has at most three members outside them (`fences_every_group`: a
/// segment nobody has written yet has no state to read, and an older writer still running must
/// not find four members of its group outside our epoch). `what` names the answers in errors.
fn quorum_groups(
    reports: &[MemberReport],
    placement: &Placement,
    pool: usize,
    what: &str,
) -> Result<BTreeMap<SegmentId, Vec<MemberReport>>, LogError> {
    let segments: std::collections::BTreeSet<SegmentId> = reports
        .iter()
        .flat_map(|r| r.segments.iter().map(|s| s.0))
        .collect();
    let mut groups: BTreeMap<SegmentId, Vec<MemberReport>> = BTreeMap::new();
    for segment in &segments {
        let config = config_of(placement, *segment);
        let in_group: Vec<MemberReport> = reports
            .iter()
            .filter(|r| config.contains(r.member))
            .cloned()
            .collect();
        if !config.is_write_quorum(|n| in_group.iter().any(|r| r.member == n)) {
            return Err(LogError::Recovery(format!(
                "write quorum lost: only {} of segment {segment}'s {PG_MEMBERS} safekeepers {what}, {WRITE_QUORUM} needed to start a writer",
                in_group.len()
            )));
        }
        groups.insert(*segment, in_group);
    }
    let nodes: Vec<usize> = reports.iter().map(|r| r.member).collect();
    if reports.len() < WRITE_QUORUM || !fences_every_group(placement.pool_azs(), &nodes) {
        return Err(LogError::Recovery(format!(
            "write quorum lost: only {} of {pool} safekeepers {what} ({nodes:?}), too few to fence every group of the pool and start a writer",
            reports.len()
        )));
    }
    Ok(groups)
}

/// One node's answer to `GetState` or `Fence`.
struct NodeState {
    report: MemberReport,
    known_vdl: Lsn,
    promised_epoch: u64,
}

/// Asks every node reached the request `make` builds (`GetState` or `Fence`) and collects the
/// `State` answers; a node that refuses or does not answer is left out (and logged).
async fn states(clients: &[Option<Client>], make: impl Fn() -> Body) -> Vec<NodeState> {
    let answers = futures::future::join_all(clients.iter().enumerate().map(|(node, c)| {
        let request = make();
        async move {
            let c = c.as_ref()?;
            let what = request.name();
            match c.call(request, CALL_TIMEOUT).await {
                Ok(Body::State {
                    epoch,
                    segments,
                    history,
                    known_vdl,
                    promised_epoch,
                    ..
                }) => Some(NodeState {
                    report: MemberReport {
                        member: node,
                        epoch,
                        history,
                        segments: segments
                            .iter()
                            .map(|s| (s.segment, s.scl, s.last_cpl))
                            .collect(),
                    },
                    known_vdl,
                    promised_epoch,
                }),
                Ok(other) => {
                    warn!(node, answer = other.name(), "unexpected answer to {what}");
                    None
                }
                Err(WireError::Remote {
                    kind: ErrorKind::Fenced,
                    message,
                }) => {
                    warn!(node, %message, "{what} refused: a newer recovery or writer exists");
                    None
                }
                Err(e) => {
                    debug!(node, error = %e, "{what} failed");
                    None
                }
            }
        }
    }))
    .await;
    answers.into_iter().flatten().collect()
}

/// Each segment's source's index of record headers in `(anchor, usable SCL]`, read in pages of
/// [`INDEX_ENTRIES_PER_CALL`].
/// `Ok(Err(trim))`: a source's log is trimmed past the anchor, through `trim`.
async fn read_indexes(
    tenant: TenantId,
    clients: &[Option<Client>],
    sources: &VolumeSources,
) -> Result<Result<BTreeMap<SegmentId, Index>, TrimPoint>, LogError> {
    let reads = sources.sources.iter().map(|(&segment, source)| async move {
        let node = source.node;
        let client = clients.get(node).and_then(|c| c.as_ref()).ok_or_else(|| {
            LogError::Recovery(format!(
                "segment {segment}: its source, safekeeper {node}, is not connected"
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
                Ok(Body::LogTrimmed { base, last_cpl }) => match TrimPoint::from_refusal(base, last_cpl) {
                    Some(trim) => return Ok(Err(trim)),
                    None => {
                        return Err(LogError::Recovery(format!(
                            "segment {segment}: safekeeper {node} names an impossible trim point (base {base}, last cpl {last_cpl})"
                        )))
                    }
                },
                Ok(other) => {
                    return Err(LogError::Recovery(format!(
                        "segment {segment}: safekeeper {node} answered ReadLsns with {}",
                        other.name()
                    )))
                }
                Err(e) => {
                    return Err(LogError::Recovery(format!(
                        "segment {segment}: reading the LSN index from safekeeper {node} failed: {e}"
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
                    "segment {segment}: safekeeper {node} holds more than {INDEX_ENTRIES_PER_SEGMENT_MAX} records above the anchor {}",
                    sources.anchor
                )));
            }
            match index.entries.last() {
                Some(last) if full && last.lsn < source.usable_scl => after = last.lsn,
                _ => break,
            }
        }
        Ok::<_, LogError>(Ok((segment, index.unwrap_or_default())))
    });
    let mut indexes = BTreeMap::new();
    for read in futures::future::join_all(reads).await {
        match read? {
            Ok((segment, index)) => {
                indexes.insert(segment, index);
            }
            Err(trim) => return Ok(Err(trim)),
        }
    }
    Ok(Ok(indexes))
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

/// The config recovery judges `segment` by: its group in the writer's placement. (Until the
/// durable placement table exists, RFC 0012 §2, no segment is ever in a membership change.)
fn config_of(placement: &Placement, segment: SegmentId) -> Config {
    Config::stable(placement.group(segment))
}
