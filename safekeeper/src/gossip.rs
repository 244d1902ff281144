//! Gossip: how the members of a protection group fill each other's holes.
//!
//! Every `--gossip-interval`, a safekeeper asks each peer for its summary (per tenant and segment:
//! epoch and SCL) and [`plan_round`] decides, without any I/O, what to do about it:
//!
//! - A peer knows a **newer epoch** of a tenant (or a tenant we never heard of): adopt it. We ask
//!   that peer for its `State` (the epoch, its start LSN and its history) and apply it exactly as
//!   the writer's `Hello` that carried them: persist the epoch, truncate where the histories
//!   part. A writer's `Hello` that reached the peer but not us (we were down) has the same
//!   effect when it arrives late.
//! - A peer in **our epoch** has a **higher SCL** for a segment: fetch `(our SCL, its SCL]` from
//!   the peer with the highest SCL, with `ReadLog { epoch: Some(ours) }` so that a peer in another
//!   epoch refuses instead of handing us records an older writer left behind. Before fetching we
//!   ask the peer's `GetState` and fetch only if its history is ours: an epoch number can have been
//!   taken twice by failed recovery attempts (RFC 0007), and the two logs must never be mixed.
//!   Records outside the range asked for are refused whole. What comes back goes through the
//!   log writer like any append: written, fsynced, then the SCL advances (and writers are
//!   acked). Records we already hold are skipped, so fetching across a hole is cheap. At most
//!   [`FETCHES_PER_SEGMENT_PER_ROUND_MAX`] reads per segment and round.
//!
//! Every decision of a fetch — the same-history check, what an answer may hold, where the next
//! read starts, when to adopt a trim point and when to stop — is made by the sans-IO
//! [`borealis_quorum::gossip::PeerFetch`]; `fetch` here only carries its requests over the wire
//! and its repairs and adopted trim points to the log writer, and logs. The protocol simulator
//! (`tests/src/sim`) drives the same machine between its in-memory members, and plans its rounds
//! with [`plan_round`].
//!
//! This is how a safekeeper that was down catches up, how a record lost in transit is filled in,
//! and how a record found corrupt on disk is repaired.
//!
//! **A pool larger than six** (`--pool`, RFC 0008 §3). Each segment is then held by the six
//! safekeepers of its own protection group, drawn from the pool by rendezvous hashing
//! ([`crate::pool`]), and the writer sends a segment's records to its group only. Gossip keeps
//! it that way: [`plan_round_placed`] looks at a peer's line for `(tenant, segment)` only if this
//! node and that peer are both members of the segment's group, for epochs as for fetches. A node
//! therefore never starts holding a segment placed elsewhere (nor adopts a tenant's epoch from a
//! line of a segment placed elsewhere), and fills a segment only from the other members of its
//! group. A node that is in a segment's group but has never heard of it (it was down when the
//! writer started the segment) learns it from its group's peers like any hole: fetched from zero.
//! Without `--pool`, or with a pool of six, every peer shares every segment.
//!
//! **Trimmed peers.** A peer that trimmed its log (a pageserver checkpointed the segment) no
//! longer holds the records at or below its trim point, and refuses a `ReadLog` that starts below
//! it with `LogTrimmed { base, last_cpl }` (counted in
//! `safekeeper_gossip_trimmed_refusals_total`). A member whose SCL is below a peer's trim point
//! — its disk was replaced, or it was down while the others trimmed — does not need those
//! records from anyone: they are durable and checkpointed in object storage. So it **adopts the
//! peer's trim point** as its own base: the trim point the refusal names
//! ([`crate::SkError::trim_point_of`], [`crate::acceptor::TrimPoint::from_refusal`]), if the acceptor judges
//! it ([`crate::acceptor::TenantAcceptor::judge_adopt_trim`]: same epoch, above our SCL, at or
//! below the peer's SCL), and the log writer makes it durable like a trim
//! ([`crate::tenant::Tenant::adopt_trim`]: control file first, then the segment file). Records we
//! held at or below it are dropped, the SCL starts at the base, and the fetch goes on from there
//! as usual: the first record fetched names the base as its `prev_lsn_segment`. Each adoption is
//! counted in `safekeeper_trim_points_adopted_total` and logged at INFO. The member is thus
//! rebuilt from peers and object storage: the prefix is the pageserver's checkpoint, the tail
//! comes from peers. Why the states it then reports keep recovery and the writers' quorum
//! arithmetic right is argued in [`crate::acceptor`]. A trim point the acceptor does not accept
//! is logged once per peer and segment (WARN), and the member stays behind until another peer
//! can fill it.

use crate::acceptor::AdoptOutcome;
pub use crate::config::Peer;
use crate::log_writer::LogWriter;
use crate::metrics::inc;
use crate::pool::shares_group;
pub use crate::pool::{shares_line, Membership};
use crate::rebuild::Rebuild;
use crate::records::{parse_records, ParsedRecord};
pub use crate::store::LocalTenant;
use crate::store::{Store, LOG_READ_BYTES_MAX};
use borealis_core::placement::Group;
use borealis_core::{Lsn, SegmentId, TenantId};
pub use borealis_quorum::gossip::FETCHES_PER_SEGMENT_PER_ROUND_MAX;
use borealis_quorum::gossip::{FetchEnd, FetchStep, PeerFetch};
use borealis_wire::{Body, Client, SegmentSummary};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How long to wait for a peer's TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long to wait for a peer's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between attempts to reach a peer that is down.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `peer` knows a newer epoch of `tenant` than we do: adopt it.
    AdoptEpoch {
        tenant: TenantId,
        peer: usize,
        epoch: u64,
    },
    /// Fetch `(after, upto]` of the segment from `peer`, which is in our `epoch`.
    Fetch {
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        peer: usize,
        after: Lsn,
        upto: Lsn,
    },
}

/// Decides one gossip round when every peer shares every segment (no `--pool`): see
/// [`plan_round_placed`].
pub fn plan_round(
    local: &BTreeMap<TenantId, LocalTenant>,
    summaries: &[Option<Vec<SegmentSummary>>],
) -> Vec<Action> {
    plan_round_placed(local, summaries, None)
}

/// Decides one gossip round. `summaries[i]` is peer `i`'s answer (`None`: unreachable).
///
/// With a pool (`pool`: this node's and each peer's place in it), a peer's line for
/// `(tenant, segment)` counts only if this node and that peer are both members of the segment's
/// protection group: neither a fetch nor an epoch is taken from any other line. So a node never
/// starts holding a segment that is not placed on it, and never copies from a node that should
/// not hold it. A peer `pool` does not place (a summary beyond `--peers`) shares nothing. With
/// `None`, or a pool of six (every group is the whole pool), every line counts.
pub fn plan_round_placed(
    local: &BTreeMap<TenantId, LocalTenant>,
    summaries: &[Option<Vec<SegmentSummary>>],
    pool: Option<&Membership>,
) -> Vec<Action> {
    let empty = LocalTenant::default();
    // The newest epoch each tenant has among the peers, and who has it.
    let mut newest: BTreeMap<TenantId, (u64, usize)> = BTreeMap::new();
    // Per (tenant, segment) in our epoch: the best peer SCL, and who has it.
    let mut best: BTreeMap<(TenantId, SegmentId), (Lsn, usize)> = BTreeMap::new();
    // Each segment's group, computed once per round (every peer reports the same segments).
    let mut groups: BTreeMap<(TenantId, SegmentId), Group> = BTreeMap::new();
    for (peer, summary) in summaries.iter().enumerate() {
        for line in summary.iter().flatten() {
            if let Some(pool) = pool {
                let group = *groups
                    .entry((line.tenant, line.segment))
                    .or_insert_with(|| pool.group(line.tenant, line.segment));
                if !shares_group(pool, peer, &group) {
                    continue;
                }
            }
            let ours = local.get(&line.tenant).unwrap_or(&empty);
            let e = newest.entry(line.tenant).or_insert((line.epoch, peer));
            if line.epoch > e.0 {
                *e = (line.epoch, peer);
            }
            if ours.epoch == 0 || line.epoch != ours.epoch {
                continue;
            }
            let our_scl = ours.scl.get(&line.segment).copied().unwrap_or(Lsn::INVALID);
            if line.scl <= our_scl {
                continue;
            }
            let b = best
                .entry((line.tenant, line.segment))
                .or_insert((line.scl, peer));
            if line.scl > b.0 {
                *b = (line.scl, peer);
            }
        }
    }
    let mut actions = Vec::new();
    for (tenant, (epoch, peer)) in newest {
        if epoch > local.get(&tenant).unwrap_or(&empty).epoch {
            actions.push(Action::AdoptEpoch {
                tenant,
                peer,
                epoch,
            });
        }
    }
    for ((tenant, segment), (upto, peer)) in best {
        let ours = &local[&tenant];
        let after = ours.scl.get(&segment).copied().unwrap_or(Lsn::INVALID);
        actions.push(Action::Fetch {
            tenant,
            segment,
            epoch: ours.epoch,
            peer,
            after,
            upto,
        });
    }
    actions
}

/// A persistent connection to one peer, re-established with backoff when it breaks.
struct PeerLink {
    peer: Peer,
    client: Option<Client>,
    retry_at: Instant,
    backoff: Duration,
    base_backoff: Duration,
    /// Whether the last attempt failed (so "unreachable" is logged once, not every round).
    down: bool,
    /// This safekeeper's storage token, presented to the peer.
    token: Arc<str>,
    /// Segments for which this peer said its log is trimmed past ours and we did not adopt its
    /// trim point (logged once each).
    trimmed_past_us: std::collections::BTreeSet<(TenantId, SegmentId)>,
}

impl PeerLink {
    fn new(peer: Peer, base_backoff: Duration, token: Arc<str>) -> PeerLink {
        PeerLink {
            peer,
            token,
            client: None,
            retry_at: Instant::now(),
            backoff: base_backoff,
            base_backoff,
            down: false,
            trimmed_past_us: std::collections::BTreeSet::new(),
        }
    }

    /// The live client, connecting if it is time to try.
    async fn client(&mut self) -> Option<&Client> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() && Instant::now() >= self.retry_at {
            match Client::connect(&self.peer.addr, &self.token, CONNECT_TIMEOUT, None).await {
                Ok(c) => {
                    if self.down {
                        info!(peer = %self.peer.id, addr = %self.peer.addr, "peer reachable again");
                    }
                    self.client = Some(c);
                    self.backoff = self.base_backoff;
                    self.down = false;
                }
                Err(e) => {
                    if !self.down {
                        warn!(peer = %self.peer.id, addr = %self.peer.addr, error = %e, "peer unreachable; retrying with backoff");
                    }
                    self.down = true;
                    self.retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        }
        self.client.as_ref()
    }

    async fn call(&mut self, body: Body) -> Option<Body> {
        let client = self.client().await?;
        let result = client.call(body, CALL_TIMEOUT).await;
        let closed = client.is_closed();
        match result {
            Ok(answer) => Some(answer),
            // An error answer is an answer: the connection is fine.
            Err(borealis_wire::WireError::Remote { kind, message }) => {
                Some(Body::Error { kind, message })
            }
            Err(e) => {
                debug!(peer = %self.peer.id, error = %e, "gossip call failed");
                // A timed-out connection may be stuck behind a slow answer: start afresh.
                if closed || matches!(e, borealis_wire::WireError::Timeout(_)) {
                    self.client = None;
                }
                None
            }
        }
    }

    async fn summary(&mut self) -> Option<Vec<SegmentSummary>> {
        match self.call(Body::GossipSummary).await? {
            Body::Summary { segments } => Some(segments),
            other => {
                warn!(peer = %self.peer.id, answer = other.name(), "unexpected answer to a gossip summary");
                None
            }
        }
    }
}

/// Runs gossip with `peers` forever; `pool` places this node and each of `peers` (in that order)
/// in the pool, if there is one (see [`plan_round_placed`]).
pub async fn run(
    store: Arc<Store>,
    writer: LogWriter,
    peers: Vec<Peer>,
    pool: Option<Membership>,
    interval: Duration,
    token: String,
) {
    if peers.is_empty() {
        // Nobody to rebuild from, and no group of which this node could be a false witness.
        if store.rebuilding() {
            finish_rebuild(&store);
        }
        return;
    }
    let mut rebuild = store.rebuilding().then(Rebuild::new);
    let token: Arc<str> = token.into();
    let mut links: Vec<PeerLink> = peers
        .into_iter()
        .map(|p| PeerLink::new(p, interval, token.clone()))
        .collect();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut summaries = futures::future::join_all(links.iter_mut().map(|l| l.summary())).await;
        // A tenant deleted here is never learnt back from a peer that has not dropped it yet.
        for summary in summaries.iter_mut().flatten() {
            summary.retain(|s| !store.is_dropped(s.tenant));
        }
        inc(&store.metrics().gossip_rounds_total, 1);
        let local = store.local_view();
        if let Some(r) = rebuild.as_mut() {
            if r.on_round(&local, &summaries, pool.as_ref()) && finish_rebuild(&store) {
                rebuild = None;
            } else if let Some(targets) = r.targets() {
                debug!(
                    segments = targets.len(),
                    "rebuilding: not yet at the peers' SCLs"
                );
            }
        }
        for action in plan_round_placed(&local, &summaries, pool.as_ref()) {
            match action {
                Action::AdoptEpoch {
                    tenant,
                    peer,
                    epoch,
                } => adopt_epoch(&writer, &mut links[peer], tenant, epoch).await,
                Action::Fetch {
                    tenant,
                    segment,
                    epoch,
                    peer,
                    after,
                    upto,
                } => {
                    fetch(
                        &store,
                        &writer,
                        &mut links[peer],
                        tenant,
                        segment,
                        epoch,
                        (after, upto),
                    )
                    .await
                }
            }
        }
    }
}

/// Ends this node's rebuild ([`crate::rebuild`]); false (and logged) if its marker could not be
/// removed, so the next round tries again.
fn finish_rebuild(store: &Store) -> bool {
    match store.finish_rebuild() {
        Ok(()) => {
            info!("rebuilt: this node holds what its peers held and answers GetState again");
            true
        }
        Err(e) => {
            warn!(error = %e, "could not end the rebuild (removing its marker); retrying next round");
            false
        }
    }
}

async fn adopt_epoch(writer: &LogWriter, link: &mut PeerLink, tenant: TenantId, epoch: u64) {
    let Some(Body::State {
        epoch: peer_epoch,
        epoch_start_lsn,
        history,
        ..
    }) = link.call(Body::GetState { tenant }).await
    else {
        return;
    };
    if peer_epoch < epoch {
        return;
    }
    // The peer's history is the one its writer's Hello carried: adopting it aligns our log
    // exactly as that Hello would have.
    match writer
        .hello(tenant, peer_epoch, epoch_start_lsn, history)
        .await
    {
        Ok(_) => info!(%tenant, epoch = peer_epoch, start = %epoch_start_lsn, peer = %link.peer.id,
            "adopted a newer epoch learnt from a peer"),
        Err(e) => debug!(%tenant, error = %e, "could not adopt a peer's epoch"),
    }
}

/// Fills `(after, upto]` of `segment` from the peer behind `link`: a thin driver of
/// [`PeerFetch`], which makes every decision (see its module docs); this carries its requests over
/// the wire, its repairs and adopted trim points to the log writer, and logs.
async fn fetch(
    store: &Store,
    writer: &LogWriter,
    link: &mut PeerLink,
    tenant: TenantId,
    segment: SegmentId,
    epoch: u64,
    (after, upto): (Lsn, Lsn),
) {
    let Some(ours) = store
        .tenant(tenant)
        .map(|t| t.with_published(|p| p.history.clone()))
    else {
        return;
    };
    let mut machine: PeerFetch<ParsedRecord> = PeerFetch::new(segment, epoch, ours, after, upto);
    // The raw bytes of the records of the last answer (what the log writer writes).
    let mut raw = Vec::new();
    let mut step = machine.start();
    loop {
        step = match step {
            FetchStep::GetState => match link.call(Body::GetState { tenant }).await {
                Some(Body::State { epoch, history, .. }) => machine.on_state(epoch, &history),
                _ => return,
            },
            FetchStep::Read { after, upto } => {
                let request = Body::ReadLog {
                    tenant,
                    segment,
                    epoch: Some(epoch),
                    min_epoch: epoch,
                    after,
                    upto,
                    max_bytes: LOG_READ_BYTES_MAX as u32,
                    wait_ms: 0,
                };
                match link.call(request).await {
                    Some(Body::Records {
                        records, known_vdl, ..
                    }) => match parse_records(&records) {
                        Ok(parsed) => {
                            raw = records;
                            machine.on_records(parsed, |p| p.lsn, known_vdl)
                        }
                        Err(e) => {
                            warn!(peer = %link.peer.id, %tenant, %segment, error = %e, "peer sent corrupt records");
                            return;
                        }
                    },
                    Some(Body::LogTrimmed { base, last_cpl }) => {
                        inc(&store.metrics().gossip_trimmed_refusals_total, 1);
                        machine.on_trimmed(base, last_cpl)
                    }
                    Some(other) => {
                        warn!(peer = %link.peer.id, answer = other.name(), "unexpected answer to ReadLog");
                        return;
                    }
                    None => return,
                }
            }
            FetchStep::Repair { records, known_vdl } => {
                let outcome = writer
                    .repair(
                        tenant,
                        segment,
                        epoch,
                        known_vdl,
                        std::mem::take(&mut raw),
                        records,
                    )
                    .await;
                if let Ok(o) = &outcome {
                    if o.written > 0 {
                        debug!(%tenant, %segment, records = o.written, peer = %link.peer.id, "repaired from peer");
                    }
                }
                machine.on_repaired(outcome.map(|_| ()).map_err(|e| e.to_string()))
            }
            FetchStep::AdoptTrim { point, peer_scl } => {
                let outcome = writer
                    .adopt_trim(tenant, segment, epoch, peer_scl, point)
                    .await;
                match &outcome {
                    Ok(AdoptOutcome::Adopted {
                        base,
                        last_cpl,
                        old_scl,
                        scl,
                        dropped,
                    }) => {
                        info!(%tenant, %segment, peer = %link.peer.id, %base, %last_cpl, %old_scl, %scl, dropped,
                            "adopted the peer's trim point as our base (the log below it is checkpointed to object storage)");
                    }
                    Ok(AdoptOutcome::NotBehind { .. }) => {}
                    Err(e) => {
                        debug!(%tenant, %segment, peer = %link.peer.id, base = %point.base, error = %e,
                            "did not adopt the peer's trim point");
                    }
                }
                machine.on_adopted(outcome.map_err(|e| e.to_string()))
            }
            FetchStep::Done(end) => {
                match end {
                    FetchEnd::OtherHistory => {
                        warn!(tenant = %tenant, %segment, peer = %link.peer.id, epoch,
                            "peer holds our epoch number with another history; not fetching from it");
                    }
                    FetchEnd::OutOfRange { .. } => {
                        warn!(peer = %link.peer.id, %tenant, %segment, "peer sent records outside the range asked for");
                    }
                    FetchEnd::RepairRefused { reason } => {
                        debug!(%tenant, %segment, error = %reason, "repair refused");
                    }
                    FetchEnd::TrimNotAdopted {
                        after,
                        base,
                        last_cpl,
                        reason,
                    } => {
                        if link.trimmed_past_us.insert((tenant, segment)) {
                            warn!(peer = %link.peer.id, %tenant, %segment, our_scl = %after, %base, %last_cpl, %reason,
                                "the peer trimmed its log past our SCL and we did not adopt its trim point: it cannot fill us");
                        }
                    }
                    FetchEnd::CaughtUp
                    | FetchEnd::RoundBudgetSpent
                    | FetchEnd::PeerInAnotherEpoch { .. }
                    | FetchEnd::NothingMore => {}
                }
                return;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(tenant: u64, segment: u32, epoch: u64, scl: u64) -> SegmentSummary {
        SegmentSummary {
            tenant: TenantId(tenant),
            segment: SegmentId(segment),
            epoch,
            scl: Lsn(scl),
        }
    }

    /// `(tenant, epoch, [(segment, scl)])` per local tenant.
    type LocalSpec<'a> = (u64, u64, &'a [(u32, u64)]);

    fn local(entries: &[LocalSpec<'_>]) -> BTreeMap<TenantId, LocalTenant> {
        entries
            .iter()
            .map(|(t, epoch, segs)| {
                let scl = segs.iter().map(|(s, l)| (SegmentId(*s), Lsn(*l))).collect();
                (TenantId(*t), LocalTenant { epoch: *epoch, scl })
            })
            .collect()
    }

    #[test]
    fn fetches_from_the_peer_with_the_highest_scl_in_our_epoch() {
        let ours = local(&[(1, 3, &[(0, 10), (1, 5)])]);
        let summaries = vec![
            Some(vec![line(1, 0, 3, 20), line(1, 1, 3, 5)]),
            None,
            Some(vec![line(1, 0, 3, 30), line(1, 1, 3, 4)]),
            Some(vec![line(1, 0, 2, 99)]), // an older epoch: never copied from
        ];
        assert_eq!(
            plan_round(&ours, &summaries),
            vec![Action::Fetch {
                tenant: TenantId(1),
                segment: SegmentId(0),
                epoch: 3,
                peer: 2,
                after: Lsn(10),
                upto: Lsn(30)
            }]
        );
    }

    #[test]
    fn a_segment_we_do_not_have_is_fetched_from_zero() {
        let ours = local(&[(1, 3, &[])]);
        let summaries = vec![Some(vec![line(1, 7, 3, 12)])];
        assert_eq!(
            plan_round(&ours, &summaries),
            vec![Action::Fetch {
                tenant: TenantId(1),
                segment: SegmentId(7),
                epoch: 3,
                peer: 0,
                after: Lsn(0),
                upto: Lsn(12)
            }]
        );
    }

    #[test]
    fn a_newer_epoch_or_unknown_tenant_is_adopted_before_fetching() {
        let ours = local(&[(1, 2, &[(0, 10)])]);
        let summaries = vec![
            Some(vec![line(1, 0, 3, 12), line(2, 0, 1, 4)]),
            Some(vec![line(1, 0, 4, 11)]),
        ];
        assert_eq!(
            plan_round(&ours, &summaries),
            vec![
                Action::AdoptEpoch {
                    tenant: TenantId(1),
                    peer: 1,
                    epoch: 4
                },
                Action::AdoptEpoch {
                    tenant: TenantId(2),
                    peer: 0,
                    epoch: 1
                },
            ]
        );
    }

    #[test]
    fn nothing_to_do_when_level_or_ahead() {
        let ours = local(&[(1, 3, &[(0, 10)])]);
        let summaries = vec![
            Some(vec![line(1, 0, 3, 10)]),
            Some(vec![line(1, 0, 3, 2)]),
            None,
        ];
        assert!(plan_round(&ours, &summaries).is_empty());
        assert!(plan_round(&ours, &[]).is_empty());
    }

    /// A pool of nine seen from node 0, whose peer `i` is pool node `i + 1`.
    fn nine_from_node_0() -> Membership {
        Membership::of_nodes(9, 0, (1..9).collect()).unwrap()
    }

    /// The first segment of `tenant` whose group satisfies `want`.
    fn segment_where(tenant: u64, want: impl Fn(&Group) -> bool) -> (u32, Group) {
        let pool = nine_from_node_0();
        (0..1000)
            .map(|s| (s, pool.group(TenantId(tenant), SegmentId(s))))
            .find(|(_, g)| want(g))
            .expect("a pool of nine has every group shape within 1000 segments")
    }

    #[test]
    fn with_a_pool_of_nine_a_segment_not_placed_here_is_neither_fetched_nor_adopted() {
        let pool = nine_from_node_0();
        let (elsewhere, g_out) = segment_where(1, |g| !g.contains(0));
        let (here, g_in) = segment_where(1, |g| g.contains(0));
        // A peer that is in both groups: it holds both segments, rightly.
        let both = (1..9)
            .find(|&n| g_out.contains(n) && g_in.contains(n))
            .unwrap();
        let peer = both - 1;
        let ours = local(&[(1, 3, &[])]);
        let mut summaries = vec![None; 8];
        summaries[peer] = Some(vec![line(1, elsewhere, 3, 20), line(1, here, 3, 12)]);
        let fetch_here = Action::Fetch {
            tenant: TenantId(1),
            segment: SegmentId(here),
            epoch: 3,
            peer,
            after: Lsn(0),
            upto: Lsn(12),
        };
        assert_eq!(
            plan_round_placed(&ours, &summaries, Some(&pool)),
            vec![fetch_here]
        );
        // Without the pool both would be fetched.
        assert_eq!(plan_round(&ours, &summaries).len(), 2);

        // A tenant we do not know, reported only for a segment placed elsewhere: not adopted.
        // Tenant 1's newer epoch, reported for a segment placed elsewhere only, neither.
        let (t2_elsewhere, g2) = segment_where(2, |g| !g.contains(0));
        let reporter = (1..9).find(|&n| g2.contains(n) && n - 1 != peer).unwrap() - 1;
        let mut summaries = vec![None; 8];
        summaries[reporter] = Some(vec![line(2, t2_elsewhere, 1, 4)]);
        summaries[peer] = Some(vec![line(1, elsewhere, 5, 30)]);
        assert!(plan_round_placed(&ours, &summaries, Some(&pool)).is_empty());
        // The same peer reporting the newer epoch on a segment we share: adopted.
        summaries[peer] = Some(vec![line(1, elsewhere, 5, 30), line(1, here, 5, 3)]);
        assert_eq!(
            plan_round_placed(&ours, &summaries, Some(&pool)),
            vec![Action::AdoptEpoch {
                tenant: TenantId(1),
                peer,
                epoch: 5
            }]
        );
    }

    #[test]
    fn with_a_pool_of_nine_a_peer_outside_the_group_is_never_a_source() {
        let pool = nine_from_node_0();
        let (segment, group) = segment_where(1, |g| g.contains(0));
        let outsider = (1..9).find(|&n| !group.contains(n)).unwrap() - 1;
        let member = (1..9).find(|&n| group.contains(n)).unwrap() - 1;
        let ours = local(&[(1, 3, &[(segment, 10)])]);
        let mut summaries = vec![None; 8];
        // The outsider claims more, and a newer epoch: a stale copy it should not hold.
        summaries[outsider] = Some(vec![line(1, segment, 3, 90), line(1, segment, 4, 95)]);
        assert!(plan_round_placed(&ours, &summaries, Some(&pool)).is_empty());
        summaries[member] = Some(vec![line(1, segment, 3, 40)]);
        assert_eq!(
            plan_round_placed(&ours, &summaries, Some(&pool)),
            vec![Action::Fetch {
                tenant: TenantId(1),
                segment: SegmentId(segment),
                epoch: 3,
                peer: member,
                after: Lsn(10),
                upto: Lsn(40)
            }]
        );
        // A summary from beyond --peers is no peer of the pool: it shares nothing.
        let mut beyond = vec![None; 8];
        beyond.push(Some(vec![line(1, segment, 3, 90)]));
        assert!(plan_round_placed(&ours, &beyond, Some(&pool)).is_empty());
    }

    #[test]
    fn a_pool_of_six_plans_exactly_as_no_pool() {
        let six = Membership::of_nodes(6, 2, vec![0, 1, 3, 4, 5]).unwrap();
        let ours = local(&[(1, 3, &[(0, 10), (1, 5)]), (2, 2, &[(0, 10)])]);
        let summaries = vec![
            Some(vec![line(1, 0, 3, 20), line(1, 1, 3, 5), line(2, 0, 3, 12)]),
            None,
            Some(vec![line(1, 0, 3, 30), line(1, 9, 3, 4), line(3, 4, 1, 4)]),
            Some(vec![line(1, 0, 2, 99), line(2, 0, 4, 11)]),
            Some(vec![line(1, 1, 3, 7)]),
        ];
        let planned = plan_round_placed(&ours, &summaries, Some(&six));
        assert_eq!(planned, plan_round(&ours, &summaries));
        assert_eq!(planned.len(), 5, "{planned:?}");
    }
}
