//! # borealis-quorum: how a writer knows what is durable, without consensus
//!
//! Aurora's insight, which Borealis follows: a volume has exactly **one writer**, so it needs no
//! consensus protocol to order its log. It only needs to know, for every record it shipped, when
//! that record is held by a **write quorum** (4 of the 6 members of the record's protection
//! group), and then which prefix of its log is durable as a whole. This crate holds that logic as
//! plain state machines, with no sockets, tasks, clocks or files, so a simulator can drive them.
//!
//! - [`writer::QuorumWriter`] turns a mini-transaction (the pages one SQLite commit changed) into
//!   redo records: it assigns consecutive LSNs, links each record to the previous record of its
//!   segment and of its page, marks the last one as the consistency point (CPL), and refuses
//!   (`read_only`) when a segment it touches has fewer than 4 members of its group reachable,
//!   *before* anything leaves the writer. It applies LAL backpressure: no new LSN while
//!   `next_lsn - VDL` exceeds the limit.
//! - [`placement`]: each segment is its own protection group of six safekeepers drawn from a pool
//!   (two per AZ, rendezvous hashing, `borealis_core::placement`); the writer's [`placement::Placement`]
//!   fixes a segment's group on first use and translates pool nodes to member indexes.
//! - [`consistency::ConsistencyTracker`] consumes the members' acknowledgements. A safekeeper
//!   acknowledges with its SCL (every record of the segment up to it is held and fsynced). A
//!   segment's durable point is the 4th-highest SCL of its group; **VCL** is the highest LSN such
//!   that every record up to it is durable in its segment; **VDL** is the highest CPL at or below
//!   VCL. Both only ever grow (asserted).
//! - [`recovery`] computes, from the states that at least a read quorum (3 of 6) reported, the
//!   VDL a new writer starts from and the epoch it installs. Because every read quorum meets every
//!   write quorum, every record that was durable is seen; records above the VDL were never
//!   acknowledged and are truncated on every member under the new epoch.
//!   [`volume_recovery`] does the same for a volume of many segments (RFC 0008): the newest
//!   history volume-wide, then the end from the sources' record indexes above a durable anchor.
//!
//! - [`placement_table::TableVersion`]: the versions of a tenant's durable placement table
//!   (RFC 0012 §2) and the one rule for which version may follow which: create-only, stamped
//!   with the writer's epoch, one membership step at a time.
//! - [`membership::MembershipChange`] is one segment's membership change as its writer runs it
//!   (RFC 0012 §4): replace one member through a joint config of the old and new groups, and
//!   complete it only once the new member holds what the old group did — or revert it.
//! - [`session::WriterSession`] adds the writer's rules that need time — limbo (RFC 0004, per
//!   group), unsettled commits, acknowledgement timeouts per pool node — with the time passed in.
//! - [`acceptor`] is the other side: what a safekeeper does with a `Hello`, an append, a peer's
//!   repair, an fsync, a trim. [`acceptor::Acceptor`] turns each input into ordered actions
//!   (store the control state, truncate, write, publish) that a driver executes.
//! - [`gossip::PeerFetch`] is how a member fills a gap from a peer: the same-history check, the
//!   reads, what an answer may hold, adopting a trimmed peer's trim point.
//! - [`follower`] is how a pageserver follows a segment's log: which records of a safekeeper's
//!   answer to apply ([`follower::plan_batch`]), how far the segment is then known complete, and
//!   when a read quorum proves that nothing newer exists ([`follower::ProofTally`]).
//!
//! Nothing here reads a clock, draws a random number or touches a file or socket
//! (`libs/quorum/clippy.toml` bans the clocks and thread RNGs). The drivers are the gateway's
//! volume writer (`gateway/src/volume_writer/`) and the safekeeper's tenant
//! (`safekeeper/src/tenant.rs`); the simulator in `tests/src/sim/` drives the same machines under
//! faults, with simulated time.

pub mod acceptor;
pub mod consistency;
pub mod follower;
pub mod gossip;
pub mod membership;
pub mod placement;
pub mod placement_table;
pub mod recovery;
pub mod session;
pub mod volume_recovery;
pub mod writer;

pub use consistency::ConsistencyTracker;
pub use session::{SessionConfig, WriterSession};
pub use writer::{QuorumWriter, WriteError};
