//! # gateway: where users meet Borealis
//!
//! The gateway is an HTTP server (`axum`) that owns the tenant registry and runs each active
//! tenant's **writer compute**: SQLite compiled to WebAssembly, in a wasmtime sandbox
//! (`compute-host`). A request travels like this:
//!
//! 1. [`api`] authenticates the bearer token against the tenant's stored hash, admits the
//!    request against the tenant's and the gateway's [`budget`]s (requests and bytes in flight:
//!    over them, `429 rate_limited`), parses the JSON body into an `ExecRequest` and hands it to
//!    the [`compute_pool`].
//! 2. The pool's per-tenant thread starts the compute on first use — which first **recovers**
//!    the volume ([`volume_writer::VolumeWriter::recover`]: read quorum of safekeeper states, new
//!    epoch, truncation above the VDL) — and runs the statement in the sandbox.
//! 3. Pages SQLite needs come through [`volume::Volume`] (pending pages, an LRU, then the
//!    pageserver's GetPage@VDL). At commit the guest hands over the changed pages as one
//!    mini-transaction; the [`volume_writer`] stamps LSNs and ships redo to the six safekeepers.
//! 4. The handler holds the response until the VDL covers everything the statement could have
//!    seen, then answers. Nothing un-durable is ever shown to a client.
//!
//! Idle tenants' computes stop after `--idle-timeout`; the next request starts one again.
//!
//! **Read replicas.** A request with `"replica": true` goes to the tenant's *reader* instead
//! ([`compute_pool::reader`]): a second compute in this process that never writes. The writer's
//! [`volume_writer::VolumeWriter`] hands every MTR it ships to the reader's tap; the reader applies
//! them to the pages it caches ([`replica_cache`]) only up to a VDL, so it answers at a durable
//! **read point** that shows the writer's commits whole and in LSN order. Lag is a metric.
//!
//! **Arrow.** `Accept: application/vnd.apache.arrow.stream` returns the last statement's rows as
//! an Arrow IPC stream ([`arrow_stream`]: how SQLite's per-value types become column types).

pub mod api;
pub mod arrow_stream;
pub mod budget;
pub mod compute_pool;
pub mod config;
pub mod error;
pub mod metrics;
pub mod page_client;
pub mod readahead;
pub mod reclaim;
pub mod replica_cache;
pub mod storage_auth;
pub mod tenants;
pub mod volume;
pub mod volume_writer;
