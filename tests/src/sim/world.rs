mod gossip;
mod member;
mod pageserver;
mod recovery;

use borealis_core::history::EpochStart;
use borealis_core::placement::{choose_group, Group};
use borealis_core::quorum::{READ_QUORUM, WRITE_QUORUM};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout, TenantId};
use borealis_quorum::acceptor::{PlantedBug, Source};
use borealis_quorum::session::{Event, WriterSession};
use borealis_quorum::WriteError;
use member::Member;
use pageserver::{Checkpoint, Follower};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The one tenant simulated (gossip's summaries name it; placement hashes it).
const TENANT: TenantId = TenantId(0x5eed_0000_0000_0001);
/// The writer session's acknowledgement timeout, in simulated time (one step is a millisecond):
/// well below the commit timeout (80 steps without VDL progress), as in the gateway.
const MEMBER_ACK_TIMEOUT: Duration = Duration::from_millis(30);
/// Pages per segment: tiny, so that three-page MTRs often span segments.
const PAGES_PER_SEGMENT: u32 = 4;
/// The pools a seed runs on: six safekeepers (every group is the pool) or nine (three per AZ,
/// each segment's group two of each AZ).
const POOL_OF_SIX: [u8; 6] = [0, 0, 1, 1, 2, 2];
const POOL_OF_NINE: [u8; 9] = [0, 0, 0, 1, 1, 1, 2, 2, 2];

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
    /// The hole `safekeeper::rebuild` closes, opened again: a member whose disk was replaced
    /// answers `GetState` at once, for the test that the checkers catch it.
    pub replaced_disk_testifies: bool,
    /// The hole RFC 0015 closes, opened again: members acknowledge to every connection that
    /// appended, whatever its epoch.
    pub acks_ignore_epoch: bool,
    /// A second gateway taking the tenant over while its writer still serves, as several
    /// gateways would (RFC 0014): the recovery fences and reads the members' states and plans
    /// at one step, and installs its epoch some steps later, the old writer serving in between.
    /// Off by default (one gateway never does this).
    pub takeover_while_serving: bool,
    /// The hole RFC 0014 §2 closes, opened again (the planted bug `ReadBeforeFence` of its §9):
    /// recovery plans from `GetState` alone, without promising its epoch first, so a writer
    /// still serving may make durable what the plan does not hold.
    pub read_before_fence: bool,
    /// RFC 0017, as the gateway's pool does it: a settled writer may retire at any step,
    /// leaving a resume point; the next writer resumes its epoch from there (a `Hello` in that
    /// epoch, a write quorum of every group holding data, any refusal failing the resume)
    /// instead of recovering. On by default.
    pub resume_idle_writers: bool,
    /// The planted bug of RFC 0017: a writer whose VDL is below its last LSN retires with a
    /// resume point all the same, and its successor resumes at that last LSN, counting records
    /// that never became durable as durable.
    pub resume_unsettled: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            steps: 400,
            fault_per_mille: 30,
            trace_all: false,
            planted: None,
            replaced_disk_testifies: false,
            acks_ignore_epoch: false,
            takeover_while_serving: false,
            read_before_fence: false,
            resume_idle_writers: true,
            resume_unsettled: false,
        }
    }
}

#[derive(Debug)]
pub struct SimOutcome {
    pub seed: u64,
    pub trace: Vec<String>,
    pub violation: Option<String>,
    /// The pool's size (6 or 9) and the volume's segments (1 to 4) of this seed.
    pub pool_size: usize,
    pub segments: usize,
    pub acked_mtrs: usize,
    /// Acknowledged MTRs whose records went to two groups or more.
    pub acked_multi_group: usize,
    pub recoveries: usize,
    /// Recoveries that cut off records some source held above the volume's end (a commit torn
    /// between groups, or never finished).
    pub recovery_cuts: usize,
    /// Recoveries whose anchor a source's trim point raised (its log was trimmed past every VDL
    /// a member had been told).
    pub anchors_raised: usize,
    /// Commits torn on purpose: one group got its part, then the writer crashed.
    pub torn_commits: usize,
    pub fenced_appends: usize,
    /// Members that crashed between two actions of one input (a Hello's control store and its
    /// truncation, say) and were restarted from what was durable.
    pub crashes_mid_input: usize,
    /// Writers that entered limbo (RFC 0004), left it because their commits settled, and
    /// commits refused while in limbo.
    pub limbo_entered: usize,
    pub limbo_settled: usize,
    pub limbo_refusals: usize,
    /// MTRs refused `read_only` because a group they touch lost its quorum while the writer was
    /// not in limbo (other groups writable).
    pub group_refusals: usize,
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
    /// Batches of records the followers (pageservers) applied, reads refused because the
    /// member's log was trimmed past it, times one attached again from the checkpoint, and
    /// times a read quorum proved a segment complete up to a target it holds no record at.
    pub follower_batches: usize,
    pub follower_trim_refusals: usize,
    pub follower_attaches: usize,
    pub follower_proofs: usize,
    /// Members whose disk was replaced (restarted empty), and those that became witnesses again.
    pub disks_replaced: usize,
    pub disks_rebuilt: usize,
    /// With [`SimConfig::takeover_while_serving`]: takeovers installed after the old writer
    /// served on between their plan and their `Hello`, MTRs the old writer acknowledged to
    /// clients in between, and acks in a newer epoch that told a writer it was superseded.
    pub takeovers: usize,
    pub acked_during_takeover: usize,
    pub superseded_by_ack: usize,
    /// Writers that resumed a retired writer's epoch instead of recovering (RFC 0017).
    pub resumes: usize,
}

/// An MTR as the client sees it, with its records by segment.
#[derive(Clone, Debug)]
struct Mtr {
    parts: Vec<(SegmentId, Vec<RedoRecord>)>,
    commit: Lsn,
}

impl Mtr {
    fn records(&self) -> impl Iterator<Item = &RedoRecord> {
        self.parts.iter().flat_map(|(_, r)| r)
    }
}

struct Writer {
    /// The gateway's writer session (quorum writer, limbo, acknowledgement timeouts), fed the
    /// simulated time.
    session: WriterSession,
    epoch: u64,
    /// Pool nodes this writer has a live connection to (said Hello to in this connection).
    connected: Vec<bool>,
    fenced: bool,
    mtrs: Vec<Mtr>,
    /// `mtrs[..acked_upto]` were acknowledged to clients.
    acked_upto: usize,
    last_vdl: Lsn,
    /// The VDL the first newer epoch started from (checker 4): a superseded writer may still
    /// learn that records below it are durable, but never anything above it.
    vdl_when_superseded: Option<Lsn>,
    history: Vec<EpochStart>,
    vdl_seen: Lsn,
    stalled_steps: u32,
    /// `(node, segment)` whose acknowledgements this writer's connection gets, as the service
    /// subscribes a connection on its first append of a segment (even a refused one).
    subscribed: BTreeSet<(usize, SegmentId)>,
}

enum Msg {
    Append {
        to: usize,
        epoch: u64,
        vdl: Lsn,
        segment: SegmentId,
        records: Vec<RedoRecord>,
        writer: usize,
    },
    Ack {
        from: usize,
        segment: SegmentId,
        scl: Lsn,
        /// The member's ack epoch when it sent this (installed or promised).
        epoch: u64,
        writer: usize,
    },
}

impl Msg {
    /// The connection a message travels on: (writer, node, direction). One connection per
    /// node carries every segment the node holds.
    fn link(&self) -> (usize, usize, bool) {
        match self {
            Msg::Append { to, writer, .. } => (*writer, *to, true),
            Msg::Ack { from, writer, .. } => (*writer, *from, false),
        }
    }
}

struct World {
    rng: StdRng,
    /// The pool: node `i` is in AZ `pool_azs[i]`.
    pool_azs: Vec<u8>,
    layout: SegmentLayout,
    /// Every segment of the volume, with its group (rendezvous hashing over the pool).
    groups: BTreeMap<SegmentId, Group>,
    members: Vec<Member>,
    writers: Vec<Writer>,
    /// Index of the current writer in `writers`, if any is serving.
    current: Option<usize>,
    net: Vec<Msg>,
    acked: Vec<Mtr>,
    acked_multi_group: usize,
    trace: Vec<String>,
    /// The run's switches (`trace_all`, the holes opened on purpose), as given.
    config: SimConfig,
    recoveries: usize,
    recovery_cuts: usize,
    anchors_raised: usize,
    torn_commits: usize,
    fenced_appends: usize,
    /// A violation found outside `check` (at recovery time).
    violation: Option<String>,
    crashes_mid_input: usize,
    limbo_entered: usize,
    limbo_settled: usize,
    limbo_refusals: usize,
    group_refusals: usize,
    ack_timeouts: usize,
    epochs_adopted: usize,
    /// Each segment's log as checkpointed to object storage; every member's trim point of the
    /// segment is at or below it.
    checkpoints_of: BTreeMap<SegmentId, Checkpoint>,
    checkpoints: usize,
    trims: usize,
    gossip_trim_refusals: usize,
    trim_adoptions: usize,
    /// A pageserver following each segment.
    followers: BTreeMap<SegmentId, Follower>,
    follower_batches: usize,
    follower_trim_refusals: usize,
    follower_attaches: usize,
    follower_proofs: usize,
    /// The member whose disk was replaced (it starts again empty), at most one per seed (a second
    /// disk lost in the same group before the first is rebuilt is two failures of data, outside
    /// DESIGN.md §6), with the SCL per segment it had acknowledged when it lost them. Checker 2
    /// counts it as the copy it lost of a part at or below that SCL, never above: what becomes
    /// durable after the loss must be on four real copies (the writer takes a reconnecting
    /// member's SCL from its HelloOk). Checkers 3 and 6, what recovery and the followers find,
    /// stay exact.
    rebuilding: Option<(usize, BTreeMap<SegmentId, Lsn>)>,
    disks_replaced: usize,
    /// Replaced members that became witnesses again (`safekeeper::rebuild`).
    disks_rebuilt: usize,
    takeovers: usize,
    acked_during_takeover: usize,
    superseded_by_ack: usize,
    resumes: usize,
    /// With [`SimConfig::takeover_while_serving`]: the takeover planned but not yet installed.
    pending_takeover: Option<recovery::PlannedRecovery>,
    /// With [`SimConfig::resume_idle_writers`]: where the last writer retired settled.
    resume_point: Option<recovery::ResumePoint>,
}

pub fn run(seed: u64, config: &SimConfig) -> SimOutcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let pool_azs = if rng.random_bool(0.5) {
        POOL_OF_NINE.to_vec()
    } else {
        POOL_OF_SIX.to_vec()
    };
    let segments = rng.random_range(1..=4u32);
    let groups: BTreeMap<SegmentId, Group> = (0..segments)
        .map(|s| (SegmentId(s), choose_group(TENANT, SegmentId(s), &pool_azs)))
        .collect();
    let mut w = World {
        rng,
        layout: SegmentLayout::new(PAGES_PER_SEGMENT),
        members: (0..pool_azs.len())
            .map(|_| Member::new(config.planted))
            .collect(),
        writers: Vec::new(),
        current: None,
        net: Vec::new(),
        acked: Vec::new(),
        acked_multi_group: 0,
        trace: Vec::new(),
        config: config.clone(),
        pending_takeover: None,
        resume_point: None,
        recoveries: 0,
        recovery_cuts: 0,
        anchors_raised: 0,
        torn_commits: 0,
        fenced_appends: 0,
        violation: None,
        crashes_mid_input: 0,
        limbo_entered: 0,
        limbo_settled: 0,
        limbo_refusals: 0,
        group_refusals: 0,
        ack_timeouts: 0,
        epochs_adopted: 0,
        checkpoints_of: groups.keys().map(|&s| (s, Checkpoint::default())).collect(),
        checkpoints: 0,
        trims: 0,
        gossip_trim_refusals: 0,
        trim_adoptions: 0,
        followers: groups.keys().map(|&s| (s, Follower::default())).collect(),
        follower_batches: 0,
        follower_trim_refusals: 0,
        follower_attaches: 0,
        follower_proofs: 0,
        rebuilding: None,
        disks_replaced: 0,
        disks_rebuilt: 0,
        takeovers: 0,
        acked_during_takeover: 0,
        superseded_by_ack: 0,
        resumes: 0,
        pool_azs,
        groups,
    };
    let groups: Vec<String> = w
        .groups
        .iter()
        .map(|(s, g)| format!("{s}: {:?}", g.0))
        .collect();
    w.log(format!(
        "pool of {} ({:?}), {} segments of {PAGES_PER_SEGMENT} pages; groups {}",
        w.pool_azs.len(),
        w.pool_azs,
        w.groups.len(),
        groups.join(", ")
    ));
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
        pool_size: w.pool_azs.len(),
        segments: w.groups.len(),
        acked_mtrs: w.acked.len(),
        acked_multi_group: w.acked_multi_group,
        recoveries: w.recoveries,
        recovery_cuts: w.recovery_cuts,
        anchors_raised: w.anchors_raised,
        torn_commits: w.torn_commits,
        fenced_appends: w.fenced_appends,
        crashes_mid_input: w.crashes_mid_input,
        limbo_entered: w.limbo_entered,
        limbo_settled: w.limbo_settled,
        limbo_refusals: w.limbo_refusals,
        group_refusals: w.group_refusals,
        ack_timeouts: w.ack_timeouts,
        epochs_adopted: w.epochs_adopted,
        checkpoints: w.checkpoints,
        trims: w.trims,
        gossip_trim_refusals: w.gossip_trim_refusals,
        trim_adoptions: w.trim_adoptions,
        follower_batches: w.follower_batches,
        follower_trim_refusals: w.follower_trim_refusals,
        follower_attaches: w.follower_attaches,
        follower_proofs: w.follower_proofs,
        disks_replaced: w.disks_replaced,
        disks_rebuilt: w.disks_rebuilt,
        takeovers: w.takeovers,
        acked_during_takeover: w.acked_during_takeover,
        superseded_by_ack: w.superseded_by_ack,
        resumes: w.resumes,
    }
}

impl World {
    fn log(&mut self, s: String) {
        self.trace.push(s);
        if !self.config.trace_all && self.trace.len() > 200 {
            self.trace.drain(..100);
        }
    }

    /// The group of `segment` (every segment of the volume has one).
    fn group(&self, segment: SegmentId) -> Group {
        self.groups[&segment]
    }

    /// A segment of the volume, at random.
    fn some_segment(&mut self) -> SegmentId {
        SegmentId(self.rng.random_range(0..self.groups.len() as u32))
    }

    fn step(&mut self, step: usize, fault_per_mille: u32) {
        self.commit_timeout(step);
        self.ack_timeouts(step);
        // (Draws from the RNG only when on, so the default seeds keep their traces.)
        if self.config.takeover_while_serving {
            if self.pending_takeover.is_some() {
                if self.rng.random_bool(0.1) {
                    self.finish_takeover(step);
                }
            } else if self.rng.random_bool(0.01) {
                self.start_takeover(step);
            }
        }
        if self.config.resume_idle_writers && self.rng.random_bool(0.005) {
            self.retire_idle(step);
        }
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

    /// The writer session's acknowledgement timeouts: a node that owes an acknowledgement too
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
                        "{step}: writer {wi} drops node {member}: no ack for {sent} (acked {acked})"
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

    /// The nodes of AZ `az`.
    fn nodes_of_az(&self, az: u8) -> Vec<usize> {
        (0..self.pool_azs.len())
            .filter(|&n| self.pool_azs[n] == az)
            .collect()
    }

    fn fault(&mut self, step: usize) {
        let n = self.members.len();
        let m = self.rng.random_range(0..n);
        match self.rng.random_range(0..14) {
            13 => {
                if self.disks_replaced == 0 {
                    let held = self.members[m].scls().into_iter().collect();
                    self.members[m].wipe(!self.config.replaced_disk_testifies);
                    self.rebuilding = Some((m, held));
                    self.disks_replaced += 1;
                    self.log(format!(
                        "{step}: node {m}'s disk replaced (down; it starts again empty)"
                    ));
                }
            }
            0..=2 => {
                if self.members[m].up {
                    self.members[m].crash();
                    self.log(format!(
                        "{step}: crash node {m} (loses {} unsynced)",
                        self.members[m].unsynced.len()
                    ));
                }
            }
            3..=5 => {
                if !self.members[m].up {
                    self.members[m].restart();
                    self.log(format!("{step}: restart node {m}"));
                }
            }
            6 => {
                self.members[m].partitioned = !self.members[m].partitioned;
                let p = self.members[m].partitioned;
                self.log(format!(
                    "{step}: node {m} {}",
                    if p { "partitioned" } else { "healed" }
                ));
            }
            7 => {
                // A whole AZ: every group loses its two members there.
                let az = self.pool_azs[m];
                for i in self.nodes_of_az(az) {
                    self.members[i].crash();
                }
                self.log(format!("{step}: AZ {} lost", (b'a' + az) as char));
            }
            8 => {
                // An AZ and one more node: the groups that node is a member of lose their write
                // quorum, the others (in a pool of nine) keep theirs.
                let az = self.pool_azs[m];
                let others: Vec<usize> = (0..n).filter(|&i| self.pool_azs[i] != az).collect();
                let extra = others[self.rng.random_range(0..others.len())];
                for i in self.nodes_of_az(az) {
                    self.members[i].crash();
                }
                self.members[extra].crash();
                self.log(format!(
                    "{step}: AZ {} + node {extra} lost",
                    (b'a' + az) as char
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
            11 => self.tear_commit(step),
            _ => {
                // Zombie: the writer keeps running but the gateway starts a new one.
                if let Some(c) = self.current.take() {
                    self.log(format!("{step}: writer {c} becomes a zombie"));
                }
            }
        }
        // Bring everyone back now and then, so histories do not end in a dead cluster.
        let dead_group = self
            .groups
            .values()
            .any(|g| g.0.iter().filter(|&&i| self.members[i].up).count() < READ_QUORUM);
        if dead_group && self.rng.random_bool(0.5) {
            for i in 0..n {
                if !self.members[i].up {
                    self.members[i].restart();
                }
            }
            self.log(format!("{step}: all nodes restarted"));
        }
    }

    /// A commit torn between groups: the current writer's last MTR, if it spans segments, reaches
    /// one segment's group whole (delivered and fsynced), then the writer crashes before anything
    /// else of it is delivered.
    fn tear_commit(&mut self, step: usize) {
        let Some(c) = self.current else { return };
        let Some(last) = self.writers[c].mtrs.last() else {
            return;
        };
        if last.parts.len() < 2 {
            return;
        }
        let (segment, commit) = (last.parts[0].0, last.commit);
        let part: BTreeSet<Lsn> = last.parts[0].1.iter().map(|r| r.lsn).collect();
        // Every message on the writer's connections to the segment's group up to the one that
        // carries the part, in order (TCP).
        let mut delivered = Vec::new();
        for node in self.group(segment).0 {
            let queued: Vec<usize> = (0..self.net.len())
                .filter(|&i| self.net[i].link() == (c, node, true))
                .collect();
            let Some(&upto) = queued.iter().find(|&&i| {
                matches!(&self.net[i], Msg::Append { records, .. }
                    if records.iter().any(|r| part.contains(&r.lsn)))
            }) else {
                continue;
            };
            let mut msgs: Vec<Msg> = queued
                .iter()
                .filter(|&&i| i <= upto)
                .rev()
                .map(|&i| self.net.remove(i))
                .collect();
            msgs.reverse();
            delivered.extend(msgs);
        }
        if delivered.is_empty() {
            return;
        }
        for msg in delivered {
            if let Msg::Append {
                to,
                epoch,
                vdl,
                segment,
                records,
                writer,
            } = msg
            {
                if self.members[to].reachable() {
                    self.writers[writer].subscribed.insert((to, segment));
                    // Refusals (fenced) change nothing: the writer dies next anyway.
                    let _ =
                        self.members[to].append(segment, Source::Writer { epoch, vdl }, &records);
                    if self.members[to].sync() {
                        self.send_acks(to);
                    }
                }
            }
        }
        self.writers[c].fenced = true;
        self.current = None;
        self.net
            .retain(|msg| !matches!(msg, Msg::Append { writer, .. } if *writer == c));
        self.torn_commits += 1;
        self.log(format!(
            "{step}: writer {c} crashed after MTR ending {commit} reached segment {segment}'s group only"
        ));
    }

    /// The current writer (and zombies, sometimes) submit an MTR over a few random pages, which
    /// may lie in several segments.
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
        let page_count = self.groups.len() as u32 * PAGES_PER_SEGMENT;
        // Each record's body names its writer and a per-writer counter, so a stale record of
        // another writer at the same LSN can never pass for the right one.
        let changes: Vec<(PageNo, RedoBody)> = (0..pages)
            .map(|i| {
                let p = PageNo(self.rng.random_range(0..page_count));
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
        let shipped = match w.session.commit(changes, now) {
            Ok(_) if in_limbo => {
                self.violation = Some(format!(
                    "writer {wi} shipped an MTR while in limbo (vdl {})",
                    w.session.vdl()
                ));
                return;
            }
            Ok(shipped) => shipped,
            Err(e) => {
                if in_limbo {
                    self.limbo_refusals += 1;
                } else if matches!(e, WriteError::ReadOnly { .. })
                    && self
                        .groups
                        .keys()
                        .any(|&s| w.session.writer().reachable_in(s) >= WRITE_QUORUM)
                {
                    // Refused for one group while another is writable.
                    self.group_refusals += 1;
                }
                self.log(format!("{step}: writer {wi} refused MTR: {e}"));
                return;
            }
        };
        let (epoch, vdl) = (w.epoch, w.session.vdl());
        // Each segment's records go to the nodes of its group this writer is connected to.
        let mut sends: Vec<(usize, SegmentId, Vec<RedoRecord>)> = Vec::new();
        for (segment, records) in &shipped.segments {
            let group = self.groups[segment];
            for node in group.0 {
                if w.connected[node] {
                    sends.push((node, *segment, records.clone()));
                }
            }
        }
        for (node, _, records) in &sends {
            let last = records.last().expect("a part has records").lsn;
            w.session.sent(*node, last, now);
        }
        w.mtrs.push(Mtr {
            parts: shipped.segments,
            commit: shipped.commit_lsn,
        });
        for (to, segment, records) in sends {
            self.net.push(Msg::Append {
                to,
                epoch,
                vdl,
                segment,
                records,
                writer: wi,
            });
        }
        let w = &self.writers[wi];
        let parts: Vec<String> = w.mtrs[w.mtrs.len() - 1]
            .parts
            .iter()
            .map(|(s, r)| format!("{s}: {:?}", r.iter().map(|r| r.lsn.0).collect::<Vec<_>>()))
            .collect();
        self.log(format!(
            "{step}: writer {wi} ships MTR ending {} ({}) (vdl {vdl}, reachable {})",
            shipped.commit_lsn,
            parts.join("; "),
            w.session.writer().reachable().len()
        ));
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
                // sees the node go away and says Hello again later.
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
                    segment,
                    records,
                    writer,
                } => {
                    if !self.members[to].reachable() {
                        continue;
                    }
                    self.writers[writer].subscribed.insert((to, segment));
                    match self.members[to].append(segment, Source::Writer { epoch, vdl }, &records)
                    {
                        Ok(true) => self.send_acks(to),
                        Ok(false) => {}
                        Err(current) => {
                            self.fenced_appends += 1;
                            let w = &mut self.writers[writer];
                            if !w.fenced {
                                w.fenced = true;
                                self.log(format!(
                                    "{step}: writer {writer} fenced by node {to} (epoch {current})"
                                ));
                            }
                        }
                    }
                }
                Msg::Ack {
                    from,
                    segment,
                    scl,
                    epoch,
                    writer,
                } => {
                    let w = &mut self.writers[writer];
                    if w.fenced || !w.connected[from] {
                        continue;
                    }
                    let (_, events) = w.session.on_ack(from, segment, epoch, scl, Self::now(step));
                    let vdl = w.session.vdl();
                    if events.iter().any(|e| matches!(e, Event::Superseded { .. })) {
                        // The gateway's member task fails the writer (`members.rs`).
                        w.fenced = true;
                        self.superseded_by_ack += 1;
                    }
                    self.note_events(step, writer, &events);
                    if Some(writer) == self.current {
                        self.acknowledge(writer, vdl);
                    }
                }
            }
        }
    }

    /// Clients get answers only from the serving writer: its MTRs at or below `vdl`.
    fn acknowledge(&mut self, writer: usize, vdl: Lsn) {
        // A writer's MTRs are in LSN order and its VDL only grows: the acknowledged ones are a
        // prefix of them.
        let w = &mut self.writers[writer];
        let newly: Vec<Mtr> = w.mtrs[w.acked_upto..]
            .iter()
            .take_while(|m| m.commit <= vdl)
            .cloned()
            .collect();
        w.acked_upto += newly.len();
        if self.pending_takeover.is_some() {
            self.acked_during_takeover += newly.len();
        }
        self.acked_multi_group += newly
            .iter()
            .filter(|m| {
                let groups: BTreeSet<Group> = m.parts.iter().map(|(s, _)| self.groups[s]).collect();
                groups.len() > 1
            })
            .count();
        self.acked.extend(newly);
    }

    /// Group commits: fsync, then the acceptor publishes, then acks go out.
    fn fsync_some(&mut self) {
        for m in 0..self.members.len() {
            if self.members[m].up && self.rng.random_bool(0.6) && self.members[m].sync() {
                self.send_acks(m);
            }
        }
    }

    /// Node `m` published: it acks its SCL of each segment to every writer connected to it
    /// whose connection appended to that segment, in its ack epoch (installed or promised), as
    /// long as that is not below the writer's — the service's `ack_loop` (RFC 0015, RFC 0014
    /// §2: an ack in a newer epoch tells the writer it is superseded, and counts for nothing).
    /// Without the epoch rule (`SimConfig::acks_ignore_epoch`, the service before RFC 0015) the
    /// ack claims the writer's own epoch, and a zombie writer counts its successor's records.
    fn send_acks(&mut self, m: usize) {
        if !self.members[m].reachable() {
            return;
        }
        let epoch = self.members[m].ack_epoch();
        let scls: Vec<(SegmentId, Lsn)> = self.members[m].scls();
        let ignore_epoch = self.config.acks_ignore_epoch;
        for (wi, w) in self.writers.iter().enumerate() {
            if !w.fenced && w.connected[m] && (ignore_epoch || w.epoch <= epoch) {
                for &(segment, scl) in scls.iter().filter(|(s, _)| w.subscribed.contains(&(m, *s)))
                {
                    self.net.push(Msg::Ack {
                        from: m,
                        segment,
                        scl,
                        epoch: if ignore_epoch { w.epoch } else { epoch },
                        writer: wi,
                    });
                }
            }
        }
    }

    /// A crash point for a barrier's actions: mostly none, sometimes between two of them.
    fn crash_point(&mut self) -> Option<usize> {
        self.rng
            .random_bool(0.05)
            .then(|| self.rng.random_range(0..4))
    }

    /// Writers notice dead connections and reconnect (Hello, per node) to reachable nodes.
    fn reconnect(&mut self, step: usize) {
        for wi in 0..self.writers.len() {
            if self.writers[wi].fenced {
                continue;
            }
            for m in 0..self.members.len() {
                let reachable = self.members[m].reachable();
                let w = &mut self.writers[wi];
                if w.connected[m] && !reachable && self.rng.random_bool(0.5) {
                    // A crashed node's connection breaks (a partitioned one's may not: then
                    // only the acknowledgement timeout counts it out).
                    w.connected[m] = false;
                    let events = w.session.member_lost(m, Self::now(step));
                    self.note_events(step, wi, &events);
                } else if !w.connected[m] && reachable && self.rng.random_bool(0.7) {
                    let history = w.history.clone();
                    let crash = self.crash_point();
                    match self.members[m].hello(&history, crash) {
                        Ok(()) => {
                            let scls: Vec<(SegmentId, Lsn)> = self.members[m].scls();
                            let w = &mut self.writers[wi];
                            w.connected[m] = true;
                            let now = Self::now(step);
                            // What its HelloOk says it holds replaces what it acknowledged
                            // before (a replaced disk's acknowledgements stop counting).
                            let (_, events) = w.session.member_connected(m, None, &scls, now);
                            self.note_events(step, wi, &events);
                        }
                        Err(None) => {
                            self.crashes_mid_input += 1;
                            self.log(format!(
                                "{step}: node {m} crashed inside writer {wi}'s hello"
                            ));
                        }
                        Err(Some(current)) => {
                            self.writers[wi].fenced = true;
                            self.log(format!(
                                "{step}: writer {wi} fenced at hello by node {m} (epoch {current})"
                            ));
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Whether member `n` holds `part` (records of `segment`) whole: in its log, or at or below
    /// its trim point in the segment's checkpoint.
    fn holds_part(&self, n: usize, segment: SegmentId, part: &[RedoRecord]) -> bool {
        let last = part.last().expect("a part has records").lsn;
        let checkpointed = &self.checkpoints_of[&segment].records;
        let x = &self.members[n];
        if x.scl(segment) < last {
            return false;
        }
        let log = x.durable.get(&segment);
        let mut base = None;
        part.iter().all(|r| {
            log.and_then(|l| l.get(&r.lsn)) == Some(r) || {
                let base = *base.get_or_insert_with(|| x.base(segment));
                r.lsn <= base && checkpointed.get(&r.lsn) == Some(r)
            }
        })
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
        // 2. Every acknowledged MTR stays durable, whole, on a write quorum of each group it
        //    touches: fsynced records survive crashes, and truncation never reaches below a
        //    recovered VDL. A member holds the records at or below its trim point in the
        //    segment's checkpoint (object storage). A member whose disk was replaced counts as
        //    the copy it lost of what it held then (`rebuilding`).
        for mtr in &self.acked {
            for (segment, part) in &mtr.parts {
                let group = self.groups[segment];
                // (Counted up to a write quorum: the rest need not be looked at.)
                let holders = group
                    .0
                    .iter()
                    .filter(|&&n| self.holds_part(n, *segment, part))
                    .take(WRITE_QUORUM)
                    .count();
                let last = part.last().expect("a part has records").lsn;
                let lost = match &self.rebuilding {
                    Some((r, held))
                        if group.contains(*r)
                            && held.get(segment).is_some_and(|&scl| scl >= last)
                            && !self.holds_part(*r, *segment, part) =>
                    {
                        1
                    }
                    _ => 0,
                };
                if holders + lost < WRITE_QUORUM {
                    return Err(format!(
                        "acknowledged MTR ending {}: its part in segment {segment} is held whole by only {holders} members of its group",
                        mtr.commit
                    ));
                }
            }
        }
        // 3. (At each recovery, `check_whole_mtrs`: the log it finds is whole MTRs up to its
        //    VDL, which is a consistency point; MTRs, once shipped, stay in `mtrs`.)
        Ok(())
    }
}
