//! The local page file: every materialized page image, appended, each one CRC-protected.
//!
//! One file per tenant, `DIR/tenants/<tenant hex>/pages.dat`. Each applied redo record produces
//! one *image record*: the full page as of that record's LSN. The file is append-only; the
//! in-memory index of [`crate::pages`] remembers where each retained version lives. Nothing is
//! ever rewritten in place, so an offset handed out by the index stays valid for the life of the
//! file.
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
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

/// An append-only file of image records, read and written at explicit offsets (so readers need
/// no lock: the index hands out offsets of records that are completely written).
pub struct PageFile {
    path: PathBuf,
    file: File,
}

impl PageFile {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> io::Result<PageFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(PageFile {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the image record of `page` at `lsn` at `offset`.
    pub fn write_image(&self, offset: u64, page: PageNo, lsn: Lsn, image: &[u8]) -> io::Result<()> {
        self.file
            .write_all_at(&encode_image_record(page, lsn, image), offset)
    }

    /// Reads back and checks the image record of `page` at `lsn` stored at `offset`.
    pub fn read_image(
        &self,
        offset: u64,
        page: PageNo,
        lsn: Lsn,
    ) -> Result<Vec<u8>, PageFileError> {
        let mut buf = vec![0u8; IMAGE_RECORD_BYTES];
        self.file.read_exact_at(&mut buf, offset)?;
        decode_image_record(&buf, offset, page, lsn).map(<[u8]>::to_vec)
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
        let f = PageFile::create(&dir.path().join("pages.dat")).unwrap();
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
    }
}
