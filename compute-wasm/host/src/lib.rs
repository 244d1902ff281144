//! # compute-host: one tenant's SQLite, in a wasmtime sandbox, on a log-structured volume
//!
//! A Borealis *compute* is SQLite compiled to WebAssembly (the guest, `compute-wasm/guest`, built
//! by this crate's `build.rs` and embedded in it) running in wasmtime. The guest has no storage of
//! its own: its VFS asks the host for pages (`get_page`) and hands every SQLite commit to the host
//! as one mini-transaction (`commit`, an [`Mtr`]: each dirty page as a delta or a full image).
//! This crate is the host side:
//!
//! - [`ComputeEngine`]: compiles the module once (about a second) and keeps what every instance
//!   shares: the wasmtime engine with a pooling allocator, the linked imports, and a ticker thread
//!   that drives statement timeouts (epoch interruption). Cheap to clone; share one per process.
//! - [`Compute`]: one instance, i.e. one tenant's SQLite, started in tens of microseconds.
//!   [`Compute::exec`] runs an [`ExecRequest`] under a time limit.
//! - [`Backend`]: what the embedder (the gateway) plugs in: where pages come from and where
//!   commits go.
//!
//! ## What a compute guarantees
//!
//! - **One commit, one call.** Each SQLite commit reaches [`Backend::commit`] exactly once, as one
//!   [`Mtr`] holding exactly the pages that commit changed, ascending. Nothing else ever leaves:
//!   no page write outside a commit, no journal, no temp file.
//! - **Stateless.** All durable state is what the backend was given. A fresh [`Compute`] started
//!   on the same backend sees every commit that [`Backend::commit`] accepted.
//! - **Bounded.** Each statement runs under a deadline ([`ComputeError::Timeout`]), each instance
//!   under a memory cap ([`EngineConfig::memory_bytes_max`]), each result under a size cap
//!   ([`ExecRequest::result_bytes_max`]).
//!
//! ## Failure model
//!
//! SQL errors (syntax, constraints, ...) are *answers*: [`ExecResponse::Err`], and the compute
//! carries on. Everything else is a [`ComputeError`] and **poisons** the instance: after a trap,
//! a timeout or a backend failure the instance's SQLite state can no longer be trusted to match
//! storage (its page cache may hold a transaction storage never got), so every later
//! [`Compute::exec`] fails with [`ComputeError::Poisoned`] and the caller starts a new one. A
//! commit the backend refuses with [`ErrorKind::ReadOnly`](borealis_core::ErrorKind::ReadOnly) surfaces as
//! `ComputeError::Backend` with kind `ReadOnly`: the statement failed and nothing was stored.
//!
//! ## What the backend must provide
//!
//! - `get_page` returns the page as of every commit this compute's backend accepted so far
//!   (read-your-writes), or `None` for a page never written.
//! - `commit` returns `Ok` once the MTR is accepted (durability may follow asynchronously), or an
//!   error with kind `ReadOnly` when it was refused before anything left, or another kind when
//!   its outcome is unknown.
//! - Both may block (network I/O); a statement's deadline only interrupts guest code, so the
//!   backend bounds its own waits.

mod engine;
mod error;
mod imports;
mod session;

pub use compute_abi::{
    ExecError, ExecErrorKind, ExecRequest, ExecResponse, Keyed, Mtr, PageChange, PageChangeBody,
    Statement, StatementResult, Value, IDEMPOTENCY_TABLE, IDEMPOTENT_ANSWER_BYTES_MAX,
};
pub use engine::{ComputeEngine, EngineConfig, GUEST_WASM};
pub use error::{BackendError, ComputeError};
pub use session::{Compute, ComputeStats};

use borealis_core::PageNo;

/// Where a compute's pages come from and where its commits go. Implemented by the gateway
/// (pages from the pageserver, commits to the quorum writer); tests use an in-memory map.
///
/// Calls come from the thread running [`Compute::exec`], one at a time.
pub trait Backend: Send {
    /// The current image of `page` (exactly 4096 bytes), or `None` if it was never written.
    fn get_page(&mut self, page: PageNo) -> Result<Option<Vec<u8>>, BackendError>;

    /// Ships one commit. Each change is against the image `get_page` serves for that page
    /// (a page never written counts as zeros). `Err` with kind
    /// [`ErrorKind::ReadOnly`](borealis_core::ErrorKind::ReadOnly) means the
    /// commit was refused before anything left; any other error means its outcome is unknown.
    fn commit(&mut self, mtr: Mtr) -> Result<(), BackendError>;
}
