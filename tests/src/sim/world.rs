mod gossip;
mod member;
mod pageserver;

use borealis_core::history::EpochStart;
use borealis_core::quorum::{PG_MEMBERS, READ_QUORUM, WRITE_QUORUM};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout, TenantId};
use borealis_quorum::acceptor::{PlantedBug, Source};
use borealis_quorum::placement::Placement;
use borealis_quorum::recovery::{self, MemberReport};
use borealis_quorum::session::{Event, SessionConfig, WriterSession};
use borealis_quorum::QuorumWriter;
use member::Member;
use pageserver::{Checkpoint, Follower};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

const SEG: SegmentId = SegmentId(0);
/// The one tenant simulated (gossip's summaries name it).
const TENANT: TenantId = TenantId(1);
/// The writer session's acknowledgement timeout, in simulated time (one step is a millisecond):
/// well below the commit timeout (80 steps without VDL progress), as in the gateway.
const MEMBER_ACK_TIMEOUT: Duration = Duration::from_millis(30);

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub steps: usize,
    /// Per-step probability (in 1/1000) of a fault event.
    pub fault_per_mille: u32,
    /// Keep the whole trace (for replay), not only its tail.
    pub trace_all: bool,
    /// A bug planted in the safekeeper's acceptor (the service's code), for the tests that the
    /// checkers are not vacuous.
    pub planted: Option<PlantedBug>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            steps: 400,
            fault_per_mille: 30,
            trace_all: false,
            planted: None,
        }
    }
}

#[derive(Debug)]
pub struct SimOutcome {
    pub seed: u64,
    pub trace: Vec<String>,
    pub violation: Option<String>,
    pub acked_mtrs: usize,
    pub recoveries: usize,
    pub fenced_appends: usize,
    /// Members that crashed between two actions of one input (a Hello's control store and its
    /// truncation, say) and were restarted from what was durable.
    pub crashes_mid_input: usize,
    /// Writers that entered limbo (RFC 0004), left it because their commits settled, and
    /// commits refused while in limbo.
    pub limbo_entered: usize,
    pub limbo_settled: usize,
    pub limbo_refusals: usize,
    /// Members dropped by a writer for owing an acknowledgement too long.
    pub ack_timeouts: usize,
    /// Newer epochs a member learnt from a peer by gossip (and installed as their Hello would).
    pub epochs_adopted: usize,
    /// Checkpoints, and trims that dropped records on a member.
    pub checkpoints: usize,
    pub trims: usize,
    /// Gossip reads refused because the peer's log is trimmed past ours, and trim points a
    /// member adopted from such a refusal.
    pub gossip_trim_refusals: usize,
    pub trim_adoptions: usize,
    /// Batches of records the follower (a pageserver) applied, reads refused because the
    /// member's log was trimmed past it, and times it attached again from the checkpoint.
    pub follower_batches: usize,
    pub follower_trim_refusals: usize,
    pub follower_attaches: usize,
}

/// An MTR as the client sees it.
#[derive(Clone, Debug)]
struct Mtr {
    records: Vec<RedoRecord>,
    commit: Lsn,
}

struct Writer {
    /// The gateway's writer session (quorum writer, limbo, acknowledgement timeouts), fed the
    /// simulated time.
    session: WriterSession,
    epoch: u64,
    /// Members this writer has a live connection to (said Hello to in this connection).
    connected: [bool; PG_MEMBERS],
    fenced: bool,
    mtrs: Vec<Mtr>,
    last_vdl: Lsn,
    /// The VDL the first newer epoch started from (checker 4): a superseded writer may still
    /// learn that records below it are durable, but never anything above it.
    vdl_when_superseded: Option<Lsn>,
    history: Vec<EpochStart>,
    vdl_seen: Lsn,
    stalled_steps: u32,
}

enum Msg {
    Append {
        to: usize,
        epoch: u64,
        vdl: Lsn,
        records: Vec<RedoRecord>,
        writer: usize,
    },
    Ack {
        from: usize,
        scl: Lsn,
        writer: usize,
    },
}

impl Msg {
    /// The connection a message travels on: (writer, member, direction).
    fn link(&self) -> (usize, usize, bool) {
        match self {
            Msg::Append { to, writer, .. } => (*writer, *to, true),
            Msg::Ack { from, writer, .. } => (*writer, *from, false),
        }
    }
}

struct World {
    rng: StdRng,
    members: Vec<Member>,
    writers: Vec<Writer>,
    /// Index of the current writer in `writers`, if any is serving.
    current: Option<usize>,
    net: Vec<Msg>,
    acked: Vec<Mtr>,
    trace: Vec<String>,
    trace_all: bool,
    recoveries: usize,
    fenced_appends: usize,
    /// `(epoch, vdl)` of every recovery.
    recovered: Vec<(u64, Lsn)>,
    /// A violation found outside `check` (at recovery time).
    violation: Option<String>,
    crashes_mid_input: usize,
    limbo_entered: usize,
    limbo_settled: usize,
    limbo_refusals: usize,
    ack_timeouts: usize,
    epochs_adopted: usize,
    /// The segment's log as checkpointed to object storage; every member's trim point is at or
    /// below it.
    checkpoint: Checkpoint,
    checkpoints: usize,
    trims: usize,
    gossip_trim_refusals: usize,
    trim_adoptions: usize,
    follower: Follower,
    follower_batches: usize,
    follower_trim_refusals: usize,
    follower_attaches: usize,
}

pub fn run(seed: u64, config: &SimConfig) -> SimOutcome {
    let mut w = World {
        rng: StdRng::seed_from_u64(seed),
        members: (0..PG_MEMBERS)
            .map(|_| Member::new(config.planted))
            .collect(),
        writers: Vec::new(),
        current: None,
        net: Vec::new(),
        acked: Vec::new(),
        trace: Vec::new(),
        trace_all: config.trace_all,
        recoveries: 0,
        fenced_appends: 0,
        recovered: Vec::new(),
        violation: None,
        crashes_mid_input: 0,
        limbo_entered: 0,
        limbo_settled: 0,
        limbo_refusals: 0,
        ack_timeouts: 0,
        epochs_adopted: 0,
        checkpoint: Checkpoint::default(),
        checkpoints: 0,
        trims: 0,
        gossip_trim_refusals: 0,
        trim_adoptions: 0,
        follower: Follower::default(),
        follower_batches: 0,
        follower_trim_refusals: 0,
        follower_attaches: 0,
    };
    let mut violation = None;
    for step in 0..config.steps {
        w.step(step, config.fault_per_mille);
        if let Err(v) = w.check() {
            violation = Some(format!("step {step}: {v}"));
            break;
        }
    }
    SimOutcome {
        seed,
        trace: w.trace,
        violation,
        acked_mtrs: w.acked.len(),
        recoveries: w.recoveries,
        fenced_appends: w.fenced_appends,
        crashes_mid_input: w.crashes_mid_input,
        limbo_entered: w.limbo_entered,
        limbo_settled: w.limbo_settled,
        limbo_refusals: w.limbo_refusals,
        ack_timeouts: w.ack_timeouts,
        epochs_adopted: w.epochs_adopted,
        checkpoints: w.checkpoints,
        trims: w.trims,
        gossip_trim_refusals: w.gossip_trim_refusals,
        trim_adoptions: w.trim_adoptions,
        follower_batches: w.follower_batches,
        follower_trim_refusals: w.follower_trim_refusals,
        follower_attaches: w.follower_attaches,
    }
}

impl World {
    fn log(&mut self, s: String) {
        self.trace.push(s);
        if !self.trace_all && self.trace.len() > 200 {
            self.trace.drain(..100);
        }
    }

    fn step(&mut self, step: usize, fault_per_mille: u32) {
        self.commit_timeout(step);
        self.ack_timeouts(step);
        if self.rng.random_range(0..1000) < fault_per_mille {
            self.fault(step);
        }
        match self.rng.random_range(0..12) {
            0..=2 => self.client_write(step),
            3..=5 => self.deliver(step),
            6 => self.fsync_some(),
            7 => self.gossip(step),
            8 => self.reconnect(step),
            9 => self.ensure_writer(step),
            10 => self.follow(step),
            _ => {
                if self.rng.random_bool(0.5) {
                    self.checkpoint(step);
                }
            }
        }
    }

    /// Simulated time: one millisecond per step.
    fn now(step: usize) -> Duration {
        Duration::from_millis(step as u64)
    }

    /// The writer session's acknowledgement timeouts: a member that owes an acknowledgement too
    /// long (partitioned without its connection breaking) is dropped, as the gateway's member
    /// task does.
    fn ack_timeouts(&mut self, step: usize) {
        for wi in 0..self.writers.len() {
            if self.writers[wi].fenced {
                continue;
            }
            for event in self.writers[wi].session.tick(Self::now(step)) {
                if let Event::AckTimeout {
                    member,
                    sent,
                    acked,
                } = event
                {
                    self.ack_timeouts += 1;
                    self.log(format!(
                        "{step}: writer {wi} drops member {member}: no ack for {sent} (acked {acked})"
                    ));
                    let w = &mut self.writers[wi];
                    w.connected[member] = false;
                    let events = w.session.member_lost(member, Self::now(step));
                    self.note_events(step, wi, &events);
                }
            }
        }
    }

    /// Events of a writer session: traced and counted.
    fn note_events(&mut self, step: usize, writer: usize, events: &[Event]) {
        for e in events {
            if matches!(e, Event::LimboEntered { .. }) {
                self.limbo_entered += 1;
            }
            if matches!(e, Event::Settled { .. }) {
                self.limbo_settled += 1;
            }
            self.log(format!("{step}: writer {writer}: {e:?}"));
        }
    }

    /// The gateway's commit timeout: a serving writer whose VDL has not moved for a while with
    /// records outstanding is failed, and the next request recovers (bounds every wait).
    fn commit_timeout(&mut self, step: usize) {
        let Some(c) = self.current else { return };
        let w = &mut self.writers[c];
        if w.session.writer().tracker().outstanding() == 0 || w.session.vdl() > w.vdl_seen {
            w.vdl_seen = w.session.vdl();
            w.stalled_steps = 0;
            return;
        }
        w.stalled_steps += 1;
        if w.stalled_steps > 80 {
            w.fenced = true;
            self.current = None;
            self.log(format!(
                "{step}: writer {c} failed: commit timeout (vdl stuck at {})",
                self.writers[c].session.vdl()
            ));
        }
    }

    fn fault(&mut self, step: usize) {
        let m = self.rng.random_range(0..PG_MEMBERS);
        match self.rng.random_range(0..12) {
            0..=2 => {
                if self.members[m].up {
                    self.members[m].crash();
                    self.log(format!(
                        "{step}: crash member {m} (loses {} unsynced)",
                        self.members[m].unsynced.len()
                    ));
                }
            }
            3..=5 => {
                if !self.members[m].up {
                    self.members[m].restart();
                    self.log(format!(
                        "{step}: restart member {m} (scl {})",
                        self.members[m].scl()
                    ));
                }
            }
            6 => {
                self.members[m].partitioned = !self.members[m].partitioned;
                let p = self.members[m].partitioned;
                self.log(format!(
                    "{step}: member {m} {}",
                    if p { "partitioned" } else { "healed" }
                ));
            }
            7 => {
                let az = m / 2;
                for i in [2 * az, 2 * az + 1] {
                    self.members[i].crash();
                }
                self.log(format!("{step}: AZ {} lost", (b'a' + az as u8) as char));
            }
            8 => {
                let az = m / 2;
                let extra = (2 * az + 2 + self.rng.random_range(0..4)) % PG_MEMBERS;
                for i in [2 * az, 2 * az + 1, extra] {
                    self.members[i].crash();
                }
                self.log(format!(
                    "{step}: AZ {} + member {extra} lost",
                    (b'a' + az as u8) as char
                ));
            }
            9 | 10 => {
                // Writer crash: gone for good.
                if let Some(c) = self.current.take() {
                    self.writers[c].fenced = true;
                    self.net
                        .retain(|msg| !matches!(msg, Msg::Append { writer, .. } if *writer == c));
                    self.log(format!("{step}: writer {c} crashed"));
                }
            }
            _ => {
                // Zombie: the writer keeps running but the gateway starts a new one.
                if let Some(c) = self.current.take() {
                    self.log(format!("{step}: writer {c} becomes a zombie"));
                }
            }
        }
        // Bring everyone back now and then, so histories do not end in a dead cluster.
        if self.members.iter().filter(|m| m.up).count() < READ_QUORUM && self.rng.random_bool(0.5) {
            for i in 0..PG_MEMBERS {
                if !self.members[i].up {
                    self.members[i].restart();
                }
            }
            self.log(format!("{step}: all members restarted"));
        }
    }

    /// The current writer (and zombies, sometimes) submit an MTR.
    fn client_write(&mut self, step: usize) {
        let live: Vec<usize> = (0..self.writers.len())
            .filter(|&i| !self.writers[i].fenced)
            .collect();
        if live.is_empty() {
            return;
        }
        let wi = match self.current {
            Some(c) if self.rng.random_bool(0.8) => c,
            _ => live[self.rng.random_range(0..live.len())],
        };
        let pages = self.rng.random_range(1..4);
        // Each record's body names its writer and a per-writer counter, so a stale record of
        // another writer at the same LSN can never pass for the right one.
        let changes: Vec<(PageNo, RedoBody)> = (0..pages)
            .map(|i| {
                let p = PageNo(self.rng.random_range(0..8));
                let mut body = vec![0, 0, 16, 0];
                body.extend_from_slice(&(wi as u64).to_le_bytes());
                body.extend_from_slice(
                    &((self.writers[wi].mtrs.len() * 4 + i) as u64).to_le_bytes(),
                );
                (p, RedoBody::Delta(body))
            })
            .collect();
        let now = Self::now(step);
        let w = &mut self.writers[wi];
        let in_limbo = w.session.in_limbo();
        match w.session.commit(changes, now) {
            Ok(_) if in_limbo => {
                self.violation = Some(format!(
                    "writer {wi} shipped an MTR while in limbo (vdl {})",
                    w.session.vdl()
                ));
            }
            Ok(shipped) => {
                let records: Vec<RedoRecord> =
                    shipped.segments.into_iter().flat_map(|(_, r)| r).collect();
                let mtr = Mtr {
                    records: records.clone(),
                    commit: shipped.commit_lsn,
                };
                w.mtrs.push(mtr);
                let (epoch, vdl) = (w.epoch, w.session.vdl());
                let targets: Vec<usize> = (0..PG_MEMBERS).filter(|&m| w.connected[m]).collect();
                for &to in &targets {
                    w.session.sent(to, shipped.commit_lsn, now);
                }
                for to in targets {
                    self.net.push(Msg::Append {
                        to,
                        epoch,
                        vdl,
                        records: records.clone(),
                        writer: wi,
                    });
                }
                let (vdl, reachable) = (w.session.vdl(), w.session.writer().reachable().len());
                self.log(format!(
                    "{step}: writer {wi} ships MTR ending {} (vdl {vdl}, reachable {reachable})",
                    shipped.commit_lsn
                ));
            }
            Err(e) => {
                if in_limbo {
                    self.limbo_refusals += 1;
                }
                self.log(format!("{step}: writer {wi} refused MTR: {e}"))
            }
        }
    }

    fn deliver(&mut self, step: usize) {
        let n = self.rng.random_range(1..16);
        for _ in 0..n {
            if self.net.is_empty() {
                return;
            }
            // Links are TCP connections: each delivers in order; links interleave at random.
            let pick = self.rng.random_range(0..self.net.len());
            let link = self.net[pick].link();
            let i = self
                .net
                .iter()
                .position(|m| m.link() == link)
                .expect("pick is on its link");
            let msg = self.net.remove(i);
            if self.rng.random_range(0..100) < 1 {
                // Lost: over TCP that only happens when the connection breaks, so the writer
                // sees the member go away and says Hello again later.
                let (writer, to, _) = msg.link();
                let w = &mut self.writers[writer];
                w.connected[to] = false;
                let events = w.session.member_lost(to, Self::now(step));
                self.note_events(step, writer, &events);
                continue;
            }
            match msg {
                Msg::Append {
                    to,
                    epoch,
                    vdl,
                    records,
                    writer,
                } => {
                    if !self.members[to].reachable() {
                        continue;
                    }
                    match self.members[to].append(Source::Writer { epoch, vdl }, &records) {
                        Ok(true) => self.send_acks(to),
                        Ok(false) => {}
                        Err(current) => {
                            self.fenced_appends += 1;
                            let w = &mut self.writers[writer];
                            if !w.fenced {
                                w.fenced = true;
                                self.log(format!(
                                "{step}: writer {writer} fenced by member {to} (epoch {current})"
                            ));
                            }
                        }
                    }
                }
                Msg::Ack { from, scl, writer } => {
                    let w = &mut self.writers[writer];
                    if w.fenced || !w.connected[from] {
                        continue;
                    }
                    let (_, events) = w.session.on_ack(from, SEG, scl, Self::now(step));
                    let vdl = w.session.vdl();
                    self.note_events(step, writer, &events);
                    let w = &self.writers[writer];
                    if Some(writer) == self.current {
                        // Clients get answers only from the serving writer.
                        let newly: Vec<Mtr> = w
                            .mtrs
                            .iter()
                            .filter(|m| {
                                m.commit <= vdl && !self.acked.iter().any(|a| a.commit == m.commit)
                            })
                            .cloned()
                            .collect();
                        self.acked.extend(newly);
                    }
                }
            }
        }
    }

    /// Group commits: fsync, then the acceptor publishes, then acks go out.
    fn fsync_some(&mut self) {
        for m in 0..PG_MEMBERS {
            if self.members[m].up && self.rng.random_bool(0.6) && self.members[m].sync() {
                self.send_acks(m);
            }
        }
    }

    /// Member `m` published: it acks its SCL to every writer of its epoch connected to it.
    fn send_acks(&mut self, m: usize) {
        if !self.members[m].reachable() {
            return;
        }
        let (scl, epoch) = (self.members[m].scl(), self.members[m].epoch());
        for (wi, w) in self.writers.iter().enumerate() {
            if !w.fenced && w.connected[m] && w.epoch == epoch {
                self.net.push(Msg::Ack {
                    from: m,
                    scl,
                    writer: wi,
                });
            }
        }
    }

    /// A crash point for a barrier's actions: mostly none, sometimes between two of them.
    fn crash_point(&mut self) -> Option<usize> {
        self.rng
            .random_bool(0.05)
            .then(|| self.rng.random_range(0..4))
    }

    /// Writers notice dead connections and reconnect (Hello) to reachable members.
    fn reconnect(&mut self, step: usize) {
        for wi in 0..self.writers.len() {
            if self.writers[wi].fenced {
                continue;
            }
            for m in 0..PG_MEMBERS {
                let reachable = self.members[m].reachable();
                let w = &mut self.writers[wi];
                if w.connected[m] && !reachable && self.rng.random_bool(0.5) {
                    // A crashed member's connection breaks (a partitioned one's may not: then
                    // only the acknowledgement timeout counts it out).
                    w.connected[m] = false;
                    let events = w.session.member_lost(m, Self::now(step));
                    self.note_events(step, wi, &events);
                } else if !w.connected[m] && reachable && self.rng.random_bool(0.7) {
                    let history = w.history.clone();
                    let crash = self.crash_point();
                    match self.members[m].hello(&history, crash) {
                        Ok(()) => {
                            let w = &mut self.writers[wi];
                            w.connected[m] = true;
                            let now = Self::now(step);
                            let mut events = w.session.member_connected(m, None, now);
                            let scl = self.members[m].scl();
                            events.extend(w.session.on_ack(m, SEG, scl, now).1);
                            self.note_events(step, wi, &events);
                        }
                        Err(None) => {
                            self.crashes_mid_input += 1;
                            self.log(format!(
                                "{step}: member {m} crashed inside writer {wi}'s hello"
                            ));
                        }
                        Err(Some(current)) => {
                            self.writers[wi].fenced = true;
                            self.log(format!("{step}: writer {wi} fenced at hello by member {m} (epoch {current})"));
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Recovery when no writer serves: read quorum, plan, install epoch, wait for durability.
    fn ensure_writer(&mut self, step: usize) {
        if self.current.is_some() {
            return;
        }
        let reachable: Vec<usize> = (0..PG_MEMBERS)
            .filter(|&m| self.members[m].reachable())
            .collect();
        let reports: Vec<MemberReport> = reachable
            .iter()
            .map(|&m| {
                // What GetState answers: the published state.
                let p = self.members[m].acceptor.published();
                let segs = p
                    .segments
                    .get(&SEG)
                    .map(|c| vec![(SEG, c.scl, c.last_cpl)])
                    .unwrap_or_default();
                MemberReport {
                    member: m,
                    epoch: p.epoch,
                    history: p.history.clone(),
                    segments: segs,
                }
            })
            .collect();
        let plan = match recovery::plan(&reports) {
            Ok(p) => p,
            Err(e) => {
                self.log(format!("{step}: recovery impossible: {e}"));
                return;
            }
        };
        // Checker 6: what the follower applied and the checkpoint are the log this recovery
        // finds (before any member truncates for it).
        if let Some(source) = plan.source_member {
            if let Err(v) = self.check_follower(source, plan.vdl) {
                self.violation = Some(v);
                return;
            }
        }
        // Install the epoch on every reachable member.
        let mut installed = Vec::new();
        for &m in &reachable {
            let crash = self.crash_point();
            match self.members[m].hello(&plan.history, crash) {
                Ok(()) => installed.push(m),
                Err(None) => {
                    self.crashes_mid_input += 1;
                    self.log(format!(
                        "{step}: member {m} crashed inside the recovery's hello"
                    ));
                }
                Err(Some(_)) => {}
            }
        }
        if installed.len() < WRITE_QUORUM {
            self.log(format!(
                "{step}: epoch {} (vdl {}) installed on {:?} only; no writer; reports {:?}",
                plan.epoch, plan.vdl, installed, reports
            ));
            return;
        }
        // Durability of the recovered log: fill holes by gossip among the installed members (the
        // real driver waits for this; here we let gossip run to completion, bounded). Members
        // behind a peer's trim point adopt it (the log below it is in the checkpoint).
        for _ in 0..PG_MEMBERS * 2 {
            let scls: Vec<(usize, SegmentId, Lsn)> = installed
                .iter()
                .filter(|&&m| self.members[m].reachable())
                .map(|&m| (m, SEG, self.members[m].scl()))
                .collect();
            if recovery::is_durable(&plan, &scls) {
                break;
            }
            for &m in &installed {
                for &p in &installed {
                    let (mine, theirs) = (self.members[m].scl(), self.members[p].scl());
                    if theirs > mine && self.members[m].reachable() {
                        self.fetch(step, m, p, plan.epoch, (mine, theirs));
                    }
                }
            }
        }
        let scls: Vec<(usize, SegmentId, Lsn)> = installed
            .iter()
            .filter(|&&m| self.members[m].reachable())
            .map(|&m| (m, SEG, self.members[m].scl()))
            .collect();
        if !recovery::is_durable(&plan, &scls) {
            self.log(format!("{step}: recovered log not on a write quorum yet"));
            return;
        }
        self.recoveries += 1;
        // Checker 2 & 3 at recovery time.
        if let Some(mtr) = self.acked.iter().find(|m| m.commit > plan.vdl) {
            self.violation = Some(format!(
                "recovery to VDL {} (epoch {}) lost acknowledged MTR ending {}",
                plan.vdl, plan.epoch, mtr.commit
            ));
        }
        for old in self.writers.iter_mut() {
            if old.vdl_when_superseded.is_none() {
                old.vdl_when_superseded = Some(plan.vdl);
            }
        }
        let mut session = WriterSession::new(
            QuorumWriter::new(
                plan.epoch,
                plan.vdl,
                plan.segment_tails.clone(),
                SegmentLayout::default(),
                64,
                Placement::pool_of_six(TENANT),
            ),
            SessionConfig {
                member_ack_timeout: MEMBER_ACK_TIMEOUT,
            },
        );
        let mut connected = [false; PG_MEMBERS];
        for &m in &installed {
            session.member_connected(m, None, Self::now(step));
            connected[m] = true;
        }
        self.writers.push(Writer {
            session,
            epoch: plan.epoch,
            connected,
            fenced: false,
            mtrs: Vec::new(),
            last_vdl: plan.vdl,
            vdl_when_superseded: None,
            history: plan.history.clone(),
            vdl_seen: plan.vdl,
            stalled_steps: 0,
        });
        self.current = Some(self.writers.len() - 1);
        self.recovered.push((plan.epoch, plan.vdl));
        self.log(format!(
            "{step}: writer {} recovered: epoch {} vdl {} on {:?}; reports {:?}",
            self.writers.len() - 1,
            plan.epoch,
            plan.vdl,
            installed,
            reports
        ));
    }

    fn check(&mut self) -> Result<(), String> {
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        for (i, w) in self.writers.iter_mut().enumerate() {
            let vdl = w.session.vdl();
            // 1. VDL never decreases.
            if vdl < w.last_vdl {
                return Err(format!(
                    "writer {i}: VDL went back from {} to {vdl}",
                    w.last_vdl
                ));
            }
            w.last_vdl = vdl;
            // 4. A superseded writer never makes durable anything its successor did not keep.
            if let Some(at) = w.vdl_when_superseded {
                if vdl > at {
                    return Err(format!("superseded writer {i} raised its VDL to {vdl}, above its successor's start {at}"));
                }
            }
        }
        // 2. Every acknowledged MTR stays durable, whole, on a write quorum: fsynced records
        //    survive crashes, and truncation never reaches below a recovered VDL. A member
        //    holds the records at or below its trim point in the checkpoint (object storage).
        let checkpointed = &self.checkpoint.records;
        for mtr in &self.acked {
            let holders = self
                .members
                .iter()
                .filter(|x| {
                    let base = x.base();
                    mtr.records.iter().all(|r| {
                        x.durable.get(&r.lsn) == Some(r)
                            || (r.lsn <= base && checkpointed.get(&r.lsn) == Some(r))
                    }) && x.scl() >= mtr.commit
                })
                .count();
            if holders < WRITE_QUORUM {
                return Err(format!(
                    "acknowledged MTR ending {} is held whole by only {holders} members",
                    mtr.commit
                ));
            }
        }
        // 3. Every recovered VDL is a consistency point: the last LSN of some MTR, or 0.
        for &(epoch, vdl) in &self.recovered {
            if vdl.is_valid()
                && !self
                    .writers
                    .iter()
                    .any(|w| w.mtrs.iter().any(|m| m.commit == vdl))
            {
                return Err(format!(
                    "epoch {epoch} recovered to VDL {vdl}, which ends no MTR"
                ));
            }
        }
        Ok(())
    }
}
