//! The physical floor: how long one durable write takes on the data disk.
//!
//! Every durable commit — a PostgreSQL WAL flush, a SQLite WAL commit with `synchronous=FULL`, a
//! Borealis safekeeper's group commit — ends in an fsync (or fdatasync) of the disk the data
//! lives on. The harness appends 4 KiB to a file and calls `fdatasync` after each append, in a
//! loop, on the same file system as every system's data directory, and reports p50/p99. A
//! quorum commit cannot be faster than the slowest of the fsyncs it waits for, so "Borealis
//! commit p50 ÷ fsync p50" says how many fsync-times a commit costs on this machine.

use crate::stats::Latencies;
use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

pub const BLOCK_BYTES: usize = 4096;

/// Appends 4 KiB + fdatasync for about `duration` (at least 50 times) in a file under `dir`.
pub fn measure(dir: &Path, duration: Duration) -> anyhow::Result<Latencies> {
    let path = dir.join("fsync-probe.dat");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0xa5u8; BLOCK_BYTES];
    let mut lat = Latencies::default();
    let started = Instant::now();
    while started.elapsed() < duration || lat.len() < 50 {
        let t0 = Instant::now();
        f.write_all(&block)?;
        f.sync_data().context("fdatasync")?;
        lat.push(t0.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(lat)
}
