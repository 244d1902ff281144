//! # borealis-utils: small I/O helpers the services share
//!
//! - [`lock_file`]: one process per data directory. Two safekeepers appending to one segment log,
//!   or two pageservers wiping one cache directory, would corrupt each other silently; the lock
//!   turns that operator mistake into a clear error at start-up.

pub mod lock_file;

pub use lock_file::{lock_data_dir, DataDirLock, LockError};
