//! `borealis up` as a supervisor: a node of the local cluster that dies is started again, with
//! backoff, as systemd or Kubernetes would restart it in production (issue #20).
//!
//! **What counts as dead.** Every [`TICK`], `up` re-reads `cluster.json` (a `borealis node`
//! command may have started or stopped a node meanwhile) and asks whether each node's recorded pid
//! is alive ([`crate::cluster::pid_alive`]). A node that is not, and is not **held**, is started
//! again after a delay.
//!
//! **Held nodes stay down.** `borealis node stop ID` (an operator's deliberate stop) and
//! `borealis node kill --hold ID` (a drill that keeps a node down) write `DIR/holds/ID` *before*
//! they signal the node, so the supervisor never sees it dead and unheld; `borealis node start ID`
//! removes the hold *after* the node is started, for the same reason. A plain `borealis node
//! kill ID` is a crash: the node comes back by itself.
//!
//! **Backoff.** The first restart waits [`RESTART_DELAY_MIN`]; each further one without the node
//! having stayed up [`STABLE_AFTER`] doubles the wait, up to [`RESTART_DELAY_MAX`], so a node
//! that cannot start (a corrupt data directory, a port taken) is retried slowly and its log does
//! not fill the disk. The policy ([`Watch`]) takes the time as an argument and does no I/O.
//!
//! **Visible.** Every exit and restart is logged on `up`'s standard error; the counts are kept in
//! `DIR/supervisor.json` (`docs/formats/json-state-files.md`), which `borealis status` shows.

use crate::cluster::{pid_alive, Cluster};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// How often `up` looks at its nodes.
pub const TICK: Duration = Duration::from_millis(250);
/// The wait before the first restart of a node that died.
pub const RESTART_DELAY_MIN: Duration = Duration::from_millis(500);
/// The longest wait between two restarts.
pub const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// A node up this long has recovered: its next death waits [`RESTART_DELAY_MIN`] again.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

const HOLDS_DIR: &str = "holds";
const STATE_FILE: &str = "supervisor.json";
const STATE_VERSION: u32 = 1;
const CLUSTER_LOCK_FILE: &str = "cluster.lock";

/// `DIR/holds/ID`: node `id` is held down.
pub fn hold_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(HOLDS_DIR).join(id)
}

/// Holds node `id` down: the supervisor will not restart it until [`release`].
pub fn hold(dir: &Path, id: &str) -> anyhow::Result<()> {
    borealis_utils::owner_only::create_dir_all(&dir.join(HOLDS_DIR))?;
    let path = hold_path(dir, id);
    std::fs::write(&path, b"held by borealis node stop | kill --hold\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Lets the supervisor restart node `id` again when it dies.
pub fn release(dir: &Path, id: &str) -> anyhow::Result<()> {
    match std::fs::remove_file(hold_path(dir, id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the hold on {id}")),
    }
}

pub fn is_held(dir: &Path, id: &str) -> bool {
    hold_path(dir, id).exists()
}

/// Serialises the read-modify-write of `cluster.json` between `up` (restarting a node) and
/// `borealis node` (starting or stopping one): held until dropped.
pub struct ClusterLock {
    _file: File,
}

impl ClusterLock {
    pub fn take(dir: &Path) -> anyhow::Result<ClusterLock> {
        let path = dir.join(CLUSTER_LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(ClusterLock { _file: file })
    }
}

/// What the supervisor knows of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    /// Restarts done by the supervisor since `up` started.
    pub restarts: u32,
    /// Deaths since the node last stayed up [`STABLE_AFTER`]: the exponent of the backoff.
    consecutive: u32,
    /// When the node was last seen coming up (started by anyone).
    up_since: Option<Instant>,
    /// When the supervisor will start it again, if it is dead and not held.
    next_restart: Option<Instant>,
    /// How the node last ended, as far as the supervisor knows.
    pub last_exit: Option<String>,
}

/// What the policy decided for one node at one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Nothing,
    /// The node just died: it will be started again in `delay`.
    Scheduled { delay: Duration },
    /// Start it now.
    Restart,
}

impl Watch {
    /// The delay before the next restart after `consecutive` deaths in a row.
    pub fn backoff(consecutive: u32) -> Duration {
        RESTART_DELAY_MIN
            .saturating_mul(1u32 << consecutive.min(16))
            .min(RESTART_DELAY_MAX)
    }

    /// One tick for a node that is `alive` or not, `held` or not, at `now`.
    pub fn tick(&mut self, alive: bool, held: bool, now: Instant) -> Decision {
        if alive {
            let since = *self.up_since.get_or_insert(now);
            self.next_restart = None;
            if now.duration_since(since) >= STABLE_AFTER {
                self.consecutive = 0;
            }
            return Decision::Nothing;
        }
        self.up_since = None;
        if held {
            self.next_restart = None;
            return Decision::Nothing;
        }
        match self.next_restart {
            None => {
                let delay = Self::backoff(self.consecutive);
                self.next_restart = Some(now + delay);
                Decision::Scheduled { delay }
            }
            Some(at) if now >= at => Decision::Restart,
            Some(_) => Decision::Nothing,
        }
    }

    /// The restart asked for by [`Decision::Restart`] was attempted; `started` says whether the
    /// process is running. Either way the next death (or the next try) waits longer.
    pub fn restarted(&mut self, started: bool, now: Instant) {
        self.consecutive = self.consecutive.saturating_add(1);
        if started {
            self.restarts = self.restarts.saturating_add(1);
            self.up_since = Some(now);
            self.next_restart = None;
        } else {
            self.next_restart = Some(now + Self::backoff(self.consecutive));
        }
    }

    /// Seconds until the next restart, if one is scheduled.
    pub fn restart_in(&self, now: Instant) -> Option<Duration> {
        self.next_restart
            .map(|at| at.saturating_duration_since(now))
    }
}

/// `DIR/supervisor.json`: what `borealis status` shows of the supervisor.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub version: u32,
    /// The `borealis up` process; the file says nothing once it is gone.
    pub pid: u32,
    pub nodes: BTreeMap<String, NodeState>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeState {
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// When the next restart is due (Unix ms), if one is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_unix_ms: Option<u64>,
}

impl State {
    pub fn of(watches: &BTreeMap<String, Watch>, now: Instant) -> State {
        let unix_ms = |d: Duration| {
            (std::time::SystemTime::now() + d)
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64)
        };
        State {
            version: STATE_VERSION,
            pid: std::process::id(),
            nodes: watches
                .iter()
                .map(|(id, w)| {
                    let state = NodeState {
                        restarts: w.restarts,
                        last_exit: w.last_exit.clone(),
                        next_restart_unix_ms: w.restart_in(now).map(unix_ms),
                    };
                    (id.clone(), state)
                })
                .collect(),
        }
    }

    /// Written atomically (tmp, fsync, rename), owner-only.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        borealis_auth::write_secret_file(&dir.join(STATE_FILE), &text)
            .with_context(|| format!("writing {}", dir.join(STATE_FILE).display()))
    }

    /// The supervisor's state, if a supervisor (`borealis up`) is running for `dir`. A file that
    /// does not parse, of another version, or left by a gone process says nothing.
    pub fn load_live(dir: &Path) -> Option<State> {
        let text = std::fs::read(dir.join(STATE_FILE)).ok()?;
        let state: State = serde_json::from_slice(&text).ok()?;
        (state.version == STATE_VERSION && pid_alive(state.pid, "borealis")).then_some(state)
    }
}

/// What the supervisor adds to a node's health: held down, starting again soon, restarts so far.
pub fn note(health: String, alive: bool, dir: &Path, id: &str, state: Option<&State>) -> String {
    let mut out = health;
    if !alive && is_held(dir, id) {
        out.push_str(" (held: `borealis node start` brings it back)");
    }
    let Some(node) = state.and_then(|s| s.nodes.get(id)) else {
        return out;
    };
    if let (false, Some(at)) = (alive, node.next_restart_unix_ms) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let wait = Duration::from_millis(at.saturating_sub(now_ms));
        out.push_str(&format!(", starting again in {:.1} s", wait.as_secs_f64()));
    }
    if node.restarts > 0 {
        out.push_str(&format!(
            ", restarted {}× by `borealis up`{}",
            node.restarts,
            node.last_exit
                .as_deref()
                .map(|e| format!(" (last exit: {e})"))
                .unwrap_or_default()
        ));
    }
    out
}

/// One round of supervision: reap the nodes that exited, and start again
/// each node that is dead, not held, and due.
pub fn supervise(
    dir: &Path,
    children: &mut Vec<(String, Child)>,
    watches: &mut BTreeMap<String, Watch>,
) {
    let now = Instant::now();
    // The first round writes the state file: `borealis status` then knows a supervisor runs.
    let mut changed = watches.is_empty();
    // Our own children tell how they ended (nodes started by `borealis node start` do not).
    let mut exits: BTreeMap<String, String> = BTreeMap::new();
    children.retain_mut(|(id, child)| match child.try_wait() {
        Ok(Some(status)) => {
            exits.insert(id.clone(), status.to_string());
            false
        }
        _ => true,
    });
    let cluster = match Cluster::load(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("supervisor: cannot read the cluster file: {e:#}");
            return;
        }
    };
    for n in &cluster.nodes {
        let w = watches.entry(n.id.clone()).or_default();
        let alive = n.pid.is_some_and(|p| pid_alive(p, &n.id));
        let scheduled = w.restart_in(now).is_some();
        let decision = w.tick(alive, is_held(dir, &n.id), now);
        // A restart cancelled (the node came back, or was held): the state file says so.
        changed |= scheduled != w.restart_in(now).is_some();
        match decision {
            Decision::Nothing => {}
            Decision::Scheduled { delay } => {
                changed = true;
                w.last_exit = exits.remove(&n.id);
                eprintln!(
                    "node {} is down ({}); starting it again in {:.1} s",
                    n.id,
                    w.last_exit.as_deref().unwrap_or("its process is gone"),
                    delay.as_secs_f64()
                );
            }
            Decision::Restart => {
                changed = true;
                match restart(dir, &n.id) {
                    Ok(Some(child)) => {
                        w.restarted(true, now);
                        eprintln!(
                            "restarted {} (pid {}; restart {} since `borealis up`)",
                            n.id,
                            child.id(),
                            w.restarts
                        );
                        children.push((n.id.clone(), child));
                    }
                    // Started by someone else, or held, meanwhile: the next tick sees it.
                    Ok(None) => {}
                    Err(e) => {
                        w.restarted(false, now);
                        eprintln!(
                            "could not restart {}: {e:#}; next try in {:.1} s",
                            n.id,
                            w.restart_in(now).unwrap_or_default().as_secs_f64()
                        );
                    }
                }
            }
        }
    }
    if changed {
        if let Err(e) = State::of(watches, now).save(dir) {
            eprintln!("supervisor: {e:#}");
        }
    }
}

/// Starts node `id` again unless, under the cluster file's lock, it turns out to be running or
/// held after all.
fn restart(dir: &Path, id: &str) -> anyhow::Result<Option<Child>> {
    let _lock = ClusterLock::take(dir)?;
    let mut cluster = Cluster::load(dir)?;
    let node = cluster.node(id)?;
    // A killed process's last threads may still hold its data directory's lock after its main
    // thread is gone: starting now would fail "in use". The next tick tries again.
    if node.pid.is_some_and(|p| pid_alive(p, id))
        || is_held(dir, id)
        || borealis_utils::lock_file::is_locked(&node.data_dir)
    {
        return Ok(None);
    }
    cluster.start_node(dir, id).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_dead_node_is_restarted_after_a_delay_that_doubles_until_it_stays_up() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert_eq!(w.tick(true, false, t0), Decision::Nothing);
        // It dies: restart in 0.5 s, not before.
        assert_eq!(
            w.tick(false, false, t0 + ms(100)),
            Decision::Scheduled { delay: ms(500) }
        );
        assert_eq!(w.restart_in(t0 + ms(300)), Some(ms(300)));
        assert_eq!(w.tick(false, false, t0 + ms(500)), Decision::Nothing);
        assert_eq!(w.tick(false, false, t0 + ms(600)), Decision::Restart);
        w.restarted(true, t0 + ms(600));
        assert_eq!(w.restarts, 1);
        // Dies again at once: 1 s, then 2 s.
        assert_eq!(w.tick(true, false, t0 + ms(700)), Decision::Nothing);
        assert_eq!(
            w.tick(false, false, t0 + ms(800)),
            Decision::Scheduled { delay: ms(1000) }
        );
        assert_eq!(w.tick(false, false, t0 + ms(1800)), Decision::Restart);
        // The start itself failed: the next try waits 2 s.
        w.restarted(false, t0 + ms(1800));
        assert_eq!(w.restarts, 1);
        assert_eq!(w.tick(false, false, t0 + ms(3000)), Decision::Nothing);
        assert_eq!(w.tick(false, false, t0 + ms(3800)), Decision::Restart);
        w.restarted(true, t0 + ms(3800));
        // Up for STABLE_AFTER: the next death waits the minimum again.
        let later = t0 + ms(3800) + STABLE_AFTER;
        assert_eq!(w.tick(true, false, later), Decision::Nothing);
        assert_eq!(
            w.tick(false, false, later + ms(1)),
            Decision::Scheduled { delay: ms(500) }
        );
    }

    #[test]
    fn a_held_node_is_never_restarted_and_a_released_one_is() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        w.tick(true, false, t0);
        for i in 1..100 {
            assert_eq!(w.tick(false, true, t0 + ms(i * 100)), Decision::Nothing);
        }
        assert_eq!(w.restart_in(t0), None);
        assert_eq!(
            w.tick(false, false, t0 + ms(10_000)),
            Decision::Scheduled { delay: ms(500) }
        );
        // Started by `borealis node start` meanwhile: nothing to do.
        assert_eq!(w.tick(true, false, t0 + ms(10_100)), Decision::Nothing);
        assert_eq!(w.restarts, 0);
    }

    #[test]
    fn the_backoff_is_bounded() {
        assert_eq!(Watch::backoff(0), ms(500));
        assert_eq!(Watch::backoff(3), ms(4000));
        assert_eq!(Watch::backoff(6), RESTART_DELAY_MAX);
        assert_eq!(Watch::backoff(u32::MAX), RESTART_DELAY_MAX);
    }

    #[test]
    fn holds_are_files_that_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_held(dir.path(), "sk-a1"));
        hold(dir.path(), "sk-a1").unwrap();
        assert!(is_held(dir.path(), "sk-a1"));
        release(dir.path(), "sk-a1").unwrap();
        release(dir.path(), "sk-a1").unwrap();
        assert!(!is_held(dir.path(), "sk-a1"));
    }
}
