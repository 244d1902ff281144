//! Gossip between simulated members: the service's planner
//! (`safekeeper::gossip::plan_round_placed`, with the node's place in the pool) and its fetch
//! machine (`borealis_quorum::gossip::PeerFetch`), with the requests answered from the peer's
//! in-memory state and the repairs and adopted trim points executed through the member's
//! acceptor.
//!
//! Every node asks every other node of the pool for its summary; the planner counts a peer's line
//! for a segment only if both are members of the segment's group (RFC 0008 §3), so a node never
//! starts holding a segment placed elsewhere (asserted here).

use super::member::{ReadAnswer, TrimFailed};
use super::{World, TENANT};
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, SegmentId};
use borealis_quorum::acceptor::AdoptOutcome;
use borealis_quorum::gossip::{FetchEnd, FetchStep, PeerFetch};
use borealis_wire::SegmentSummary;
use rand::Rng;
use safekeeper::gossip::{plan_round_placed, Action as Planned};
use safekeeper::pool::Membership;
use std::collections::BTreeMap;

impl World {
    /// One gossip round of a random node, as the service's `gossip::run` does it: the summaries
    /// of the peers it reaches (some answers lost), [`plan_round_placed`], then each action.
    pub(super) fn gossip(&mut self, step: usize) {
        let n = self.members.len();
        let m = self.rng.random_range(0..n);
        if !self.members[m].reachable() {
            return;
        }
        // Its peers: every other node of the pool, in pool order.
        let peers: Vec<usize> = (0..n).filter(|&p| p != m).collect();
        let pool = Membership::of_nodes(n, m, peers.clone()).expect("the simulated pool is valid");
        let summaries: Vec<Option<Vec<SegmentSummary>>> = peers
            .iter()
            .map(|&p| {
                let answers = self.members[p].reachable() && self.rng.random_bool(0.9);
                answers.then(|| {
                    let view = self.members[p].local_view();
                    view.scl
                        .iter()
                        .map(|(&segment, &scl)| SegmentSummary {
                            tenant: TENANT,
                            segment,
                            epoch: view.epoch,
                            scl,
                        })
                        .collect()
                })
            })
            .collect();
        let local = BTreeMap::from([(TENANT, self.members[m].local_view())]);
        // A member rebuilding after its disk was replaced: is it a witness again?
        if let Some(rebuild) = self.members[m].rebuild.as_mut() {
            if rebuild.on_round(&local, &summaries, Some(&pool)) {
                self.members[m].rebuild = None;
                self.disks_rebuilt += 1;
                self.log(format!("{step}: node {m} is rebuilt: a witness again"));
            }
        }
        for action in plan_round_placed(&local, &summaries, Some(&pool)) {
            if !self.members[m].reachable() {
                return;
            }
            match action {
                Planned::AdoptEpoch { peer, epoch, .. } => {
                    self.adopt_epoch(step, m, peers[peer], epoch)
                }
                Planned::Fetch {
                    epoch,
                    peer,
                    after,
                    upto,
                    segment,
                    ..
                } => {
                    let p = peers[peer];
                    let g = self.group(segment);
                    assert!(
                        g.contains(m) && g.contains(p),
                        "gossip planned a fetch of segment {segment} by node {m} from node {p}, not both of its group"
                    );
                    self.fetch(step, m, p, segment, epoch, (after, upto));
                }
            }
        }
    }

    /// Member `m` adopts the newer epoch peer `p` holds, as that epoch's writer's Hello would
    /// have installed it (the service's `gossip::adopt_epoch`: the peer's `GetState`, then a
    /// Hello with its history).
    fn adopt_epoch(&mut self, step: usize, m: usize, p: usize, epoch: u64) {
        if !self.members[p].testifies() {
            return;
        }
        let (theirs, history) = (self.members[p].epoch(), self.members[p].history().to_vec());
        if theirs < epoch {
            return;
        }
        let crash = self.crash_point();
        match self.members[m].hello(&history, crash) {
            Ok(()) => {
                self.epochs_adopted += 1;
                self.log(format!("{step}: member {m} adopts epoch {theirs} from {p}"));
                self.send_acks(m);
            }
            Err(None) => {
                self.crashes_mid_input += 1;
                self.log(format!(
                    "{step}: member {m} crashed adopting epoch {theirs} from {p}"
                ));
            }
            Err(Some(_)) => {}
        }
    }

    /// Member `m` fills `(after, upto]` of `segment` from peer `p` in `epoch`: drives [`PeerFetch`] exactly as
    /// the service's `gossip::fetch` does, answering its requests from `p`'s state (`GetState`:
    /// its published epoch and history; `ReadLog`: its records, or its trim refusal) and
    /// executing its repairs and adopted trim points through `m`'s acceptor.
    pub(super) fn fetch(
        &mut self,
        step: usize,
        m: usize,
        p: usize,
        segment: SegmentId,
        epoch: u64,
        range: (Lsn, Lsn),
    ) {
        let history = self.members[m].history().to_vec();
        let mut machine: PeerFetch<RedoRecord> =
            PeerFetch::new(segment, epoch, history, range.0, range.1);
        let mut next = machine.start();
        loop {
            if !self.members[m].reachable() || !self.members[p].reachable() {
                return;
            }
            next = match next {
                // A peer rebuilding after its disk was replaced refuses `GetState`.
                FetchStep::GetState if !self.members[p].testifies() => return,
                FetchStep::GetState => {
                    let peer = &self.members[p];
                    machine.on_state(peer.epoch(), peer.history())
                }
                FetchStep::Read { after, upto } => {
                    let max = self.rng.random_range(1..=16);
                    match self.members[p].read_log(segment, Some(epoch), epoch, (after, upto), max)
                    {
                        ReadAnswer::Records {
                            records, known_vdl, ..
                        } => machine.on_records(records, |r| r.lsn, known_vdl),
                        ReadAnswer::Trimmed { base, last_cpl } => {
                            self.gossip_trim_refusals += 1;
                            machine.on_trimmed(base, last_cpl)
                        }
                        ReadAnswer::Fenced => return,
                    }
                }
                FetchStep::Repair { records, known_vdl } => {
                    let outcome = self.members[m].repair(segment, epoch, known_vdl, &records);
                    if let Ok(true) = outcome {
                        self.send_acks(m);
                    }
                    machine.on_repaired(outcome.map(|_| ()))
                }
                FetchStep::AdoptTrim { point, peer_scl } => {
                    let crash = self.crash_point();
                    match self.members[m].adopt_trim(segment, epoch, peer_scl, point, crash) {
                        Ok((outcome, published)) => {
                            if let AdoptOutcome::Adopted {
                                old_scl,
                                scl,
                                dropped,
                                ..
                            } = outcome
                            {
                                self.trim_adoptions += 1;
                                self.log(format!(
                                    "{step}: member {m} adopts {p}'s trim point {} of segment {segment} (last cpl {}): scl {old_scl} -> {scl}, {dropped} dropped",
                                    point.base, point.last_cpl
                                ));
                            }
                            if published {
                                self.send_acks(m);
                            }
                            machine.on_adopted(Ok(outcome))
                        }
                        Err(TrimFailed::Crashed) => {
                            self.crashes_mid_input += 1;
                            self.log(format!(
                                "{step}: member {m} crashed adopting {p}'s trim point {} of segment {segment}",
                                point.base
                            ));
                            return;
                        }
                        Err(TrimFailed::Refused(reason)) => machine.on_adopted(Err(reason)),
                    }
                }
                FetchStep::Done(end) => {
                    let from = range.0;
                    let to = self.members[m].scl(segment);
                    match end {
                        FetchEnd::CaughtUp | FetchEnd::NothingMore | FetchEnd::RoundBudgetSpent
                            if to > from =>
                        {
                            self.log(format!(
                                "{step}: member {m} fetched segment {segment} from {p}: scl {from} -> {to} ({end:?})"
                            ));
                        }
                        FetchEnd::OutOfRange { .. } => {
                            self.violation = Some(format!(
                                "member {p} answered member {m}'s read with records outside the range asked for"
                            ));
                        }
                        FetchEnd::OtherHistory | FetchEnd::TrimNotAdopted { .. } => {
                            self.log(format!(
                                "{step}: member {m} does not fetch from {p}: {end:?}"
                            ));
                        }
                        _ => {}
                    }
                    return;
                }
            };
        }
    }
}
