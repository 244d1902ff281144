//! A writer's session: the quorum writer plus the rules that need time — limbo, unsettled
//! commits and member acknowledgement timeouts — as one sans-IO state machine.
//!
//! The gateway's driver (`gateway/src/volume_writer/`) owns the sockets and tasks and reads the
//! clock; it passes the time in (`now`: time since the driver's origin) with every input, and
//! acts on the [`Event`]s each input returns (log them; on [`Event::AckTimeout`], drop the
//! node's connection). The simulator (`tests/src/sim`) drives the same machine with simulated
//! time, so these rules are checked under the faults it injects.
//!
//! ## Nodes and groups
//!
//! The session keeps one link per **node of the pool** (one connection each, which carries the
//! appends of every segment the node holds); each segment's records go to the six nodes of its
//! protection group ([`crate::placement`]). With a pool of six every group is the whole pool, and
//! a node is the member of the same index in every group.
//!
//! ## Reachable nodes
//!
//! A node counts toward the write quorum of each group it is a member of while it is
//! **connected** (it accepted this writer's `Hello`), **accepting** appends (a node whose disk
//! budget is exhausted answers `read_only` and is counted out until a repeated `Hello` says it
//! has room) and **acknowledging**: a node that owes an acknowledgement for longer than
//! [`SessionConfig::member_ack_timeout`] (a frozen process, a partition that breaks no
//! connection) is reported by [`WriterSession::tick`] and its driver drops the connection. A node
//! owes an acknowledgement while the highest LSN acknowledged on its connection (of any segment)
//! is below the highest LSN sent on it: a node that keeps acknowledging its newest records is
//! alive, even if one of its segments has a hole it will fill from its peers.
//!
//! ## Limbo (RFC 0004), per group
//!
//! Records are **in flight** in a group while it has not made every record of its segment that
//! the writer shipped durable (4 of its 6 hold them). When a group with records in flight has
//! fewer than a write quorum of its nodes reachable, those records reached three of its members
//! at most: none can become durable, nor be truncated by a recovery (which needs four of that
//! group too), until a fourth member returns — and the VDL, which needs every record below it,
//! cannot pass them. The writer is then **in limbo** until the VDL reaches the last LSN assigned
//! at that moment: it keeps its epoch and VDL but ships nothing new ([`WriterSession::commit`]
//! refuses `ReadOnly`). A group that loses its quorum with nothing in flight is no limbo: MTRs
//! that touch it are refused, the others go on. When every group with records in flight has a
//! write quorum again ([`Event::QuorumBack`]) for longer than a grace period with the commits
//! still unsettled, no returning member holds them: [`WriterSession::limbo_stuck`] says only a
//! recovery can settle them. A writer that shuts down drops its nodes on purpose: that is not a
//! lost quorum.

use crate::writer::{QuorumWriter, ShippedMtr, WriteError};
use borealis_core::quorum::WRITE_QUORUM;
use borealis_core::redo::RedoBody;
use borealis_core::{Lsn, PageNo, SegmentId};
use std::collections::VecDeque;
use std::time::Duration;

/// The session's time rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a member may leave records it was sent unacknowledged before it counts as
    /// unreachable.
    pub member_ack_timeout: Duration,
}

/// What the driver should know about (and log); [`Event::AckTimeout`] also asks it to drop the
/// member's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A group with records in flight lost its write quorum (`reachable`: of its six, in the
    /// worst such group), with commits up to `until` unsettled.
    LimboEntered {
        reachable: usize,
        vdl: Lsn,
        until: Lsn,
    },
    /// Every group with records in flight has a write quorum reachable again while in limbo
    /// (`reachable`: of its six, in the worst of them).
    QuorumBack { reachable: usize, until: Lsn },
    /// The VDL reached the commits caught by the lost quorum: out of limbo.
    Settled { vdl: Lsn },
    /// A node (`member`: its index in the pool) owes an acknowledgement for longer than the
    /// timeout: count it out.
    AckTimeout {
        member: usize,
        sent: Lsn,
        acked: Lsn,
    },
    /// A node refuses appends while connected (its disk budget), or accepts them again.
    Refusing { member: usize, why: Option<String> },
    /// A node acknowledged in a newer epoch than this writer's (it installed one, or promised
    /// one to a recovery's `Fence`, RFC 0014 §2): a newer writer exists or is being recovered.
    /// The driver fails this writer; the ack counted for nothing.
    Superseded { member: usize, epoch: u64 },
}

/// What the session knows of one pool node's connection.
#[derive(Clone, Debug, Default)]
struct MemberLink {
    connected: bool,
    refusing: Option<String>,
    /// The highest LSN sent and acknowledged on this connection.
    sent: Lsn,
    acked: Lsn,
    /// Since when the member has owed an acknowledgement.
    owed_since: Option<Duration>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Limbo {
    /// The last LSN assigned when the write quorum was lost with commits in flight.
    until: Option<Lsn>,
    /// Since when a write quorum is reachable again (while still in limbo).
    quorum_back_at: Option<Duration>,
}

/// The writer's session (see the module docs).
#[derive(Debug)]
pub struct WriterSession {
    writer: QuorumWriter,
    config: SessionConfig,
    /// One link per node of the pool.
    members: Vec<MemberLink>,
    /// Commit LSNs above the VDL and when they were shipped, oldest first. One entry per commit,
    /// at most the LAL of them.
    unsettled: VecDeque<(Lsn, Duration)>,
    limbo: Limbo,
    shutting_down: bool,
}

impl WriterSession {
    pub fn new(writer: QuorumWriter, config: SessionConfig) -> WriterSession {
        let pool_size = writer.placement().pool_size();
        WriterSession {
            writer,
            config,
            members: vec![MemberLink::default(); pool_size],
            unsettled: VecDeque::new(),
            limbo: Limbo::default(),
            shutting_down: false,
        }
    }

    pub fn writer(&self) -> &QuorumWriter {
        &self.writer
    }

    pub fn vdl(&self) -> Lsn {
        self.writer.vdl()
    }

    pub fn last_lsn(&self) -> Lsn {
        self.writer.last_lsn()
    }

    /// Ships one mini-transaction shipped at `now`. Refused `ReadOnly` in limbo (nothing new
    /// ships until the commits caught by the lost quorum settle) and whenever the writer refuses.
    pub fn commit(
        &mut self,
        changes: Vec<(PageNo, RedoBody)>,
        now: Duration,
    ) -> Result<ShippedMtr, WriteError> {
        if self.limbo.until.is_some_and(|u| u > self.writer.vdl()) {
            return Err(WriteError::ReadOnly {
                reachable: self.worst_reachable(),
            });
        }
        let shipped = self.writer.submit(changes)?;
        self.unsettled.push_back((shipped.commit_lsn, now));
        Ok(shipped)
    }

    /// Pool node `member` accepted our `Hello` (a new connection). `refusing`: it said it refuses
    /// appends. `held`: its `HelloOk`'s segments and SCLs, which replace what it acknowledged
    /// before ([`QuorumWriter::member_state`]: a replaced disk's old acknowledgements stop
    /// counting). Returns the new VDL if what it holds made more durable, and the events.
    pub fn member_connected(
        &mut self,
        member: usize,
        refusing: Option<String>,
        held: &[(SegmentId, Lsn)],
        now: Duration,
    ) -> (Option<Lsn>, Vec<Event>) {
        self.members[member] = MemberLink {
            connected: true,
            ..MemberLink::default()
        };
        let new_vdl = self.writer.member_state(member, held);
        let mut events = self.set_refusing(member, refusing);
        events.extend(self.update_reachable(member, now));
        if let Some(vdl) = new_vdl {
            events.extend(self.vdl_advanced(vdl));
        }
        (new_vdl, events)
    }

    /// `member` says (again) whether it refuses appends while connected.
    pub fn member_refusing(
        &mut self,
        member: usize,
        why: Option<String>,
        now: Duration,
    ) -> Vec<Event> {
        let mut events = self.set_refusing(member, why);
        if self.members[member].refusing.is_some() {
            self.members[member].owed_since = None;
        }
        events.extend(self.update_reachable(member, now));
        events
    }

    /// `member`'s connection is gone (or was dropped after an [`Event::AckTimeout`]).
    pub fn member_lost(&mut self, member: usize, now: Duration) -> Vec<Event> {
        // Whatever it said about its budget is no longer known.
        self.members[member] = MemberLink::default();
        self.update_reachable(member, now)
    }

    /// Records up to `last` were sent to `member` at `now`.
    pub fn sent(&mut self, member: usize, last: Lsn, now: Duration) {
        let link = &mut self.members[member];
        if last > link.sent {
            link.sent = last;
            link.owed_since.get_or_insert(now);
        }
    }

    /// Pool node `member` acknowledged `scl` for `segment` in `epoch` at `now` (ignored by the
    /// durability count if it is not a member of the segment's group). Returns the new VDL if it
    /// advanced, and the events (out of limbo).
    ///
    /// Only an ack in this writer's own epoch counts (RFC 0014 §2): one in an older epoch is
    /// dropped (it cannot be about our records), and one in a newer epoch says a recovery has
    /// read or replaced this member's state, so nothing it holds may be counted for us from now
    /// on: [`Event::Superseded`].
    pub fn on_ack(
        &mut self,
        member: usize,
        segment: SegmentId,
        epoch: u64,
        scl: Lsn,
        now: Duration,
    ) -> (Option<Lsn>, Vec<Event>) {
        let ours = self.writer.epoch();
        if epoch > ours {
            return (None, vec![Event::Superseded { member, epoch }]);
        }
        if epoch < ours {
            return (None, Vec::new());
        }
        let link = &mut self.members[member];
        if link.connected {
            link.acked = link.acked.max(scl);
            link.owed_since = if link.acked >= link.sent {
                None
            } else {
                Some(now)
            };
        }
        let new_vdl = self.writer.on_ack(member, segment, scl);
        let mut events = Vec::new();
        if let Some(vdl) = new_vdl {
            events = self.vdl_advanced(vdl);
        }
        (new_vdl, events)
    }

    /// The VDL advanced to `vdl`: commits up to it are settled, and limbo may end.
    fn vdl_advanced(&mut self, vdl: Lsn) -> Vec<Event> {
        while self.unsettled.front().is_some_and(|(lsn, _)| *lsn <= vdl) {
            self.unsettled.pop_front();
        }
        if self.limbo.until.is_some_and(|u| vdl >= u) {
            self.limbo = Limbo::default();
            return vec![Event::Settled { vdl }];
        }
        Vec::new()
    }

    /// The time passed: members that owe an acknowledgement for too long.
    pub fn tick(&self, now: Duration) -> Vec<Event> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                l.connected
                    && l.refusing.is_none()
                    && l.owed_since
                        .is_some_and(|t| now.saturating_sub(t) > self.config.member_ack_timeout)
            })
            .map(|(member, l)| Event::AckTimeout {
                member,
                sent: l.sent,
                acked: l.acked,
            })
            .collect()
    }

    /// The writer is shutting down: it drops its members on purpose, which is not a lost quorum.
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
    }

    /// In limbo (see the module docs), or about to be: a group with records in flight has no
    /// write quorum reachable.
    pub fn in_limbo(&self) -> bool {
        let vdl = self.writer.vdl();
        self.limbo.until.is_some_and(|u| u > vdl) || !self.in_flight_groups_writable()
    }

    /// In limbo with a write quorum reachable again for longer than `grace` and the commits
    /// still not durable: only a recovery can settle them now.
    pub fn limbo_stuck(&self, grace: Duration, now: Duration) -> bool {
        self.limbo.until.is_some_and(|u| u > self.writer.vdl())
            && self
                .limbo
                .quorum_back_at
                .is_some_and(|t| now.saturating_sub(t) > grace)
    }

    /// How long the oldest commit above the VDL has waited for durability, if one does.
    pub fn oldest_unsettled_age(&self, now: Duration) -> Option<Duration> {
        self.unsettled
            .front()
            .map(|(_, at)| now.saturating_sub(*at))
    }

    /// "N of P safekeepers refuse appends: <the first one's reason>" (P: the pool's size), if
    /// any do.
    pub fn refusing_summary(&self) -> Option<String> {
        let reasons: Vec<&String> = self
            .members
            .iter()
            .filter_map(|m| m.refusing.as_ref())
            .collect();
        let first = reasons.first()?;
        Some(format!(
            "{} of {} safekeepers refuse appends: {first}",
            reasons.len(),
            self.members.len()
        ))
    }

    fn set_refusing(&mut self, member: usize, why: Option<String>) -> Vec<Event> {
        let link = &mut self.members[member];
        if link.refusing == why {
            return Vec::new();
        }
        let was_refusing = link.refusing.is_some();
        link.refusing = why.clone();
        if why.is_some() || was_refusing {
            vec![Event::Refusing { member, why }]
        } else {
            Vec::new()
        }
    }

    /// Whether every group with records in flight has a write quorum reachable.
    fn in_flight_groups_writable(&self) -> bool {
        self.writer
            .in_flight_reachable()
            .is_none_or(|n| n >= WRITE_QUORUM)
    }

    /// The reachable members of the worst group with records in flight (of the pool, if none
    /// is): what a refusal or a limbo event reports.
    fn worst_reachable(&self) -> usize {
        self.writer
            .in_flight_reachable()
            .unwrap_or_else(|| self.writer.reachable().len())
    }

    /// Applies `member`'s reachability (connected and accepting) to the writer and the limbo.
    fn update_reachable(&mut self, member: usize, now: Duration) -> Vec<Event> {
        let link = &self.members[member];
        if link.connected && link.refusing.is_none() {
            self.writer.member_up(member);
        } else {
            self.writer.member_down(member);
        }
        let writable = self.in_flight_groups_writable();
        let (vdl, last) = (self.writer.vdl(), self.writer.last_lsn());
        let mut events = Vec::new();
        match (writable, self.limbo.until) {
            (false, None) if !self.shutting_down => {
                // Not writable means a group has records in flight: last > VDL.
                self.limbo.until = Some(last);
                events.push(Event::LimboEntered {
                    reachable: self.worst_reachable(),
                    vdl,
                    until: last,
                });
            }
            (false, Some(_)) => self.limbo.quorum_back_at = None,
            (true, Some(until)) if self.limbo.quorum_back_at.is_none() => {
                self.limbo.quorum_back_at = Some(now);
                events.push(Event::QuorumBack {
                    reachable: self.worst_reachable(),
                    until,
                });
            }
            _ => {}
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Placement;
    use borealis_core::quorum::PG_MEMBERS;
    use borealis_core::{SegmentLayout, TenantId};
    use std::collections::BTreeMap;

    const S: SegmentId = SegmentId(0);
    const TIMEOUT: Duration = Duration::from_secs(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A session over `placement`'s pool (segments of 4 pages), every node connected.
    fn session_of(placement: Placement) -> WriterSession {
        let pool = placement.pool_size();
        let qw = QuorumWriter::new(
            1,
            Lsn(0),
            BTreeMap::new(),
            SegmentLayout::new(4),
            1024,
            placement,
        );
        let mut s = WriterSession::new(
            qw,
            SessionConfig {
                member_ack_timeout: TIMEOUT,
            },
        );
        for n in 0..pool {
            s.member_connected(n, None, &[], ms(0));
        }
        s
    }

    /// A pool of six: one group, node = member.
    fn session() -> WriterSession {
        session_of(Placement::pool_of_six(TenantId(1)))
    }

    fn change() -> Vec<(PageNo, RedoBody)> {
        vec![(PageNo(1), RedoBody::Delta(vec![0, 0, 1, 0, 7]))]
    }

    #[test]
    fn losing_the_quorum_with_commits_in_flight_is_limbo_until_they_settle() {
        let mut s = session();
        let c = s.commit(change(), ms(1)).unwrap().commit_lsn;
        s.member_lost(0, ms(2));
        s.member_lost(1, ms(2));
        assert!(!s.in_limbo(), "four members still reachable");
        let events = s.member_lost(2, ms(3));
        assert_eq!(
            events,
            vec![Event::LimboEntered {
                reachable: 3,
                vdl: Lsn(0),
                until: c
            }]
        );
        assert!(s.in_limbo());
        assert!(matches!(
            s.commit(change(), ms(4)),
            Err(WriteError::ReadOnly { reachable: 3 })
        ));
        let back = s.member_connected(2, None, &[], ms(10)).1;
        assert_eq!(
            back,
            vec![Event::QuorumBack {
                reachable: 4,
                until: c
            }]
        );
        assert!(s.in_limbo(), "back, but the commit is not settled");
        assert!(matches!(
            s.commit(change(), ms(11)),
            Err(WriteError::ReadOnly { .. })
        ));
        assert!(!s.limbo_stuck(ms(100), ms(50)));
        assert!(
            s.limbo_stuck(ms(100), ms(111)),
            "back for longer than the grace"
        );
        for m in 2..6 {
            s.on_ack(m, S, 1, c, ms(120));
        }
        assert!(!s.in_limbo());
        s.commit(change(), ms(121)).expect("out of limbo");
    }

    #[test]
    fn only_acks_in_the_writers_own_epoch_count() {
        let mut s = session();
        let c = s.commit(change(), ms(1)).unwrap().commit_lsn;
        // Acks of an older epoch are about someone else's records: dropped.
        for m in 0..6 {
            assert_eq!(s.on_ack(m, S, 0, c, ms(2)), (None, Vec::new()));
        }
        // A member that promised a newer epoch to a recovery (or installed one) acks in it: it
        // counts for nothing and tells the driver this writer is superseded.
        for m in 0..3 {
            assert_eq!(s.on_ack(m, S, 1, c, ms(3)).0, None);
        }
        assert_eq!(
            s.on_ack(3, S, 2, c, ms(3)),
            (
                None,
                vec![Event::Superseded {
                    member: 3,
                    epoch: 2
                }]
            )
        );
        assert_eq!(
            s.vdl(),
            Lsn(0),
            "three acks in epoch 1 are not a write quorum"
        );
        assert_eq!(s.on_ack(4, S, 1, c, ms(4)).0, Some(c));
    }

    #[test]
    fn losing_the_quorum_with_nothing_in_flight_is_not_limbo() {
        let mut s = session();
        let c = s.commit(change(), ms(1)).unwrap().commit_lsn;
        for m in 0..4 {
            s.on_ack(m, S, 1, c, ms(2));
        }
        for m in 0..3 {
            s.member_lost(m, ms(3));
        }
        assert!(!s.in_limbo());
        assert!(matches!(
            s.commit(change(), ms(4)),
            Err(WriteError::ReadOnly { .. })
        ));
        s.member_connected(0, None, &[], ms(5));
        s.commit(change(), ms(6))
            .expect("a quorum again, nothing unsettled");
    }

    #[test]
    fn shutting_down_is_not_a_lost_quorum() {
        let mut s = session();
        s.commit(change(), ms(1)).unwrap();
        s.shut_down();
        for m in 0..PG_MEMBERS {
            assert!(s.member_lost(m, ms(2)).is_empty());
        }
    }

    #[test]
    fn a_member_that_owes_an_ack_too_long_times_out() {
        let mut s = session();
        let c = s.commit(change(), ms(0)).unwrap().commit_lsn;
        for m in 0..PG_MEMBERS {
            s.sent(m, c, ms(0));
        }
        for m in 0..5 {
            s.on_ack(m, S, 1, c, ms(10));
        }
        assert!(s.tick(ms(3000)).is_empty(), "not longer than the timeout");
        assert_eq!(
            s.tick(ms(3001)),
            vec![Event::AckTimeout {
                member: 5,
                sent: c,
                acked: Lsn(0)
            }]
        );
        s.member_refusing(5, Some("disk budget".into()), ms(3002));
        assert!(
            s.tick(ms(9000)).is_empty(),
            "a refusing member owes nothing"
        );
        assert_eq!(
            s.refusing_summary().as_deref(),
            Some("1 of 6 safekeepers refuse appends: disk budget")
        );
    }

    #[test]
    fn unsettled_commits_age_until_the_vdl_covers_them() {
        let mut s = session();
        let a = s.commit(change(), ms(5)).unwrap().commit_lsn;
        s.commit(change(), ms(9)).unwrap();
        assert_eq!(s.oldest_unsettled_age(ms(20)), Some(ms(15)));
        for m in 0..4 {
            s.on_ack(m, S, 1, a, ms(21));
        }
        assert_eq!(s.oldest_unsettled_age(ms(20)), Some(ms(11)));
    }

    /// A pool of nine, three per AZ: segment 0 and the first segment whose group differs from
    /// segment 0's in AZ `y`, with `y`.
    fn nine() -> (WriterSession, SegmentId, SegmentId, usize) {
        let s = session_of(Placement::new(TenantId(1), vec![0, 0, 0, 1, 1, 1, 2, 2, 2]).unwrap());
        let a = s.writer().group(SegmentId(0));
        let (b, y) = (1..)
            .map(SegmentId)
            .find_map(|b| {
                let g = s.writer().group(b);
                (0..3)
                    .find(|&y| g.0[2 * y..2 * y + 2] != a.0[2 * y..2 * y + 2])
                    .map(|y| (b, y))
            })
            .unwrap();
        (s, SegmentId(0), b, y)
    }

    fn change_in(segment: SegmentId) -> Vec<(PageNo, RedoBody)> {
        vec![(
            PageNo(segment.0 * 4 + 1),
            RedoBody::Delta(vec![0, 0, 1, 0, 7]),
        )]
    }

    #[test]
    fn limbo_is_a_group_with_records_in_flight_losing_its_quorum_not_an_idle_one() {
        let (mut s, a, b, y) = nine();
        let (ga, gb) = (s.writer().group(a), s.writer().group(b));
        let c = s.commit(change_in(a), ms(1)).unwrap().commit_lsn;
        // b, idle, loses its quorum: its pair of an AZ x other than y, and its node of AZ y that
        // a does not have. a keeps at least four.
        let x = (y + 1) % 3;
        let only_b = *gb.0[2 * y..2 * y + 2]
            .iter()
            .find(|&&n| !ga.contains(n))
            .unwrap();
        for n in [gb.0[2 * x], gb.0[2 * x + 1], only_b] {
            assert!(
                s.member_lost(n, ms(2)).is_empty(),
                "no limbo for an idle group"
            );
        }
        assert_eq!(s.writer().reachable_in(b), 3);
        assert!(s.writer().reachable_in(a) >= 4);
        assert!(!s.in_limbo());
        assert_eq!(
            s.commit(change_in(b), ms(3)).unwrap_err(),
            WriteError::ReadOnly { reachable: 3 }
        );
        let c = s
            .commit(change_in(a), ms(3))
            .expect("a has its quorum")
            .commit_lsn
            .max(c);
        // Now a, with records in flight, loses its quorum too: limbo, until the last LSN.
        let mut lost = Vec::new();
        for &n in &ga.0 {
            if s.writer().reachable_in(a) == 4 {
                let events = s.member_lost(n, ms(4));
                assert_eq!(
                    events,
                    vec![Event::LimboEntered {
                        reachable: 3,
                        vdl: Lsn(0),
                        until: c
                    }]
                );
                lost.push(n);
                break;
            }
            if s.writer().reachable().contains(n) {
                assert!(s.member_lost(n, ms(4)).is_empty());
                lost.push(n);
            }
        }
        assert!(s.in_limbo());
        assert!(matches!(
            s.commit(change_in(a), ms(5)),
            Err(WriteError::ReadOnly { reachable: 3 })
        ));
        // One of a's nodes back: every group in flight is writable again (b is idle, still
        // short of its quorum, and does not count).
        let back = *lost.last().unwrap();
        assert_eq!(
            s.member_connected(back, None, &[], ms(10)).1,
            vec![Event::QuorumBack {
                reachable: 4,
                until: c
            }]
        );
        assert!(s.in_limbo(), "back, but not settled");
        assert!(s.limbo_stuck(ms(50), ms(61)));
        let up: Vec<usize> =
            ga.0.iter()
                .copied()
                .filter(|&n| s.writer().reachable().contains(n))
                .collect();
        assert_eq!(up.len(), 4);
        let mut events = Vec::new();
        for &n in &up {
            events.extend(s.on_ack(n, a, 1, c, ms(70)).1);
        }
        assert_eq!(events, vec![Event::Settled { vdl: c }]);
        assert!(!s.in_limbo());
        s.commit(change_in(a), ms(71)).expect("out of limbo");
        assert!(
            s.commit(change_in(b), ms(71)).is_err(),
            "b still lacks its quorum"
        );
    }

    #[test]
    fn acks_of_a_node_outside_the_group_neither_settle_nor_count() {
        let (mut s, a, _, _) = nine();
        let ga = s.writer().group(a);
        let c = s.commit(change_in(a), ms(1)).unwrap().commit_lsn;
        for n in (0..9).filter(|&n| !ga.contains(n)) {
            assert_eq!(s.on_ack(n, a, 1, c, ms(2)).0, None);
        }
        for &n in &ga.0[..3] {
            assert_eq!(s.on_ack(n, a, 1, c, ms(2)).0, None);
        }
        assert_eq!(s.on_ack(ga.0[3], a, 1, c, ms(2)).0, Some(c));
    }
}
