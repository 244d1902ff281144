//! The records of an append as the safekeeper takes them: validated whole (CRC and all) before
//! anything is judged, and located in the append's bytes so they are written without a copy.

use crate::acceptor::Link;
use borealis_core::redo::{CodecError, RedoRecord};
use borealis_core::Lsn;
use std::ops::Range;

/// A record of an append, validated and located in the append's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedRecord {
    pub lsn: Lsn,
    pub link: Link,
    pub range: Range<usize>,
}

/// Validates a concatenation of encoded records. Any bad record fails the whole batch.
pub fn parse_records(bytes: &[u8]) -> Result<Vec<ParsedRecord>, CodecError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let (r, n) = RedoRecord::decode(&bytes[pos..])?;
        let link = Link {
            prev_lsn_segment: r.prev_lsn_segment,
            is_cpl: r.is_cpl,
        };
        out.push(ParsedRecord {
            lsn: r.lsn,
            link,
            range: pos..pos + n,
        });
        pos += n;
    }
    Ok(out)
}
