//! A seeded model of one segment through membership changes (RFC 0012 §3–§4), driving the real
//! cores: the placement table's versions (`placement_table`), the joint [`Config`], the writer's
//! [`ConsistencyTracker`] and [`MembershipChange`], and recovery (`volume_recovery`) with the
//! witness rule. It stands in for the protocol simulator until the simulator learns membership
//! changes (the order of work's step 1 ends there): no gossip rounds, trims or pageservers here,
//! one segment, one record per commit.
//!
//! Each seed: a pool of nine safekeepers (three per AZ), the segment's group of six, and a
//! random history of commits (each shipped to the config's voters, some copies lost), acks,
//! hole-filling between nodes of one history, nodes going down and up (at most two at once) or
//! lost for good (their disk gone), changes opened (replace a member by the spare of its AZ),
//! configured, filled, completed or reverted, and writer crashes followed by recovery, which
//! claims the table and resumes a change it finds.
//!
//! Checked after every step and at every recovery:
//! 1. every version of the table follows its predecessor (`check_successor`): never seven
//!    voters, one step at a time;
//! 2. every acknowledged commit is held by a write quorum of the group the newest version reads
//!    (the stable group, or while joint the old group, whose read quorums the joint state keeps);
//!    a copy on a node lost for good still counts (it is the one failure the group absorbs);
//! 3. every recovery finds every acknowledged commit, the same record (epoch) at its LSN.
//!
//! `BOREALIS_MODEL_SEEDS` sets how many seeds run (default 3,000). A planted bug — completing a
//! change before the joining node is filled — must be caught by some seed, so the checkers are
//! not vacuous.

use borealis_core::history::{truncation_point, EpochStart};
use borealis_core::membership::Config;
use borealis_core::placement::{choose_group, choose_replacement};
use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_quorum::membership::{Action, MembershipChange, Outcome, Reason};
use borealis_quorum::placement_table::{SegmentEntry, TableVersion};
use borealis_quorum::recovery::MemberReport;
use borealis_quorum::volume_recovery::{plan_end, plan_sources, Index, IndexEntry};
use borealis_quorum::ConsistencyTracker;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

const T: TenantId = TenantId(0x0de1_0000_0000_0012);
const S: SegmentId = SegmentId(0);
const POOL: [u8; 9] = [0, 0, 0, 1, 1, 1, 2, 2, 2];
const STEPS: usize = 600;

#[derive(Clone, Default)]
struct Node {
    up: bool,
    /// Lost for good: never answers again (its last copies still count for checker 2).
    gone: bool,
    epoch: u64,
    history: Vec<EpochStart>,
    /// LSN → epoch of the writer that wrote the record there.
    log: BTreeMap<u64, u64>,
    known_vdl: Lsn,
    /// The last `Configure` version stored, and the start LSN it named.
    configured: u64,
    start_lsn: Lsn,
}

impl Node {
    fn scl(&self) -> Lsn {
        let mut l = 0;
        while self.log.contains_key(&(l + 1)) {
            l += 1;
        }
        Lsn(l)
    }

    /// A `Hello` of a writer of `epoch` with `history`: drop what that history does not keep.
    fn hello(&mut self, epoch: u64, history: &[EpochStart]) {
        let keep = truncation_point(&self.history, history);
        self.log.retain(|&l, _| Lsn(l) <= keep);
        self.epoch = epoch;
        self.history = history.to_vec();
    }
}

struct Writer {
    epoch: u64,
    history: Vec<EpochStart>,
    tracker: ConsistencyTracker,
    next_lsn: u64,
    /// Serving: the recovered log is durable.
    serving: bool,
    /// The recovery's end: serving waits until a write quorum holds the log up to it.
    recovered_vdl: Lsn,
    change: Option<MembershipChange>,
    /// Nodes that stored `Configure` of the change (the model's own count, for the planted bug).
    configured: BTreeSet<usize>,
}

struct Model {
    rng: StdRng,
    nodes: Vec<Node>,
    table: Vec<TableVersion>,
    writer: Option<Writer>,
    /// Acknowledged commits: LSN → epoch.
    acked: BTreeMap<u64, u64>,
    bug_complete_before_filled: bool,
    stats: Stats,
}

#[derive(Default, Debug)]
struct Stats {
    commits_acked: usize,
    changes_opened: usize,
    completed: usize,
    reverted: usize,
    recoveries: usize,
    recoveries_in_a_change: usize,
}

impl Model {
    fn new(seed: u64, bug: bool) -> Model {
        let group = choose_group(T, S, &POOL);
        let mut nodes = vec![Node::default(); POOL.len()];
        for n in &mut nodes {
            n.up = true;
        }
        let first = TableVersion {
            version: 1,
            writer_epoch: 0,
            segments: BTreeMap::from([(
                S,
                SegmentEntry {
                    config: Config::stable(group),
                    config_version: 1,
                    change: None,
                    pageserver: 0,
                },
            )]),
        };
        TableVersion::empty()
            .check_successor(&first)
            .expect("the first version");
        Model {
            rng: StdRng::seed_from_u64(seed),
            nodes,
            table: vec![first],
            writer: None,
            acked: BTreeMap::new(),
            bug_complete_before_filled: bug,
            stats: Stats::default(),
        }
    }

    fn newest(&self) -> &TableVersion {
        self.table.last().expect("at least one version")
    }

    fn config(&self) -> Config {
        self.newest().segments[&S].config
    }

    fn create(&mut self, next: TableVersion) {
        self.newest()
            .check_successor(&next)
            .unwrap_or_else(|e| panic!("checker 1: {e}"));
        self.table.push(next);
    }

    /// Whether `n` is a witness of the segment: a voter that is not the joining node of a change
    /// still filling (it must hold the segment up to the start LSN its `Configure` named).
    fn witness(&self, n: usize, config: &Config) -> bool {
        if !config.contains(n) {
            return false;
        }
        match config.swap() {
            Some(swap) if swap.r#in == n => {
                let node = &self.nodes[n];
                let change = self.newest().segments[&S].change.expect("joint").0;
                node.configured >= change && node.scl() >= node.start_lsn
            }
            _ => true,
        }
    }

    fn step(&mut self) -> Result<(), String> {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=29 => self.commit(),
            30..=54 => self.ack(),
            55..=74 => self.fill(),
            75..=82 => self.node_down_or_up(),
            83..=86 => self.open_change(),
            87 => self.crash_writer(),
            88 => self.lose_node(),
            _ => self.deliver_configure(),
        }
        if self.writer.is_none() {
            self.recover()?;
        }
        self.check()
    }

    fn commit(&mut self) {
        let Some(w) = self.writer.as_mut().filter(|w| w.serving) else {
            return;
        };
        let lsn = w.next_lsn;
        w.next_lsn += 1;
        w.tracker.record_shipped(Lsn(lsn), S, true);
        let voters = w.tracker.config(S).expect("adopted").voters();
        let (epoch, vdl) = (w.epoch, w.tracker.vdl());
        for n in voters {
            let node = &mut self.nodes[n];
            if node.up && node.epoch == epoch && self.rng.random_bool(0.8) {
                node.log.insert(lsn, epoch);
                node.known_vdl = node.known_vdl.max(vdl);
            }
        }
    }

    fn ack(&mut self) {
        let Some(w) = self.writer.as_ref() else {
            return;
        };
        let voters = w.tracker.config(S).expect("adopted").voters();
        let n = voters[self.rng.random_range(0..voters.len())];
        let node = &self.nodes[n];
        if !node.up || node.epoch != w.epoch {
            return;
        }
        let scl = node.scl();
        let advanced = self
            .writer
            .as_mut()
            .expect("checked")
            .tracker
            .on_ack(n, S, scl);
        if let Some(vdl) = advanced {
            self.acknowledge(vdl);
        }
        let w = self.writer.as_mut().expect("checked");
        let joining = w
            .change
            .as_ref()
            .and_then(|c| c.config().swap())
            .map(|s| s.r#in);
        if joining == Some(n) {
            let actions = w.change.as_mut().expect("a change").on_joining_scl(scl);
            self.run(actions);
        }
    }

    /// The writer's VDL reached `vdl`: its commits up to there are acknowledged to clients.
    fn acknowledge(&mut self, vdl: Lsn) {
        let w = self.writer.as_ref().expect("a writer");
        if !w.serving {
            return;
        }
        for l in 1..=vdl.0 {
            if let std::collections::btree_map::Entry::Vacant(e) = self.acked.entry(l) {
                // The writer's record at l: what the nodes of its epoch hold there (it wrote it,
                // or recovered it).
                let epoch = self
                    .nodes
                    .iter()
                    .filter(|n| n.epoch == w.epoch)
                    .find_map(|n| n.log.get(&l).copied())
                    .expect("a durable record is held");
                e.insert(epoch);
                self.stats.commits_acked += 1;
            }
        }
    }

    /// Hole-filling: an up node copies the records it lacks from a peer of the same history.
    fn fill(&mut self) {
        let a = self.rng.random_range(0..self.nodes.len());
        let b = self.rng.random_range(0..self.nodes.len());
        let (na, nb) = (&self.nodes[a], &self.nodes[b]);
        if a == b || !na.up || !nb.up || na.epoch != nb.epoch || na.history != nb.history {
            return;
        }
        let config = self.config();
        if !config.contains(a) || !config.contains(b) {
            return;
        }
        let upto = nb.scl().0;
        let copy: Vec<(u64, u64)> = nb.log.range(..=upto).map(|(&l, &e)| (l, e)).collect();
        let na = &mut self.nodes[a];
        for (l, e) in copy {
            na.log.entry(l).or_insert(e);
        }
    }

    fn node_down_or_up(&mut self) {
        let n = self.rng.random_range(0..self.nodes.len());
        if self.nodes[n].gone {
            return;
        }
        let down = self.nodes.iter().filter(|x| !x.up).count();
        if self.nodes[n].up {
            if down < 2 {
                self.nodes[n].up = false;
            }
            return;
        }
        self.nodes[n].up = true;
        // The writer reconnects: Hello, what it holds, and the change's Configure.
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let config = *w.tracker.config(S).expect("adopted");
        if !config.contains(n) {
            return;
        }
        self.nodes[n].hello(w.epoch, &w.history);
        w.tracker.set_member_scl(n, S, self.nodes[n].scl());
        if let Some(vdl) = w.tracker.settle() {
            self.acknowledge(vdl);
        }
        let scl = self.nodes[n].scl();
        let w = self.writer.as_mut().expect("checked");
        let swap = w.change.as_ref().and_then(|c| c.config().swap());
        let actions = match (swap, w.change.as_mut()) {
            (Some(swap), Some(change)) if swap.out == n => change.on_leaving_returned(),
            (Some(swap), Some(change)) if swap.r#in == n => change.on_joining_state(scl),
            _ => Vec::new(),
        };
        self.run(actions);
    }

    /// A node lost for good (its disk is gone): at most one per seed, never a second copy of
    /// the same failure.
    fn lose_node(&mut self) {
        if self.nodes.iter().any(|n| n.gone) || self.nodes.iter().any(|n| !n.up) {
            return;
        }
        let config = self.config();
        let voters = config.voters();
        let n = voters[self.rng.random_range(0..voters.len())];
        self.nodes[n].up = false;
        self.nodes[n].gone = true;
        // Losing the joining node ends its change: it is reverted.
        let Some(change) = self.writer.as_mut().and_then(|w| w.change.as_mut()) else {
            return;
        };
        if change.config().swap().map(|s| s.r#in) == Some(n) {
            let actions = change.on_joining_failed();
            self.run(actions);
        }
    }

    fn open_change(&mut self) {
        let Some(w) = self
            .writer
            .as_ref()
            .filter(|w| w.serving && w.change.is_none())
        else {
            return;
        };
        let config = self.config();
        if config.is_joint() {
            return;
        }
        let group = *config.old();
        // The node to replace: one that is lost or down if any, else any member (a drain).
        let out = group
            .0
            .iter()
            .copied()
            .find(|&n| !self.nodes[n].up)
            .unwrap_or(group.0[self.rng.random_range(0..6)]);
        let pool: Vec<(usize, u8)> = POOL
            .iter()
            .copied()
            .enumerate()
            .filter(|&(n, _)| !self.nodes[n].gone)
            .collect();
        let Some(inn) = choose_replacement(T, S, &group, out, &pool) else {
            return;
        };
        let new = group.with_replaced(out, inn).expect("a spare of the AZ");
        let joint = Config::joint(group, new).expect("one swap in one AZ");
        let version = self.newest().version + 1;
        let reason = if self.nodes[out].gone {
            Reason::Remove
        } else if self.nodes[out].up {
            Reason::Drain
        } else {
            Reason::Replace
        };
        let mut next = self.newest().clone();
        next.version = version;
        next.writer_epoch = w.epoch;
        next.segments.insert(
            S,
            SegmentEntry {
                config: joint,
                config_version: version,
                change: Some((version, reason)),
                pageserver: 0,
            },
        );
        self.create(next);
        self.stats.changes_opened += 1;
        let w = self.writer.as_mut().expect("checked");
        w.tracker.adopt(S, joint);
        let start = Lsn(w.next_lsn - 1);
        // The joining node takes the writer's epoch and history first (it holds nothing).
        if self.nodes[inn].up {
            self.nodes[inn].hello(w.epoch, &w.history);
        }
        let (change, actions) =
            MembershipChange::open(S, version, joint, start, reason).expect("joint");
        w.change = Some(change);
        w.configured.clear();
        self.run(actions);
    }

    /// A `Configure` that was not delivered (the node was down) is sent again.
    fn deliver_configure(&mut self) {
        let Some(change) = self.writer.as_ref().and_then(|w| w.change.as_ref()) else {
            return;
        };
        let actions = vec![Action::Configure {
            nodes: change.config().voters(),
            version: change.version(),
            start_lsn: change.start_lsn(),
        }];
        self.run(actions);
    }

    fn run(&mut self, actions: Vec<Action>) {
        let mut queue: Vec<Action> = actions;
        while let Some(action) = queue.pop() {
            let Some(w) = self.writer.as_mut() else {
                return;
            };
            match action {
                Action::Configure {
                    nodes,
                    version,
                    start_lsn,
                } => {
                    for n in nodes {
                        let node = &mut self.nodes[n];
                        if !node.up || node.configured > version {
                            continue;
                        }
                        node.configured = version;
                        node.start_lsn = start_lsn;
                        if let Some(change) = w.change.as_mut() {
                            if change.outcome().is_none() {
                                w.configured.insert(n);
                                queue.extend(change.on_configured(n, version));
                            }
                        }
                        // A node that left the segment drops its copy on hearing so.
                        let config = self.table.last().expect("a version").segments[&S].config;
                        if !config.contains(n) {
                            self.nodes[n].log.clear();
                        }
                    }
                }
                Action::CreateVersion { config, outcome } => {
                    let version = self.end_change(config);
                    let w = self.writer.as_mut().expect("checked");
                    let change = w.change.as_mut().expect("a change ends");
                    queue.extend(change.on_version_created(version, config));
                    match outcome {
                        Outcome::Completed => self.stats.completed += 1,
                        Outcome::Reverted => self.stats.reverted += 1,
                    }
                    w.change = None;
                }
            }
        }
    }

    /// The planted bug: complete as soon as 4 of each group stored `Configure`, filled or not.
    fn planted_completion(&mut self) {
        let Some(w) = self.writer.as_ref() else {
            return;
        };
        let Some(change) = w.change.as_ref() else {
            return;
        };
        let config = *change.config();
        if !config.is_write_quorum(|n| w.configured.contains(&n)) {
            return;
        }
        self.end_change(config.complete().expect("joint"));
        self.writer.as_mut().expect("checked").change = None;
        self.stats.completed += 1;
    }

    /// The writer creates the table's next version with the segment stable at `config` (the
    /// end of its change) and adopts it. Returns the version.
    fn end_change(&mut self, config: Config) -> u64 {
        let epoch = self
            .writer
            .as_ref()
            .expect("a writer ends the change")
            .epoch;
        let mut next = self.newest().clone();
        next.version += 1;
        next.writer_epoch = epoch;
        let version = next.version;
        next.segments.insert(
            S,
            SegmentEntry {
                config,
                config_version: version,
                change: None,
                pageserver: 0,
            },
        );
        self.create(next);
        let w = self.writer.as_mut().expect("checked");
        if let Some(vdl) = w.tracker.adopt(S, config) {
            self.acknowledge(vdl);
        }
        version
    }

    fn crash_writer(&mut self) {
        self.writer = None;
    }

    /// Recovery as the gateway runs it, by the newest version's config: reports from witnesses
    /// (a read quorum of each group, a write quorum before any Hello), the end from the source,
    /// the Hello, the claim, and the change resumed.
    fn recover(&mut self) -> Result<(), String> {
        let config = self.config();
        let answered: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].up && self.witness(n, &config))
            .collect();
        if !config.is_write_quorum(|n| answered.contains(&n)) {
            return Ok(()); // not now; nodes come back later
        }
        let reports: Vec<MemberReport> = answered
            .iter()
            .map(|&n| {
                let node = &self.nodes[n];
                MemberReport {
                    member: n,
                    epoch: node.epoch,
                    history: node.history.clone(),
                    segments: vec![(S, node.scl(), node.scl())],
                }
            })
            .collect();
        let anchor = answered
            .iter()
            .map(|&n| self.nodes[n].known_vdl)
            .max()
            .unwrap_or(Lsn::INVALID);
        let floor = self.nodes.iter().map(|n| n.epoch).max().unwrap_or(0);
        let sources = plan_sources(&BTreeMap::from([(S, reports)]), |_| config, anchor, floor)
            .map_err(|e| format!("plan_sources: {e}"))?;
        let Some(source) = sources.sources.get(&S).copied() else {
            return Err("no source".into());
        };
        let src = &self.nodes[source.node];
        let before = src
            .log
            .range(..=anchor.0)
            .next_back()
            .map_or(Lsn::INVALID, |(&l, _)| Lsn(l));
        let mut prev = before;
        let mut entries = Vec::new();
        let above = (anchor.0 + 1)..=source.usable_scl.0.max(anchor.0 + 1);
        for (&l, _) in src
            .log
            .range(above)
            .filter(|(&l, _)| Lsn(l) <= source.usable_scl)
        {
            entries.push(IndexEntry {
                lsn: Lsn(l),
                prev_lsn_segment: prev,
                is_cpl: true,
            });
            prev = Lsn(l);
        }
        let plan = plan_end(&sources, &BTreeMap::from([(S, Index { before, entries })]))
            .map_err(|e| format!("plan_end: {e}"))?;
        // Checker 3: every acknowledged commit is in the recovered log, the same record.
        for (&l, &e) in &self.acked {
            if Lsn(l) > plan.vdl || src.log.get(&l) != Some(&e) {
                return Err(format!(
                    "checker 3: acknowledged commit {l} (epoch {e}) is not in the log recovery \
                     found (end {}, source node {} holds {:?})",
                    plan.vdl,
                    source.node,
                    src.log.get(&l)
                ));
            }
        }
        // Hello to every reachable voter; the attempt needs a write quorum of each group.
        let voters: Vec<usize> = config
            .voters()
            .into_iter()
            .filter(|&n| self.nodes[n].up)
            .collect();
        for &n in &voters {
            self.nodes[n].hello(plan.epoch, &plan.history);
        }
        if !config.is_write_quorum(|n| voters.contains(&n)) {
            return Ok(());
        }
        self.stats.recoveries += 1;
        let mut tracker = ConsistencyTracker::new(plan.vdl);
        tracker.adopt(S, config);
        let claim = self
            .newest()
            .claim(plan.epoch)
            .map_err(|e| format!("claim: {e}"))?;
        self.create(claim);
        let mut writer = Writer {
            epoch: plan.epoch,
            history: plan.history.clone(),
            tracker,
            next_lsn: plan.vdl.0 + 1,
            serving: false,
            recovered_vdl: plan.vdl,
            change: None,
            configured: BTreeSet::new(),
        };
        // A change in progress is resumed: the new writer's start LSN is its recovered end.
        let entry = self.newest().segments[&S];
        let mut actions = Vec::new();
        if let Some((id, reason)) = entry.change {
            self.stats.recoveries_in_a_change += 1;
            let (change, a) = MembershipChange::open(S, id, config, plan.vdl, reason)
                .map_err(|e| format!("resume: {e}"))?;
            writer.change = Some(change);
            actions = a;
        }
        self.writer = Some(writer);
        self.run(actions);
        Ok(())
    }

    /// Serving starts once a write quorum of each group holds the recovered log.
    fn serve_when_durable(&mut self) {
        let Some(w) = self.writer.as_mut().filter(|w| !w.serving) else {
            return;
        };
        let config = *w.tracker.config(S).expect("adopted");
        let tail = w.recovered_vdl;
        let nodes = &self.nodes;
        if config
            .is_write_quorum(|n| nodes[n].up && nodes[n].epoch == w.epoch && nodes[n].scl() >= tail)
        {
            w.serving = true;
        }
    }

    fn check(&mut self) -> Result<(), String> {
        self.serve_when_durable();
        if self.bug_complete_before_filled {
            self.planted_completion();
        }
        // Checker 2: every acknowledged commit is on a write quorum of the group read.
        let config = self.config();
        // Stable: its group. Joint: the old group (a joint read quorum holds 3 of it, which meet
        // any 4 of it; the new group holds the rest only once the joining node is filled).
        let read_by = *config.old();
        for (&l, &e) in &self.acked {
            let holders = read_by
                .0
                .iter()
                .filter(|&&n| self.nodes[n].log.get(&l) == Some(&e))
                .count();
            if holders < 4 {
                return Err(format!(
                    "checker 2: acknowledged commit {l} (epoch {e}) is on {holders} of {:?}, \
                     the group version {} reads",
                    read_by.0,
                    self.newest().version
                ));
            }
        }
        Ok(())
    }
}

fn run(seed: u64, bug: bool) -> Result<Stats, String> {
    let mut m = Model::new(seed, bug);
    // The first writer: epoch 1 on every node, nothing to recover.
    m.recover()
        .map_err(|e| format!("seed {seed}: first recovery: {e}"))?;
    for step in 0..STEPS {
        m.step()
            .map_err(|e| format!("seed {seed}, step {step}: {e}"))?;
    }
    Ok(m.stats)
}

fn seeds() -> u64 {
    std::env::var("BOREALIS_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000)
}

#[test]
fn membership_changes_keep_every_acknowledged_commit() {
    let mut total = Stats::default();
    for seed in 0..seeds() {
        let s = run(seed, false).unwrap_or_else(|e| panic!("{e}"));
        total.commits_acked += s.commits_acked;
        total.changes_opened += s.changes_opened;
        total.completed += s.completed;
        total.reverted += s.reverted;
        total.recoveries += s.recoveries;
        total.recoveries_in_a_change += s.recoveries_in_a_change;
    }
    println!("{total:?}");
    // The histories must reach what they are for: changes that complete, revert, and meet a
    // recovery halfway.
    assert!(
        total.commits_acked > 0 && total.completed > 0 && total.reverted > 0,
        "{total:?}"
    );
    assert!(total.recoveries_in_a_change > 0, "{total:?}");
}

#[test]
fn the_checkers_catch_a_change_completed_before_the_new_member_is_filled() {
    let caught = (0..seeds()).find_map(|seed| run(seed, true).err());
    let e = caught.expect("no seed caught the planted bug");
    println!("caught: {e}");
    assert!(e.contains("checker 2") || e.contains("checker 3"), "{e}");
}
