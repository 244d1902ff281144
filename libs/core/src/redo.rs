//! Redo records and their binary codec.
//!
//! A redo record says how one page changed at one LSN. Its body is either a full page image or a
//! *delta*: a list of byte ranges to overwrite in the page's previous image. The compute picks
//! whichever is smaller ([`RedoBody::between`]). Records carry two backlinks: the previous LSN of
//! the same segment (safekeepers use it to prove their log of a segment is complete up to a point,
//! the SCL) and the previous LSN of the same page (pageservers use it to check they apply a page's
//! history without gaps).
//!
//! ## Encoding (little-endian; `docs/formats/redo-record.md` draws it)
//!
//! ```text
//! 0      4    5    6     7    8      16                 24              32       36        40     44
//! +------+----+----+-----+----+------+------------------+---------------+--------+---------+------+------...
//! |magic |ver |kind|flags|rsvd| lsn  | prev_lsn_segment | prev_lsn_page | page_no|body_len |crc32c| body
//! +------+----+----+-----+----+------+------------------+---------------+--------+---------+------+------...
//! ```
//!
//! The CRC32C covers bytes 0..40 and the body. The header carries the record's own LSN so that a
//! stale or misdirected block can never be taken for the record it replaced.

use crate::ids::{PageNo, PAGE_SIZE_BYTES};
use crate::lsn::Lsn;
use thiserror::Error;

/// `"BRRD"` read as a little-endian u32.
pub const REDO_MAGIC: u32 = u32::from_le_bytes(*b"BRRD");
pub const REDO_VERSION: u8 = 1;
pub const REDO_HEADER_BYTES: usize = 44;
/// A delta is only chosen when smaller than an image, so no valid body exceeds one page plus the
/// run headers of the worst delta. Anything larger is corruption.
pub const REDO_BODY_BYTES_MAX: usize = PAGE_SIZE_BYTES + 4 * 64;

const KIND_IMAGE: u8 = 1;
const KIND_DELTA: u8 = 2;
const FLAG_CPL: u8 = 0b0000_0001;
const CRC_OFFSET: usize = 40;

/// What decoding bytes from disk or the network found wrong.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("truncated redo record: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("bad redo record magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported redo record version {0}")]
    BadVersion(u8),
    #[error("unknown redo record kind {0}")]
    BadKind(u8),
    #[error("redo record body length {0} out of range")]
    BadLength(usize),
    #[error(
        "redo record CRC mismatch at lsn {lsn}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    BadCrc {
        lsn: u64,
        stored: u32,
        computed: u32,
    },
    #[error("malformed delta body: {0}")]
    BadDelta(&'static str),
}

/// How a page changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedoBody {
    /// The whole page after the change; exactly [`PAGE_SIZE_BYTES`] bytes.
    Image(Vec<u8>),
    /// Encoded runs `(offset u16, len u16, bytes)` to overwrite in the previous image.
    Delta(Vec<u8>),
}

impl RedoBody {
    /// The smaller of a full image of `new` and a delta from `old` to `new`. With no `old` (a page
    /// never written before) the delta is taken against a zeroed page.
    pub fn between(old: Option<&[u8]>, new: &[u8]) -> RedoBody {
        Self::between_skipping(old, new, first_difference)
    }

    /// [`RedoBody::between`] skipping equal bytes one at a time, as first written: the reference
    /// the word-wise skip must agree with byte for byte (tests and the benchmark's baseline).
    #[doc(hidden)]
    pub fn between_bytewise(old: Option<&[u8]>, new: &[u8]) -> RedoBody {
        Self::between_skipping(old, new, |a, b, mut i| {
            while i < a.len() && a[i] == b[i] {
                i += 1;
            }
            i
        })
    }

    /// The delta from `old` to `new`, `skip(old, new, i)` giving the first differing index at
    /// or after `i`.
    fn between_skipping(
        old: Option<&[u8]>,
        new: &[u8],
        skip: fn(&[u8], &[u8], usize) -> usize,
    ) -> RedoBody {
        assert_eq!(new.len(), PAGE_SIZE_BYTES, "pages are PAGE_SIZE_BYTES long");
        let zero = [0u8; PAGE_SIZE_BYTES];
        let old = old.unwrap_or(&zero);
        assert_eq!(old.len(), PAGE_SIZE_BYTES, "pages are PAGE_SIZE_BYTES long");
        let mut delta = Vec::new();
        let mut i = 0;
        loop {
            // Most of a page is unchanged: equal bytes are skipped quickly.
            i = skip(old, new, i);
            if i >= PAGE_SIZE_BYTES {
                break;
            }
            // A run ends after 8 equal bytes: shorter gaps cost more in run headers than they save.
            let start = i;
            let mut end = i + 1;
            let mut same = 0;
            let mut j = i + 1;
            while j < PAGE_SIZE_BYTES && same < 8 {
                if old[j] == new[j] {
                    same += 1;
                } else {
                    same = 0;
                    end = j + 1;
                }
                j += 1;
            }
            delta.extend_from_slice(&(start as u16).to_le_bytes());
            delta.extend_from_slice(&((end - start) as u16).to_le_bytes());
            delta.extend_from_slice(&new[start..end]);
            if delta.len() >= PAGE_SIZE_BYTES {
                return RedoBody::Image(new.to_vec());
            }
            i = end;
        }
        RedoBody::Delta(delta)
    }

    fn kind(&self) -> u8 {
        match self {
            RedoBody::Image(_) => KIND_IMAGE,
            RedoBody::Delta(_) => KIND_DELTA,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            RedoBody::Image(b) | RedoBody::Delta(b) => b,
        }
    }

    /// Applies this change to `page` (the previous image, or zeros for a page never written).
    pub fn apply(&self, page: &mut [u8]) -> Result<(), CodecError> {
        assert_eq!(
            page.len(),
            PAGE_SIZE_BYTES,
            "pages are PAGE_SIZE_BYTES long"
        );
        match self {
            RedoBody::Image(img) => {
                if img.len() != PAGE_SIZE_BYTES {
                    return Err(CodecError::BadLength(img.len()));
                }
                page.copy_from_slice(img);
            }
            RedoBody::Delta(d) => {
                for_each_run(d, |off, bytes| {
                    page[off..off + bytes.len()].copy_from_slice(bytes)
                })?;
            }
        }
        Ok(())
    }
}

/// Walks the runs of a delta body, checking every bound before touching anything.
fn for_each_run(delta: &[u8], mut f: impl FnMut(usize, &[u8])) -> Result<(), CodecError> {
    let mut pos = 0;
    while pos < delta.len() {
        if delta.len() - pos < 4 {
            return Err(CodecError::BadDelta("run header cut short"));
        }
        let off = u16::from_le_bytes([delta[pos], delta[pos + 1]]) as usize;
        let len = u16::from_le_bytes([delta[pos + 2], delta[pos + 3]]) as usize;
        pos += 4;
        if len == 0 || off + len > PAGE_SIZE_BYTES {
            return Err(CodecError::BadDelta("run outside the page"));
        }
        if delta.len() - pos < len {
            return Err(CodecError::BadDelta("run bytes cut short"));
        }
        f(off, &delta[pos..pos + len]);
        pos += len;
    }
    Ok(())
}

/// The first index at or after `from` where `a` and `b` differ (`a.len()` if none): eight bytes
/// at a time, then the first differing byte of the word found by its lowest set bit.
fn first_difference(a: &[u8], b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i + 8 <= a.len() {
        let mut x = [0u8; 8];
        let mut y = [0u8; 8];
        x.copy_from_slice(&a[i..i + 8]);
        y.copy_from_slice(&b[i..i + 8]);
        let diff = u64::from_le_bytes(x) ^ u64::from_le_bytes(y);
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < a.len() && a[i] == b[i] {
        i += 1;
    }
    i
}

/// One page change at one LSN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedoRecord {
    pub lsn: Lsn,
    /// LSN of the previous record of the same segment, or [`Lsn::INVALID`] for the first.
    pub prev_lsn_segment: Lsn,
    /// LSN of the previous record of the same page, or [`Lsn::INVALID`] for the first.
    pub prev_lsn_page: Lsn,
    pub page_no: PageNo,
    /// Set on the last record of a mini-transaction: a consistency point (CPL).
    pub is_cpl: bool,
    pub body: RedoBody,
}

impl RedoRecord {
    /// The encoded size of this record.
    pub fn encoded_len(&self) -> usize {
        REDO_HEADER_BYTES + self.body.bytes().len()
    }

    /// Appends the encoding of this record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let body = self.body.bytes();
        assert!(body.len() <= REDO_BODY_BYTES_MAX, "redo body too large");
        assert!(self.lsn.is_valid(), "records carry a valid LSN");
        assert!(
            self.prev_lsn_segment < self.lsn && self.prev_lsn_page < self.lsn,
            "backlinks point back"
        );
        let start = out.len();
        out.extend_from_slice(&REDO_MAGIC.to_le_bytes());
        out.push(REDO_VERSION);
        out.push(self.body.kind());
        out.push(if self.is_cpl { FLAG_CPL } else { 0 });
        out.push(0);
        out.extend_from_slice(&self.lsn.0.to_le_bytes());
        out.extend_from_slice(&self.prev_lsn_segment.0.to_le_bytes());
        out.extend_from_slice(&self.prev_lsn_page.0.to_le_bytes());
        out.extend_from_slice(&self.page_no.0.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..start + CRC_OFFSET]), body);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(body);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes the record at the front of `buf`, returning it and the bytes it took. Every field
    /// is checked; corrupt or truncated input is an error, never a panic.
    pub fn decode(buf: &[u8]) -> Result<(RedoRecord, usize), CodecError> {
        if buf.len() < REDO_HEADER_BYTES {
            return Err(CodecError::Truncated {
                needed: REDO_HEADER_BYTES,
                have: buf.len(),
            });
        }
        let u32_at = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let magic = u32_at(0);
        if magic != REDO_MAGIC {
            return Err(CodecError::BadMagic(magic));
        }
        if buf[4] != REDO_VERSION {
            return Err(CodecError::BadVersion(buf[4]));
        }
        let kind = buf[5];
        let flags = buf[6];
        let body_len = u32_at(36) as usize;
        if body_len > REDO_BODY_BYTES_MAX {
            return Err(CodecError::BadLength(body_len));
        }
        let total = REDO_HEADER_BYTES + body_len;
        if buf.len() < total {
            return Err(CodecError::Truncated {
                needed: total,
                have: buf.len(),
            });
        }
        let lsn = u64_at(8);
        let stored = u32_at(CRC_OFFSET);
        let body = &buf[REDO_HEADER_BYTES..total];
        let computed = crc32c::crc32c_append(crc32c::crc32c(&buf[..CRC_OFFSET]), body);
        if stored != computed {
            return Err(CodecError::BadCrc {
                lsn,
                stored,
                computed,
            });
        }
        // The CRC matched, but the writer may still have been buggy: check the semantics too.
        if flags & !FLAG_CPL != 0 || buf[7] != 0 {
            return Err(CodecError::BadKind(flags));
        }
        let body = match kind {
            KIND_IMAGE if body_len == PAGE_SIZE_BYTES => RedoBody::Image(body.to_vec()),
            KIND_IMAGE => return Err(CodecError::BadLength(body_len)),
            KIND_DELTA => {
                for_each_run(body, |_, _| {})?;
                RedoBody::Delta(body.to_vec())
            }
            k => return Err(CodecError::BadKind(k)),
        };
        let record = RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: Lsn(u64_at(16)),
            prev_lsn_page: Lsn(u64_at(24)),
            page_no: PageNo(u32_at(32)),
            is_cpl: flags & FLAG_CPL != 0,
            body,
        };
        if !record.lsn.is_valid()
            || record.prev_lsn_segment >= record.lsn
            || record.prev_lsn_page >= record.lsn
        {
            return Err(CodecError::BadDelta("backlinks do not point back"));
        }
        Ok((record, total))
    }

    /// Decodes a concatenation of records (as shipped in one append or stored in a log file).
    pub fn decode_all(mut buf: &[u8]) -> Result<Vec<RedoRecord>, CodecError> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (r, n) = RedoRecord::decode(buf)?;
            out.push(r);
            buf = &buf[n..];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; PAGE_SIZE_BYTES]
    }

    fn sample() -> RedoRecord {
        let old = page(0);
        let mut new = page(0);
        new[100..104].copy_from_slice(b"abcd");
        new[4000] = 7;
        RedoRecord {
            lsn: Lsn(42),
            prev_lsn_segment: Lsn(41),
            prev_lsn_page: Lsn(7),
            page_no: PageNo(3),
            is_cpl: true,
            body: RedoBody::between(Some(&old), &new),
        }
    }

    /// The word-wise scan produces exactly the deltas the byte-wise one did, for changes of
    /// every shape: none, single bytes at word edges, runs crossing words, gaps of 7 to 9
    /// equal bytes, the page's last bytes, everything.
    #[test]
    fn the_word_wise_scan_agrees_with_the_byte_wise_one() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..2000 {
            let old: Vec<u8> = (0..PAGE_SIZE_BYTES).map(|_| next() as u8).collect();
            let mut new = old.clone();
            let changes = (next() % 12) as usize;
            for _ in 0..changes {
                let at = (next() % PAGE_SIZE_BYTES as u64) as usize;
                let len = 1 + (next() % 20) as usize;
                for b in new.iter_mut().skip(at).take(len) {
                    *b = b.wrapping_add(1 + (next() % 255) as u8);
                }
            }
            if case % 100 == 0 {
                new.iter_mut().for_each(|b| *b = !*b);
            }
            if case % 7 == 0 {
                new[PAGE_SIZE_BYTES - 1] ^= 1;
            }
            assert_eq!(
                RedoBody::between(Some(&old), &new),
                RedoBody::between_bytewise(Some(&old), &new),
                "case {case}"
            );
            assert_eq!(
                RedoBody::between(None, &new),
                RedoBody::between_bytewise(None, &new),
                "case {case}, from zeros"
            );
        }
        // Gaps of exactly 7, 8 and 9 equal bytes between two changed bytes.
        for gap in 6..11 {
            let old = page(0);
            let mut new = page(0);
            new[13] = 1;
            new[14 + gap] = 2;
            assert_eq!(
                RedoBody::between(Some(&old), &new),
                RedoBody::between_bytewise(Some(&old), &new)
            );
        }
    }

    #[test]
    fn round_trip_delta_and_image() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes.len(), r.encoded_len());
        let (back, n) = RedoRecord::decode(&bytes).unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(back, r);

        let img = RedoRecord {
            body: RedoBody::Image(page(9)),
            is_cpl: false,
            ..sample()
        };
        let (back, _) = RedoRecord::decode(&img.encode()).unwrap();
        assert_eq!(back, img);
    }

    /// Pins the byte layout: an accidental change to the format must fail this test.
    #[test]
    fn encoding_snapshot() {
        let bytes = sample().encode();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "4252524401020100\
             2a00000000000000\
             2900000000000000\
             0700000000000000\
             03000000\
             0d000000\
             9cc7815b\
             64000400616263\
             64a00f010007"
        );
    }

    #[test]
    fn delta_applies_to_produce_the_new_page() {
        let old = page(1);
        let mut new = page(1);
        new[0] = 2;
        new[10..20].fill(3);
        new[4095] = 4;
        let body = RedoBody::between(Some(&old), &new);
        assert!(matches!(body, RedoBody::Delta(_)));
        let mut p = old.clone();
        body.apply(&mut p).unwrap();
        assert_eq!(p, new);
    }

    #[test]
    fn a_mostly_changed_page_ships_as_an_image() {
        let old = page(1);
        let new: Vec<u8> = (0..PAGE_SIZE_BYTES).map(|i| (i % 251) as u8 + 2).collect();
        assert!(matches!(
            RedoBody::between(Some(&old), &new),
            RedoBody::Image(_)
        ));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    RedoRecord::decode(&b).is_err(),
                    "flip of bit {bit} of byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(matches!(
                RedoRecord::decode(&bytes[..len]),
                Err(CodecError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn a_delta_reaching_past_the_page_is_rejected_even_with_a_good_crc() {
        let mut r = sample();
        let mut d = Vec::new();
        d.extend_from_slice(&4090u16.to_le_bytes());
        d.extend_from_slice(&10u16.to_le_bytes());
        d.extend_from_slice(&[1; 10]);
        r.body = RedoBody::Delta(d);
        assert_eq!(
            RedoRecord::decode(&r.encode()),
            Err(CodecError::BadDelta("run outside the page"))
        );
    }

    #[test]
    fn decode_all_reads_a_concatenation() {
        let mut buf = sample().encode();
        let second = RedoRecord {
            lsn: Lsn(43),
            prev_lsn_segment: Lsn(42),
            ..sample()
        };
        second.encode_into(&mut buf);
        let all = RedoRecord::decode_all(&buf).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].lsn, Lsn(43));
        assert!(RedoRecord::decode_all(&buf[..buf.len() - 1]).is_err());
    }
}
