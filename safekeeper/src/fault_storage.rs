//! An in-memory [`LogStorage`] that fails the way disks do, for tests.
//!
//! It keeps two images of the file: `live` (what reads see: the OS page cache) and `durable`
//! (what survives a crash: the last [`LogStorage::sync`]). [`FaultyStorage::crash`] builds the
//! storage a process finds after a crash: the durable image plus, optionally, a prefix of the
//! bytes that were appended but never synced (a torn write). Faults to inject on demand: a failing
//! sync, a write that tears after some bytes, bit flips and misdirected overwrites of stored
//! bytes (latent corruption). Clones share the same file, so a test keeps a handle on the storage
//! it gave to a [`crate::segment_log::SegmentLog`].

use crate::segment_log::LogStorage;
use borealis_utils::LockExt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    live: Vec<u8>,
    durable: Vec<u8>,
    fail_next_sync: bool,
    tear_next_append: Option<usize>,
    rewrites: usize,
}

#[derive(Clone, Default)]
pub struct FaultyStorage {
    state: Arc<Mutex<State>>,
}

impl FaultyStorage {
    pub fn new() -> FaultyStorage {
        FaultyStorage::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// The storage a restarted process finds: the durable image plus the first `keep_unsynced`
    /// bytes of whatever was appended after the last sync. A new, independent storage.
    pub fn crash(&self, keep_unsynced: usize) -> FaultyStorage {
        let s = self.state();
        let mut image = s.durable.clone();
        if s.live.len() > s.durable.len() && s.live.starts_with(&s.durable) {
            let unsynced = &s.live[s.durable.len()..];
            image.extend_from_slice(&unsynced[..keep_unsynced.min(unsynced.len())]);
        }
        FaultyStorage {
            state: Arc::new(Mutex::new(State {
                live: image.clone(),
                durable: image,
                ..State::default()
            })),
        }
    }

    /// What reads see now.
    pub fn contents(&self) -> Vec<u8> {
        self.state().live.clone()
    }

    /// Flips one bit of the stored bytes, synced or not (a latent sector error).
    pub fn flip_bit(&self, offset: u64, bit: u8) {
        let mut s = self.state();
        let i = offset as usize;
        assert!(i < s.live.len(), "flip inside the file");
        s.live[i] ^= 1 << bit;
        if i < s.durable.len() {
            s.durable[i] ^= 1 << bit;
        }
    }

    /// Overwrites stored bytes in place (a misdirected write), synced or not.
    pub fn overwrite(&self, offset: u64, bytes: &[u8]) {
        let mut s = self.state();
        let i = offset as usize;
        assert!(i + bytes.len() <= s.live.len(), "overwrite inside the file");
        s.live[i..i + bytes.len()].copy_from_slice(bytes);
        if i + bytes.len() <= s.durable.len() {
            s.durable[i..i + bytes.len()].copy_from_slice(bytes);
        }
    }

    /// Appends bytes behind the log's back and syncs them (garbage a crash or a bug left).
    pub fn append_raw(&self, bytes: &[u8]) {
        let mut s = self.state();
        s.live.extend_from_slice(bytes);
        s.durable = s.live.clone();
    }

    /// The next sync fails and makes nothing durable.
    pub fn fail_next_sync(&self) {
        self.state().fail_next_sync = true;
    }

    /// The next append writes only its first `bytes` bytes, then fails.
    pub fn tear_next_append(&self, bytes: usize) {
        self.state().tear_next_append = Some(bytes);
    }

    /// How many times [`LogStorage::keep_only`] rewrote the file.
    pub fn rewrites(&self) -> usize {
        self.state().rewrites
    }
}

impl LogStorage for FaultyStorage {
    fn len_bytes(&self) -> u64 {
        self.state().live.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = self.state();
        let start = offset as usize;
        let end = start + buf.len();
        if end > s.live.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        buf.copy_from_slice(&s.live[start..end]);
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        if let Some(n) = s.tear_next_append.take() {
            s.live.extend_from_slice(&bytes[..n.min(bytes.len())]);
            return Err(io::Error::other("injected torn write"));
        }
        s.live.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.state();
        if std::mem::take(&mut s.fail_next_sync) {
            return Err(io::Error::other("injected fsync failure"));
        }
        s.durable = s.live.clone();
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.state();
        assert!(len as usize <= s.live.len(), "truncate only shortens");
        s.live.truncate(len as usize);
        s.durable = s.live.clone();
        Ok(())
    }

    fn keep_only(&mut self, ranges: &[(u64, u64)]) -> io::Result<()> {
        let mut s = self.state();
        let mut image = Vec::new();
        for &(offset, len) in ranges {
            image.extend_from_slice(&s.live[offset as usize..(offset + len) as usize]);
        }
        s.live = image.clone();
        s.durable = image;
        s.rewrites += 1;
        Ok(())
    }
}
