//! The backlink chain of one segment, as a safekeeper holds it: which records it has, how far
//! they are complete (the SCL), and where the log was trimmed. See [`super`] for the rules.

use borealis_core::Lsn;
use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

/// What the chain needs to know of a held record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub prev_lsn_segment: Lsn,
    pub is_cpl: bool,
}

/// Where a segment's log was trimmed: every record at or below `base` was dropped (it is
/// checkpointed to object storage). `base` is the LSN of a record that was on the chain, so the
/// next record of the segment names it as its `prev_lsn_segment`; `last_cpl` is the highest
/// consistency point at or below it, which recovery still needs once the records are gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrimPoint {
    pub base: Lsn,
    pub last_cpl: Lsn,
}

impl TrimPoint {
    /// The trim point a peer's refusal of a read (`LogTrimmed { base, last_cpl }`) names, if a
    /// control file would hold it (`0 < base`, `last_cpl <= base`): what a lagging member may
    /// adopt ([`crate::gossip`]).
    pub fn from_refusal(base: Lsn, last_cpl: Lsn) -> Option<TrimPoint> {
        (base.is_valid() && last_cpl <= base).then_some(TrimPoint { base, last_cpl })
    }
}

/// The backlink chain of one segment as held by this safekeeper.
#[derive(Clone, Debug, Default)]
pub struct SegmentChain {
    held: BTreeMap<Lsn, Link>,
    /// The chain starts here: `Lsn::INVALID`, or the LSN below which the log was trimmed (every
    /// record up to it is known to be in object storage). Records at or below it are not held.
    base: Lsn,
    /// The highest consistency point at or below `base`.
    base_last_cpl: Lsn,
    scl: Lsn,
    last_cpl: Lsn,
}

impl SegmentChain {
    pub fn new() -> SegmentChain {
        SegmentChain::default()
    }

    /// A chain whose records up to `trim.base` were trimmed away (checkpointed elsewhere).
    pub fn with_base(trim: TrimPoint) -> SegmentChain {
        assert!(
            trim.last_cpl <= trim.base,
            "the trim's CPL is at or below it"
        );
        SegmentChain {
            base: trim.base,
            base_last_cpl: trim.last_cpl,
            scl: trim.base,
            last_cpl: trim.last_cpl,
            ..SegmentChain::default()
        }
    }

    pub fn scl(&self) -> Lsn {
        self.scl
    }

    /// Where the log was trimmed (`INVALID`: never).
    pub fn base(&self) -> Lsn {
        self.base
    }

    pub fn trim_point(&self) -> TrimPoint {
        TrimPoint {
            base: self.base,
            last_cpl: self.base_last_cpl,
        }
    }

    /// Where a trim up to `upto` would cut: the highest held record at or below both `upto` and
    /// the SCL (so only records of the complete chain), with the last CPL at or below it. `None`
    /// when that is not above the current base (nothing to drop).
    pub fn trim_point_for(&self, upto: Lsn) -> Option<TrimPoint> {
        let limit = upto.min(self.scl);
        let (&base, _) = self.held.range(..=limit).next_back()?;
        if base <= self.base {
            return None;
        }
        let last_cpl = self
            .held
            .range(..=base)
            .rev()
            .find(|(_, link)| link.is_cpl)
            .map_or(self.base_last_cpl, |(lsn, _)| *lsn);
        Some(TrimPoint { base, last_cpl })
    }

    /// Drops every record at or below `trim.base`, which must come from
    /// [`SegmentChain::trim_point_for`]: the SCL and last CPL do not change. Returns how many
    /// records were dropped.
    pub fn trim(&mut self, trim: TrimPoint) -> usize {
        assert!(
            trim.base > self.base && trim.base <= self.scl,
            "a trim moves the base forward, within the complete chain"
        );
        assert!(
            trim.last_cpl <= self.last_cpl,
            "the trim's CPL is on the chain"
        );
        let kept = self.held.split_off(&Lsn(trim.base.0.saturating_add(1)));
        let dropped = std::mem::replace(&mut self.held, kept).len();
        self.base = trim.base;
        self.base_last_cpl = trim.last_cpl;
        dropped
    }

    /// Makes a peer's trim point this chain's base (see [`super::TenantAcceptor::judge_adopt_trim`],
    /// whose [`super::AdoptVerdict::Adopt`] it must come from): every record at or below `trim.base` is
    /// dropped (it is checkpointed to object storage), the SCL starts again at the base and
    /// advances over the held records that chain onto it. Returns how many records were dropped.
    pub fn adopt_base(&mut self, trim: TrimPoint) -> usize {
        assert!(
            trim.base > self.scl && self.scl >= self.base,
            "an adopted base lies above the SCL, hence above the current trim point"
        );
        assert!(
            self.last_cpl <= trim.last_cpl && trim.last_cpl <= trim.base,
            "the adopted last CPL is at or below the base and not below ours"
        );
        let kept = self.held.split_off(&Lsn(trim.base.0.saturating_add(1)));
        let dropped = std::mem::replace(&mut self.held, kept).len();
        self.base = trim.base;
        self.base_last_cpl = trim.last_cpl;
        let before = self.scl;
        self.recompute();
        assert!(
            self.scl >= trim.base && self.scl > before,
            "adoption moves the SCL forward, never back"
        );
        dropped
    }

    /// The highest consistency point at or below the SCL (`Lsn::INVALID` if none).
    pub fn last_cpl(&self) -> Lsn {
        self.last_cpl
    }

    /// The highest LSN held, complete or not.
    pub fn end_lsn(&self) -> Lsn {
        self.held.last_key_value().map_or(self.scl, |(lsn, _)| *lsn)
    }

    /// The records on the complete chain with `after < lsn <= min(upto, SCL)`, at most `max`, and
    /// the chain's record at or below `after` that the first of them links to (the trim point if
    /// no held record is; `INVALID` for an empty chain). `None` when `after` is below the trim
    /// point: those records are gone. For a recovering writer's index of the segment (RFC 0008).
    pub fn index(&self, after: Lsn, upto: Lsn, max: usize) -> Option<(Lsn, Vec<(Lsn, Link)>)> {
        if after < self.base {
            return None;
        }
        let top = upto.min(self.scl);
        let before = self
            .held
            .range(..=after.min(top))
            .next_back()
            .map_or(self.base, |(lsn, _)| *lsn);
        let entries = if after < top {
            self.held
                .range((Excluded(after), std::ops::Bound::Included(top)))
                .take(max)
                .map(|(lsn, link)| (*lsn, *link))
                .collect()
        } else {
            Vec::new()
        };
        Some((before, entries))
    }

    pub fn contains(&self, lsn: Lsn) -> bool {
        self.held.contains_key(&lsn)
    }

    pub fn records(&self) -> usize {
        self.held.len()
    }

    /// Number of holes above the SCL: stretches of missing records, each ending at a held record
    /// whose predecessor is not held.
    pub fn holes(&self) -> usize {
        let mut prev = self.scl;
        let mut holes = 0;
        for (&lsn, link) in self.held.range((Excluded(self.scl), Unbounded)) {
            if link.prev_lsn_segment != prev {
                holes += 1;
            }
            prev = lsn;
        }
        holes
    }

    /// Whether a record with this LSN would be new and may be on the chain. `false` for records
    /// already held (duplicates) and for records at or below the SCL or base that are not held
    /// (they cannot be on a chain that is already complete there).
    pub fn would_accept(&self, lsn: Lsn) -> bool {
        // The SCL is never below the base, so this also refuses records below the base.
        lsn > self.scl && !self.held.contains_key(&lsn)
    }

    /// Records a held record and advances the SCL as far as the chain now reaches. Returns
    /// whether the record was new. The caller must have checked [`Self::would_accept`].
    pub fn insert(&mut self, lsn: Lsn, link: Link) -> bool {
        assert!(
            link.prev_lsn_segment < lsn,
            "backlinks point back (checked by the codec)"
        );
        if !self.would_accept(lsn) {
            return false;
        }
        self.held.insert(lsn, link);
        self.advance();
        true
    }

    /// Forgets a record (it was found corrupt on disk) and recomputes the SCL from the base.
    /// Returns whether it was held.
    pub fn remove(&mut self, lsn: Lsn) -> bool {
        if self.held.remove(&lsn).is_none() {
            return false;
        }
        if lsn <= self.scl {
            self.recompute();
        }
        true
    }

    /// Forgets every record above `lsn` (a new epoch started there). Returns how many.
    pub fn truncate_above(&mut self, lsn: Lsn) -> usize {
        let removed = self.held.split_off(&Lsn(lsn.0.saturating_add(1)));
        if self.scl > lsn {
            self.recompute();
        }
        removed.len()
    }

    fn recompute(&mut self) {
        self.scl = self.base;
        self.last_cpl = self.base_last_cpl;
        self.advance();
    }

    /// The record that continues the chain is the lowest held LSN above the SCL, and only if its
    /// backlink names the SCL: a segment's records link to their immediate predecessor in the
    /// segment, so a lower successor cannot exist.
    fn advance(&mut self) {
        loop {
            let next = self.held.range((Excluded(self.scl), Unbounded)).next();
            match next {
                Some((&lsn, link)) if link.prev_lsn_segment == self.scl => {
                    self.scl = lsn;
                    if link.is_cpl {
                        self.last_cpl = lsn;
                    }
                }
                _ => break,
            }
        }
    }
}
