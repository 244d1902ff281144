//! Runs the protocol simulator over many seeds (issue "Quorum writer…" acceptance).
//!
//! - `cargo test -p borealis-tests --test simulator` runs 1,000 seeds (seconds).
//! - `BOREALIS_SIM_SEEDS=100000` runs more; `BOREALIS_SIM_SEED=<n>` replays one seed and prints
//!   its whole trace.

use borealis_tests::sim::{run, SimConfig};

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
        .unwrap_or(1000);
    let config = SimConfig::default();
    let (mut acked, mut recoveries, mut fenced) = (0, 0, 0);
    for seed in 0..seeds {
        let out = run(seed, &config);
        if let Some(v) = &out.violation {
            let tail: Vec<&String> = out.trace.iter().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
            panic!(
                "seed {seed} violates an invariant: {v}\nreplay: BOREALIS_SIM_SEED={seed} cargo test -p borealis-tests --test simulator -- --nocapture"
            );
        }
        acked += out.acked_mtrs;
        recoveries += out.recoveries;
        fenced += out.fenced_appends;
    }
    println!("{seeds} seeds: {acked} acknowledged MTRs, {recoveries} recoveries, {fenced} fenced appends");
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

/// The checkers are not vacuous: with a planted bug (members acknowledge records held above a
/// hole), some seed must fail.
#[test]
fn the_checkers_catch_a_planted_bug() {
    let c = SimConfig {
        ack_end_lsn: true,
        ..SimConfig::default()
    };
    let failing = (0..1000).find(|&seed| run(seed, &c).violation.is_some());
    assert!(
        failing.is_some(),
        "no seed caught acknowledgements above a hole"
    );
}
