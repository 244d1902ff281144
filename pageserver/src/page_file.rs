//! The local page file: every materialized page image, appended, each one CRC-protected.
//!
//! One per tenant, `DIR/tenants/<tenant hex>/pages-<extent>.dat`. Each applied redo record
//! produces one *image record*: the full page as of that record's LSN, appended at the next
//! address. The in-memory index of [`crate::pages`] remembers where each retained version lives.
//! Nothing is ever rewritten in place: compaction copies the live records of an old extent
//! forward, points the index at the copies, and deletes the extent ([`PageFile`]).
//!
//! ## Image record (little-endian)
//!
//! ```text
//! 0      4    5      8        12               20       24                          4120
//! +------+----+------+--------+----------------+--------+----------------------------+
//! |magic |ver | rsvd |page_no |      lsn       | crc32c |  page image (4096 bytes)   |
//! +------+----+------+--------+----------------+--------+----------------------------+
//! ```
//!
//! `magic` is `"BRPI"`, `ver` is 1, the reserved bytes are zero. The CRC32C covers bytes 0..20
//! and the image. The header names its own page and LSN, so a misdirected or stale read is
//! detected as corruption instead of being served as the page that was asked for.
//!
//! The file is a local cache of what object storage and the safekeepers hold, not a durable
//! store: it is never fsynced, and it is wiped when the pageserver starts (see the crate docs).
//! Image layers (`crate::layer`) hold these same records.

use borealis_core::{Lsn, PageNo, PAGE_SIZE_BYTES};
use borealis_utils::LockExt;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// `"BRPI"` read as a little-endian u32.
pub const IMAGE_MAGIC: u32 = u32::from_le_bytes(*b"BRPI");
pub const IMAGE_VERSION: u8 = 1;
pub const IMAGE_HEADER_BYTES: usize = 24;
/// The size of one image record on disk.
pub const IMAGE_RECORD_BYTES: usize = IMAGE_HEADER_BYTES + PAGE_SIZE_BYTES;
const CRC_OFFSET: usize = 20;

const _: () = assert!(
    CRC_OFFSET + 4 == IMAGE_HEADER_BYTES,
    "the CRC closes the header"
);

#[derive(Debug, Error)]
pub enum PageFileError {
    #[error("page file i/o: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt image record at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
}

/// Encodes the image record of `page` as of `lsn`.
pub fn encode_image_record(page: PageNo, lsn: Lsn, image: &[u8]) -> Vec<u8> {
    assert_eq!(
        image.len(),
        PAGE_SIZE_BYTES,
        "pages are PAGE_SIZE_BYTES long"
    );
    let mut out = Vec::with_capacity(IMAGE_RECORD_BYTES);
    out.extend_from_slice(&IMAGE_MAGIC.to_le_bytes());
    out.extend_from_slice(&[IMAGE_VERSION, 0, 0, 0]);
    out.extend_from_slice(&page.0.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..CRC_OFFSET]), image);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(image);
    out
}

/// Checks an image record read back from `offset` and returns its image. It must be the record
/// of `page` at `lsn`: anything else is corruption (a torn, misdirected or stale block).
pub fn decode_image_record(
    buf: &[u8],
    offset: u64,
    page: PageNo,
    lsn: Lsn,
) -> Result<&[u8], PageFileError> {
    let corrupt = |reason: String| PageFileError::Corrupt { offset, reason };
    if buf.len() != IMAGE_RECORD_BYTES {
        return Err(corrupt(format!(
            "length {} instead of {IMAGE_RECORD_BYTES}",
            buf.len()
        )));
    }
    let u32_at = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
    let magic = u32_at(0);
    if magic != IMAGE_MAGIC {
        return Err(corrupt(format!("bad magic {magic:#010x}")));
    }
    if buf[4] != IMAGE_VERSION {
        return Err(corrupt(format!("unsupported version {}", buf[4])));
    }
    if buf[5..8] != [0, 0, 0] {
        return Err(corrupt("non-zero reserved bytes".into()));
    }
    let image = &buf[IMAGE_HEADER_BYTES..];
    let stored = u32_at(CRC_OFFSET);
    let computed = crc32c::crc32c_append(crc32c::crc32c(&buf[..CRC_OFFSET]), image);
    if stored != computed {
        return Err(corrupt(format!(
            "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    let mut lsn_bytes = [0u8; 8];
    lsn_bytes.copy_from_slice(&buf[12..20]);
    let (found_page, found_lsn) = (PageNo(u32_at(8)), Lsn(u64::from_le_bytes(lsn_bytes)));
    if found_page != page || found_lsn != lsn {
        return Err(corrupt(format!(
            "holds page {found_page} at lsn {found_lsn}, expected page {page} at lsn {lsn}"
        )));
    }
    Ok(image)
}

/// Records per extent file of the page file by default: 64 MiB and a bit.
pub const EXTENT_RECORDS: u64 = 16 * 1024;

/// The page file: image records appended at increasing **addresses**, cut into extent files of
/// `extent_records` records each (`pages-<extent, 8 hex>.dat`; address `a` is in extent
/// `a / extent_bytes`, at offset `a % extent_bytes`), read and written at explicit addresses (so
/// readers need no lock: the index hands out addresses of records that are completely written).
///
/// Extents are what compaction ([`crate::pages::TenantPages::compact`]) reclaims: once an extent's
/// live records have been copied forward, the whole file is deleted. A reader holds the extent's
/// open handle ([`Extent`]), so an extent deleted under a read in flight stays readable by it.
pub struct PageFile {
    dir: PathBuf,
    extent_records: u64,
    extents: Mutex<BTreeMap<u64, Extent>>,
}

/// An open extent file.
pub type Extent = Arc<File>;

impl PageFile {
    /// Creates an empty page file in `dir`, removing any extents a previous process left.
    pub fn create(dir: &Path, extent_records: u64) -> io::Result<PageFile> {
        assert!(extent_records >= 1, "an extent holds at least one record");
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)? {
            let path = e?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().to_string());
            if name.is_some_and(|n| {
                n == "pages.dat" || (n.starts_with("pages-") && n.ends_with(".dat"))
            }) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(PageFile {
            dir: dir.to_path_buf(),
            extent_records,
            extents: Mutex::new(BTreeMap::new()),
        })
    }

    /// Bytes of one extent.
    pub fn extent_bytes(&self) -> u64 {
        self.extent_records * IMAGE_RECORD_BYTES as u64
    }

    /// The extent holding address `addr`.
    pub fn extent_of(&self, addr: u64) -> u64 {
        addr / self.extent_bytes()
    }

    pub fn extent_path(&self, extent: u64) -> PathBuf {
        self.dir.join(format!("pages-{extent:08x}.dat"))
    }

    /// The open extent holding `addr`, created if `create`.
    fn extent(&self, addr: u64, create: bool) -> io::Result<Extent> {
        let n = self.extent_of(addr);
        let mut extents = self.extents.locked();
        if let Some(f) = extents.get(&n) {
            return Ok(f.clone());
        }
        if !create {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("extent {n} of the page file was compacted away"),
            ));
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(self.extent_path(n))?,
        );
        extents.insert(n, f.clone());
        Ok(f)
    }

    /// The open handle of the extent holding `addr`, for a read after the index lock is
    /// released (`None`: the extent is gone, which the index never lets happen to an address it
    /// names).
    pub fn handle(&self, addr: u64) -> Option<Extent> {
        self.extent(addr, false).ok()
    }

    /// Writes the image record of `page` at `lsn` at `addr`.
    pub fn write_image(&self, addr: u64, page: PageNo, lsn: Lsn, image: &[u8]) -> io::Result<()> {
        self.write_record(addr, &encode_image_record(page, lsn, image))
    }

    /// Writes an encoded record (a copy, by compaction) at `addr`.
    pub fn write_record(&self, addr: u64, record: &[u8]) -> io::Result<()> {
        let f = self.extent(addr, true)?;
        f.write_all_at(record, addr % self.extent_bytes())
    }

    /// Reads back and checks the image record of `page` at `lsn` stored at `addr`.
    pub fn read_image(&self, addr: u64, page: PageNo, lsn: Lsn) -> Result<Vec<u8>, PageFileError> {
        let f = self.extent(addr, false)?;
        self.read_image_in(&f, addr, page, lsn)
    }

    /// Like [`PageFile::read_image`], from an extent handle taken earlier.
    pub fn read_image_in(
        &self,
        extent: &File,
        addr: u64,
        page: PageNo,
        lsn: Lsn,
    ) -> Result<Vec<u8>, PageFileError> {
        let mut buf = vec![0u8; IMAGE_RECORD_BYTES];
        extent.read_exact_at(&mut buf, addr % self.extent_bytes())?;
        decode_image_record(&buf, addr, page, lsn).map(<[u8]>::to_vec)
    }

    /// Reads the whole of extent `n` (what compaction scans).
    pub fn read_extent(&self, n: u64) -> io::Result<Vec<u8>> {
        let f = self.extent(n * self.extent_bytes(), false)?;
        let len = f.metadata()?.len().min(self.extent_bytes());
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// Deletes extent `n`: every address in it must be unreferenced (readers holding its handle
    /// still read it).
    pub fn remove_extent(&self, n: u64) -> io::Result<()> {
        self.extents.locked().remove(&n);
        match std::fs::remove_file(self.extent_path(n)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The extents on disk, oldest first.
    pub fn extents(&self) -> Vec<u64> {
        self.extents.locked().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Vec<u8> {
        (0..PAGE_SIZE_BYTES).map(|i| (i % 251) as u8).collect()
    }

    /// Pins the header layout: an accidental change of the format must fail this test.
    #[test]
    fn header_snapshot() {
        let rec = encode_image_record(PageNo(3), Lsn(42), &[0u8; PAGE_SIZE_BYTES]);
        assert_eq!(rec.len(), IMAGE_RECORD_BYTES);
        let hex: String = rec[..IMAGE_HEADER_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "4252504901000000030000002a0000000000000024dfb82c");
        assert!(rec[IMAGE_HEADER_BYTES..].iter().all(|&b| b == 0));
    }

    #[test]
    fn round_trip_and_every_bit_flip_in_the_header_is_detected() {
        let img = image();
        let rec = encode_image_record(PageNo(7), Lsn(9), &img);
        assert_eq!(
            decode_image_record(&rec, 0, PageNo(7), Lsn(9)).unwrap(),
            &img[..]
        );
        for i in (0..IMAGE_HEADER_BYTES).chain([IMAGE_HEADER_BYTES, IMAGE_RECORD_BYTES - 1]) {
            for bit in 0..8 {
                let mut b = rec.clone();
                b[i] ^= 1 << bit;
                assert!(
                    decode_image_record(&b, 0, PageNo(7), Lsn(9)).is_err(),
                    "flip of bit {bit} of byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn a_record_of_another_page_or_lsn_is_corrupt() {
        let rec = encode_image_record(PageNo(7), Lsn(9), &image());
        assert!(decode_image_record(&rec, 0, PageNo(8), Lsn(9)).is_err());
        assert!(decode_image_record(&rec, 0, PageNo(7), Lsn(10)).is_err());
        assert!(decode_image_record(&rec[..100], 0, PageNo(7), Lsn(9)).is_err());
    }

    #[test]
    fn file_writes_and_reads_at_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let f = PageFile::create(dir.path(), 4).unwrap();
        let a = vec![1u8; PAGE_SIZE_BYTES];
        let b = image();
        f.write_image(0, PageNo(1), Lsn(5), &a).unwrap();
        f.write_image(IMAGE_RECORD_BYTES as u64, PageNo(2), Lsn(6), &b)
            .unwrap();
        assert_eq!(f.read_image(0, PageNo(1), Lsn(5)).unwrap(), a);
        assert_eq!(
            f.read_image(IMAGE_RECORD_BYTES as u64, PageNo(2), Lsn(6))
                .unwrap(),
            b
        );
        assert!(matches!(
            f.read_image(0, PageNo(2), Lsn(6)),
            Err(PageFileError::Corrupt { .. })
        ));
        // Past the end: an i/o error (short read), never a page.
        assert!(f
            .read_image(3 * IMAGE_RECORD_BYTES as u64, PageNo(1), Lsn(5))
            .is_err());
        // The fifth record starts the second extent; removing the first leaves it, and a
        // handle taken before the removal still reads.
        let fifth = 4 * IMAGE_RECORD_BYTES as u64;
        f.write_image(fifth, PageNo(3), Lsn(7), &a).unwrap();
        assert_eq!(f.extents(), vec![0, 1]);
        assert!(f.extent_path(1).exists());
        let held = f.handle(0).unwrap();
        f.remove_extent(0).unwrap();
        assert!(!f.extent_path(0).exists());
        assert_eq!(f.read_image(fifth, PageNo(3), Lsn(7)).unwrap(), a);
        assert!(f.read_image(0, PageNo(1), Lsn(5)).is_err());
        assert_eq!(f.read_image_in(&held, 0, PageNo(1), Lsn(5)).unwrap(), a);
        // A new file in the same directory starts empty.
        drop(f);
        let f = PageFile::create(dir.path(), 4).unwrap();
        assert!(f.extents().is_empty() && !f.extent_path(1).exists());
    }
}
