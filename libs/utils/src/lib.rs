//! # borealis-utils: small I/O helpers the services share
//!
//! - [`crash_point`]: named places where a test makes a service die as `kill -9` would.
//! - [`lock_file`]: one process per data directory. Two safekeepers appending to one segment log,
//!   or two pageservers wiping one cache directory, would corrupt each other silently; the lock
//!   turns that operator mistake into a clear error at start-up.
//! - [`owner_only`]: what the services write is readable by their user only (umask, modes).
//! - [`ports`]: loopback ports for servers started later, chosen where no outgoing connection
//!   can take them first.
//! - [`sync`]: the one way to take a mutex ([`LockExt::locked`]), and why poison is ignored.

pub mod crash_point;
pub mod lock_file;
pub mod owner_only;
pub mod ports;
pub mod sync;

pub use lock_file::{lock_data_dir, DataDirLock, LockError};
pub use sync::{LockExt, RwLockExt};
