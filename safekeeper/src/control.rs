//! The durable control state of one tenant: `DIR/tenants/<tenant hex>/control.json`.
//!
//! It holds what a safekeeper promised a writer and must not forget across a crash: the epoch it
//! accepted (fencing every older writer) and where that epoch's log starts. It is replaced
//! atomically — written to `control.json.tmp`, fsynced, renamed over `control.json`, and the
//! directory fsynced — so a crash leaves either the old or the new state, never a torn one, and
//! the state is durable before the safekeeper acts on it (docs/design.md §12, Neon #5993).
//!
//! It also holds the epoch's **history** (`borealis_core::history`): the `(epoch, start)` of every
//! epoch the log descends from, which decides how much log survives the next epoch change.
//!
//! Entering a new epoch takes two writes around the truncation of the log: first the new epoch
//! with `pending_truncation_above: X`, then, once every segment file is truncated above `X` and
//! synced, the same with `null`. A safekeeper that finds a pending truncation at start-up finishes
//! it before it serves anything (Neon PR #9685: truncation must survive a crash half-way).
//!
//! Since version 2 it also holds each segment's **trim point** ([`SegmentTrim`]): where the log
//! was trimmed after a pageserver checkpointed it to object storage. The trim point is stored
//! before any record is dropped, so after a crash half-way the segment file may still hold
//! records at or below it; opening the tenant drops them (trimming is idempotent). Version 1
//! files (no trims) are read as "never trimmed".
//!
//! Since version 3 it also holds the **promised epoch** (RFC 0014 §2): the highest epoch a
//! recovering writer's `Fence` was promised. It is stored before the `Fence` is answered, so a
//! writer below it is refused after a crash too. Versions 1 and 2 read as "nothing promised";
//! files are always written as version 3.

use crate::acceptor::TrimPoint;
use crate::segment_log::fsync_dir;
use borealis_core::history::{self, EpochStart};
use borealis_core::{Lsn, SegmentId};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

pub const CONTROL_FILE_NAME: &str = "control.json";
const CONTROL_TEMP_NAME: &str = "control.json.tmp";
/// The version written. Versions 1 (without `trims`) and 2 (without `promised_epoch`) are still
/// read.
pub const CONTROL_VERSION: u32 = 3;
const CONTROL_VERSIONS_READ: [u32; 3] = [1, 2, 3];

/// A segment's trim point in the control file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentTrim {
    pub segment: u32,
    #[serde(flatten)]
    pub point: TrimPoint,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    pub version: u32,
    pub epoch: u64,
    pub epoch_start_lsn: Lsn,
    /// The history of `epoch`, oldest first, ending with `(epoch, epoch_start_lsn)`.
    pub history: Vec<EpochStart>,
    /// Records above this LSN may still be on disk and must be truncated before serving.
    pub pending_truncation_above: Option<Lsn>,
    /// Where each trimmed segment's log starts (segments never trimmed are absent), in segment
    /// order.
    #[serde(default)]
    pub trims: Vec<SegmentTrim>,
    /// The highest epoch promised to a recovery's `Fence` (0: none).
    #[serde(default)]
    pub promised_epoch: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control file i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("control file {path} is unreadable: {reason}")]
    Corrupt { path: String, reason: String },
}

impl ControlState {
    /// The state of the epoch that `history` ends with (epoch 0 if empty).
    pub fn new(history: Vec<EpochStart>, pending_truncation_above: Option<Lsn>) -> ControlState {
        let last = history.last().copied().unwrap_or(EpochStart {
            epoch: 0,
            start: Lsn::INVALID,
        });
        ControlState {
            version: CONTROL_VERSION,
            epoch: last.epoch,
            epoch_start_lsn: last.start,
            history,
            pending_truncation_above,
            trims: Vec::new(),
            promised_epoch: 0,
        }
    }

    /// The same state with this promised epoch.
    pub fn with_promise(mut self, promised_epoch: u64) -> ControlState {
        self.promised_epoch = promised_epoch;
        self
    }

    /// The same state with these segments' trim points.
    pub fn with_trims(mut self, trims: &[(SegmentId, TrimPoint)]) -> ControlState {
        self.trims = trims
            .iter()
            .map(|&(segment, point)| SegmentTrim {
                segment: segment.0,
                point,
            })
            .collect();
        self.trims.sort_by_key(|t| t.segment);
        self
    }

    /// The trim points, by segment.
    pub fn trim_points(&self) -> Vec<(SegmentId, TrimPoint)> {
        self.trims
            .iter()
            .map(|t| (SegmentId(t.segment), t.point))
            .collect()
    }

    fn check(&self) -> Result<(), String> {
        if !CONTROL_VERSIONS_READ.contains(&self.version) {
            return Err(format!("unsupported version {}", self.version));
        }
        for (i, t) in self.trims.iter().enumerate() {
            if i > 0 && self.trims[i - 1].segment >= t.segment {
                return Err("trims are not in strictly increasing segment order".into());
            }
            if !t.point.base.is_valid() || t.point.last_cpl > t.point.base {
                return Err(format!(
                    "segment {}: trim point {} with last CPL {} is not valid",
                    t.segment, t.point.base, t.point.last_cpl
                ));
            }
        }
        let last = self.history.last().copied().unwrap_or(EpochStart {
            epoch: 0,
            start: Lsn::INVALID,
        });
        if !history::is_valid(&self.history)
            || last
                != (EpochStart {
                    epoch: self.epoch,
                    start: self.epoch_start_lsn,
                })
        {
            return Err("the history is not valid or does not end with the epoch".into());
        }
        Ok(())
    }
}

/// Loads the control state of the tenant directory `dir`; `None` if it has never been written
/// (no writer ever said Hello).
pub fn load(dir: &Path) -> Result<Option<ControlState>, ControlError> {
    let path = dir.join(CONTROL_FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |reason: String| ControlError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let state: ControlState = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    state.check().map_err(corrupt)?;
    Ok(Some(state))
}

/// Atomically and durably replaces the control state of `dir`.
pub fn store(dir: &Path, state: &ControlState) -> std::io::Result<()> {
    let temp = dir.join(CONTROL_TEMP_NAME);
    let mut bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let mut f = std::fs::File::create(&temp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&temp, dir.join(CONTROL_FILE_NAME))?;
    fsync_dir(dir)
}

/// Removes a temporary file a crash may have left behind.
pub fn remove_leftovers(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(CONTROL_TEMP_NAME)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use borealis_core::history::from_pairs as h;

    #[test]
    fn store_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let s = ControlState::new(h(&[(1, 0), (3, 42)]), Some(Lsn(7)));
        assert_eq!((s.epoch, s.epoch_start_lsn), (3, Lsn(42)));
        store(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s));
        store(
            dir.path(),
            &ControlState::new(h(&[(1, 0), (3, 42), (4, 50)]), None),
        )
        .unwrap();
        assert_eq!(load(dir.path()).unwrap().map(|s| s.epoch), Some(4));
        assert!(!dir.path().join(CONTROL_TEMP_NAME).exists());
    }

    /// Pins the file format.
    #[test]
    fn format_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &ControlState::new(h(&[(1, 0), (2, 10)]), None)).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CONTROL_FILE_NAME)).unwrap();
        let compact: String = text.split_whitespace().collect();
        assert_eq!(
            compact,
            "{\"version\":3,\"epoch\":2,\"epoch_start_lsn\":10,\
             \"history\":[{\"epoch\":1,\"start\":0},{\"epoch\":2,\"start\":10}],\
             \"pending_truncation_above\":null,\"trims\":[],\"promised_epoch\":0}"
        );
        let trimmed = ControlState::new(h(&[(1, 0), (2, 10)]), None)
            .with_trims(&[(
                SegmentId(3),
                TrimPoint {
                    base: Lsn(9),
                    last_cpl: Lsn(8),
                },
            )])
            .with_promise(4);
        store(dir.path(), &trimmed).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CONTROL_FILE_NAME)).unwrap();
        let compact: String = text.split_whitespace().collect();
        assert!(
            compact.ends_with(
                "\"trims\":[{\"segment\":3,\"base\":9,\"last_cpl\":8}],\"promised_epoch\":4}"
            ),
            "{compact}"
        );
        assert_eq!(load(dir.path()).unwrap(), Some(trimmed));
    }

    /// A version 1 file (before trims existed) still loads, as "never trimmed".
    #[test]
    fn version_1_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = br#"{"version":1,"epoch":2,"epoch_start_lsn":10,"history":[{"epoch":1,"start":0},{"epoch":2,"start":10}],"pending_truncation_above":null}"#;
        std::fs::write(dir.path().join(CONTROL_FILE_NAME), v1).unwrap();
        let state = load(dir.path()).unwrap().unwrap();
        assert_eq!((state.version, state.epoch), (1, 2));
        assert!(state.trims.is_empty());
        assert_eq!(state.promised_epoch, 0);
    }

    /// A version 2 file (before `Fence` existed) loads with nothing promised.
    #[test]
    fn version_2_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = br#"{"version":2,"epoch":2,"epoch_start_lsn":10,"history":[{"epoch":1,"start":0},{"epoch":2,"start":10}],"pending_truncation_above":null,"trims":[{"segment":3,"base":9,"last_cpl":8}]}"#;
        std::fs::write(dir.path().join(CONTROL_FILE_NAME), v2).unwrap();
        let state = load(dir.path()).unwrap().unwrap();
        assert_eq!(
            (state.version, state.epoch, state.promised_epoch),
            (2, 2, 0)
        );
        assert_eq!(state.trims.len(), 1);
    }

    #[test]
    fn bad_trims_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTROL_FILE_NAME);
        let head = r#"{"version":2,"epoch":1,"epoch_start_lsn":0,"history":[{"epoch":1,"start":0}],"pending_truncation_above":null,"trims":"#;
        for trims in [
            r#"[{"segment":0,"base":5,"last_cpl":6}]"#,
            r#"[{"segment":0,"base":0,"last_cpl":0}]"#,
            r#"[{"segment":1,"base":5,"last_cpl":5},{"segment":1,"base":7,"last_cpl":5}]"#,
        ] {
            std::fs::write(&path, format!("{head}{trims}}}")).unwrap();
            assert!(
                matches!(load(dir.path()), Err(ControlError::Corrupt { .. })),
                "{trims}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTROL_FILE_NAME);
        std::fs::write(&path, b"{\"epoch\": ").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(ControlError::Corrupt { .. })
        ));
        let wrong_version = br#"{"version":9,"epoch":1,"epoch_start_lsn":0,"history":[{"epoch":1,"start":0}],"pending_truncation_above":null}"#;
        std::fs::write(&path, wrong_version).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(ControlError::Corrupt { .. })
        ));
        let history_mismatch = br#"{"version":1,"epoch":2,"epoch_start_lsn":0,"history":[{"epoch":1,"start":0}],"pending_truncation_above":null}"#;
        std::fs::write(&path, history_mismatch).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(ControlError::Corrupt { .. })
        ));
    }
}
