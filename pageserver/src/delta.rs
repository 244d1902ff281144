//! Delta layer files: the redo records of one segment between two checkpoints (RFC 0010).
//!
//! A checkpoint at `to` whose previous checkpoint was at `from` writes, with a retention window
//! set (`--pitr-window`), a delta layer `delta-<from>-<to>`: every record of the segment with
//! `from < lsn ≤ to`, so that the segment can be rebuilt as of any LSN in between
//! ([`crate::history`]). The format is drawn byte by byte in `docs/formats/delta-layer.md`:
//!
//! ```text
//! +-------------------+---------------------------------+---------------------------+-------------------+
//! | header (44 bytes) | redo records, by (page, lsn)    | directory (24 bytes       | footer (24 bytes) |
//! |                   | (each as in the log: own CRC)   |  per page)                |                   |
//! +-------------------+---------------------------------+---------------------------+-------------------+
//! ```
//!
//! - The **header** names the tenant, the segment, the LSN range and the record count, and ends
//!   with a CRC32C of itself.
//! - Each **record** is encoded exactly as in the safekeepers' log
//!   (`docs/formats/redo-record.md`: magic, version, LSNs, page, CRC32C over header and body).
//!   Records are sorted by page, then LSN; every LSN is in the header's range and every page in
//!   its segment.
//! - The **directory** has one entry per page: its number, how many records it has, and where
//!   they are (offset from the start of the file, length in bytes). Pages increase.
//! - The **footer** repeats the page and record counts and holds a CRC32C of all records and one
//!   of the directory.
//!
//! A reader that wants one page reads the tail (directory and footer, one ranged read of
//! [`tail_range`], whose size follows from the page count the index gives), then the page's
//! records (one more ranged read), and checks everything: a check that fails is an error, never
//! a page.

use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout, TenantId};
use std::ops::Range;

/// `"BRDL"` read as a little-endian u32.
pub const DELTA_MAGIC: u32 = u32::from_le_bytes(*b"BRDL");
/// `"BRDE"` read as a little-endian u32: the footer.
pub const DELTA_FOOTER_MAGIC: u32 = u32::from_le_bytes(*b"BRDE");
pub const DELTA_VERSION: u8 = 1;
pub const DELTA_HEADER_BYTES: usize = 44;
pub const DELTA_ENTRY_BYTES: usize = 24;
pub const DELTA_FOOTER_BYTES: usize = 24;
const HEADER_CRC_OFFSET: usize = 40;
const FOOTER_CRC_OFFSET: usize = 20;
const _: () = assert!(HEADER_CRC_OFFSET + 4 == DELTA_HEADER_BYTES);
const _: () = assert!(FOOTER_CRC_OFFSET + 4 == DELTA_FOOTER_BYTES);

/// What a delta layer's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaMeta {
    pub tenant: TenantId,
    pub segment: SegmentId,
    /// Every record is above it.
    pub from: Lsn,
    /// Every record is at or below it.
    pub to: Lsn,
    pub record_count: u32,
    /// Pages with at least one record (directory entries).
    pub page_count: u32,
    pub file_bytes: u64,
}

/// Where one page's records are in a delta layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaEntry {
    pub page: u32,
    pub count: u32,
    pub offset: u64,
    pub bytes: u32,
}

impl DeltaEntry {
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + u64::from(self.bytes)
    }
}

pub fn delta_layer_name(from: Lsn, to: Lsn) -> String {
    format!("delta-{:016x}-{:016x}", from.0, to.0)
}

/// Where the directory and footer of a delta layer of `page_count` pages and `file_bytes`
/// bytes are.
pub fn tail_range(page_count: u32, file_bytes: u64) -> Range<u64> {
    let tail = page_count as u64 * DELTA_ENTRY_BYTES as u64 + DELTA_FOOTER_BYTES as u64;
    file_bytes.saturating_sub(tail)..file_bytes
}

/// Encodes the delta layer of `records` (any order; records outside `(from, to]` or outside the
/// segment are a bug of the caller and panic): the whole file, in memory (the records are).
pub fn encode(
    tenant: TenantId,
    segment: SegmentId,
    layout: SegmentLayout,
    from: Lsn,
    to: Lsn,
    records: &[RedoRecord],
) -> (Vec<u8>, DeltaMeta) {
    let mut sorted: Vec<&RedoRecord> = records.iter().collect();
    sorted.sort_by_key(|r| (r.page_no, r.lsn));
    let record_count = u32::try_from(sorted.len()).expect("fewer than 2^32 records");
    let mut out = Vec::with_capacity(
        DELTA_HEADER_BYTES + records.iter().map(|r| r.encoded_len()).sum::<usize>(),
    );
    out.extend_from_slice(&DELTA_MAGIC.to_le_bytes());
    out.push(DELTA_VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&tenant.0.to_le_bytes());
    out.extend_from_slice(&segment.0.to_le_bytes());
    out.extend_from_slice(&record_count.to_le_bytes());
    out.extend_from_slice(&from.0.to_le_bytes());
    out.extend_from_slice(&to.0.to_le_bytes());
    let crc = crc32c::crc32c(&out[..HEADER_CRC_OFFSET]);
    out.extend_from_slice(&crc.to_le_bytes());

    let mut entries: Vec<DeltaEntry> = Vec::new();
    for r in sorted {
        assert!(
            r.lsn > from && r.lsn <= to,
            "record at lsn {} outside ({from}, {to}]",
            r.lsn
        );
        assert_eq!(
            layout.segment_of(r.page_no),
            segment,
            "record of another segment"
        );
        let offset = out.len() as u64;
        r.encode_into(&mut out);
        let bytes = (out.len() as u64 - offset) as u32;
        match entries.last_mut() {
            Some(e) if e.page == r.page_no.0 => {
                e.count += 1;
                e.bytes += bytes;
            }
            _ => entries.push(DeltaEntry {
                page: r.page_no.0,
                count: 1,
                offset,
                bytes,
            }),
        }
    }
    let records_crc = crc32c::crc32c(&out[DELTA_HEADER_BYTES..]);
    let dir_start = out.len();
    for e in &entries {
        out.extend_from_slice(&e.page.to_le_bytes());
        out.extend_from_slice(&e.count.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.bytes.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    let directory_crc = crc32c::crc32c(&out[dir_start..]);
    let page_count = entries.len() as u32;
    let footer_start = out.len();
    out.extend_from_slice(&page_count.to_le_bytes());
    out.extend_from_slice(&record_count.to_le_bytes());
    out.extend_from_slice(&records_crc.to_le_bytes());
    out.extend_from_slice(&directory_crc.to_le_bytes());
    out.extend_from_slice(&DELTA_FOOTER_MAGIC.to_le_bytes());
    let crc = crc32c::crc32c(&out[footer_start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    let meta = DeltaMeta {
        tenant,
        segment,
        from,
        to,
        record_count,
        page_count,
        file_bytes: out.len() as u64,
    };
    (out, meta)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

/// Checks the tail of a delta layer (read with [`tail_range`]) that the index says holds
/// `page_count` pages of `segment` in a file of `file_bytes`, and returns its directory.
pub fn decode_tail(
    tail: &[u8],
    page_count: u32,
    file_bytes: u64,
    segment: SegmentId,
    layout: SegmentLayout,
) -> Result<Vec<DeltaEntry>, String> {
    let range = tail_range(page_count, file_bytes);
    if tail.len() as u64 != range.end - range.start {
        return Err(format!(
            "the tail is {} bytes, not {}",
            tail.len(),
            range.end - range.start
        ));
    }
    let (directory, footer) = tail.split_at(tail.len() - DELTA_FOOTER_BYTES);
    if crc32c::crc32c(&footer[..FOOTER_CRC_OFFSET]) != u32_at(footer, FOOTER_CRC_OFFSET) {
        return Err("the footer fails its crc".into());
    }
    if u32_at(footer, 16) != DELTA_FOOTER_MAGIC {
        return Err("bad footer magic".into());
    }
    if u32_at(footer, 0) != page_count {
        return Err(format!(
            "the footer says {} pages, the index {page_count}",
            u32_at(footer, 0)
        ));
    }
    if crc32c::crc32c(directory) != u32_at(footer, 12) {
        return Err("the directory fails the footer's crc".into());
    }
    let records_end = range.start;
    let mut entries = Vec::with_capacity(page_count as usize);
    let mut next_offset = DELTA_HEADER_BYTES as u64;
    for e in directory.chunks_exact(DELTA_ENTRY_BYTES) {
        let entry = DeltaEntry {
            page: u32_at(e, 0),
            count: u32_at(e, 4),
            offset: u64_at(e, 8),
            bytes: u32_at(e, 16),
        };
        if entries
            .last()
            .is_some_and(|p: &DeltaEntry| p.page >= entry.page)
        {
            return Err(format!("directory entry {} is out of order", entry.page));
        }
        if layout.segment_of(PageNo(entry.page)) != segment {
            return Err(format!(
                "directory page {} is not in segment {segment}",
                entry.page
            ));
        }
        if entry.count == 0 || entry.offset != next_offset || entry.range().end > records_end {
            return Err(format!(
                "directory entry of page {} does not tile the records",
                entry.page
            ));
        }
        next_offset = entry.range().end;
        entries.push(entry);
    }
    if next_offset != records_end {
        return Err("the directory does not cover the records".into());
    }
    Ok(entries)
}

/// Decodes and checks the records of `entry` (read with [`DeltaEntry::range`]) of a delta layer
/// covering `(from, to]`: as many as the directory says, all of its page, increasing LSNs in
/// the range.
pub fn decode_page_records(
    buf: &[u8],
    entry: &DeltaEntry,
    from: Lsn,
    to: Lsn,
) -> Result<Vec<RedoRecord>, String> {
    if buf.len() as u64 != u64::from(entry.bytes) {
        return Err(format!(
            "{} bytes read for page {}, the directory says {}",
            buf.len(),
            entry.page,
            entry.bytes
        ));
    }
    let records = RedoRecord::decode_all(buf).map_err(|e| e.to_string())?;
    if records.len() != entry.count as usize {
        return Err(format!(
            "{} records for page {}, the directory says {}",
            records.len(),
            entry.page,
            entry.count
        ));
    }
    let mut prev = from;
    for r in &records {
        if r.page_no.0 != entry.page {
            return Err(format!(
                "a record of page {} among page {}'s",
                r.page_no, entry.page
            ));
        }
        if r.lsn <= prev || r.lsn > to {
            return Err(format!(
                "record at lsn {} out of order or outside ({from}, {to}]",
                r.lsn
            ));
        }
        prev = r.lsn;
    }
    Ok(records)
}

/// Decodes a whole delta layer file, checking every byte (tests, and tools that read a layer
/// downloaded whole). Returns its meta and records.
pub fn decode(file: &[u8], layout: SegmentLayout) -> Result<(DeltaMeta, Vec<RedoRecord>), String> {
    if file.len() < DELTA_HEADER_BYTES + DELTA_FOOTER_BYTES {
        return Err(format!("{} bytes: too short for a delta layer", file.len()));
    }
    let h = &file[..DELTA_HEADER_BYTES];
    if u32_at(h, 0) != DELTA_MAGIC {
        return Err("bad magic".into());
    }
    if h[4] != DELTA_VERSION {
        return Err(format!("unknown delta layer version {}", h[4]));
    }
    if crc32c::crc32c(&h[..HEADER_CRC_OFFSET]) != u32_at(h, HEADER_CRC_OFFSET) {
        return Err("the header fails its crc".into());
    }
    let footer = &file[file.len() - DELTA_FOOTER_BYTES..];
    let page_count = u32_at(footer, 0);
    let meta = DeltaMeta {
        tenant: TenantId(u64_at(h, 8)),
        segment: SegmentId(u32_at(h, 16)),
        record_count: u32_at(h, 20),
        from: Lsn(u64_at(h, 24)),
        to: Lsn(u64_at(h, 32)),
        page_count,
        file_bytes: file.len() as u64,
    };
    let tail = tail_range(page_count, meta.file_bytes);
    if tail.start < DELTA_HEADER_BYTES as u64 {
        return Err("the directory overlaps the header".into());
    }
    let entries = decode_tail(
        &file[tail.start as usize..],
        page_count,
        meta.file_bytes,
        meta.segment,
        layout,
    )?;
    let records_region = &file[DELTA_HEADER_BYTES..tail.start as usize];
    if crc32c::crc32c(records_region) != u32_at(footer, 8) {
        return Err("the records fail the footer's crc".into());
    }
    let mut records = Vec::with_capacity(meta.record_count as usize);
    for e in &entries {
        let r = e.range();
        records.extend(decode_page_records(
            &file[r.start as usize..r.end as usize],
            e,
            meta.from,
            meta.to,
        )?);
    }
    if records.len() != meta.record_count as usize || u32_at(footer, 4) != meta.record_count {
        return Err("the record counts disagree".into());
    }
    Ok((meta, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::redo::RedoBody;
    use borealis_core::PAGE_SIZE_BYTES;

    fn record(lsn: u64, page: u32, prev_page: u64, byte: u8) -> RedoRecord {
        let old = vec![0u8; PAGE_SIZE_BYTES];
        let mut new = old.clone();
        new[100] = byte;
        RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: Lsn(lsn - 1),
            prev_lsn_page: Lsn(prev_page),
            page_no: PageNo(page),
            is_cpl: true,
            body: RedoBody::between(Some(&old), &new),
        }
    }

    const SNAPSHOT_BYTES: usize = 336;
    const SNAPSHOT_CRC: &str = "a00a0a9a";

    fn sample() -> (Vec<u8>, DeltaMeta, Vec<RedoRecord>) {
        let layout = SegmentLayout::new(16);
        let records = vec![
            record(11, 5, 0, 1),
            record(12, 3, 0, 2),
            record(13, 5, 11, 3),
            record(14, 7, 0, 4),
        ];
        let (file, meta) = encode(
            TenantId(0xab),
            SegmentId(0),
            layout,
            Lsn(10),
            Lsn(14),
            &records,
        );
        (file, meta, records)
    }

    #[test]
    fn a_delta_layer_round_trips_and_one_page_reads_by_two_ranges() {
        let layout = SegmentLayout::new(16);
        let (file, meta, records) = sample();
        assert_eq!((meta.page_count, meta.record_count), (3, 4));
        let (decoded_meta, decoded) = decode(&file, layout).unwrap();
        assert_eq!(decoded_meta, meta);
        let mut sorted = records.clone();
        sorted.sort_by_key(|r| (r.page_no, r.lsn));
        assert_eq!(decoded, sorted);
        // One page by ranged reads: the tail, then its records.
        let tail = tail_range(meta.page_count, meta.file_bytes);
        let dir = decode_tail(
            &file[tail.start as usize..],
            meta.page_count,
            meta.file_bytes,
            SegmentId(0),
            layout,
        )
        .unwrap();
        assert_eq!(dir.iter().map(|e| e.page).collect::<Vec<_>>(), [3, 5, 7]);
        let e = dir[1];
        let got = decode_page_records(
            &file[e.range().start as usize..e.range().end as usize],
            &e,
            meta.from,
            meta.to,
        )
        .unwrap();
        assert_eq!(got, vec![records[0].clone(), records[2].clone()]);
        // An empty delta (no record between two checkpoints) is a valid file too.
        let (empty, m) = encode(TenantId(1), SegmentId(0), layout, Lsn(5), Lsn(9), &[]);
        assert_eq!(decode(&empty, layout).unwrap().1, vec![]);
        assert_eq!(m.file_bytes, 44 + 24);
    }

    /// Pins the format: a change here must come with a new version and a note in
    /// `docs/formats/delta-layer.md` (the snapshot below is of the sample's bytes).
    #[test]
    fn the_format_is_pinned() {
        let (file, meta, records) = sample();
        assert_eq!(&file[..4], b"BRDL");
        assert_eq!(file[4], 1);
        assert_eq!(&file[file.len() - 8..file.len() - 4], b"BRDE");
        let records_bytes: usize = records.iter().map(|r| r.encoded_len()).sum();
        assert_eq!(meta.file_bytes as usize, 44 + records_bytes + 3 * 24 + 24);
        assert_eq!(u32_at(&file, 40), crc32c::crc32c(&file[..40]));
        assert_eq!(
            (file.len(), format!("{:08x}", crc32c::crc32c(&file))),
            (SNAPSHOT_BYTES, SNAPSHOT_CRC.to_string())
        );
        assert_eq!(
            delta_layer_name(Lsn(16), Lsn(255)),
            "delta-0000000000000010-00000000000000ff"
        );
    }

    #[test]
    fn every_corruption_is_refused() {
        let layout = SegmentLayout::new(16);
        let (file, _, _) = sample();
        for at in (0..file.len()).step_by(7) {
            let mut bad = file.clone();
            bad[at] ^= 0x40;
            assert!(
                decode(&bad, layout).is_err(),
                "a flipped byte at {at} was accepted"
            );
        }
        assert!(decode(&file[..file.len() - 1], layout).is_err());
        // A directory for another segment's pages is refused.
        let other = SegmentLayout::new(4);
        assert!(decode(&file, other).is_err());
    }
}
