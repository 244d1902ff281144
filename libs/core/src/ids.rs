//! Identifiers of tenants, pages and segments, and the page → segment mapping.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every page of every volume is this big. SQLite's default page size; the compute forbids
/// `PRAGMA page_size` changes, so a volume's page size can never differ from this.
pub const PAGE_SIZE_BYTES: usize = 4096;

/// Default segment size (docs/design.md §2): 10 GiB.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 10 * 1024 * 1024 * 1024;
/// The smallest segment size `--segment-size` accepts (tests make hundreds of segments from a
/// few megabytes with it).
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 1024 * 1024;
/// Segments per volume at most. Each costs a follower task on its pageserver and an entry in
/// recovery's plan; with the default segment size a volume never gets near it (`u32` page numbers
/// of 4 KiB are 16 TiB, 1,639 segments), with small test segments it bounds the volume instead.
pub const SEGMENTS_PER_VOLUME_MAX: u32 = 4096;

/// A tenant, i.e. one volume. Chosen at random by the gateway when the tenant is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TenantId(pub u64);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for TenantId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(TenantId)
    }
}

/// A page of a volume, numbered from 0 (byte offset / [`PAGE_SIZE_BYTES`]). SQLite's page 1 is
/// our page 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PageNo(pub u32);

impl fmt::Display for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A segment of a volume: a contiguous range of pages whose log one protection group holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub u32);

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a volume's pages are cut into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentLayout {
    pages_per_segment: u32,
}

impl Default for SegmentLayout {
    fn default() -> Self {
        Self::from_segment_size_bytes(SEGMENT_SIZE_BYTES_DEFAULT)
    }
}

impl SegmentLayout {
    /// A layout of `pages_per_segment` pages each; tests use a few pages to exercise many segments.
    pub fn new(pages_per_segment: u32) -> Self {
        assert!(pages_per_segment > 0, "a segment holds at least one page");
        Self { pages_per_segment }
    }

    pub fn from_segment_size_bytes(size_bytes: u64) -> Self {
        let pages = size_bytes / PAGE_SIZE_BYTES as u64;
        assert!(
            pages > 0 && pages <= u64::from(u32::MAX),
            "segment size out of range"
        );
        Self::new(pages as u32)
    }

    /// Parses a segment size as `--segment-size` takes it: bytes, or a number with `KiB`, `MiB`,
    /// `GiB` or `TiB`; a whole number of MiB, at least [`SEGMENT_SIZE_BYTES_MIN`] (so powers of two
    /// from 1 MiB and the default 10 GiB).
    pub fn parse_segment_size(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
        let n: u64 = digits.parse().map_err(|_| {
            format!("segment size {text:?}: expected a number such as 4MiB or 10GiB")
        })?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "segment size {text:?}: unknown unit {other:?} (use KiB, MiB, GiB or TiB)"
                ))
            }
        };
        let bytes = n
            .checked_mul(scale)
            .ok_or_else(|| format!("segment size {text:?} is too large"))?;
        if bytes < SEGMENT_SIZE_BYTES_MIN || bytes % SEGMENT_SIZE_BYTES_MIN != 0 {
            return Err(format!(
                "segment size {text:?}: must be a whole number of MiB, at least 1MiB"
            ));
        }
        if bytes / PAGE_SIZE_BYTES as u64 > u64::from(u32::MAX) {
            return Err(format!("segment size {text:?} is too large"));
        }
        Ok(Self::from_segment_size_bytes(bytes))
    }

    pub fn segment_size_bytes(self) -> u64 {
        u64::from(self.pages_per_segment) * PAGE_SIZE_BYTES as u64
    }

    pub fn pages_per_segment(self) -> u32 {
        self.pages_per_segment
    }

    /// The segment that holds `page`.
    pub fn segment_of(self, page: PageNo) -> SegmentId {
        SegmentId(page.0 / self.pages_per_segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_segment_is_ten_gib_of_pages() {
        let layout = SegmentLayout::default();
        assert_eq!(layout.pages_per_segment(), 2_621_440);
        assert_eq!(layout.segment_of(PageNo(0)), SegmentId(0));
        assert_eq!(layout.segment_of(PageNo(2_621_439)), SegmentId(0));
        assert_eq!(layout.segment_of(PageNo(2_621_440)), SegmentId(1));
    }

    #[test]
    fn segment_sizes_parse_as_whole_mib_of_at_least_one() {
        let l = SegmentLayout::parse_segment_size("4MiB").unwrap();
        assert_eq!(
            (l.pages_per_segment(), l.segment_size_bytes()),
            (1024, 4 << 20)
        );
        assert_eq!(
            SegmentLayout::parse_segment_size("10GiB").unwrap(),
            SegmentLayout::default()
        );
        assert_eq!(
            SegmentLayout::parse_segment_size("1048576")
                .unwrap()
                .pages_per_segment(),
            256
        );
        for bad in [
            "",
            "4",
            "512KiB",
            "1536KiB",
            "4 MB",
            "x",
            "99999999999999TiB",
            "32TiB",
        ] {
            assert!(SegmentLayout::parse_segment_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn small_segments_for_tests() {
        let layout = SegmentLayout::new(4);
        assert_eq!(layout.segment_of(PageNo(3)), SegmentId(0));
        assert_eq!(layout.segment_of(PageNo(9)), SegmentId(2));
    }

    #[test]
    fn tenant_id_round_trips_as_hex() {
        let t = TenantId(0xdead_beef_0042);
        assert_eq!(t.to_string(), "0000deadbeef0042");
        assert_eq!(t.to_string().parse::<TenantId>().unwrap(), t);
        assert!("zz".parse::<TenantId>().is_err());
    }
}
