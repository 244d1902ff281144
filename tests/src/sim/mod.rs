//! # The protocol simulator: one seed, one history, every checker after every step
//!
//! This drives the real sans-IO protocol cores — the writer session, quorum writer and
//! consistency tracker (`borealis_quorum`), recovery planning (`borealis_quorum::recovery`), the
//! safekeeper's acceptor (`safekeeper::acceptor`), gossip's round planner
//! (`safekeeper::gossip::plan_round`) and its fetch from a peer (`borealis_quorum::gossip`), and
//! the pageserver's segment cursor (`borealis_quorum::follower`, re-exported as
//! `pageserver::segment_cursor`) — through a history chosen by a seeded RNG: message delivery
//! order, delays and drops, member crashes (losing what was not fsynced, sometimes between two
//! actions of a Hello, a trim or an adopted trim point) and restarts, network partitions, loss of
//! a whole AZ or an AZ and one more member, writer crashes, and "zombie" writers that keep running
//! after a new writer took over. Members fill each other's holes by gossip (and learn newer
//! epochs from each other); pageservers checkpoint the segment and trim the members' logs; a
//! member left behind its peers' trim point adopts it; a pageserver follows the log. Nothing here
//! reads a clock or a thread RNG: the same seed always gives the same trace.
//!
//! The drivers live in `world/`: `member.rs` (a safekeeper: the acceptor's actions on an
//! in-memory disk, and reads answered as the service answers them), `gossip.rs`, `pageserver.rs`
//! (checkpoints, trims and the follower), and `world.rs` (writers, the network, faults,
//! recovery, the checkers).
//!
//! After every step the checkers run:
//! 1. the VDL of each writer never decreases;
//! 2. every MTR acknowledged to a client is in the log recovery finds, whole, and held whole by
//!    a write quorum (a member holds what it trimmed in the checkpoint, "object storage");
//! 3. no MTR is visible in part: a recovered VDL is a consistency point;
//! 4. a superseded (fenced or zombie) writer never raises its VDL above the VDL its successor
//!    recovered to: it may learn that old records are durable, never that new ones are;
//! 5. nothing ships while the writer is in limbo;
//! 6. the follower applies only records of the current writer's log, never reads above the
//!    current writer's VDL, and at every recovery plan: it is not caught up past the recovered
//!    VDL, every record it applied is the recovered log's record at that LSN (none of a
//!    discarded history), and it applied every record of that log up to where it is caught up;
//!    the checkpoint, too, is part of the recovered log and at or below its VDL.
//!
//! `run(seed, steps)` returns the trace or the first violation, with the seed to replay it.

mod world;

pub use world::{run, SimConfig, SimOutcome};
