//! Runs the protocol simulator over many seeds (issue "Quorum writer…" acceptance; issue #17:
//! volumes of many segments over a pool of six or nine safekeepers).
//!
//! - `cargo test --workspace --test simulator` runs 10,000 seeds, on every core (seconds).
//! - `BOREALIS_SIM_SEEDS=1000000` runs more (the soak reported in `docs/durability.md`);
//!   `BOREALIS_SIM_SEED=<n>` replays one seed and prints its whole trace.

use borealis_quorum::acceptor::PlantedBug;
use borealis_tests::sim::{run, SimConfig, SimOutcome};

#[test]
fn protocol_invariants_hold_over_many_seeds() {
    if let Ok(seed) = std::env::var("BOREALIS_SIM_SEED") {
        let seed: u64 = seed.parse().expect("BOREALIS_SIM_SEED must be a number");
        let out = run(
            seed,
            &SimConfig {
                trace_all: true,
                ..SimConfig::default()
            },
        );
        for line in &out.trace {
            println!("{line}");
        }
        assert!(
            out.violation.is_none(),
            "seed {seed}: {}",
            out.violation.unwrap_or_default()
        );
        return;
    }
    let seeds: u64 = std::env::var("BOREALIS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS_DEFAULT);
    // A long soak can be run in pieces: `BOREALIS_SIM_FIRST_SEED=200000 BOREALIS_SIM_SEEDS=100000`.
    let first: u64 = std::env::var("BOREALIS_SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let config = SimConfig::default();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    // Seeds are dealt round-robin to the threads; each thread stops at its first violation.
    let totals: Vec<Result<Totals, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let config = &config;
                scope.spawn(move || {
                    let mut totals = Totals::default();
                    for seed in (first + t..first + seeds).step_by(threads as usize) {
                        // A panic inside the protocol cores (an assertion) is a finding too:
                        // reported with its seed.
                        let out = match std::panic::catch_unwind(|| run(seed, config)) {
                            Ok(out) => out,
                            Err(_) => return Err(format!(
                                "seed {seed} panicked (message above)\nreplay: BOREALIS_SIM_SEED={seed} cargo test -p borealis-tests --test simulator -- --nocapture"
                            )),
                        };
                        if let Some(v) = &out.violation {
                            let tail: Vec<&String> = out.trace.iter().rev().take(40).collect();
                            let mut report = String::new();
                            for line in tail.into_iter().rev() {
                                report.push_str(&format!("  {line}\n"));
                            }
                            return Err(format!(
                                "{report}seed {seed} violates an invariant: {v}\nreplay: BOREALIS_SIM_SEED={seed} cargo test -p borealis-tests --test simulator -- --nocapture"
                            ));
                        }
                        totals.add(&out);
                    }
                    Ok(totals)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulator thread panicked"))
            .collect()
    });
    let mut sum = Totals::default();
    for t in totals {
        sum.merge(&t.unwrap_or_else(|e| panic!("{e}")));
    }
    let Totals {
        pool_of_nine,
        multi_segment,
        acked,
        acked_multi_group,
        recoveries,
        recovery_cuts,
        anchors_raised,
        torn_commits,
        fenced,
        crashes_mid_input,
        limbo_entered,
        limbo_settled,
        limbo_refusals,
        group_refusals,
        ack_timeouts,
        epochs_adopted,
        checkpoints,
        trims,
        gossip_trim_refusals,
        trim_adoptions,
        follower_batches,
        follower_trim_refusals,
        follower_attaches,
        follower_proofs,
        disks_replaced,
        disks_rebuilt,
        resumes,
    } = sum;
    println!(
        "{seeds} seeds from {first} ({pool_of_nine} on a pool of nine safekeepers, the others six; \
         {multi_segment} with 2 to 4 segments): {acked} acknowledged MTRs ({acked_multi_group} over \
         two groups or more), {recoveries} recoveries ({recovery_cuts} cut records above the end, \
         {anchors_raised} anchors raised by a trim point), {torn_commits} commits torn between \
         groups, {fenced} fenced appends, \
         {crashes_mid_input} crashes between a barrier's actions, {limbo_entered} limbos \
         ({limbo_settled} settled, {limbo_refusals} commits refused in limbo), {group_refusals} \
         commits refused for one group's quorum, {ack_timeouts} ack timeouts, {epochs_adopted} \
         epochs adopted by gossip; {checkpoints} checkpoints, {trims} trims, \
         {gossip_trim_refusals} gossip reads refused as trimmed, {trim_adoptions} trim points \
         adopted; followers: {follower_batches} batches applied, {follower_trim_refusals} reads \
         refused as trimmed, {follower_attaches} attaches from a checkpoint, {follower_proofs} \
         segments proved complete by a read quorum; {disks_replaced} disks replaced \
         ({disks_rebuilt} rebuilt to witnesses); {resumes} writers resumed an idle writer's \
         epoch; {threads} threads, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The histories must actually exercise the protocol, or the checkers prove nothing.
    assert!(
        acked > seeds as usize * 5,
        "too few acknowledged MTRs: {acked}"
    );
    assert!(
        recoveries > seeds as usize,
        "too few recoveries: {recoveries}"
    );
    assert!(fenced > 0, "no zombie writer was ever fenced");
    assert!(
        crashes_mid_input > 0,
        "no member ever crashed between a barrier's actions"
    );
    assert!(
        limbo_entered > 0 && limbo_settled > 0 && limbo_refusals > 0,
        "limbo was not exercised: {limbo_entered} entered, {limbo_settled} settled, {limbo_refusals} refusals"
    );
    assert!(ack_timeouts > 0, "no acknowledgement timeout fired");
    assert!(
        trims > 0 && trim_adoptions > 0,
        "trimming was not exercised: {trims} trims, {trim_adoptions} trim points adopted"
    );
    assert!(
        follower_batches > seeds as usize,
        "the follower was not exercised: {follower_batches} batches applied"
    );
    assert!(
        follower_trim_refusals > 0,
        "the follower never met a member trimmed past it"
    );
    // Volumes of many segments over a pool (RFC 0008).
    assert!(
        pool_of_nine > 0 && multi_segment > 0,
        "no seed ran several groups: {pool_of_nine} on nine nodes, {multi_segment} with several segments"
    );
    assert!(
        acked_multi_group > seeds as usize,
        "too few acknowledged MTRs over two groups: {acked_multi_group}"
    );
    assert!(
        recovery_cuts > 0 && torn_commits > 0 && anchors_raised > 0,
        "multi-group recovery was not exercised: {recovery_cuts} cuts, {torn_commits} torn commits, {anchors_raised} anchors raised"
    );
    assert!(
        group_refusals > 0 && follower_proofs > 0,
        "groups were not exercised apart: {group_refusals} refusals for one group, {follower_proofs} proofs"
    );
    // Replaced disks (drill 7), rebuilt before they testify again (`safekeeper::rebuild`).
    assert!(
        disks_replaced > seeds as usize / 10 && disks_rebuilt > disks_replaced / 8,
        "replaced disks were not exercised: {disks_replaced} replaced, {disks_rebuilt} rebuilt"
    );
    // Writers that resumed an idle writer's epoch instead of recovering (RFC 0017).
    assert!(
        resumes > seeds as usize / 40,
        "resumes were not exercised: {resumes}"
    );
}

/// Simulated histories per test run (each a few hundred steps), unless `BOREALIS_SIM_SEEDS`.
const SEEDS_DEFAULT: u64 = 10_000;

/// Sums of the outcomes' counters.
#[derive(Default)]
struct Totals {
    pool_of_nine: usize,
    multi_segment: usize,
    acked: usize,
    acked_multi_group: usize,
    recoveries: usize,
    recovery_cuts: usize,
    anchors_raised: usize,
    torn_commits: usize,
    fenced: usize,
    crashes_mid_input: usize,
    limbo_entered: usize,
    limbo_settled: usize,
    limbo_refusals: usize,
    group_refusals: usize,
    ack_timeouts: usize,
    epochs_adopted: usize,
    checkpoints: usize,
    trims: usize,
    gossip_trim_refusals: usize,
    trim_adoptions: usize,
    follower_batches: usize,
    follower_trim_refusals: usize,
    follower_attaches: usize,
    follower_proofs: usize,
    disks_replaced: usize,
    disks_rebuilt: usize,
    resumes: usize,
}

impl Totals {
    fn add(&mut self, out: &SimOutcome) {
        self.merge(&Totals {
            pool_of_nine: usize::from(out.pool_size == 9),
            multi_segment: usize::from(out.segments > 1),
            acked: out.acked_mtrs,
            acked_multi_group: out.acked_multi_group,
            recoveries: out.recoveries,
            recovery_cuts: out.recovery_cuts,
            anchors_raised: out.anchors_raised,
            torn_commits: out.torn_commits,
            fenced: out.fenced_appends,
            crashes_mid_input: out.crashes_mid_input,
            limbo_entered: out.limbo_entered,
            limbo_settled: out.limbo_settled,
            limbo_refusals: out.limbo_refusals,
            group_refusals: out.group_refusals,
            ack_timeouts: out.ack_timeouts,
            epochs_adopted: out.epochs_adopted,
            checkpoints: out.checkpoints,
            trims: out.trims,
            gossip_trim_refusals: out.gossip_trim_refusals,
            trim_adoptions: out.trim_adoptions,
            follower_batches: out.follower_batches,
            follower_trim_refusals: out.follower_trim_refusals,
            follower_attaches: out.follower_attaches,
            follower_proofs: out.follower_proofs,
            disks_replaced: out.disks_replaced,
            disks_rebuilt: out.disks_rebuilt,
            resumes: out.resumes,
        });
    }

    fn merge(&mut self, t: &Totals) {
        self.pool_of_nine += t.pool_of_nine;
        self.multi_segment += t.multi_segment;
        self.acked += t.acked;
        self.acked_multi_group += t.acked_multi_group;
        self.recoveries += t.recoveries;
        self.recovery_cuts += t.recovery_cuts;
        self.anchors_raised += t.anchors_raised;
        self.torn_commits += t.torn_commits;
        self.fenced += t.fenced;
        self.crashes_mid_input += t.crashes_mid_input;
        self.limbo_entered += t.limbo_entered;
        self.limbo_settled += t.limbo_settled;
        self.limbo_refusals += t.limbo_refusals;
        self.group_refusals += t.group_refusals;
        self.ack_timeouts += t.ack_timeouts;
        self.epochs_adopted += t.epochs_adopted;
        self.checkpoints += t.checkpoints;
        self.trims += t.trims;
        self.gossip_trim_refusals += t.gossip_trim_refusals;
        self.trim_adoptions += t.trim_adoptions;
        self.follower_batches += t.follower_batches;
        self.follower_trim_refusals += t.follower_trim_refusals;
        self.follower_attaches += t.follower_attaches;
        self.follower_proofs += t.follower_proofs;
        self.disks_replaced += t.disks_replaced;
        self.disks_rebuilt += t.disks_rebuilt;
        self.resumes += t.resumes;
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let c = SimConfig {
        trace_all: true,
        ..SimConfig::default()
    };
    assert_eq!(run(42, &c).trace, run(42, &c).trace);
    assert_ne!(run(42, &c).trace, run(43, &c).trace);
}

/// The first of seeds `0..seeds` whose run under `config` breaks an invariant, with the
/// violation.
fn first_violation(config: &SimConfig, seeds: u64) -> Option<(u64, String)> {
    (0..seeds).find_map(|seed| run(seed, config).violation.map(|v| (seed, v)))
}

/// The checkers are not vacuous: with a bug planted in the safekeeper's acceptor (the code the
/// service runs), some seed must fail. Returns the first failing seed.
fn first_failing_seed(bug: PlantedBug) -> Option<u64> {
    let c = SimConfig {
        planted: Some(bug),
        ..SimConfig::default()
    };
    first_violation(&c, 1000).map(|(seed, _)| seed)
}

/// Members acknowledge the highest LSN they hold instead of their SCL (records above a hole).
#[test]
fn the_checkers_catch_acks_above_a_hole() {
    assert!(
        first_failing_seed(PlantedBug::PublishEndLsnAsScl).is_some(),
        "no seed caught acknowledgements above a hole"
    );
}

/// The service's ordering broken: the acceptor publishes (and so acks) records when they are
/// written, before the group commit's fsync. A crash then loses acknowledged records. The
/// simulator runs the service's acceptor and its action order, so it must catch this; before
/// the acceptor owned its transitions, the simulator's own glue fsynced before it acked and
/// could not see such a bug in `safekeeper/src/tenant.rs`.
#[test]
fn the_checkers_catch_an_ack_before_the_fsync() {
    assert!(
        first_failing_seed(PlantedBug::PublishBeforeSync).is_some(),
        "no seed caught acknowledgements of records that were not yet fsynced"
    );
}

/// A member whose disk was replaced answering `GetState` at once, as every safekeeper did before
/// `safekeeper::rebuild`: its "nothing here" lets a read quorum prove a segment complete past
/// records it had acknowledged, and a follower skips them. The checkers must catch it.
#[test]
fn the_checkers_catch_a_replaced_disk_that_testifies_before_it_is_rebuilt() {
    let c = SimConfig {
        replaced_disk_testifies: true,
        ..SimConfig::default()
    };
    let failing = first_violation(&c, 5000);
    assert!(
        failing.is_some(),
        "no seed caught a replaced disk testifying before it was rebuilt"
    );
}

/// Members acknowledging to every connection that appended, whatever its epoch, as the
/// safekeeper did before RFC 0015: a zombie writer counts the records its successor put at LSNs
/// it also used as its own, and raises its VDL past what was recovered. The checkers must catch
/// it (they did, at seed 3476, the first time the simulator sent acks that way; at 10,042 once
/// recoveries fenced first and idle writers retired, which leave fewer zombies, and at 4,136
/// since recovery checks its quorums before it fences: so 20,000 seeds,
/// `BOREALIS_SIM_ACK_SEEDS` to change).
#[test]
fn the_checkers_catch_acks_to_a_superseded_writer() {
    let c = SimConfig {
        acks_ignore_epoch: true,
        ..SimConfig::default()
    };
    let seeds = std::env::var("BOREALIS_SIM_ACK_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let failing = first_violation(&c, seeds);
    println!("first failing seed: {failing:?}");
    assert!(
        failing.is_some(),
        "no seed caught acknowledgements counted by a superseded writer"
    );
}

/// RFC 0014 §2's hole, opened again (the planted bug `ReadBeforeFence`): a second gateway's
/// recovery reads the members' states while the old writer still serves, plans, and installs its
/// epoch later, without promising it first. A commit the old writer makes durable in between is
/// not in the plan, and the `Hello` truncates it. The checkers must catch it.
#[test]
fn the_checkers_catch_a_takeover_that_reads_before_it_fences() {
    let c = SimConfig {
        takeover_while_serving: true,
        read_before_fence: true,
        ..SimConfig::default()
    };
    let failing = first_violation(&c, 10_000);
    println!("first failing seed: {failing:?}");
    assert!(
        failing.is_some(),
        "no seed caught a takeover that read the members' states before fencing them"
    );
}

/// The same takeovers with the `Fence` as the gateway sends it (RFC 0014 §2): the old writer
/// keeps serving between the takeover's plan and its `Hello`, and every checker holds, over as
/// many seeds as the planted bug above needs at most. `BOREALIS_SIM_TAKEOVER_SEEDS` runs more.
#[test]
fn takeovers_while_the_old_writer_serves_lose_nothing_once_fenced() {
    let c = SimConfig {
        takeover_while_serving: true,
        ..SimConfig::default()
    };
    let seeds: u64 = std::env::var("BOREALIS_SIM_TAKEOVER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let mut totals = (0, 0, 0, 0, 0);
    for seed in 0..seeds {
        let out = run(seed, &c);
        if let Some(v) = out.violation {
            let tail: Vec<String> = out.trace.iter().rev().take(40).rev().cloned().collect();
            panic!(
                "{}\nseed {seed} violates an invariant with takeovers: {v}",
                tail.join("\n")
            );
        }
        totals.0 += out.recoveries;
        totals.1 += out.fenced_appends;
        totals.2 += out.takeovers;
        totals.3 += out.acked_during_takeover;
        totals.4 += out.superseded_by_ack;
    }
    let (recoveries, fenced, takeovers, acked_meanwhile, superseded) = totals;
    println!(
        "{seeds} seeds with takeovers: {recoveries} recoveries, {takeovers} of them takeovers \
         installed while the old writer served, which acknowledged {acked_meanwhile} MTRs \
         between a takeover's fence and its Hello; {fenced} appends fenced, {superseded} acks \
         told a writer it was superseded"
    );
    assert!(
        takeovers > 0 && acked_meanwhile > 0 && superseded > 0 && fenced > 0,
        "takeovers must happen while the old writer acknowledges, and fence it, for this test to mean anything"
    );
}

/// RFC 0017's condition broken on purpose: a writer whose VDL is below its last LSN retires with
/// a resume point, and its successor resumes at that last LSN, counting records that never
/// became durable as durable. The checkers must catch it.
#[test]
fn the_checkers_catch_a_resume_of_an_unsettled_writer() {
    let c = SimConfig {
        resume_unsettled: true,
        ..SimConfig::default()
    };
    let failing = first_violation(&c, 10_000);
    println!("first failing seed: {failing:?}");
    assert!(
        failing.is_some(),
        "no seed caught a writer resumed from an unsettled last LSN"
    );
}
