//! The durable placement table's versions and the rule for what may follow what (RFC 0012 §2).
//!
//! Once nodes can be replaced, a segment's group can no longer be computed from the pool: it is
//! recorded. The record is a sequence of **versions**, each created once (a create-only PUT in the
//! object store, so exactly one version `v + 1` can ever exist) by the tenant's writer, stamped
//! with that writer's epoch. A version names, per segment, its voting [`Config`] (a group of six,
//! or the old and new group of a change), the version that last changed that config, the change
//! in progress and its reason, and the pageserver that serves the segment.
//!
//! [`TableVersion::check_successor`] is the one place that says which versions may follow one
//! another, and what a reader must do when it meets one that may not:
//!
//! - **Fencing.** A version's `writer_epoch` is never below its predecessor's. A writer that reads
//!   a version stamped with a higher epoch than its own has been superseded and stops
//!   ([`TableVersion::fences`]). Each recovery creates a **claim**, the newest version re-stamped
//!   with the new epoch, before it serves: from then on a zombie of an older epoch cannot create a
//!   version (its successor would be below the claim) — which is what lets recovery stop fencing
//!   every group the pool could form.
//! - **Segments never vanish**, and a new segment enters stable, its config version the version
//!   that created it.
//! - **Membership moves one step at a time**: stable O → joint O/N (one node swapped within an
//!   AZ, [`Config::joint`]) → stable N (complete) or stable O (revert). Any other change of a
//!   segment's config — stable to another stable, one joint change to another, seven voters
//!   without a recorded change — is refused. A step's config version is the new version, and a
//!   change's id is the version that opened it.
//! - A pageserver move leaves the config alone.
//!
//! Nothing here does I/O; the encoding (`docs/formats/placement.md`) comes with the gateway's
//! table (RFC 0012, order of work step 3).

use crate::membership::Reason;
use borealis_core::membership::Config;
use borealis_core::SegmentId;
use std::collections::BTreeMap;
use thiserror::Error;

/// One segment in one version of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentEntry {
    pub config: Config,
    /// The version that last changed `config` (what members store and report).
    pub config_version: u64,
    /// While `config` is joint: the version that opened the change, and why.
    pub change: Option<(u64, Reason)>,
    /// The pageserver that serves the segment.
    pub pageserver: usize,
}

/// One version of a tenant's placement table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableVersion {
    pub version: u64,
    /// The epoch of the writer that created this version.
    pub writer_epoch: u64,
    pub segments: BTreeMap<SegmentId, SegmentEntry>,
}

/// Why a version may not follow another.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SuccessorError {
    #[error("version {got} does not follow version {of}")]
    NotNext { of: u64, got: u64 },
    #[error("version {version} is stamped with epoch {got}, below its predecessor's {of}")]
    OlderWriter { version: u64, of: u64, got: u64 },
    #[error("segment {segment} is missing from version {version}")]
    SegmentVanished { segment: SegmentId, version: u64 },
    #[error("segment {segment}: {why}")]
    IllegalStep { segment: SegmentId, why: String },
}

impl TableVersion {
    /// The version before any: no segment, no writer.
    pub fn empty() -> TableVersion {
        TableVersion {
            version: 0,
            writer_epoch: 0,
            segments: BTreeMap::new(),
        }
    }

    /// Whether this version fences a writer of `epoch`: it was created by a newer writer, so a
    /// writer of `epoch` that reads it has been superseded and must stop.
    pub fn fences(&self, epoch: u64) -> bool {
        self.writer_epoch > epoch
    }

    /// The claim a recovering writer of `epoch` creates before it serves: this version,
    /// re-stamped. Refused (fenced) if this version is newer than `epoch`.
    pub fn claim(&self, epoch: u64) -> Result<TableVersion, SuccessorError> {
        let next = TableVersion {
            version: self.version + 1,
            writer_epoch: epoch,
            segments: self.segments.clone(),
        };
        self.check_successor(&next)?;
        Ok(next)
    }

    /// Whether `next` may follow this version (see the module docs).
    pub fn check_successor(&self, next: &TableVersion) -> Result<(), SuccessorError> {
        if next.version != self.version + 1 {
            return Err(SuccessorError::NotNext {
                of: self.version,
                got: next.version,
            });
        }
        if next.writer_epoch < self.writer_epoch {
            return Err(SuccessorError::OlderWriter {
                version: next.version,
                of: self.writer_epoch,
                got: next.writer_epoch,
            });
        }
        if let Some(&segment) = self
            .segments
            .keys()
            .find(|s| !next.segments.contains_key(s))
        {
            return Err(SuccessorError::SegmentVanished {
                segment,
                version: next.version,
            });
        }
        for (&segment, after) in &next.segments {
            let illegal = |why: String| SuccessorError::IllegalStep { segment, why };
            check_entry(after, next.version).map_err(illegal)?;
            match self.segments.get(&segment) {
                None if after.config.is_joint() => {
                    return Err(illegal("a new segment enters with a stable group".into()))
                }
                None if after.config_version != next.version => {
                    return Err(illegal(format!(
                    "a new segment's config version is the version that created it ({}), not {}",
                    next.version, after.config_version
                )))
                }
                None => {}
                Some(before)
                    if before.config == after.config
                        && (before.config_version, before.change)
                            != (after.config_version, after.change) =>
                {
                    return Err(illegal(
                        "an unchanged config keeps its config version and change".into(),
                    ));
                }
                Some(before) if before.config == after.config => {}
                Some(before) => check_step(before, after, next.version).map_err(illegal)?,
            }
        }
        Ok(())
    }
}

/// What one entry must say on its own.
fn check_entry(e: &SegmentEntry, version: u64) -> Result<(), String> {
    if e.config_version > version {
        return Err(format!(
            "config version {} is above the table's version {version}",
            e.config_version
        ));
    }
    match (e.config.is_joint(), e.change) {
        (true, None) => Err("a joint config without a recorded change".into()),
        (false, Some(_)) => Err("a recorded change without a joint config".into()),
        (true, Some((id, _))) if id != e.config_version => Err(format!(
            "the change's id {id} is not the version that made the config joint ({})",
            e.config_version
        )),
        _ => Ok(()),
    }
}

/// A changed config: one step of a membership change, made by this version.
fn check_step(before: &SegmentEntry, after: &SegmentEntry, version: u64) -> Result<(), String> {
    if after.config_version != version {
        return Err(format!(
            "a changed config's config version is the version that changed it ({version}), not {}",
            after.config_version
        ));
    }
    let (from, to) = (before.config, after.config);
    let legal = if from.is_joint() {
        Ok(to) == from.complete() || Ok(to) == from.revert()
    } else {
        to.is_joint() && to.old() == from.old()
    };
    if legal {
        Ok(())
    } else {
        Err(format!(
            "{:?} -> {:?} is not one step of a membership change",
            from, to
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::placement::Group;

    const O: Group = Group([0, 1, 3, 4, 6, 7]);
    /// O with node 0 replaced by node 2 (AZ a).
    const N: Group = Group([1, 2, 3, 4, 6, 7]);
    const S0: SegmentId = SegmentId(0);
    const S1: SegmentId = SegmentId(1);

    fn stable(g: Group, config_version: u64) -> SegmentEntry {
        SegmentEntry {
            config: Config::stable(g),
            config_version,
            change: None,
            pageserver: 0,
        }
    }

    fn joint(config_version: u64) -> SegmentEntry {
        SegmentEntry {
            config: Config::joint(O, N).unwrap(),
            config_version,
            change: Some((config_version, Reason::Replace)),
            pageserver: 0,
        }
    }

    fn version(v: u64, epoch: u64, segments: &[(SegmentId, SegmentEntry)]) -> TableVersion {
        TableVersion {
            version: v,
            writer_epoch: epoch,
            segments: segments.iter().copied().collect(),
        }
    }

    #[test]
    fn a_change_goes_stable_joint_stable_one_version_at_a_time() {
        let v1 = version(1, 3, &[(S0, stable(O, 1))]);
        TableVersion::empty().check_successor(&v1).unwrap();
        let v2 = version(2, 3, &[(S0, joint(2)), (S1, stable(N, 2))]);
        v1.check_successor(&v2).unwrap();
        // Completed or reverted, the step is legal; the config version is the new version.
        v2.check_successor(&version(3, 3, &[(S0, stable(N, 3)), (S1, stable(N, 2))]))
            .unwrap();
        v2.check_successor(&version(3, 3, &[(S0, stable(O, 3)), (S1, stable(N, 2))]))
            .unwrap();
        // A pageserver move leaves the config alone.
        let mut moved = v2.clone();
        moved.version = 3;
        moved.segments.get_mut(&S1).unwrap().pageserver = 1;
        v2.check_successor(&moved).unwrap();
    }

    #[test]
    fn illegal_steps_are_refused() {
        let v1 = version(1, 3, &[(S0, stable(O, 1))]);
        let cases = [
            // One stable group straight to another.
            version(2, 3, &[(S0, stable(N, 2))]),
            // Joint without a recorded change, or with the wrong id or config version.
            version(
                2,
                3,
                &[(
                    S0,
                    SegmentEntry {
                        change: None,
                        ..joint(2)
                    },
                )],
            ),
            version(
                2,
                3,
                &[(
                    S0,
                    SegmentEntry {
                        change: Some((1, Reason::Drain)),
                        ..joint(2)
                    },
                )],
            ),
            version(2, 3, &[(S0, joint(1))]),
            // A new segment entering joint, or with another version's config version.
            version(2, 3, &[(S0, stable(O, 1)), (S1, joint(2))]),
            version(2, 3, &[(S0, stable(O, 1)), (S1, stable(O, 1))]),
            // An unchanged config whose config version moved.
            version(2, 3, &[(S0, stable(O, 2))]),
        ];
        for next in cases {
            assert!(
                matches!(
                    v1.check_successor(&next),
                    Err(SuccessorError::IllegalStep { .. })
                ),
                "{next:?}: {:?}",
                v1.check_successor(&next)
            );
        }
        // From joint, only complete or revert.
        let v2 = version(2, 3, &[(S0, joint(2))]);
        let other = Config::joint(O, Group([0, 2, 3, 4, 6, 7])).unwrap();
        let sideways = SegmentEntry {
            config: other,
            config_version: 3,
            change: Some((3, Reason::Replace)),
            pageserver: 0,
        };
        assert!(v2
            .check_successor(&version(3, 3, &[(S0, sideways)]))
            .is_err());
    }

    #[test]
    fn versions_follow_one_another_and_never_lose_a_segment() {
        let v1 = version(1, 3, &[(S0, stable(O, 1))]);
        assert_eq!(
            v1.check_successor(&version(3, 3, &[(S0, stable(O, 1))])),
            Err(SuccessorError::NotNext { of: 1, got: 3 })
        );
        assert_eq!(
            v1.check_successor(&version(2, 3, &[])),
            Err(SuccessorError::SegmentVanished {
                segment: S0,
                version: 2
            })
        );
    }

    #[test]
    fn a_claim_fences_every_older_writer() {
        let v4 = version(4, 3, &[(S0, joint(4))]);
        // Recovery of epoch 5 claims the table as it found it, change in progress included.
        let claim = v4.claim(5).unwrap();
        assert_eq!((claim.version, claim.writer_epoch), (5, 5));
        assert_eq!(claim.segments, v4.segments);
        // The zombie of epoch 3 reads the claim: fenced. Its own successor would be refused.
        assert!(claim.fences(3) && !claim.fences(5));
        let mut zombie = claim.clone();
        zombie.version = 6;
        zombie.writer_epoch = 3;
        assert_eq!(
            claim.check_successor(&zombie),
            Err(SuccessorError::OlderWriter {
                version: 6,
                of: 5,
                got: 3
            })
        );
        assert!(claim.claim(4).is_err());
    }
}
