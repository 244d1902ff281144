//! A writer's session: the quorum writer plus the rules that need time — limbo, unsettled
//! commits and member acknowledgement timeouts — as one sans-IO state machine.
//!
//! The gateway's driver (`gateway/src/volume_writer/`) owns the sockets and tasks and reads the
//! clock; it passes the time in (`now`: time since the driver's origin) with every input, and
//! acts on the [`Event`]s each input returns (log them; on [`Event::AckTimeout`], drop the
//! member's connection). The simulator (`tests/src/sim`) drives the same machine with simulated
//! time, so these rules are checked under the faults it injects.
//!
//! ## Reachable members
//!
//! A member counts toward the write quorum while it is **connected** (it accepted this writer's
//! `Hello`), **accepting** appends (a member whose disk budget is exhausted answers `read_only`
//! and is counted out until a repeated `Hello` says it has room) and **acknowledging**: a member
//! that owes an acknowledgement for longer than [`SessionConfig::member_ack_timeout`] (a frozen
//! process, a partition that breaks no connection) is reported by [`WriterSession::tick`] and
//! its driver drops the connection.
//!
//! ## Limbo (RFC 0004)
//!
//! When fewer than a write quorum of members is reachable while commits are unsettled (the last
//! LSN assigned is above the VDL), those commits reached three members at most: none can become
//! durable, nor be truncated by a recovery (which needs four members too), until a fourth member
//! returns. The writer is then **in limbo** until the VDL reaches the last LSN assigned at that
//! moment: it keeps its epoch and VDL but ships nothing new ([`WriterSession::commit`] refuses
//! `ReadOnly`). A write quorum back for longer than a grace period with the commits still
//! unsettled means no returning member holds them: [`WriterSession::limbo_stuck`] says only a
//! recovery can settle them. A writer that shuts down drops its members on purpose: that is not
//! a lost quorum.

use crate::writer::{QuorumWriter, ShippedMtr, WriteError};
use borealis_core::quorum::{PG_MEMBERS, WRITE_QUORUM};
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
    /// The write quorum was lost with commits in flight up to `until`.
    LimboEntered {
        reachable: usize,
        vdl: Lsn,
        until: Lsn,
    },
    /// A write quorum is reachable again while in limbo.
    QuorumBack { reachable: usize, until: Lsn },
    /// The VDL reached the commits caught by the lost quorum: out of limbo.
    Settled { vdl: Lsn },
    /// A member owes an acknowledgement for longer than the timeout: count it out.
    AckTimeout {
        member: usize,
        sent: Lsn,
        acked: Lsn,
    },
    /// A member refuses appends while connected (its disk budget), or accepts them again.
    Refusing { member: usize, why: Option<String> },
}

/// What the session knows of one member's connection.
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
    members: [MemberLink; PG_MEMBERS],
    /// Commit LSNs above the VDL and when they were shipped, oldest first. One entry per commit,
    /// at most the LAL of them.
    unsettled: VecDeque<(Lsn, Duration)>,
    limbo: Limbo,
    shutting_down: bool,
}

impl WriterSession {
    pub fn new(writer: QuorumWriter, config: SessionConfig) -> WriterSession {
        WriterSession {
            writer,
            config,
            members: Default::default(),
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
                reachable: self.writer.reachable().len(),
            });
        }
        let shipped = self.writer.submit(changes)?;
        self.unsettled.push_back((shipped.commit_lsn, now));
        Ok(shipped)
    }

    /// `member` accepted our `Hello` (a new connection). `refusing`: it said it refuses appends.
    pub fn member_connected(
        &mut self,
        member: usize,
        refusing: Option<String>,
        now: Duration,
    ) -> Vec<Event> {
        self.members[member] = MemberLink {
            connected: true,
            ..MemberLink::default()
        };
        let mut events = self.set_refusing(member, refusing);
        events.extend(self.update_reachable(member, now));
        events
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

    /// `member` acknowledged `scl` for `segment` at `now`. Returns the new VDL if it advanced,
    /// and the events (out of limbo).
    pub fn on_ack(
        &mut self,
        member: usize,
        segment: SegmentId,
        scl: Lsn,
        now: Duration,
    ) -> (Option<Lsn>, Vec<Event>) {
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
            while self.unsettled.front().is_some_and(|(lsn, _)| *lsn <= vdl) {
                self.unsettled.pop_front();
            }
            if self.limbo.until.is_some_and(|u| vdl >= u) {
                self.limbo = Limbo::default();
                events.push(Event::Settled { vdl });
            }
        }
        (new_vdl, events)
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

    /// In limbo (see the module docs), or about to be: no write quorum with commits unsettled.
    pub fn in_limbo(&self) -> bool {
        let vdl = self.writer.vdl();
        self.limbo.until.is_some_and(|u| u > vdl)
            || (self.writer.last_lsn() > vdl && !self.writer.reachable().is_write_quorum())
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

    /// "N of 6 safekeepers refuse appends: <the first one's reason>", if any do.
    pub fn refusing_summary(&self) -> Option<String> {
        let reasons: Vec<&String> = self
            .members
            .iter()
            .filter_map(|m| m.refusing.as_ref())
            .collect();
        let first = reasons.first()?;
        Some(format!(
            "{} of {PG_MEMBERS} safekeepers refuse appends: {first}",
            reasons.len()
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

    /// Applies `member`'s reachability (connected and accepting) to the writer and the limbo.
    fn update_reachable(&mut self, member: usize, now: Duration) -> Vec<Event> {
        let link = &self.members[member];
        if link.connected && link.refusing.is_none() {
            self.writer.member_up(member);
        } else {
            self.writer.member_down(member);
        }
        let n = self.writer.reachable().len();
        let (vdl, last) = (self.writer.vdl(), self.writer.last_lsn());
        let mut events = Vec::new();
        match (n >= WRITE_QUORUM, self.limbo.until) {
            (false, None) if last > vdl && !self.shutting_down => {
                self.limbo.until = Some(last);
                events.push(Event::LimboEntered {
                    reachable: n,
                    vdl,
                    until: last,
                });
            }
            (false, Some(_)) => self.limbo.quorum_back_at = None,
            (true, Some(until)) if self.limbo.quorum_back_at.is_none() => {
                self.limbo.quorum_back_at = Some(now);
                events.push(Event::QuorumBack {
                    reachable: n,
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
    use borealis_core::SegmentLayout;
    use std::collections::BTreeMap;

    const S: SegmentId = SegmentId(0);
    const TIMEOUT: Duration = Duration::from_secs(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn session() -> WriterSession {
        let qw = QuorumWriter::new(1, Lsn(0), BTreeMap::new(), SegmentLayout::default(), 1024);
        let mut s = WriterSession::new(
            qw,
            SessionConfig {
                member_ack_timeout: TIMEOUT,
            },
        );
        for m in 0..PG_MEMBERS {
            s.member_connected(m, None, ms(0));
        }
        s
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
        let back = s.member_connected(2, None, ms(10));
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
            s.on_ack(m, S, c, ms(120));
        }
        assert!(!s.in_limbo());
        s.commit(change(), ms(121)).expect("out of limbo");
    }

    #[test]
    fn losing_the_quorum_with_nothing_in_flight_is_not_limbo() {
        let mut s = session();
        let c = s.commit(change(), ms(1)).unwrap().commit_lsn;
        for m in 0..4 {
            s.on_ack(m, S, c, ms(2));
        }
        for m in 0..3 {
            s.member_lost(m, ms(3));
        }
        assert!(!s.in_limbo());
        assert!(matches!(
            s.commit(change(), ms(4)),
            Err(WriteError::ReadOnly { .. })
        ));
        s.member_connected(0, None, ms(5));
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
            s.on_ack(m, S, c, ms(10));
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
            s.on_ack(m, S, a, ms(21));
        }
        assert_eq!(s.oldest_unsettled_age(ms(20)), Some(ms(11)));
    }
}
