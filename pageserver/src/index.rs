//! The index of a segment's checkpoint: which layers hold the segment, as of which LSN.
//!
//! One index object per (tenant, segment, generation), `index-<generation>.json`, replaced
//! (atomically, as every object store PUT is) by each checkpoint of that attachment. It is
//! uploaded only after every layer it names is uploaded, so a durable index always names layers
//! that exist; it is the checkpoint's commit point. The format is drawn in
//! `docs/formats/segment-index.md`:
//!
//! ```json
//! {"magic":"borealis-segment-index","version":1,"tenant":"00000000000000ab","segment":0,
//!  "generation":3,"checkpoint_lsn":1234,"last_record_lsn":1230,
//!  "layers":[{"name":"image-00000000000004d2","generation":3,"kind":"image","lsn":1234,
//!             "pages":17,"bytes":70104,"crc32c":305419896}],
//!  "crc32c":2864434397}
//! ```
//!
//! The top-level `crc32c` is the CRC32C of the document serialized compactly, in this field
//! order, with `crc32c` set to 0; a reader re-serializes what it parsed the same way to check it.
//! Each layer entry carries the size and CRC32C of the whole layer file, checked after download.

use crate::layer::LayerMeta;
use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_objstore::keys::Generation;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const INDEX_MAGIC: &str = "borealis-segment-index";
pub const INDEX_VERSION: u32 = 1;
/// Layers one index may name: a bound on what a reader downloads before it trusts the index.
pub const INDEX_LAYERS_MAX: usize = 1024;
/// The largest index a reader accepts (a few hundred bytes per layer).
pub const INDEX_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("corrupt segment index: {0}")]
pub struct IndexError(pub String);

/// One layer an index names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// The layer's name; its object key is `layer_key(tenant, segment, name, generation)`.
    pub name: String,
    /// The generation that wrote it (today always the index's own).
    pub generation: u32,
    pub kind: String,
    pub lsn: Lsn,
    pub pages: u32,
    /// Size and CRC32C of the whole layer file.
    pub bytes: u64,
    pub crc32c: u32,
}

impl LayerRef {
    pub fn image(name: String, generation: Generation, meta: &LayerMeta, crc32c: u32) -> Self {
        LayerRef {
            name,
            generation: generation.0,
            kind: "image".into(),
            lsn: meta.lsn,
            pages: meta.page_count,
            bytes: meta.file_bytes(),
            crc32c,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentIndex {
    pub magic: String,
    pub version: u32,
    /// The tenant id in hex, as in object keys.
    pub tenant: String,
    pub segment: u32,
    pub generation: u32,
    /// Every record of the segment at or below it is reflected in the layers.
    pub checkpoint_lsn: Lsn,
    /// The newest record of the segment at or below `checkpoint_lsn` (0: none).
    pub last_record_lsn: Lsn,
    pub layers: Vec<LayerRef>,
    pub crc32c: u32,
}

impl SegmentIndex {
    pub fn new(
        tenant: TenantId,
        segment: SegmentId,
        generation: Generation,
        checkpoint_lsn: Lsn,
        last_record_lsn: Lsn,
        layers: Vec<LayerRef>,
    ) -> SegmentIndex {
        SegmentIndex {
            magic: INDEX_MAGIC.into(),
            version: INDEX_VERSION,
            tenant: tenant.to_string(),
            segment: segment.0,
            generation: generation.0,
            checkpoint_lsn,
            last_record_lsn,
            layers,
            crc32c: 0,
        }
    }

    pub fn generation(&self) -> Generation {
        Generation(self.generation)
    }

    fn crc(&self) -> u32 {
        let mut unsealed = self.clone();
        unsealed.crc32c = 0;
        // Serializing a struct of strings and integers cannot fail.
        let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
        crc32c::crc32c(&bytes)
    }

    /// The object's bytes, CRC included.
    pub fn encode(&self) -> Vec<u8> {
        let mut sealed = self.clone();
        sealed.crc32c = self.crc();
        serde_json::to_vec(&sealed).unwrap_or_default()
    }

    /// Parses and checks the index object of `tenant`'s `segment` written by `generation`.
    pub fn decode(
        bytes: &[u8],
        tenant: TenantId,
        segment: SegmentId,
        generation: Generation,
    ) -> Result<SegmentIndex, IndexError> {
        let bad = |m: String| IndexError(m);
        if bytes.len() > INDEX_BYTES_MAX {
            return Err(bad(format!("{} bytes", bytes.len())));
        }
        let index: SegmentIndex =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not an index: {e}")))?;
        if index.magic != INDEX_MAGIC {
            return Err(bad(format!("magic {:?}", index.magic)));
        }
        if index.version != INDEX_VERSION {
            return Err(bad(format!("unsupported version {}", index.version)));
        }
        let crc = index.crc();
        if crc != index.crc32c {
            return Err(bad(format!(
                "crc mismatch: stored {:#010x}, computed {crc:#010x}",
                index.crc32c
            )));
        }
        if index.tenant != tenant.to_string()
            || index.segment != segment.0
            || index.generation != generation.0
        {
            return Err(bad(format!(
                "names tenant {} segment {} generation {}, expected {tenant} {segment} {}",
                index.tenant, index.segment, index.generation, generation.0
            )));
        }
        if index.last_record_lsn > index.checkpoint_lsn {
            return Err(bad("last record above the checkpoint".into()));
        }
        if index.layers.is_empty() || index.layers.len() > INDEX_LAYERS_MAX {
            return Err(bad(format!("{} layers", index.layers.len())));
        }
        for l in &index.layers {
            if l.kind != "image" || l.lsn != index.checkpoint_lsn || l.name.contains('/') {
                return Err(bad(format!(
                    "layer {l:?} is not an image at the checkpoint"
                )));
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let meta = LayerMeta {
            tenant: TenantId(0xab),
            segment: SegmentId(0),
            lsn: Lsn(1234),
            last_record_lsn: Lsn(1230),
            page_count: 17,
        };
        SegmentIndex::new(
            TenantId(0xab),
            SegmentId(0),
            Generation(3),
            Lsn(1234),
            Lsn(1230),
            vec![LayerRef::image(
                "image-00000000000004d2".into(),
                Generation(3),
                &meta,
                0x1234_5678,
            )],
        )
    }

    /// Pins the encoding: an accidental change of the format fails here.
    #[test]
    fn snapshot() {
        let text = String::from_utf8(sample().encode()).unwrap();
        assert_eq!(
            text,
            "{\"magic\":\"borealis-segment-index\",\"version\":1,\"tenant\":\"00000000000000ab\",\
             \"segment\":0,\"generation\":3,\"checkpoint_lsn\":1234,\"last_record_lsn\":1230,\
             \"layers\":[{\"name\":\"image-00000000000004d2\",\"generation\":3,\"kind\":\"image\",\
             \"lsn\":1234,\"pages\":17,\"bytes\":70104,\"crc32c\":305419896}],\"crc32c\":3790598717}"
        );
    }

    #[test]
    fn round_trip_and_checks() {
        let bytes = sample().encode();
        let back =
            SegmentIndex::decode(&bytes, TenantId(0xab), SegmentId(0), Generation(3)).unwrap();
        assert_eq!(back.layers, sample().layers);
        assert_eq!(back.checkpoint_lsn, Lsn(1234));
        // Another generation's, segment's or tenant's key: refused.
        assert!(SegmentIndex::decode(&bytes, TenantId(0xab), SegmentId(0), Generation(4)).is_err());
        assert!(SegmentIndex::decode(&bytes, TenantId(0xab), SegmentId(1), Generation(3)).is_err());
        assert!(SegmentIndex::decode(&bytes, TenantId(0xac), SegmentId(0), Generation(3)).is_err());
        // Any change to a value fails the CRC.
        let text = String::from_utf8(bytes).unwrap();
        for (from, to) in [
            ("1234,\"last", "1235,\"last"),
            ("\"pages\":17", "\"pages\":18"),
        ] {
            let tampered = text.replacen(from, to, 1);
            assert_ne!(tampered, text);
            let err = SegmentIndex::decode(
                tampered.as_bytes(),
                TenantId(0xab),
                SegmentId(0),
                Generation(3),
            )
            .unwrap_err();
            assert!(err.0.contains("crc"), "{err}");
        }
        assert!(SegmentIndex::decode(b"{}", TenantId(0xab), SegmentId(0), Generation(3)).is_err());
        assert!(
            SegmentIndex::decode(b"\xff", TenantId(0xab), SegmentId(0), Generation(3)).is_err()
        );
    }
}
