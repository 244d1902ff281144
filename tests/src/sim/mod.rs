//! # The protocol simulator: one seed, one history, every checker after every step
//!
//! This drives the real sans-IO protocol cores — the writer session, quorum writer, placement and
//! consistency tracker (`borealis_quorum`), recovery of a volume of many segments
//! (`borealis_quorum::volume_recovery`: sources, LSN indexes, the end), the safekeeper's acceptor
//! (`safekeeper::acceptor`), gossip's round planner with the node's place in the pool
//! (`safekeeper::gossip::plan_round_placed`) and its fetch from a peer
//! (`borealis_quorum::gossip`), and the pageserver's segment cursor
//! (`borealis_quorum::follower`, re-exported as `pageserver::segment_cursor`) — through a history
//! chosen by a seeded RNG: message delivery order, delays and drops, node crashes (losing what
//! was not fsynced, sometimes between two actions of a Hello, a trim or an adopted trim point)
//! and restarts, a disk replaced (a node restarting empty, at most once per seed, which is no
//! witness until `safekeeper::rebuild` says it is rebuilt), network partitions, loss of a whole
//! AZ or an AZ and one more node, writer
//! crashes (some right after one group got its part of a commit that spans several), and
//! "zombie" writers that keep running after a new writer took over. Nodes fill each other's
//! holes by gossip (and learn newer epochs from each other); pageservers checkpoint each segment
//! and trim its group's logs; a node left behind its peers' trim point adopts it; a pageserver
//! follows each segment. Nothing here reads a clock or a thread RNG: the same seed always gives
//! the same trace.
//!
//! **Several groups.** Each seed draws a pool of six safekeepers (every segment's group is all
//! six, the one-group volume) or nine (three per AZ; each segment's group is two per AZ by
//! rendezvous hashing, `borealis_core::placement`), and a volume of one to four segments of four
//! pages, so that MTRs of up to three random pages often span segments, hence groups. Records go
//! to their segment's group only; nodes gossip only about the segments whose group they share;
//! an AZ + 1 fault takes the write quorum from the groups of the extra node only.
//!
//! The drivers live in `world/`: `member.rs` (a safekeeper: the acceptor's actions on an
//! in-memory disk, one log per segment, and reads answered as the service answers them),
//! `gossip.rs`, `pageserver.rs` (checkpoints, trims and the followers), `recovery.rs` (as the
//! gateway's driver recovers), and `world.rs` (writers, the network, faults, the checkers).
//!
//! After every step the checkers run:
//! 1. the VDL of each writer never decreases;
//! 2. every MTR acknowledged to a client is in the log recovery finds, whole, and each of its
//!    parts is held whole by a write quorum of its segment's group (a node holds what it trimmed
//!    in the segment's checkpoint, "object storage");
//! 3. no MTR is visible in part: a recovered VDL is a consistency point, and at every recovery
//!    the log it finds (every segment's source, and the checkpoints) holds every LSN up to the
//!    VDL and, cut at its consistency points, is whole MTRs that one writer shipped, record for
//!    record — a commit torn between groups or a splice of two writers' records fails it;
//! 4. a superseded (fenced or zombie) writer never raises its VDL above the VDL its successor
//!    recovered to: it may learn that old records are durable, never that new ones are;
//! 5. nothing ships while the writer is in limbo;
//! 6. each segment's follower applies only records of the current writer's log, never reads
//!    above the current writer's VDL, and at every recovery plan: it is not caught up past the
//!    recovered VDL, every record it applied is the recovered log's record at that LSN (none of a
//!    discarded history), and it applied every record of that log up to where it is caught up;
//!    the segment's checkpoint, too, is part of that log and at or below its VDL.
//!
//! `run(seed, steps)` returns the trace or the first violation, with the seed to replay it.

mod world;

pub use world::{run, SimConfig, SimOutcome};
