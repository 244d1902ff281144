//! # The protocol simulator: one seed, one history, every checker after every step
//!
//! This drives the real sans-IO protocol cores — the quorum writer and consistency tracker
//! (`borealis_quorum`), recovery planning (`borealis_quorum::recovery`) and the safekeeper's
//! acceptor (`safekeeper::acceptor`) — through a history chosen by a seeded RNG: message delivery
//! order, delays and drops, member crashes (losing what was not fsynced) and restarts, network
//! partitions, loss of a whole AZ or an AZ and one more member, writer crashes, and "zombie"
//! writers that keep running after a new writer took over. Nothing here reads a clock or a
//! thread RNG: the same seed always gives the same trace.
//!
//! After every step the checkers run:
//! 1. the VDL of each writer never decreases;
//! 2. every MTR acknowledged to a client is in the log recovery finds, whole;
//! 3. no MTR is visible in part: a recovered VDL is a consistency point;
//! 4. a superseded (fenced or zombie) writer never raises its VDL above the VDL its successor
//!    recovered to: it may learn that old records are durable, never that new ones are.
//!
//! `run(seed, steps)` returns the trace or the first violation, with the seed to replay it.

mod world;

pub use world::{run, SimConfig, SimOutcome};
