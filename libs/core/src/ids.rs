//! Identifiers of tenants, pages and segments, and the page → segment mapping.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every page of every volume is this big. SQLite's default page size; the compute forbids
/// `PRAGMA page_size` changes, so a volume's page size can never differ from this.
pub const PAGE_SIZE_BYTES: usize = 4096;

/// Default segment size (docs/design.md §2): 10 GiB.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 10 * 1024 * 1024 * 1024;

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
