use borealis_core::history::EpochStart;
use borealis_core::quorum::{PG_MEMBERS, READ_QUORUM, WRITE_QUORUM};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout};
use borealis_quorum::recovery::{self, MemberReport};
use borealis_quorum::QuorumWriter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safekeeper::acceptor::{AppendVerdict, HelloVerdict, Link, TenantAcceptor};
use std::collections::BTreeMap;

const SEG: SegmentId = SegmentId(0);

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub steps: usize,
    /// Per-step probability (in 1/1000) of a fault event.
    pub fault_per_mille: u32,
    /// Keep the whole trace (for replay), not only its tail.
    pub trace_all: bool,
    /// A planted bug, for the test that the checkers are not vacuous: members acknowledge the
    /// highest LSN they hold instead of their SCL (counting records above a hole).
    pub ack_end_lsn: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            steps: 400,
            fault_per_mille: 30,
            trace_all: false,
            ack_end_lsn: false,
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
}

/// A safekeeper: durable state (what survives a crash) and what was appended but not fsynced.
struct Member {
    /// The planted bug of [`SimConfig::ack_end_lsn`].
    ack_end_lsn: bool,
    up: bool,
    partitioned: bool,
    /// Durable: the epoch and its start, and the records fsynced.
    epoch: u64,
    epoch_start: Lsn,
    history: Vec<EpochStart>,
    durable: BTreeMap<Lsn, RedoRecord>,
    /// Appended, not yet fsynced: lost on a crash.
    unsynced: Vec<RedoRecord>,
    acceptor: TenantAcceptor,
}

impl Member {
    fn new() -> Self {
        Self {
            ack_end_lsn: false,
            up: true,
            partitioned: false,
            epoch: 0,
            epoch_start: Lsn::INVALID,
            history: Vec::new(),
            durable: BTreeMap::new(),
            unsynced: Vec::new(),
            acceptor: TenantAcceptor::new(Vec::new()),
        }
    }

    fn reachable(&self) -> bool {
        self.up && !self.partitioned
    }

    fn scl(&self) -> Lsn {
        self.acceptor.segment(SEG).map_or(Lsn::INVALID, |c| c.scl())
    }

    /// Rebuilds the in-memory acceptor from durable state, as a restart does.
    fn restart(&mut self) {
        self.unsynced.clear();
        self.acceptor = TenantAcceptor::new(self.history.clone());
        for r in self.durable.values() {
            let chain = self.acceptor.segment_mut(SEG);
            if chain.would_accept(r.lsn) {
                chain.insert(
                    r.lsn,
                    Link {
                        prev_lsn_segment: r.prev_lsn_segment,
                        is_cpl: r.is_cpl,
                    },
                );
            }
        }
        self.up = true;
    }

    /// Hello from a writer: fence, or align the log to the writer's history and install its
    /// epoch durably before answering.
    fn hello(&mut self, history: &[EpochStart]) -> Result<(), u64> {
        let last = *history
            .last()
            .expect("a writer's history ends with its own epoch");
        match self.acceptor.judge_hello(last.epoch, last.start, history) {
            HelloVerdict::Same => Ok(()),
            HelloVerdict::NewEpoch { truncate_above } => {
                let keep = truncate_above;
                self.epoch = last.epoch;
                self.epoch_start = last.start;
                self.history = history.to_vec();
                self.durable.retain(|lsn, _| *lsn <= keep);
                self.unsynced.retain(|r| r.lsn <= keep);
                self.acceptor.begin_epoch(history.to_vec(), keep);
                Ok(())
            }
            HelloVerdict::Fenced { current } => Err(current),
            HelloVerdict::Invalid { reason } => {
                panic!("writer sent an inconsistent Hello: {reason}")
            }
        }
    }

    /// An append arrives: judged by the acceptor, buffered until the next fsync.
    fn append(&mut self, epoch: u64, records: &[RedoRecord]) -> Result<(), u64> {
        match self.acceptor.judge_append(epoch) {
            AppendVerdict::Accept => {
                let plan = self
                    .acceptor
                    .plan_append(SEG, records.iter().map(|r| r.lsn));
                for i in plan.write {
                    if !self.unsynced.iter().any(|u| u.lsn == records[i].lsn) {
                        self.unsynced.push(records[i].clone());
                    }
                }
                Ok(())
            }
            AppendVerdict::Fenced { current } | AppendVerdict::HelloFirst { current } => {
                Err(current)
            }
        }
    }

    /// fsync: everything appended becomes durable and joins the chain. Returns the SCL.
    fn fsync(&mut self) -> Lsn {
        for r in std::mem::take(&mut self.unsynced) {
            let chain = self.acceptor.segment_mut(SEG);
            if chain.would_accept(r.lsn) {
                chain.insert(
                    r.lsn,
                    Link {
                        prev_lsn_segment: r.prev_lsn_segment,
                        is_cpl: r.is_cpl,
                    },
                );
                self.durable.insert(r.lsn, r);
            }
        }
        if self.ack_end_lsn {
            return self
                .acceptor
                .segment(SEG)
                .map_or(Lsn::INVALID, |c| c.end_lsn());
        }
        self.scl()
    }
}

/// An MTR as the client sees it.
#[derive(Clone, Debug)]
struct Mtr {
    records: Vec<RedoRecord>,
    commit: Lsn,
}

struct Writer {
    qw: QuorumWriter,
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
}

pub fn run(seed: u64, config: &SimConfig) -> SimOutcome {
    let mut w = World {
        rng: StdRng::seed_from_u64(seed),
        members: (0..PG_MEMBERS)
            .map(|_| Member {
                ack_end_lsn: config.ack_end_lsn,
                ..Member::new()
            })
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
        if self.rng.random_range(0..1000) < fault_per_mille {
            self.fault(step);
        }
        match self.rng.random_range(0..10) {
            0..=2 => self.client_write(step),
            3..=5 => self.deliver(step),
            6 => self.fsync_some(),
            7 => self.gossip(step),
            8 => self.reconnect(step),
            _ => self.ensure_writer(step),
        }
    }

    /// The gateway's commit timeout: a serving writer whose VDL has not moved for a while with
    /// records outstanding is failed, and the next request recovers (bounds every wait).
    fn commit_timeout(&mut self, step: usize) {
        let Some(c) = self.current else { return };
        let w = &mut self.writers[c];
        if w.qw.tracker().outstanding() == 0 || w.qw.vdl() > w.vdl_seen {
            w.vdl_seen = w.qw.vdl();
            w.stalled_steps = 0;
            return;
        }
        w.stalled_steps += 1;
        if w.stalled_steps > 80 {
            w.fenced = true;
            self.current = None;
            self.log(format!(
                "{step}: writer {c} failed: commit timeout (vdl stuck at {})",
                self.writers[c].qw.vdl()
            ));
        }
    }

    fn fault(&mut self, step: usize) {
        let m = self.rng.random_range(0..PG_MEMBERS);
        match self.rng.random_range(0..12) {
            0..=2 => {
                if self.members[m].up {
                    self.members[m].up = false;
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
                    self.members[i].up = false;
                }
                self.log(format!("{step}: AZ {} lost", (b'a' + az as u8) as char));
            }
            8 => {
                let az = m / 2;
                let extra = (2 * az + 2 + self.rng.random_range(0..4)) % PG_MEMBERS;
                for i in [2 * az, 2 * az + 1, extra] {
                    self.members[i].up = false;
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
        let w = &mut self.writers[wi];
        match w.qw.submit(changes) {
            Ok(shipped) => {
                let records: Vec<RedoRecord> =
                    shipped.segments.into_iter().flat_map(|(_, r)| r).collect();
                let mtr = Mtr {
                    records: records.clone(),
                    commit: shipped.commit_lsn,
                };
                w.mtrs.push(mtr);
                let epoch = w.epoch;
                let targets: Vec<usize> = (0..PG_MEMBERS).filter(|&m| w.connected[m]).collect();
                for to in targets {
                    self.net.push(Msg::Append {
                        to,
                        epoch,
                        records: records.clone(),
                        writer: wi,
                    });
                }
                let (vdl, reachable) = (w.qw.vdl(), w.qw.reachable().len());
                self.log(format!(
                    "{step}: writer {wi} ships MTR ending {} (vdl {vdl}, reachable {reachable})",
                    shipped.commit_lsn
                ));
            }
            Err(e) => self.log(format!("{step}: writer {wi} refused MTR: {e}")),
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
                w.qw.member_down(to);
                continue;
            }
            match msg {
                Msg::Append {
                    to,
                    epoch,
                    records,
                    writer,
                } => {
                    if !self.members[to].reachable() {
                        continue;
                    }
                    if let Err(current) = self.members[to].append(epoch, &records) {
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
                Msg::Ack { from, scl, writer } => {
                    let w = &mut self.writers[writer];
                    if w.fenced || !w.connected[from] {
                        continue;
                    }
                    w.qw.on_ack(from, SEG, scl);
                    let vdl = w.qw.vdl();
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

    fn fsync_some(&mut self) {
        for m in 0..PG_MEMBERS {
            if self.members[m].up && self.rng.random_bool(0.6) {
                let scl = self.members[m].fsync();
                if self.members[m].reachable() {
                    for (wi, w) in self.writers.iter().enumerate() {
                        if !w.fenced && w.connected[m] && w.epoch == self.members[m].epoch {
                            self.net.push(Msg::Ack {
                                from: m,
                                scl,
                                writer: wi,
                            });
                        }
                    }
                }
            }
        }
    }

    /// A member copies what it misses from a peer of the same epoch (exact-epoch rule).
    fn gossip(&mut self, step: usize) {
        let m = self.rng.random_range(0..PG_MEMBERS);
        let p = self.rng.random_range(0..PG_MEMBERS);
        if m == p || !self.members[m].reachable() || !self.members[p].reachable() {
            return;
        }
        if self.members[m].epoch != self.members[p].epoch {
            return;
        }
        let (mine, theirs) = (self.members[m].scl(), self.members[p].scl());
        if theirs <= mine {
            return;
        }
        let copy: Vec<RedoRecord> = self.members[p]
            .durable
            .range(Lsn(mine.0 + 1)..=theirs)
            .map(|(_, r)| r.clone())
            .collect();
        let epoch = self.members[m].epoch;
        if self.members[m].append(epoch, &copy).is_ok() {
            self.log(format!(
                "{step}: member {m} copies {} records from {p} ({mine}..{theirs})",
                copy.len()
            ));
        }
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
                if w.connected[m] && !reachable {
                    w.connected[m] = false;
                    w.qw.member_down(m);
                } else if !w.connected[m] && reachable && self.rng.random_bool(0.7) {
                    let history = w.history.clone();
                    match self.members[m].hello(&history) {
                        Ok(()) => {
                            let w = &mut self.writers[wi];
                            w.connected[m] = true;
                            w.qw.member_up(m);
                            let scl = self.members[m].scl();
                            w.qw.on_ack(m, SEG, scl);
                        }
                        Err(current) => {
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
                let mb = &self.members[m];
                let segs = mb
                    .acceptor
                    .segment(SEG)
                    .map(|c| vec![(SEG, c.scl(), c.last_cpl())])
                    .unwrap_or_default();
                MemberReport {
                    member: m,
                    epoch: mb.epoch,
                    history: mb.history.clone(),
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
        // Install the epoch on every reachable member.
        let mut installed = Vec::new();
        for &m in &reachable {
            if self.members[m].hello(&plan.history).is_ok() {
                installed.push(m);
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
        // real driver waits for this; here we let gossip run to completion, bounded).
        for _ in 0..PG_MEMBERS * 2 {
            let scls: Vec<(usize, SegmentId, Lsn)> = installed
                .iter()
                .map(|&m| (m, SEG, self.members[m].scl()))
                .collect();
            if recovery::is_durable(&plan, &scls) {
                break;
            }
            for &m in &installed {
                for &p in &installed {
                    if self.members[p].scl() > self.members[m].scl() {
                        let from = self.members[m].scl();
                        let copy: Vec<RedoRecord> = self.members[p]
                            .durable
                            .range(Lsn(from.0 + 1)..=self.members[p].scl())
                            .map(|(_, r)| r.clone())
                            .collect();
                        let e = self.members[m].epoch;
                        let _ = self.members[m].append(e, &copy);
                        self.members[m].fsync();
                    }
                }
            }
        }
        let scls: Vec<(usize, SegmentId, Lsn)> = installed
            .iter()
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
        let mut qw = QuorumWriter::new(
            plan.epoch,
            plan.vdl,
            plan.segment_tails.clone(),
            SegmentLayout::default(),
            64,
        );
        let mut connected = [false; PG_MEMBERS];
        for &m in &installed {
            qw.member_up(m);
            connected[m] = true;
        }
        self.writers.push(Writer {
            qw,
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
            let vdl = w.qw.vdl();
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
        //    survive crashes, and truncation never reaches below a recovered VDL.
        for mtr in &self.acked {
            let holders = self
                .members
                .iter()
                .filter(|x| {
                    mtr.records.iter().all(|r| x.durable.get(&r.lsn) == Some(r))
                        && x.scl() >= mtr.commit
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
