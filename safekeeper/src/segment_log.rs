//! One append-only file per (tenant, segment): redo records back to back, nothing else.
//!
//! Every record already carries magic, version, its own LSN, its length and a CRC32C
//! ([`borealis_core::redo`]), so the file needs no framing of its own (`docs/formats/segment-log.md`
//! draws it). The file is behind the small [`LogStorage`] trait: [`FileStorage`] is the real disk,
//! [`crate::fault_storage::FaultyStorage`] an in-memory disk that tears writes, loses un-synced
//! bytes and flips bits on demand.
//!
//! ## Recovery on open
//!
//! [`SegmentLog::open`] reads the whole file and checks every record:
//!
//! - A record that does not decode (bad magic, length, CRC) is **corrupt** if a good record follows
//!   it somewhere later in the file, and the start of a **torn tail** if none does.
//! - A torn tail is what a crash leaves of writes that were never fsynced, hence never
//!   acknowledged: the file is cut back to the end of the last good record.
//! - Corrupt ranges in the middle (latent sector errors, misdirected writes) are dropped by an
//!   atomic rewrite of the file without them, and reported: the records they held are missing,
//!   the SCL stops below them, and gossip fetches them again from a peer.
//!
//! A record that fails its CRC when read later ([`SegmentLog::read_record`]) is dropped from the
//! index the same way, and reported to the caller so the SCL can be recomputed.
//!
//! Records may be stored out of LSN order (they arrive after a hole is filled); the in-memory
//! index maps each LSN to where its bytes are. A record whose LSN is already indexed is never
//! written twice.

use crate::acceptor::Link;
use borealis_core::redo::{RedoRecord, REDO_BODY_BYTES_MAX, REDO_HEADER_BYTES, REDO_MAGIC};
use borealis_core::Lsn;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The largest encoded record: anything claiming more is corrupt.
pub const RECORD_BYTES_MAX: usize = REDO_HEADER_BYTES + REDO_BODY_BYTES_MAX;
/// How much of a file recovery reads at once.
const SCAN_WINDOW_BYTES: usize = 4 * 1024 * 1024;
const _: () = assert!(
    SCAN_WINDOW_BYTES >= 2 * RECORD_BYTES_MAX,
    "a window holds whole records"
);
/// Copy buffer of [`FileStorage::keep_only`].
const COPY_CHUNK_BYTES: usize = 1024 * 1024;

/// The bytes of one segment's log, wherever they live.
pub trait LogStorage: Send {
    /// Current length, including bytes not yet synced.
    fn len_bytes(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Appends at the end. Not durable until [`LogStorage::sync`].
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the storage to `len` bytes, durably.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Replaces the contents with the concatenation of the given `(offset, len)` ranges of the
    /// current contents, atomically and durably: after a crash at any instant the storage holds
    /// either the old or the new contents.
    fn keep_only(&mut self, ranges: &[(u64, u64)]) -> io::Result<()>;
}

/// fsyncs a directory, making the creation, rename or removal of its entries durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A segment log file on the local disk.
pub struct FileStorage {
    path: PathBuf,
    file: File,
    len: u64,
}

impl FileStorage {
    /// Opens `path`, creating it (and making its directory entry durable) if it does not exist.
    pub fn open(path: &Path) -> io::Result<FileStorage> {
        let existed = path.try_exists()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            fsync_dir(parent_of(path)?)?;
        }
        let len = file.metadata()?.len();
        Ok(FileStorage {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    fn temp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        self.path.with_file_name(name)
    }
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    path.parent().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "segment file has no parent directory",
        )
    })
}

impl LogStorage for FileStorage {
    fn len_bytes(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.len)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        // fdatasync: the data and the file size, which is all a reader after a crash needs.
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        assert!(len <= self.len, "truncate only shortens");
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.len = len;
        Ok(())
    }

    fn keep_only(&mut self, ranges: &[(u64, u64)]) -> io::Result<()> {
        let temp = self.temp_path();
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        let mut written = 0u64;
        let mut buf = vec![0u8; COPY_CHUNK_BYTES];
        for &(offset, len) in ranges {
            assert!(offset + len <= self.len, "kept range inside the file");
            let mut done = 0;
            while done < len {
                let n = (len - done).min(COPY_CHUNK_BYTES as u64) as usize;
                self.file.read_exact_at(&mut buf[..n], offset + done)?;
                out.write_all_at(&buf[..n], written)?;
                done += n as u64;
                written += n as u64;
            }
        }
        out.sync_all()?;
        drop(out);
        std::fs::rename(&temp, &self.path)?;
        fsync_dir(parent_of(&self.path)?)?;
        self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.len = written;
        Ok(())
    }
}

/// Where one record's bytes are, and what the chain needs to know of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub len_bytes: u32,
    pub link: Link,
}

/// A range of a file that held no decodable record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRange {
    pub offset: u64,
    pub len_bytes: u64,
    pub error: String,
}

/// What [`SegmentLog::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub records: usize,
    /// Bytes cut off the end: what a crash left of writes that were never synced.
    pub torn_tail_bytes: u64,
    /// Ranges in the middle that held no good record; dropped by rewriting the file.
    pub corrupt: Vec<CorruptRange>,
    /// Records whose LSN appeared earlier in the file; the first copy is kept.
    pub duplicates: usize,
}

/// Why a stored record could not be returned.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no record with lsn {0} is held")]
    Missing(Lsn),
    /// The record's bytes could not be read or failed their checks. It has been dropped from the
    /// index: the caller must forget it too and fetch it again.
    #[error("stored record at lsn {lsn} is unreadable: {reason}")]
    Corrupt { lsn: Lsn, reason: String },
}

/// One segment's log: the storage plus the index of what it holds.
pub struct SegmentLog<S: LogStorage> {
    storage: S,
    index: BTreeMap<Lsn, IndexEntry>,
}

impl<S: LogStorage> SegmentLog<S> {
    /// Scans `storage`, verifying every record, cutting a torn tail and dropping corrupt ranges
    /// (see the module docs).
    pub fn open(mut storage: S) -> io::Result<(SegmentLog<S>, OpenReport)> {
        let scan = scan(&storage)?;
        let mut report = scan.report;
        let mut index = scan.index;
        report.torn_tail_bytes = storage.len_bytes() - scan.good_end;
        if !report.corrupt.is_empty() {
            // Rewrite with only the good records, so the bad bytes are never met again.
            let mut entries: Vec<(Lsn, IndexEntry)> = index.iter().map(|(l, e)| (*l, *e)).collect();
            entries.sort_by_key(|(_, e)| e.offset);
            let ranges: Vec<(u64, u64)> = entries
                .iter()
                .map(|(_, e)| (e.offset, u64::from(e.len_bytes)))
                .collect();
            storage.keep_only(&ranges)?;
            index = relocate(entries);
        } else if report.torn_tail_bytes > 0 {
            storage.truncate(scan.good_end)?;
        }
        report.records = index.len();
        Ok((SegmentLog { storage, index }, report))
    }

    pub fn index(&self) -> &BTreeMap<Lsn, IndexEntry> {
        &self.index
    }

    pub fn contains(&self, lsn: Lsn) -> bool {
        self.index.contains_key(&lsn)
    }

    /// Bytes in the file.
    pub fn len_bytes(&self) -> u64 {
        self.storage.len_bytes()
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Appends encoded records (each `(lsn, link, bytes)`, already validated) in one write,
    /// skipping LSNs already held. Not durable until [`SegmentLog::sync`]. Returns how many were
    /// written.
    pub fn append<'a>(
        &mut self,
        records: impl IntoIterator<Item = (Lsn, Link, &'a [u8])>,
    ) -> io::Result<usize> {
        let start = self.storage.len_bytes();
        let mut buf = Vec::new();
        let mut new_entries = BTreeMap::new();
        for (lsn, link, bytes) in records {
            if self.index.contains_key(&lsn) || new_entries.contains_key(&lsn) {
                continue;
            }
            assert!(
                bytes.len() <= RECORD_BYTES_MAX,
                "records are validated before appending"
            );
            let entry = IndexEntry {
                offset: start + buf.len() as u64,
                len_bytes: bytes.len() as u32,
                link,
            };
            buf.extend_from_slice(bytes);
            new_entries.insert(lsn, entry);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.storage.append(&buf)?;
        let written = new_entries.len();
        self.index.extend(new_entries);
        Ok(written)
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.storage.sync()
    }

    /// Reads and verifies the record at `lsn`. A record that cannot be read back intact is
    /// dropped from the index and reported as [`ReadError::Corrupt`].
    pub fn read_record(&mut self, lsn: Lsn) -> Result<Vec<u8>, ReadError> {
        let entry = *self.index.get(&lsn).ok_or(ReadError::Missing(lsn))?;
        let mut buf = vec![0u8; entry.len_bytes as usize];
        let reason = match self.storage.read_at(entry.offset, &mut buf) {
            Err(e) => format!("read failed: {e}"),
            Ok(()) => match RedoRecord::decode(&buf) {
                Ok((r, n)) if r.lsn == lsn && n == buf.len() => return Ok(buf),
                Ok((r, _)) => format!("found the record of lsn {} instead (misdirected)", r.lsn),
                Err(e) => e.to_string(),
            },
        };
        self.index.remove(&lsn);
        Err(ReadError::Corrupt { lsn, reason })
    }

    /// Durably forgets every record above `lsn`. If they all lie after the records kept, the file
    /// is cut; otherwise (records were stored out of order) it is rewritten atomically. Returns
    /// how many records were dropped.
    pub fn truncate_above(&mut self, lsn: Lsn) -> io::Result<usize> {
        let above = self.index.split_off(&Lsn(lsn.0.saturating_add(1)));
        if above.is_empty() {
            return Ok(0);
        }
        let first_dropped = above.values().map(|e| e.offset).min().unwrap_or(0);
        let kept_end = self
            .index
            .values()
            .map(|e| e.offset + u64::from(e.len_bytes))
            .max()
            .unwrap_or(0);
        if kept_end <= first_dropped {
            self.storage.truncate(first_dropped)?;
        } else {
            let mut entries: Vec<(Lsn, IndexEntry)> =
                self.index.iter().map(|(l, e)| (*l, *e)).collect();
            entries.sort_by_key(|(_, e)| e.offset);
            let ranges: Vec<(u64, u64)> = entries
                .iter()
                .map(|(_, e)| (e.offset, u64::from(e.len_bytes)))
                .collect();
            self.storage.keep_only(&ranges)?;
            self.index = relocate(entries);
        }
        Ok(above.len())
    }

    /// Durably drops every record at or below `lsn` (the log was trimmed there): the file is
    /// rewritten atomically with the records above it, in file order. Returns how many records
    /// were dropped (0: nothing to do, the file is left alone).
    pub fn drop_through(&mut self, lsn: Lsn) -> io::Result<usize> {
        let kept = self.index.split_off(&Lsn(lsn.0.saturating_add(1)));
        let dropped = std::mem::replace(&mut self.index, kept);
        if dropped.is_empty() {
            return Ok(0);
        }
        let mut entries: Vec<(Lsn, IndexEntry)> =
            self.index.iter().map(|(l, e)| (*l, *e)).collect();
        entries.sort_by_key(|(_, e)| e.offset);
        let ranges: Vec<(u64, u64)> = entries
            .iter()
            .map(|(_, e)| (e.offset, u64::from(e.len_bytes)))
            .collect();
        if let Err(e) = self.storage.keep_only(&ranges) {
            // Nothing changed on disk (the rewrite is atomic): neither in the index.
            self.index.extend(dropped);
            return Err(e);
        }
        self.index = relocate(entries);
        Ok(dropped.len())
    }
}

/// The index of records laid back to back in the given order (after a rewrite).
fn relocate(entries: Vec<(Lsn, IndexEntry)>) -> BTreeMap<Lsn, IndexEntry> {
    let mut offset = 0;
    entries
        .into_iter()
        .map(|(lsn, e)| {
            let moved = IndexEntry { offset, ..e };
            offset += u64::from(e.len_bytes);
            (lsn, moved)
        })
        .collect()
}

struct Scan {
    index: BTreeMap<Lsn, IndexEntry>,
    report: OpenReport,
    /// End of the last good record: everything after it is a torn tail.
    good_end: u64,
}

/// A sliding window over the storage, so recovery never holds a whole segment in memory.
struct Window {
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    /// The bytes from `from` on, at least a whole record's worth (or up to the end of the file).
    fn at<S: LogStorage>(&mut self, storage: &S, from: u64) -> io::Result<&[u8]> {
        let file_len = storage.len_bytes();
        let want_end = file_len.min(from + RECORD_BYTES_MAX as u64);
        let have_end = self.start + self.buf.len() as u64;
        if from < self.start || want_end > have_end {
            let n = (file_len - from).min(SCAN_WINDOW_BYTES as u64) as usize;
            self.buf.resize(n, 0);
            storage.read_at(from, &mut self.buf)?;
            self.start = from;
        }
        Ok(&self.buf[(from - self.start) as usize..])
    }
}

fn scan<S: LogStorage>(storage: &S) -> io::Result<Scan> {
    let file_len = storage.len_bytes();
    let mut window = Window {
        start: 0,
        buf: Vec::new(),
    };
    let mut index = BTreeMap::new();
    let mut report = OpenReport::default();
    let mut pos = 0u64;
    while pos < file_len {
        let bytes = window.at(storage, pos)?;
        match RedoRecord::decode(bytes) {
            Ok((r, n)) => {
                match index.entry(r.lsn) {
                    std::collections::btree_map::Entry::Occupied(_) => report.duplicates += 1,
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        let link = Link {
                            prev_lsn_segment: r.prev_lsn_segment,
                            is_cpl: r.is_cpl,
                        };
                        slot.insert(IndexEntry {
                            offset: pos,
                            len_bytes: n as u32,
                            link,
                        });
                    }
                }
                pos += n as u64;
            }
            Err(e) => match find_next_record(storage, &mut window, pos + 1)? {
                Some(next) => {
                    report.corrupt.push(CorruptRange {
                        offset: pos,
                        len_bytes: next - pos,
                        error: e.to_string(),
                    });
                    pos = next;
                }
                None => break,
            },
        }
    }
    Ok(Scan {
        index,
        report,
        good_end: pos,
    })
}

/// The offset of the first good record at or after `from`, if any.
fn find_next_record<S: LogStorage>(
    storage: &S,
    window: &mut Window,
    from: u64,
) -> io::Result<Option<u64>> {
    let magic = REDO_MAGIC.to_le_bytes();
    let file_len = storage.len_bytes();
    let mut q = from;
    while q + (REDO_HEADER_BYTES as u64) <= file_len {
        let bytes = window.at(storage, q)?;
        match bytes.windows(magic.len()).position(|w| w == magic) {
            Some(p) => {
                let candidate = q + p as u64;
                if decodes(window.at(storage, candidate)?) {
                    return Ok(Some(candidate));
                }
                q = candidate + 1;
            }
            // No magic starts in this window (a match could straddle its end: step back 3).
            None => q += (bytes.len().saturating_sub(magic.len() - 1)).max(1) as u64,
        }
    }
    Ok(None)
}

fn decodes(bytes: &[u8]) -> bool {
    RedoRecord::decode(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault_storage::FaultyStorage;
    use borealis_core::redo::RedoBody;
    use borealis_core::{PageNo, PAGE_SIZE_BYTES};

    fn record(lsn: u64, prev: u64) -> RedoRecord {
        RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: Lsn(prev),
            prev_lsn_page: Lsn::INVALID,
            page_no: PageNo(lsn as u32 % 7),
            is_cpl: lsn.is_multiple_of(2),
            body: RedoBody::Image(vec![lsn as u8; PAGE_SIZE_BYTES]),
        }
    }

    fn append<S: LogStorage>(log: &mut SegmentLog<S>, recs: &[RedoRecord]) -> usize {
        let encoded: Vec<(Lsn, Link, Vec<u8>)> = recs
            .iter()
            .map(|r| {
                (
                    r.lsn,
                    Link {
                        prev_lsn_segment: r.prev_lsn_segment,
                        is_cpl: r.is_cpl,
                    },
                    r.encode(),
                )
            })
            .collect();
        log.append(encoded.iter().map(|(l, k, b)| (*l, *k, b.as_slice())))
            .unwrap()
    }

    fn chain(from: u64, to: u64) -> Vec<RedoRecord> {
        (from..=to).map(|l| record(l, l - 1)).collect()
    }

    fn lsns<S: LogStorage>(log: &SegmentLog<S>) -> Vec<u64> {
        log.index().keys().map(|l| l.0).collect()
    }

    #[test]
    fn append_read_and_reopen() {
        let disk = FaultyStorage::new();
        let (mut log, report) = SegmentLog::open(disk.clone()).unwrap();
        assert_eq!(report, OpenReport::default());
        assert_eq!(append(&mut log, &chain(1, 3)), 3);
        log.sync().unwrap();
        assert_eq!(log.read_record(Lsn(2)).unwrap(), record(2, 1).encode());
        assert!(matches!(
            log.read_record(Lsn(9)),
            Err(ReadError::Missing(Lsn(9)))
        ));

        let (log, report) = SegmentLog::open(disk.crash(0)).unwrap();
        assert_eq!(report.records, 3);
        assert_eq!(lsns(&log), vec![1, 2, 3]);
        let e = log.index()[&Lsn(2)];
        assert_eq!(
            e.link,
            Link {
                prev_lsn_segment: Lsn(1),
                is_cpl: true
            }
        );
    }

    #[test]
    fn duplicates_and_out_of_order_records() {
        let (mut log, _) = SegmentLog::open(FaultyStorage::new()).unwrap();
        assert_eq!(append(&mut log, &[record(5, 4), record(1, 0)]), 2);
        assert_eq!(
            append(&mut log, &[record(5, 4), record(4, 3), record(4, 3)]),
            1
        );
        assert_eq!(lsns(&log), vec![1, 4, 5]);
        assert_eq!(log.read_record(Lsn(4)).unwrap(), record(4, 3).encode());
    }

    #[test]
    fn unsynced_bytes_are_lost_and_a_torn_tail_is_cut() {
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(&mut log, &chain(1, 3));
        log.sync().unwrap();
        let synced = disk.contents().len();
        append(&mut log, &chain(4, 6));

        // Nothing of the unsynced write survived.
        let (log, report) = SegmentLog::open(disk.crash(0)).unwrap();
        assert_eq!((lsns(&log), report.torn_tail_bytes), (vec![1, 2, 3], 0));

        // Part of it survived: record 4 whole, record 5 torn in its body.
        let keep = record(4, 3).encoded_len() + 100;
        let crashed = disk.crash(keep);
        let (log, report) = SegmentLog::open(crashed.clone()).unwrap();
        assert_eq!(lsns(&log), vec![1, 2, 3, 4]);
        assert_eq!(report.torn_tail_bytes, 100);
        assert!(report.corrupt.is_empty());
        assert_eq!(
            crashed.contents().len(),
            synced + record(4, 3).encoded_len()
        );
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_detected_dropped_and_the_rest_kept() {
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(&mut log, &chain(1, 5));
        log.sync().unwrap();
        let rec_len = record(1, 0).encoded_len() as u64;
        // A bit of record 3's body, then (separately) its length field.
        for offset in [2 * rec_len + 1000, 2 * rec_len + 36] {
            let disk = disk.crash(0);
            disk.flip_bit(offset, 3);
            let (mut log, report) = SegmentLog::open(disk.clone()).unwrap();
            assert_eq!(lsns(&log), vec![1, 2, 4, 5], "flip at {offset}");
            assert_eq!(report.corrupt.len(), 1);
            assert_eq!(report.corrupt[0].offset, 2 * rec_len);
            assert_eq!(report.corrupt[0].len_bytes, rec_len);
            assert_eq!(report.torn_tail_bytes, 0);
            // The file was rewritten without the bad bytes; the records read back intact.
            assert_eq!(disk.contents().len() as u64, 4 * rec_len);
            assert_eq!(log.read_record(Lsn(5)).unwrap(), record(5, 4).encode());
            // The record comes back from a peer and is appended at the end.
            assert_eq!(append(&mut log, &[record(3, 2)]), 1);
            log.sync().unwrap();
            let (log, report) = SegmentLog::open(disk.crash(0)).unwrap();
            assert_eq!((lsns(&log), report.corrupt.len()), (vec![1, 2, 3, 4, 5], 0));
        }
    }

    #[test]
    fn a_flip_in_the_last_record_is_a_torn_tail() {
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(&mut log, &chain(1, 3));
        log.sync().unwrap();
        disk.flip_bit(disk.contents().len() as u64 - 1, 0);
        let (log, report) = SegmentLog::open(disk.crash(0)).unwrap();
        assert_eq!(lsns(&log), vec![1, 2]);
        assert_eq!(report.torn_tail_bytes, record(3, 2).encoded_len() as u64);
    }

    #[test]
    fn latent_corruption_found_on_read_drops_the_record() {
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(&mut log, &chain(1, 3));
        log.sync().unwrap();
        let rec_len = record(1, 0).encoded_len() as u64;
        disk.flip_bit(rec_len + 50, 1);
        match log.read_record(Lsn(2)) {
            Err(ReadError::Corrupt { lsn, .. }) => assert_eq!(lsn, Lsn(2)),
            other => panic!("corruption not detected: {other:?}"),
        }
        assert_eq!(lsns(&log), vec![1, 3]);
        assert!(log.read_record(Lsn(3)).is_ok());
    }

    #[test]
    fn a_misdirected_block_is_not_taken_for_the_record() {
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(&mut log, &chain(1, 2));
        log.sync().unwrap();
        // Record 1's bytes written where record 2 should be: valid CRC, wrong LSN.
        let rec_len = record(1, 0).encoded_len() as u64;
        disk.overwrite(rec_len, &record(1, 0).encode());
        assert!(matches!(
            log.read_record(Lsn(2)),
            Err(ReadError::Corrupt { .. })
        ));
    }

    #[test]
    fn truncate_above_cuts_the_tail_or_rewrites() {
        // In order: the file is cut.
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(&mut log, &chain(1, 5));
        log.sync().unwrap();
        assert_eq!(log.truncate_above(Lsn(3)).unwrap(), 2);
        let rec_len = record(1, 0).encoded_len();
        assert_eq!(disk.contents().len(), 3 * rec_len);
        assert_eq!(disk.rewrites(), 0);
        assert_eq!(log.truncate_above(Lsn(3)).unwrap(), 0);

        // Out of order (5 arrived before 2): rewritten without the records above.
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(
            &mut log,
            &[record(1, 0), record(5, 4), record(2, 1), record(4, 3)],
        );
        log.sync().unwrap();
        assert_eq!(log.truncate_above(Lsn(3)).unwrap(), 2);
        assert_eq!(disk.rewrites(), 1);
        assert_eq!(lsns(&log), vec![1, 2]);
        assert_eq!(log.read_record(Lsn(2)).unwrap(), record(2, 1).encode());
        let (log, report) = SegmentLog::open(disk.crash(0)).unwrap();
        assert_eq!((lsns(&log), report.torn_tail_bytes), (vec![1, 2], 0));
    }

    #[test]
    fn drop_through_rewrites_without_the_trimmed_records() {
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        // Stored out of order: 4 arrived before 3.
        append(
            &mut log,
            &[
                record(1, 0),
                record(2, 1),
                record(4, 3),
                record(3, 2),
                record(5, 4),
            ],
        );
        log.sync().unwrap();
        assert_eq!(log.drop_through(Lsn(3)).unwrap(), 3);
        assert_eq!(lsns(&log), vec![4, 5]);
        assert_eq!(disk.rewrites(), 1);
        let rec_len = record(1, 0).encoded_len();
        assert_eq!(disk.contents().len(), 2 * rec_len);
        assert_eq!(log.read_record(Lsn(4)).unwrap(), record(4, 3).encode());
        assert_eq!(log.drop_through(Lsn(3)).unwrap(), 0, "idempotent");
        assert_eq!(disk.rewrites(), 1);
        let (log, report) = SegmentLog::open(disk.crash(0)).unwrap();
        assert_eq!((lsns(&log), report.torn_tail_bytes), (vec![4, 5], 0));
    }

    #[test]
    fn failures_are_errors_not_panics() {
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(&mut log, &chain(1, 2));
        log.sync().unwrap();
        append(&mut log, &chain(3, 3));
        disk.fail_next_sync();
        assert!(log.sync().is_err());
        // The failed sync made nothing durable: a crash loses record 3.
        let (log, _) = SegmentLog::open(disk.crash(0)).unwrap();
        assert_eq!(lsns(&log), vec![1, 2]);

        // A torn write: only 10 bytes of the append reach the file, and the append fails.
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(&mut log, &chain(1, 2));
        log.sync().unwrap();
        disk.tear_next_append(10);
        let encoded = record(3, 2).encode();
        let link = Link {
            prev_lsn_segment: Lsn(2),
            is_cpl: false,
        };
        assert!(log.append([(Lsn(3), link, encoded.as_slice())]).is_err());
        // Even if the OS wrote the partial bytes out before the crash, they are cut on open.
        let (log, report) = SegmentLog::open(disk.crash(usize::MAX)).unwrap();
        assert_eq!(lsns(&log), vec![1, 2]);
        assert_eq!(report.torn_tail_bytes, 10);
    }

    #[test]
    fn garbage_between_good_records_is_skipped_even_across_windows() {
        let disk = FaultyStorage::new();
        let (mut log, _) = SegmentLog::open(disk.clone()).unwrap();
        append(&mut log, &chain(1, 1));
        log.sync().unwrap();
        // More garbage than one scan window, with magic-like bytes inside.
        let mut junk = vec![0u8; SCAN_WINDOW_BYTES + 12345];
        junk[100..104].copy_from_slice(&REDO_MAGIC.to_le_bytes());
        disk.append_raw(&junk);
        disk.append_raw(&record(2, 1).encode());
        let (log, report) = SegmentLog::open(disk.crash(0)).unwrap();
        assert_eq!(lsns(&log), vec![1, 2]);
        assert_eq!(report.corrupt.len(), 1);
        assert_eq!(report.corrupt[0].len_bytes, junk.len() as u64);
    }

    #[test]
    fn real_files_round_trip_and_rewrite_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg-0.log");
        let (mut log, _) = SegmentLog::open(FileStorage::open(&path).unwrap()).unwrap();
        append(&mut log, &[record(1, 0), record(3, 2), record(2, 1)]);
        log.sync().unwrap();
        assert_eq!(log.truncate_above(Lsn(2)).unwrap(), 1);
        assert!(!dir.path().join("seg-0.log.tmp").exists());
        drop(log);
        let (mut log, report) = SegmentLog::open(FileStorage::open(&path).unwrap()).unwrap();
        assert_eq!(lsns(&log), vec![1, 2]);
        assert_eq!(report.torn_tail_bytes, 0);
        assert_eq!(log.read_record(Lsn(1)).unwrap(), record(1, 0).encode());
    }
}
