//! Log sequence numbers.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A log sequence number. Assigned by a volume's single writer, strictly increasing; records of
/// one mini-transaction get consecutive LSNs. `Lsn(0)` is [`Lsn::INVALID`]: "before any record".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// "No record": the backlink of the first record of a segment or page, the SCL of an empty log.
    pub const INVALID: Lsn = Lsn(0);

    /// The LSN after this one.
    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self.0.checked_add(1).expect("LSN space exhausted"))
    }

    pub fn is_valid(self) -> bool {
        self != Lsn::INVALID
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_and_next() {
        assert!(Lsn(1) > Lsn::INVALID);
        assert_eq!(Lsn(41).next(), Lsn(42));
        assert!(!Lsn::INVALID.is_valid());
        assert_eq!(Lsn(7).to_string(), "7");
    }
}
