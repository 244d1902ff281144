//! Layer files: pages of one segment as of one checkpoint LSN, in one immutable file.
//!
//! Two kinds share one format:
//!
//! - an **image layer** holds every page of the segment as of its LSN;
//! - a **changes layer** holds only the pages that changed since the checkpoint before it (their
//!   version at the layer's LSN was written by a record above the previous checkpoint's LSN).
//!   Which checkpoint that was is the index's to say ([`crate::index`]: a chain of one image
//!   layer and the changes layers above it), and the layer's name (`changes-<from>-<to>`).
//!
//! A checkpoint ([`crate::checkpoint`]) writes one layer per segment and uploads it to object
//! storage; a pageserver starting with an empty disk downloads the chain and installs each page's
//! newest version instead of replaying the segment's log from the beginning. The format is drawn
//! byte by byte in `docs/formats/layer-file.md`:
//!
//! ```text
//! +-------------------+--------------------------------------------+---------------------+-------------------+
//! | header (48 bytes) | page_count image records (4120 bytes each) | directory (4 bytes  | footer (24 bytes) |
//! |                   |                                            |  per page)          |                   |
//! +-------------------+--------------------------------------------+---------------------+-------------------+
//! ```
//!
//! - The **header** names the tenant, the segment, the checkpoint LSN, the last record of the
//!   segment at or below it, and the number of pages, and ends with a CRC32C of itself.
//! - Each **image record** is exactly the record of the local page file
//!   ([`crate::page_file::encode_image_record`]: magic, version, page, LSN, CRC32C, 4096 bytes):
//!   the page as of the checkpoint, with the LSN of the record that last changed it (≤ the
//!   checkpoint LSN). Records are in strictly increasing page order; every page belongs to the
//!   header's segment.
//! - The **directory** (version 2) lists the records' page numbers, in order: with it, a reader
//!   that fetched only the directory (one ranged read of the file's tail, [`tail_range`]) knows
//!   which pages the layer holds and where each record is ([`record_range`]), and fetches a page
//!   with one more ranged read instead of the whole file (`crate::restore`: on-demand download).
//! - The **footer** repeats the page count and holds a CRC32C of all image records and one of the
//!   directory, so a file cut short or with records dropped or reordered is refused even when each
//!   record is intact.
//!
//! Version 1 files (no directory, a 16-byte footer without the directory's CRC) are still read;
//! they are restored by downloading them whole. A layer's version follows from its size and page
//! count, which the index gives ([`version_from_size`]).
//!
//! Readers check everything ([`verify`] before [`for_each_page`]; [`decode_tail`] and
//! [`decode_record`] for ranged reads): a file that fails any check is an error, never a page.

use crate::page_file::{decode_image_record, encode_image_record, IMAGE_RECORD_BYTES};
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout, TenantId};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// `"BRLY"` read as a little-endian u32.
pub const LAYER_MAGIC: u32 = u32::from_le_bytes(*b"BRLY");
/// `"BRLE"` read as a little-endian u32: the footer.
pub const LAYER_FOOTER_MAGIC: u32 = u32::from_le_bytes(*b"BRLE");
/// The version written: records, then a directory of their pages.
pub const LAYER_VERSION: u8 = 2;
/// The first version: records only (still read).
pub const LAYER_VERSION_V1: u8 = 1;
/// Every page of the segment.
pub const LAYER_KIND_IMAGE: u8 = 1;
/// Only the pages changed since the previous checkpoint.
pub const LAYER_KIND_CHANGES: u8 = 2;
pub const LAYER_HEADER_BYTES: usize = 48;
/// The footer of a version 2 layer.
pub const LAYER_FOOTER_BYTES: usize = 24;
/// The footer of a version 1 layer (no directory CRC).
pub const LAYER_FOOTER_V1_BYTES: usize = 16;
/// One directory entry: a page number.
pub const DIRECTORY_ENTRY_BYTES: usize = 4;
const HEADER_CRC_OFFSET: usize = 44;
const FOOTER_CRC_OFFSET: usize = 20;
const FOOTER_V1_CRC_OFFSET: usize = 12;

const _: () = assert!(HEADER_CRC_OFFSET + 4 == LAYER_HEADER_BYTES);
const _: () = assert!(FOOTER_CRC_OFFSET + 4 == LAYER_FOOTER_BYTES);
const _: () = assert!(FOOTER_V1_CRC_OFFSET + 4 == LAYER_FOOTER_V1_BYTES);

#[derive(Debug, Error)]
pub enum LayerError {
    #[error("layer file i/o: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt layer file {path}: {reason}")]
    Corrupt { path: String, reason: String },
}

/// Which pages a layer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Every page of the segment written at or below the layer's LSN.
    Image,
    /// Only the pages whose version at the layer's LSN is newer than the previous checkpoint.
    Changes,
}

impl LayerKind {
    pub fn code(self) -> u8 {
        match self {
            LayerKind::Image => LAYER_KIND_IMAGE,
            LayerKind::Changes => LAYER_KIND_CHANGES,
        }
    }

    pub fn from_code(code: u8) -> Option<LayerKind> {
        match code {
            LAYER_KIND_IMAGE => Some(LayerKind::Image),
            LAYER_KIND_CHANGES => Some(LayerKind::Changes),
            _ => None,
        }
    }

    /// The kind as the index names it.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Image => "image",
            LayerKind::Changes => "changes",
        }
    }
}

/// What a layer's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerMeta {
    /// [`LAYER_VERSION`] or [`LAYER_VERSION_V1`].
    pub version: u8,
    pub kind: LayerKind,
    pub tenant: TenantId,
    pub segment: SegmentId,
    /// Every record of the segment at or below it is reflected in the pages.
    pub lsn: Lsn,
    /// The newest record of the segment at or below `lsn` (`INVALID`: none): the next record of
    /// the segment names it as its `prev_lsn_segment`.
    pub last_record_lsn: Lsn,
    pub page_count: u32,
}

impl LayerMeta {
    /// The size of the file this header describes.
    pub fn file_bytes(&self) -> u64 {
        file_bytes(self.version, self.page_count)
    }
}

/// The size of a layer file of `version` holding `page_count` pages.
pub fn file_bytes(version: u8, page_count: u32) -> u64 {
    let n = u64::from(page_count);
    if version == LAYER_VERSION_V1 {
        (LAYER_HEADER_BYTES + LAYER_FOOTER_V1_BYTES) as u64 + n * IMAGE_RECORD_BYTES as u64
    } else {
        (LAYER_HEADER_BYTES + LAYER_FOOTER_BYTES) as u64
            + n * (IMAGE_RECORD_BYTES + DIRECTORY_ENTRY_BYTES) as u64
    }
}

/// The version of a layer of `page_count` pages and `bytes` bytes (`None`: no version has that
/// size, the index or the file is wrong).
pub fn version_from_size(page_count: u32, bytes: u64) -> Option<u8> {
    [LAYER_VERSION, LAYER_VERSION_V1]
        .into_iter()
        .find(|v| file_bytes(*v, page_count) == bytes)
}

/// Where record `slot` (0-based, in page order) of a layer is.
pub fn record_range(slot: u32) -> std::ops::Range<u64> {
    let start = LAYER_HEADER_BYTES as u64 + u64::from(slot) * IMAGE_RECORD_BYTES as u64;
    start..start + IMAGE_RECORD_BYTES as u64
}

/// Where the directory and footer of a version 2 layer of `page_count` pages are: one ranged
/// read of this tells which pages the layer holds.
pub fn tail_range(page_count: u32) -> std::ops::Range<u64> {
    let end = file_bytes(LAYER_VERSION, page_count);
    let start = LAYER_HEADER_BYTES as u64 + u64::from(page_count) * IMAGE_RECORD_BYTES as u64;
    start..end
}

/// Checks the tail of a version 2 layer (directory and footer, read with [`tail_range`]) of
/// `page_count` pages of `segment` and returns the directory: the pages the layer holds, in
/// increasing order, record `i` holding page `directory[i]`.
pub fn decode_tail(
    tail: &[u8],
    page_count: u32,
    segment: SegmentId,
    layout: SegmentLayout,
) -> Result<Vec<u32>, String> {
    let dir_bytes = page_count as usize * DIRECTORY_ENTRY_BYTES;
    if tail.len() != dir_bytes + LAYER_FOOTER_BYTES {
        return Err(format!(
            "a tail of {} bytes, expected {} for {page_count} pages",
            tail.len(),
            dir_bytes + LAYER_FOOTER_BYTES
        ));
    }
    let (directory, footer) = tail.split_at(dir_bytes);
    let footer = decode_footer(footer, page_count)?;
    if crc32c::crc32c(directory) != footer.directory_crc {
        return Err("the directory fails the footer's crc".into());
    }
    let mut pages = Vec::with_capacity(page_count as usize);
    for entry in directory.chunks_exact(DIRECTORY_ENTRY_BYTES) {
        let page = u32_at(entry, 0);
        if pages.last().is_some_and(|p| *p >= page) {
            return Err(format!("directory entry {page} is out of order"));
        }
        if layout.segment_of(PageNo(page)) != segment {
            return Err(format!("directory page {page} is not in segment {segment}"));
        }
        pages.push(page);
    }
    Ok(pages)
}

/// Checks record `slot` of a layer read with [`record_range`]: it must be the record of `page`
/// (what the directory says), with a version at or below the layer's `last_record_lsn`. Returns
/// the version's LSN and the image.
pub fn decode_record(
    buf: &[u8],
    slot: u32,
    page: PageNo,
    last_record_lsn: Lsn,
) -> Result<(Lsn, &[u8]), String> {
    if buf.len() != IMAGE_RECORD_BYTES {
        return Err(format!("a record of {} bytes", buf.len()));
    }
    let lsn = Lsn(u64_at(buf, 12));
    let image =
        decode_image_record(buf, record_range(slot).start, page, lsn).map_err(|e| e.to_string())?;
    if lsn > last_record_lsn {
        return Err(format!(
            "page {page} at lsn {lsn} is above the layer's last record {last_record_lsn}"
        ));
    }
    Ok((lsn, image))
}

/// The name of the image layer of a checkpoint at `lsn` (object keys add the generation).
pub fn image_layer_name(lsn: Lsn) -> String {
    format!("image-{:016x}", lsn.0)
}

/// The name of the changes layer of a checkpoint at `to` over the one at `from`.
pub fn changes_layer_name(from: Lsn, to: Lsn) -> String {
    format!("changes-{:016x}-{:016x}", from.0, to.0)
}

pub fn encode_header(meta: &LayerMeta) -> [u8; LAYER_HEADER_BYTES] {
    let mut h = [0u8; LAYER_HEADER_BYTES];
    h[0..4].copy_from_slice(&LAYER_MAGIC.to_le_bytes());
    h[4] = meta.version;
    h[5] = meta.kind.code();
    h[8..16].copy_from_slice(&meta.tenant.0.to_le_bytes());
    h[16..20].copy_from_slice(&meta.segment.0.to_le_bytes());
    h[24..32].copy_from_slice(&meta.lsn.0.to_le_bytes());
    h[32..40].copy_from_slice(&meta.last_record_lsn.0.to_le_bytes());
    h[40..44].copy_from_slice(&meta.page_count.to_le_bytes());
    let crc = crc32c::crc32c(&h[..HEADER_CRC_OFFSET]);
    h[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

pub fn decode_header(h: &[u8; LAYER_HEADER_BYTES]) -> Result<LayerMeta, String> {
    if u32_at(h, 0) != LAYER_MAGIC {
        return Err(format!("bad magic {:#010x}", u32_at(h, 0)));
    }
    if h[4] != LAYER_VERSION && h[4] != LAYER_VERSION_V1 {
        return Err(format!("unsupported version {}", h[4]));
    }
    let Some(kind) = LayerKind::from_code(h[5]) else {
        return Err(format!("unsupported kind {}", h[5]));
    };
    if h[6..8] != [0, 0] || h[20..24] != [0, 0, 0, 0] {
        return Err("non-zero reserved bytes".into());
    }
    let stored = u32_at(h, HEADER_CRC_OFFSET);
    let computed = crc32c::crc32c(&h[..HEADER_CRC_OFFSET]);
    if stored != computed {
        return Err(format!(
            "header crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let meta = LayerMeta {
        version: h[4],
        kind,
        tenant: TenantId(u64_at(h, 8)),
        segment: SegmentId(u32_at(h, 16)),
        lsn: Lsn(u64_at(h, 24)),
        last_record_lsn: Lsn(u64_at(h, 32)),
        page_count: u32_at(h, 40),
    };
    if meta.last_record_lsn > meta.lsn {
        return Err(format!(
            "last record {} above the layer's lsn {}",
            meta.last_record_lsn, meta.lsn
        ));
    }
    Ok(meta)
}

fn encode_footer(
    page_count: u32,
    entries_crc: u32,
    directory_crc: u32,
) -> [u8; LAYER_FOOTER_BYTES] {
    let mut f = [0u8; LAYER_FOOTER_BYTES];
    f[0..4].copy_from_slice(&LAYER_FOOTER_MAGIC.to_le_bytes());
    f[4..8].copy_from_slice(&page_count.to_le_bytes());
    f[8..12].copy_from_slice(&entries_crc.to_le_bytes());
    f[12..16].copy_from_slice(&directory_crc.to_le_bytes());
    let crc = crc32c::crc32c(&f[..FOOTER_CRC_OFFSET]);
    f[FOOTER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    f
}

/// What a footer holds.
struct Footer {
    entries_crc: u32,
    /// Zero in version 1 (no directory).
    directory_crc: u32,
}

/// Checks a footer of either version (by its length) against the header's page count.
fn decode_footer(f: &[u8], page_count: u32) -> Result<Footer, String> {
    let crc_offset = match f.len() {
        LAYER_FOOTER_BYTES => FOOTER_CRC_OFFSET,
        LAYER_FOOTER_V1_BYTES => FOOTER_V1_CRC_OFFSET,
        n => return Err(format!("a footer of {n} bytes")),
    };
    if u32_at(f, 0) != LAYER_FOOTER_MAGIC {
        return Err("bad footer magic".into());
    }
    if u32_at(f, crc_offset) != crc32c::crc32c(&f[..crc_offset]) {
        return Err("footer crc mismatch".into());
    }
    if u32_at(f, 4) != page_count {
        return Err("footer and header disagree on the page count".into());
    }
    if crc_offset == FOOTER_CRC_OFFSET && f[16..20] != [0, 0, 0, 0] {
        return Err("non-zero reserved footer bytes".into());
    }
    Ok(Footer {
        entries_crc: u32_at(f, 8),
        directory_crc: if crc_offset == FOOTER_CRC_OFFSET {
            u32_at(f, 12)
        } else {
            0
        },
    })
}

pub struct LayerWriter {
    path: PathBuf,
    out: BufWriter<File>,
    meta: LayerMeta,
    entries_crc: u32,
    last_page: Option<PageNo>,
    /// The directory, written after the records.
    directory: Vec<u8>,
    layout: SegmentLayout,
}

impl LayerWriter {
    /// Creates (or truncates) `path` for a layer of `kind` of `segment` at `lsn`.
    pub fn create(
        path: &Path,
        kind: LayerKind,
        tenant: TenantId,
        segment: SegmentId,
        layout: SegmentLayout,
        lsn: Lsn,
        last_record_lsn: Lsn,
    ) -> Result<LayerWriter, LayerError> {
        assert!(
            last_record_lsn <= lsn,
            "the last record is at or below the layer"
        );
        let mut out = BufWriter::new(File::create(path)?);
        // The real header (with the page count) is written by `finish`.
        out.write_all(&[0u8; LAYER_HEADER_BYTES])?;
        Ok(LayerWriter {
            path: path.to_path_buf(),
            out,
            meta: LayerMeta {
                version: LAYER_VERSION,
                kind,
                tenant,
                segment,
                lsn,
                last_record_lsn,
                page_count: 0,
            },
            entries_crc: 0,
            last_page: None,
            directory: Vec::new(),
            layout,
        })
    }

    /// Adds `page` as of the layer's LSN; `lsn` is the record that last changed it. Pages must
    /// come in increasing order.
    pub fn push(&mut self, page: PageNo, lsn: Lsn, image: &[u8]) -> Result<(), LayerError> {
        assert!(
            self.last_page.is_none_or(|p| p < page),
            "pages are pushed in increasing order"
        );
        assert_eq!(
            self.layout.segment_of(page),
            self.meta.segment,
            "pages of the layer's segment only"
        );
        assert!(
            lsn <= self.meta.last_record_lsn,
            "page versions are at or below the layer"
        );
        let record = encode_image_record(page, lsn, image);
        self.entries_crc = crc32c::crc32c_append(self.entries_crc, &record);
        self.out.write_all(&record)?;
        self.meta.page_count += 1;
        self.directory.extend_from_slice(&page.0.to_le_bytes());
        self.last_page = Some(page);
        Ok(())
    }

    /// Writes the footer and the header; returns what the header says. The file is not fsynced:
    /// it is uploaded and deleted, and local state is rebuilt after a crash anyway.
    pub fn finish(mut self) -> Result<LayerMeta, LayerError> {
        self.out.write_all(&self.directory)?;
        self.out.write_all(&encode_footer(
            self.meta.page_count,
            self.entries_crc,
            crc32c::crc32c(&self.directory),
        ))?;
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&encode_header(&self.meta))?;
        file.flush()?;
        let written = file.metadata()?.len();
        if written != self.meta.file_bytes() {
            return Err(LayerError::Corrupt {
                path: self.path.display().to_string(),
                reason: format!("wrote {written} bytes, expected {}", self.meta.file_bytes()),
            });
        }
        Ok(self.meta)
    }
}

/// Checks every byte of the layer at `path` (see the module docs) and that it is the layer of
/// `tenant`'s `segment`; returns its header.
pub fn verify(
    path: &Path,
    tenant: TenantId,
    segment: SegmentId,
    layout: SegmentLayout,
) -> Result<LayerMeta, LayerError> {
    for_each_page(path, tenant, segment, layout, |_, _, _| Ok(()))
}

/// Reads the layer at `path`, checking everything as it goes, and calls `f(page, lsn, image)` for
/// each page in order. `f` may be called for some pages before a later check fails: run
/// [`verify`] first when that matters.
pub fn for_each_page(
    path: &Path,
    tenant: TenantId,
    segment: SegmentId,
    layout: SegmentLayout,
    mut f: impl FnMut(PageNo, Lsn, &[u8]) -> Result<(), LayerError>,
) -> Result<LayerMeta, LayerError> {
    let corrupt = |reason: String| LayerError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = BufReader::new(file);
    if len < (LAYER_HEADER_BYTES + LAYER_FOOTER_V1_BYTES) as u64 {
        return Err(corrupt(format!("only {len} bytes")));
    }
    let mut h = [0u8; LAYER_HEADER_BYTES];
    r.read_exact(&mut h)?;
    let meta = decode_header(&h).map_err(corrupt)?;
    if meta.tenant != tenant || meta.segment != segment {
        return Err(corrupt(format!(
            "holds tenant {} segment {}, expected tenant {tenant} segment {segment}",
            meta.tenant, meta.segment
        )));
    }
    if len != meta.file_bytes() {
        return Err(corrupt(format!(
            "{len} bytes, the header says {} pages ({} bytes)",
            meta.page_count,
            meta.file_bytes()
        )));
    }
    let mut record = vec![0u8; IMAGE_RECORD_BYTES];
    let mut entries_crc = 0u32;
    let mut last_page: Option<PageNo> = None;
    let mut directory = Vec::new();
    for i in 0..u64::from(meta.page_count) {
        let offset = LAYER_HEADER_BYTES as u64 + i * IMAGE_RECORD_BYTES as u64;
        r.read_exact(&mut record)?;
        entries_crc = crc32c::crc32c_append(entries_crc, &record);
        // The record names its page and LSN; decode with what it claims, then check the claim.
        let page = PageNo(u32_at(&record, 8));
        let lsn = Lsn(u64_at(&record, 12));
        let image =
            decode_image_record(&record, offset, page, lsn).map_err(|e| corrupt(e.to_string()))?;
        if last_page.is_some_and(|p| p >= page) {
            return Err(corrupt(format!(
                "page {page} at offset {offset} is out of order"
            )));
        }
        if layout.segment_of(page) != segment {
            return Err(corrupt(format!("page {page} is not in segment {segment}")));
        }
        if lsn > meta.last_record_lsn {
            return Err(corrupt(format!(
                "page {page} at lsn {lsn} is above the last record {}",
                meta.last_record_lsn
            )));
        }
        f(page, lsn, image)?;
        last_page = Some(page);
        directory.extend_from_slice(&page.0.to_le_bytes());
    }
    if meta.version == LAYER_VERSION_V1 {
        let mut footer = [0u8; LAYER_FOOTER_V1_BYTES];
        r.read_exact(&mut footer)?;
        let footer = decode_footer(&footer, meta.page_count).map_err(corrupt)?;
        if footer.entries_crc != entries_crc {
            return Err(corrupt("the image records fail the footer's crc".into()));
        }
        return Ok(meta);
    }
    let mut tail = vec![0u8; directory.len() + LAYER_FOOTER_BYTES];
    r.read_exact(&mut tail)?;
    if tail[..directory.len()] != directory[..] {
        return Err(corrupt(
            "the directory does not list the records' pages".into(),
        ));
    }
    let footer = decode_footer(&tail[directory.len()..], meta.page_count).map_err(corrupt)?;
    if footer.entries_crc != entries_crc {
        return Err(corrupt("the image records fail the footer's crc".into()));
    }
    if footer.directory_crc != crc32c::crc32c(&directory) {
        return Err(corrupt("the directory fails the footer's crc".into()));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::PAGE_SIZE_BYTES;

    fn layout() -> SegmentLayout {
        SegmentLayout::new(8)
    }

    fn image(seed: u8) -> Vec<u8> {
        (0..PAGE_SIZE_BYTES)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect()
    }

    /// Segment 1 (pages 8..16) at lsn 50: pages 8, 10, 15.
    fn write(dir: &Path) -> PathBuf {
        let path = dir.join("layer");
        let mut w = LayerWriter::create(
            &path,
            LayerKind::Image,
            TenantId(9),
            SegmentId(1),
            layout(),
            Lsn(50),
            Lsn(47),
        )
        .unwrap();
        w.push(PageNo(8), Lsn(3), &image(1)).unwrap();
        w.push(PageNo(10), Lsn(47), &image(2)).unwrap();
        w.push(PageNo(15), Lsn(20), &image(3)).unwrap();
        let meta = w.finish().unwrap();
        assert_eq!(meta.page_count, 3);
        path
    }

    /// Pins the header and footer layout: an accidental change of the format fails here.
    #[test]
    fn header_and_footer_snapshot() {
        let meta = LayerMeta {
            version: LAYER_VERSION,
            kind: LayerKind::Image,
            tenant: TenantId(0xab),
            segment: SegmentId(2),
            lsn: Lsn(300),
            last_record_lsn: Lsn(299),
            page_count: 5,
        };
        let hex: String = encode_header(&meta)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "42524c5902010000ab0000000000000002000000000000002c010000000000002b01000000000000\
             050000001725178e"
        );
        assert_eq!(decode_header(&encode_header(&meta)).unwrap(), meta);
        let hex: String = encode_footer(5, 0xdead_beef, 0x0102_0304)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "42524c4505000000efbeadde040302010000000078a0ee69");
        assert_eq!(meta.file_bytes(), 48 + 5 * 4120 + 5 * 4 + 24);
        assert_eq!(tail_range(5), 48 + 5 * 4120..48 + 5 * 4124 + 24);
        assert_eq!(record_range(2), 48 + 2 * 4120..48 + 3 * 4120);
        assert_eq!(version_from_size(5, meta.file_bytes()), Some(LAYER_VERSION));
        assert_eq!(
            version_from_size(5, 48 + 16 + 5 * 4120),
            Some(LAYER_VERSION_V1)
        );
        assert_eq!(version_from_size(5, meta.file_bytes() - 1), None);
        // A changes layer differs in the kind byte (and so the header CRC) only.
        let changes = LayerMeta {
            kind: LayerKind::Changes,
            ..meta
        };
        let hex: String = encode_header(&changes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "42524c5902020000ab0000000000000002000000000000002c010000000000002b01000000000000\
             05000000952615ef"
        );
        assert_eq!(decode_header(&encode_header(&changes)).unwrap(), changes);
        let mut unknown = encode_header(&changes);
        unknown[5] = 3;
        let crc = crc32c::crc32c(&unknown[..HEADER_CRC_OFFSET]);
        unknown[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_header(&unknown).unwrap_err().contains("kind"));
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path());
        let meta = verify(&path, TenantId(9), SegmentId(1), layout()).unwrap();
        assert_eq!((meta.lsn, meta.last_record_lsn), (Lsn(50), Lsn(47)));
        let mut pages = Vec::new();
        for_each_page(&path, TenantId(9), SegmentId(1), layout(), |p, l, img| {
            pages.push((p.0, l.0, img.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            pages,
            vec![(8, 3, image(1)), (10, 47, image(2)), (15, 20, image(3))]
        );
        // Another tenant's or segment's layer is refused.
        assert!(verify(&path, TenantId(8), SegmentId(1), layout()).is_err());
        assert!(verify(&path, TenantId(9), SegmentId(0), layout()).is_err());
    }

    /// The directory and one record, read as ranged reads of the file would: what on-demand
    /// download does.
    #[test]
    fn tail_and_records_read_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let tail = tail_range(3);
        let tail = &bytes[tail.start as usize..tail.end as usize];
        let directory = decode_tail(tail, 3, SegmentId(1), layout()).unwrap();
        assert_eq!(directory, vec![8, 10, 15]);
        let r = record_range(1);
        let record = &bytes[r.start as usize..r.end as usize];
        let (lsn, img) = decode_record(record, 1, PageNo(10), Lsn(47)).unwrap();
        assert_eq!((lsn, img), (Lsn(47), &image(2)[..]));
        // Another page than the directory says, or a version above the layer: refused.
        assert!(decode_record(record, 1, PageNo(8), Lsn(47)).is_err());
        assert!(decode_record(record, 1, PageNo(10), Lsn(46)).is_err());
        // The wrong page count, segment, or any flipped bit of the tail: refused.
        assert!(decode_tail(tail, 2, SegmentId(1), layout()).is_err());
        assert!(decode_tail(tail, 3, SegmentId(0), layout()).is_err());
        for i in 0..tail.len() {
            let mut bad = tail.to_vec();
            bad[i] ^= 0x10;
            assert!(
                decode_tail(&bad, 3, SegmentId(1), layout()).is_err(),
                "flip at tail byte {i} went unnoticed"
            );
        }
    }

    /// A version 1 layer (no directory, 16-byte footer) is still read.
    #[test]
    fn version_1_layers_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let meta = LayerMeta {
            version: LAYER_VERSION_V1,
            kind: LayerKind::Image,
            tenant: TenantId(9),
            segment: SegmentId(1),
            lsn: Lsn(50),
            last_record_lsn: Lsn(47),
            page_count: 2,
        };
        let mut bytes = encode_header(&meta).to_vec();
        let mut records = Vec::new();
        records.extend(encode_image_record(PageNo(8), Lsn(3), &image(1)));
        records.extend(encode_image_record(PageNo(9), Lsn(47), &image(2)));
        bytes.extend(&records);
        let mut footer = [0u8; LAYER_FOOTER_V1_BYTES];
        footer[0..4].copy_from_slice(&LAYER_FOOTER_MAGIC.to_le_bytes());
        footer[4..8].copy_from_slice(&2u32.to_le_bytes());
        footer[8..12].copy_from_slice(&crc32c::crc32c(&records).to_le_bytes());
        let crc = crc32c::crc32c(&footer[..FOOTER_V1_CRC_OFFSET]);
        footer[FOOTER_V1_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        bytes.extend(footer);
        assert_eq!(bytes.len() as u64, meta.file_bytes());
        assert_eq!(
            version_from_size(2, bytes.len() as u64),
            Some(LAYER_VERSION_V1)
        );
        let path = dir.path().join("v1");
        std::fs::write(&path, &bytes).unwrap();
        let mut seen = Vec::new();
        let read = for_each_page(&path, TenantId(9), SegmentId(1), layout(), |p, l, _| {
            seen.push((p.0, l.0));
            Ok(())
        })
        .unwrap();
        assert_eq!(read, meta);
        assert_eq!(seen, vec![(8, 3), (9, 47)]);
        bytes[60] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(verify(&path, TenantId(9), SegmentId(1), layout()).is_err());
    }

    #[test]
    fn any_flipped_bit_or_lost_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path());
        let good = std::fs::read(&path).unwrap();
        let bad_path = dir.path().join("bad");
        // Every header and footer byte, and a sample through the records.
        let offsets: Vec<usize> = (0..LAYER_HEADER_BYTES)
            .chain((LAYER_HEADER_BYTES..good.len() - LAYER_FOOTER_BYTES).step_by(97))
            .chain(good.len() - LAYER_FOOTER_BYTES..good.len())
            .collect();
        for i in offsets {
            let mut b = good.clone();
            b[i] ^= 0x04;
            std::fs::write(&bad_path, &b).unwrap();
            assert!(
                verify(&bad_path, TenantId(9), SegmentId(1), layout()).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
        // Cut short, or a whole record dropped (header page count fixed up to match).
        std::fs::write(&bad_path, &good[..good.len() - 1]).unwrap();
        assert!(verify(&bad_path, TenantId(9), SegmentId(1), layout()).is_err());
        let mut dropped = good.clone();
        dropped.drain(LAYER_HEADER_BYTES..LAYER_HEADER_BYTES + IMAGE_RECORD_BYTES);
        let mut meta = decode_header(&good[..LAYER_HEADER_BYTES].try_into().unwrap()).unwrap();
        meta.page_count = 2;
        dropped[..LAYER_HEADER_BYTES].copy_from_slice(&encode_header(&meta));
        std::fs::write(&bad_path, &dropped).unwrap();
        assert!(verify(&bad_path, TenantId(9), SegmentId(1), layout()).is_err());
    }

    #[test]
    fn an_empty_segment_is_a_valid_layer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        let w = LayerWriter::create(
            &path,
            LayerKind::Changes,
            TenantId(1),
            SegmentId(0),
            layout(),
            Lsn(5),
            Lsn(0),
        )
        .unwrap();
        let meta = w.finish().unwrap();
        assert_eq!(meta.page_count, 0);
        assert_eq!(
            verify(&path, TenantId(1), SegmentId(0), layout()).unwrap(),
            meta
        );
    }
}
