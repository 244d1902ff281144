//! One membership change of one segment, as its writer runs it (RFC 0012 §4).
//!
//! A segment's member F is replaced by G (same AZ) in two placement versions, both created by
//! the tenant's writer:
//!
//! ```text
//!   version v      stable O ──► joint O/N      (records after L_start go to O ∪ N)
//!                  Configure(v, L_start) to O ∪ N; G fills (L_base, L_start] from peers
//!   version w > v  joint O/N ──► stable N      complete: G holds everything up to L_start,
//!                                              and 4 of O and 4 of N stored Configure(v)
//!              or  joint O/N ──► stable O      revert: F came back (not a removal) or G failed
//!                  Configure(w) to O ∪ N; F (or G) drops its copy
//!
//! (w is the next version of the table when the change ends: v + 1, or later if a recovery's
//! claim came in between.)
//! ```
//!
//! [`MembershipChange`] is the writer's side of that, from the moment version v exists: it
//! counts `Configured(v)` answers and the joining node's acknowledged SCL, and says when to
//! end the change and with which config. Nothing here does I/O: the driver sends the
//! `Configure` messages, creates the next placement version (create-only, so exactly one
//! successor of the newest exists), adopts each config in the writer's
//! [`crate::ConsistencyTracker`], and feeds the answers back.
//!
//! **Why completing needs both conditions.** Completion makes N alone the group, so every
//! durable record must then be on 4 of N. A record above `L_start` was shipped to O ∪ N and, being
//! durable under the joint rule, is on 4 of N already. A record at or below `L_start` was durable
//! on 4 of O, at most one of them F — so on 3 of the five shared nodes — and on G once G's SCL
//! reaches `L_start`: 4 of N. `Configured(v)` from 4 of O and 4 of N makes sure that any reader
//! still on the version before v meets a node that knows of the change (it reports the newer
//! config and the reader re-reads the table) before completion can take effect.

use borealis_core::membership::Config;
use borealis_core::{Lsn, SegmentId};
use std::collections::BTreeSet;

/// Why a member is being replaced. Only a removal is completed when the leaving node comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The leaving node was down longer than `--replace-after`.
    Replace,
    /// An operator said the node is gone for good (`borealis node remove`).
    Remove,
    /// The node is being emptied (`borealis node drain`).
    Drain,
    /// Evening out the load over the pool.
    Rebalance,
}

/// How a change ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stable on the new group.
    Completed,
    /// Stable on the old group.
    Reverted,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `Configure { version, start_lsn }` for the segment to each of `nodes` (answers come
    /// back through [`MembershipChange::on_configured`]).
    Configure {
        nodes: Vec<usize>,
        version: u64,
        start_lsn: Lsn,
    },
    /// Create the next placement version (the successor of the newest the writer holds) with
    /// the segment at `config`, then report it with [`MembershipChange::on_version_created`],
    /// or with [`MembershipChange::on_version_failed`] if the create-only PUT did not take
    /// effect.
    CreateVersion { config: Config, outcome: Outcome },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Version v is in force; the change is under way.
    Joint,
    /// The version ending the change is being created with this outcome; nothing else is
    /// decided meanwhile.
    Ending(Outcome),
    /// The version ending the change exists.
    Done(Outcome),
}

/// The writer's view of one change of one segment, from the joint version `version` on.
#[derive(Clone, Debug)]
pub struct MembershipChange {
    segment: SegmentId,
    version: u64,
    config: Config,
    reason: Reason,
    start_lsn: Lsn,
    /// Nodes that stored `Configure(version)`.
    configured: BTreeSet<usize>,
    /// The joining node's highest acknowledged SCL for the segment, in this writer's epoch.
    joining_scl: Lsn,
    /// A revert was decided (the leaving node is back, or the joining one failed): it stays
    /// decided, also when the PUT that ends the change fails and is tried again.
    must_revert: bool,
    phase: Phase,
}

impl MembershipChange {
    /// The change that placement version `version` opened (`config` joint), as a writer whose
    /// last assigned LSN is `start_lsn` takes it up: right after creating the version, or after
    /// a recovery that found it (then `start_lsn` is the recovered end). Returns the
    /// `Configure` to send to every voter.
    pub fn open(
        segment: SegmentId,
        version: u64,
        config: Config,
        start_lsn: Lsn,
        reason: Reason,
    ) -> Result<(MembershipChange, Vec<Action>), String> {
        if !config.is_joint() {
            return Err(format!(
                "segment {}: version {version} has no change in progress",
                segment.0
            ));
        }
        let change = MembershipChange {
            segment,
            version,
            config,
            reason,
            start_lsn,
            configured: BTreeSet::new(),
            joining_scl: Lsn::INVALID,
            must_revert: false,
            phase: Phase::Joint,
        };
        let configure = change.configure(version);
        Ok((change, vec![configure]))
    }

    pub fn segment(&self) -> SegmentId {
        self.segment
    }

    /// The placement version that opened the change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The joint config in force while the change runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The LSN the joining node must hold the segment up to before the change can complete.
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// How the change ended, once the version that ends it exists.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Whether the joining node is still filling (its SCL below `start_lsn`): it must not count
    /// as a witness of the segment meanwhile.
    pub fn joining_is_filling(&self) -> bool {
        self.joining_scl < self.start_lsn
    }

    /// Whether completing is allowed now: the joining node holds the segment up to `start_lsn`,
    /// and 4 of the old group and 4 of the new stored `Configure(v)`.
    pub fn can_complete(&self) -> bool {
        !self.joining_is_filling()
            && self
                .config
                .is_write_quorum(|n| self.configured.contains(&n))
    }

    /// `node` stored `Configure(version)` for the segment.
    pub fn on_configured(&mut self, node: usize, version: u64) -> Vec<Action> {
        if version == self.version && self.config.contains(node) {
            self.configured.insert(node);
        }
        self.decide()
    }

    /// The joining node acknowledged `scl` for the segment in this writer's epoch (a complete
    /// chain up to `scl`).
    pub fn on_joining_scl(&mut self, scl: Lsn) -> Vec<Action> {
        self.joining_scl = self.joining_scl.max(scl);
        self.decide()
    }

    /// The joining node (re)connected and its `HelloOk` says it holds the segment up to `scl`:
    /// that, even if lower than it acknowledged before (its disk was replaced, RFC 0013). It
    /// must store `Configure` again too.
    pub fn on_joining_state(&mut self, scl: Lsn) -> Vec<Action> {
        if let Some(joining) = self.config.swap().map(|s| s.r#in) {
            if scl < self.joining_scl {
                self.configured.remove(&joining);
            }
        }
        self.joining_scl = scl;
        self.decide()
    }

    /// The leaving node answered again with its copy of the segment intact. A replacement is
    /// reverted: the old group is whole again and needs no fill. A removal, a drain or a
    /// rebalance goes on (the node is leaving whether it answers or not).
    pub fn on_leaving_returned(&mut self) -> Vec<Action> {
        if self.reason == Reason::Replace {
            self.must_revert = true;
        }
        self.decide()
    }

    /// The joining node failed, or is itself being drained or removed: the change is reverted.
    /// What it acknowledged no longer counts. Decided also while the version ending the change
    /// is being created: if that PUT fails, the revert is asked for instead.
    pub fn on_joining_failed(&mut self) -> Vec<Action> {
        self.must_revert = true;
        self.joining_scl = Lsn::INVALID;
        if let Some(joining) = self.config.swap().map(|s| s.r#in) {
            self.configured.remove(&joining);
        }
        self.decide()
    }

    /// Version `version` (created by this writer, after the change's own) exists with the
    /// segment at `config`. Returns the `Configure(version)` for every voter of the joint config:
    /// the leaving (or, reverted, the joining) node drops its copy when it stores it.
    pub fn on_version_created(&mut self, version: u64, config: Config) -> Vec<Action> {
        let Phase::Ending(outcome) = self.phase else {
            panic!(
                "segment {}: version {version} created while not ending the change ({:?})",
                self.segment.0, self.phase
            );
        };
        assert!(version > self.version, "a version after the change's own");
        assert_eq!(
            Ok(config),
            self.ending_config(outcome),
            "the config asked for"
        );
        self.phase = Phase::Done(outcome);
        vec![self.configure(version)]
    }

    /// The create-only PUT of the ending version did not take effect (an error before the store
    /// took it). The change is joint again and decides anew: a revert once decided stays
    /// decided. (A PUT that lost its race means another writer exists: this one is fenced and
    /// stops, which is not this machine's business.)
    pub fn on_version_failed(&mut self) -> Vec<Action> {
        if matches!(self.phase, Phase::Ending(_)) {
            self.phase = Phase::Joint;
        }
        self.decide()
    }

    fn decide(&mut self) -> Vec<Action> {
        if self.phase != Phase::Joint {
            return Vec::new();
        }
        if self.must_revert {
            return self.end(Outcome::Reverted);
        }
        if self.can_complete() {
            return self.end(Outcome::Completed);
        }
        Vec::new()
    }

    fn end(&mut self, outcome: Outcome) -> Vec<Action> {
        assert_eq!(self.phase, Phase::Joint);
        if outcome == Outcome::Completed {
            assert!(
                self.can_complete(),
                "completing before the joining node is filled or before Configure reached a \
                 write quorum of each group"
            );
        }
        self.phase = Phase::Ending(outcome);
        let config = self
            .ending_config(outcome)
            .expect("a joint config completes and reverts");
        vec![Action::CreateVersion { config, outcome }]
    }

    fn ending_config(&self, outcome: Outcome) -> Result<Config, String> {
        match outcome {
            Outcome::Completed => self.config.complete(),
            Outcome::Reverted => self.config.revert(),
        }
    }

    fn configure(&self, version: u64) -> Action {
        Action::Configure {
            nodes: self.config.voters(),
            version,
            start_lsn: self.start_lsn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::placement::Group;

    const O: Group = Group([0, 1, 2, 3, 4, 5]);
    const S: SegmentId = SegmentId(3);

    /// Node 0 (AZ a) replaced by node 6.
    fn open(reason: Reason) -> MembershipChange {
        let config = Config::joint(O, Group([1, 6, 2, 3, 4, 5])).unwrap();
        let (change, actions) = MembershipChange::open(S, 41, config, Lsn(100), reason).unwrap();
        assert_eq!(actions, vec![configure(41)]);
        change
    }

    /// `Configure(version)` to all seven voters, starting at LSN 100.
    fn configure(version: u64) -> Action {
        Action::Configure {
            nodes: vec![0, 1, 2, 3, 4, 5, 6],
            version,
            start_lsn: Lsn(100),
        }
    }

    fn completed() -> Action {
        Action::CreateVersion {
            config: Config::stable(Group([1, 6, 2, 3, 4, 5])),
            outcome: Outcome::Completed,
        }
    }

    #[test]
    fn completes_only_when_filled_and_configured_on_four_of_each_group() {
        let mut c = open(Reason::Replace);
        // Configured on 0, 2, 3, 4: four of O, but three of N (node 0 is leaving).
        for n in [0, 2, 3, 4] {
            assert_eq!(c.on_configured(n, 41), vec![]);
        }
        // Filled, but N has only three Configured.
        assert_eq!(c.on_joining_scl(Lsn(100)), vec![]);
        assert!(!c.can_complete());
        // An answer to an older version, or from a stranger, does not count.
        assert_eq!(c.on_configured(6, 40), vec![]);
        assert_eq!(c.on_configured(9, 41), vec![]);
        assert_eq!(c.on_configured(6, 41), vec![completed()]);
        // Nothing more is decided while version 42 is being created.
        assert_eq!(c.on_leaving_returned(), vec![]);
        assert_eq!(c.on_joining_failed(), vec![]);
        let done = c.on_version_created(42, Config::stable(Group([1, 6, 2, 3, 4, 5])));
        assert_eq!(done, vec![configure(42)]);
        assert_eq!(c.outcome(), Some(Outcome::Completed));
    }

    #[test]
    fn never_completes_below_the_start_lsn() {
        let mut c = open(Reason::Replace);
        for n in 0..7 {
            assert_eq!(c.on_configured(n, 41), vec![]);
        }
        assert_eq!(c.on_joining_scl(Lsn(99)), vec![]);
        assert!(c.joining_is_filling());
        assert_eq!(c.on_joining_scl(Lsn(100)), vec![completed()]);
    }

    #[test]
    fn the_leaving_node_returning_reverts_unless_it_was_removed() {
        let mut c = open(Reason::Replace);
        c.on_configured(1, 41);
        let revert = c.on_leaving_returned();
        assert_eq!(
            revert,
            vec![Action::CreateVersion {
                config: Config::stable(O),
                outcome: Outcome::Reverted,
            }]
        );
        c.on_version_created(42, Config::stable(O));
        assert_eq!(c.outcome(), Some(Outcome::Reverted));

        let mut removed = open(Reason::Remove);
        assert_eq!(removed.on_leaving_returned(), vec![]);
        for n in 1..7 {
            removed.on_configured(n, 41);
        }
        assert_eq!(removed.on_joining_scl(Lsn(100)), vec![completed()]);
    }

    #[test]
    fn a_failed_put_goes_back_to_the_joint_state_and_decides_again() {
        let mut c = open(Reason::Drain);
        for n in 1..7 {
            c.on_configured(n, 41);
        }
        // The completion's PUT fails: the same completion is asked for again.
        assert_eq!(c.on_joining_scl(Lsn(120)), vec![completed()]);
        assert_eq!(c.on_version_failed(), vec![completed()]);
        // The joining node fails while that PUT is under way, and the PUT fails too: revert.
        assert_eq!(c.on_joining_failed(), vec![]);
        let revert = c.on_version_failed();
        assert!(matches!(
            revert.as_slice(),
            [Action::CreateVersion {
                outcome: Outcome::Reverted,
                ..
            }]
        ));
        // A revert stays decided: its failed PUT asks for the revert again, whatever arrives.
        assert_eq!(c.on_version_failed(), revert);
        assert_eq!(c.on_joining_scl(Lsn(200)), vec![]);
        assert_eq!(c.on_version_failed(), revert);
        assert_eq!(c.outcome(), None);
    }

    #[test]
    fn a_joining_node_that_lost_its_copy_counts_again_only_once_refilled() {
        let mut c = open(Reason::Replace);
        // 0, 2, 3, 4 are four of O; 2, 3, 4 and the joining 6 four of N.
        for n in [0, 2, 3, 4, 6] {
            assert_eq!(c.on_configured(n, 41), vec![]);
        }
        assert_eq!(c.on_joining_scl(Lsn(50)), vec![]);
        // Its disk was replaced: it reconnects holding nothing, and its Configure is gone too.
        assert_eq!(c.on_joining_state(Lsn::INVALID), vec![]);
        assert!(c.joining_is_filling());
        // Refilled, but it has not stored Configure again: N has three.
        assert_eq!(c.on_joining_scl(Lsn(100)), vec![]);
        assert!(!c.can_complete());
        assert_eq!(c.on_configured(6, 41), vec![completed()]);
    }

    #[test]
    fn only_a_replacement_reverts_when_the_leaving_node_returns() {
        for reason in [Reason::Remove, Reason::Drain, Reason::Rebalance] {
            let mut c = open(reason);
            assert_eq!(c.on_leaving_returned(), vec![], "{reason:?}");
        }
    }

    #[test]
    fn a_stable_version_opens_no_change() {
        assert!(MembershipChange::open(S, 1, Config::stable(O), Lsn(0), Reason::Replace).is_err());
    }

    #[test]
    #[should_panic(expected = "the config asked for")]
    fn creating_another_config_than_asked_is_a_bug() {
        let mut c = open(Reason::Replace);
        c.on_leaving_returned();
        c.on_version_created(42, Config::stable(Group([1, 6, 2, 3, 4, 5])));
    }
}
