//! The index of a segment's checkpoint: which layers hold the segment, as of which LSN.
//!
//! The layers form a **chain**, oldest first: one image layer (every page as of its LSN), then
//! zero or more changes layers, each holding the pages changed between the layer before it and
//! its own LSN (`from_lsn` is the LSN of the layer before). The last layer (the *chain top*) is
//! at the checkpoint LSN, or, from version 4 on (RFC 0011), below it: then the index's delta
//! layers cover the records from the chain top to the checkpoint, and a page's content as of the
//! checkpoint is its newest version in the chain plus its records in those deltas. Otherwise it
//! is in the newest layer of the chain that holds it.
//! The checkpointer keeps the chain short ([`crate::checkpoint`]: a new image once it has
//! `CHANGES_LAYERS_MAX` changes layers or their bytes reach half the image's), so a restore reads
//! a bounded number of layers, and what a checkpoint uploads follows the pages changed since the
//! last one, not the segment's size.
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
//! A changes layer's entry adds `"from_lsn"` after `"lsn"`. Version 1 indexes (one image layer,
//! no `from_lsn`) are still read.
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
pub const INDEX_VERSION: u32 = 4;
/// The first version whose chain may end below the checkpoint (RFC 0011).
pub const INDEX_VERSION_CHAIN_BELOW: u32 = 4;
/// The oldest version still read: one image layer at the checkpoint.
pub const INDEX_VERSION_MIN: u32 = 1;
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
    /// The generation that wrote it: the index's own, or an older one's for the layers of the
    /// chain it restored from.
    pub generation: u32,
    /// `"image"` or `"changes"`.
    pub kind: String,
    pub lsn: Lsn,
    /// A changes layer's lower bound: the LSN of the layer before it in the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_lsn: Option<Lsn>,
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
            from_lsn: None,
            pages: meta.page_count,
            bytes: meta.file_bytes(),
            crc32c,
        }
    }

    pub fn changes(
        name: String,
        generation: Generation,
        from_lsn: Lsn,
        meta: &LayerMeta,
        crc32c: u32,
    ) -> Self {
        LayerRef {
            name,
            generation: generation.0,
            kind: "changes".into(),
            lsn: meta.lsn,
            from_lsn: Some(from_lsn),
            pages: meta.page_count,
            bytes: meta.file_bytes(),
            crc32c,
        }
    }

    /// A delta layer of `page_count` pages, `bytes` long, holding the records in `(from, to]`.
    pub fn delta(
        name: String,
        generation: Generation,
        (from, to): (Lsn, Lsn),
        page_count: u32,
        bytes: u64,
        crc32c: u32,
    ) -> Self {
        LayerRef {
            name,
            generation: generation.0,
            kind: "delta".into(),
            lsn: to,
            from_lsn: Some(from),
            pages: page_count,
            bytes,
            crc32c,
        }
    }

    pub fn is_image(&self) -> bool {
        self.kind == "image"
    }

    pub fn is_delta(&self) -> bool {
        self.kind == "delta"
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
    /// Version 3 (RFC 0010, the retention window): image and changes layers kept for the
    /// window besides the chain, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<LayerRef>,
    /// Delta layers (the redo between two checkpoints), oldest first, contiguous, the last
    /// ending at `checkpoint_lsn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<LayerRef>,
    /// Every LSN from it to `checkpoint_lsn` can be rebuilt from the layers named here
    /// (absent: none below `checkpoint_lsn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_from: Option<Lsn>,
    /// `[lsn, unix_ms]` of the checkpoints inside the window, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<(Lsn, u64)>,
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
            history: Vec::new(),
            deltas: Vec::new(),
            history_from: None,
            checkpoints: Vec::new(),
            crc32c: 0,
        }
    }

    /// Every layer the index names: the chain, the history and the deltas. Garbage collection
    /// keeps all of them.
    pub fn named(&self) -> impl Iterator<Item = &LayerRef> {
        self.layers.iter().chain(&self.history).chain(&self.deltas)
    }

    pub fn generation(&self) -> Generation {
        Generation(self.generation)
    }

    /// The LSN of the chain's newest layer: the checkpoint's, or below it (RFC 0011).
    pub fn chain_top(&self) -> Option<Lsn> {
        self.layers.last().map(|l| l.lsn)
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
        if !(INDEX_VERSION_MIN..=INDEX_VERSION).contains(&index.version) {
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
        check_chain(&index.layers, index.checkpoint_lsn, index.version).map_err(bad)?;
        check_window(&index).map_err(bad)?;
        if !deltas_reach_chain_top(&index.layers, index.checkpoint_lsn, index.history_from) {
            return Err(bad(format!(
                "the chain ends at {:?}, below the checkpoint at {}, and the deltas do not \
                 cover the gap (history from {:?})",
                index.chain_top(),
                index.checkpoint_lsn,
                index.history_from
            )));
        }
        if index.version == 1 && index.layers.len() != 1 {
            return Err(bad("a version 1 index names one image layer".into()));
        }
        Ok(index)
    }
}

/// Whether a chain that ends below `checkpoint_lsn` has the deltas from its top on (RFC 0011):
/// the window (`history_from`, from which the deltas run contiguously up to the checkpoint,
/// [`check_window`]) starts at or below the chain top. A chain at the checkpoint needs none.
pub fn deltas_reach_chain_top(
    chain: &[LayerRef],
    checkpoint_lsn: Lsn,
    history_from: Option<Lsn>,
) -> bool {
    match chain.last() {
        Some(top) if top.lsn < checkpoint_lsn => history_from.is_some_and(|from| from <= top.lsn),
        _ => true,
    }
}

/// The chain rule (see the module docs): an image layer first, then changes layers each from
/// the LSN of the layer before, the last at `checkpoint_lsn` (from version 4: at or below it).
fn check_chain(layers: &[LayerRef], checkpoint_lsn: Lsn, version: u32) -> Result<(), String> {
    let mut below: Option<Lsn> = None;
    for (i, l) in layers.iter().enumerate() {
        if l.name.contains('/') || l.name.is_empty() {
            return Err(format!("layer name {:?}", l.name));
        }
        match (i, l.kind.as_str(), l.from_lsn, below) {
            (0, "image", None, _) => {}
            (0, _, _, _) => return Err(format!("the chain starts with {l:?}, not an image")),
            (_, "changes", Some(from), Some(prev)) if from == prev && l.lsn > from => {}
            _ => {
                return Err(format!(
                    "layer {i} {l:?} does not follow the layer before it (at {below:?})"
                ))
            }
        }
        below = Some(l.lsn);
    }
    let ends_ok = match below {
        Some(top) if version >= INDEX_VERSION_CHAIN_BELOW => top <= checkpoint_lsn,
        top => top == Some(checkpoint_lsn),
    };
    if !ends_ok {
        return Err(format!(
            "the chain ends at {below:?}, the checkpoint is at {checkpoint_lsn}"
        ));
    }
    Ok(())
}

/// The window's rules (RFC 0010): history layers are images or changes below the checkpoint;
/// deltas are contiguous and end at the checkpoint; `history_from` lies within what the deltas
/// and layers cover; checkpoint marks increase; the whole stays within [`INDEX_LAYERS_MAX`].
fn check_window(index: &SegmentIndex) -> Result<(), String> {
    let named = index.layers.len() + index.history.len() + index.deltas.len();
    if named > INDEX_LAYERS_MAX {
        return Err(format!("{named} layers"));
    }
    for l in &index.history {
        if l.name.contains('/') || l.name.is_empty() {
            return Err(format!("layer name {:?}", l.name));
        }
        let ok = match l.kind.as_str() {
            "image" => l.from_lsn.is_none(),
            "changes" => l.from_lsn.is_some_and(|f| f < l.lsn),
            _ => false,
        };
        if !ok || l.lsn >= index.checkpoint_lsn {
            return Err(format!("history layer {l:?}"));
        }
    }
    let mut end: Option<Lsn> = None;
    for d in &index.deltas {
        if d.name.contains('/') || d.name.is_empty() || !d.is_delta() {
            return Err(format!("delta layer {d:?}"));
        }
        match (d.from_lsn, end) {
            (Some(from), None) if from < d.lsn => {}
            (Some(from), Some(prev)) if from == prev && from < d.lsn => {}
            _ => return Err(format!("delta layer {d:?} does not follow {end:?}")),
        }
        end = Some(d.lsn);
    }
    if end.is_some_and(|e| e != index.checkpoint_lsn) {
        return Err(format!(
            "the deltas end at {end:?}, the checkpoint is at {}",
            index.checkpoint_lsn
        ));
    }
    if let Some(from) = index.history_from {
        let deltas_from = index.deltas.first().and_then(|d| d.from_lsn);
        if from > index.checkpoint_lsn
            || (from < index.checkpoint_lsn && deltas_from.is_none_or(|d| d > from))
        {
            return Err(format!("history from {from} is not covered"));
        }
    }
    if index.checkpoints.windows(2).any(|w| w[0].0 >= w[1].0)
        || index
            .checkpoints
            .last()
            .is_some_and(|c| c.0 > index.checkpoint_lsn)
    {
        return Err("checkpoint marks out of order".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let meta = LayerMeta {
            version: crate::layer::LAYER_VERSION_V1,
            kind: crate::layer::LayerKind::Image,
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
            "{\"magic\":\"borealis-segment-index\",\"version\":4,\"tenant\":\"00000000000000ab\",\
             \"segment\":0,\"generation\":3,\"checkpoint_lsn\":1234,\"last_record_lsn\":1230,\
             \"layers\":[{\"name\":\"image-00000000000004d2\",\"generation\":3,\"kind\":\"image\",\
             \"lsn\":1234,\"pages\":17,\"bytes\":70104,\"crc32c\":305419896}],\"crc32c\":1329311924}"
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

    fn meta(lsn: u64, pages: u32) -> LayerMeta {
        LayerMeta {
            version: crate::layer::LAYER_VERSION_V1,
            kind: crate::layer::LayerKind::Changes,
            tenant: TenantId(0xab),
            segment: SegmentId(0),
            lsn: Lsn(lsn),
            last_record_lsn: Lsn(lsn),
            page_count: pages,
        }
    }

    fn chain_index(layers: Vec<LayerRef>, checkpoint: u64) -> SegmentIndex {
        SegmentIndex::new(
            TenantId(0xab),
            SegmentId(0),
            Generation(3),
            Lsn(checkpoint),
            Lsn(checkpoint),
            layers,
        )
    }

    fn decode(index: &SegmentIndex) -> Result<SegmentIndex, IndexError> {
        SegmentIndex::decode(&index.encode(), TenantId(0xab), SegmentId(0), Generation(3))
    }

    /// Pins a chain's encoding: an image of generation 2 and a changes layer of generation 3.
    #[test]
    fn chain_snapshot() {
        let index = chain_index(
            vec![
                LayerRef::image("image-a".into(), Generation(2), &meta(10, 4), 1),
                LayerRef::changes(
                    "changes-a-14".into(),
                    Generation(3),
                    Lsn(10),
                    &meta(20, 1),
                    2,
                ),
            ],
            20,
        );
        let text = String::from_utf8(index.encode()).unwrap();
        assert_eq!(
            text,
            "{\"magic\":\"borealis-segment-index\",\"version\":4,\"tenant\":\"00000000000000ab\",\
             \"segment\":0,\"generation\":3,\"checkpoint_lsn\":20,\"last_record_lsn\":20,\
             \"layers\":[{\"name\":\"image-a\",\"generation\":2,\"kind\":\"image\",\"lsn\":10,\
             \"pages\":4,\"bytes\":16544,\"crc32c\":1},{\"name\":\"changes-a-14\",\"generation\":3,\
             \"kind\":\"changes\",\"lsn\":20,\"from_lsn\":10,\"pages\":1,\"bytes\":4184,\
             \"crc32c\":2}],\"crc32c\":904453647}"
        );
        assert_eq!(decode(&index).unwrap().layers, index.layers);
    }

    #[test]
    fn only_a_chain_from_an_image_to_the_checkpoint_is_accepted() {
        let image = |lsn| LayerRef::image(format!("image-{lsn}"), Generation(3), &meta(lsn, 4), 0);
        let changes = |from, to| {
            LayerRef::changes(
                format!("changes-{from}-{to}"),
                Generation(3),
                Lsn(from),
                &meta(to, 1),
                0,
            )
        };
        let good = [
            (vec![image(10)], 10),
            (vec![image(10), changes(10, 20)], 20),
            (vec![image(10), changes(10, 20), changes(20, 30)], 30),
        ];
        for (layers, checkpoint) in good {
            decode(&chain_index(layers.clone(), checkpoint))
                .unwrap_or_else(|e| panic!("{layers:?} at {checkpoint}: {e}"));
        }
        let bad = [
            (vec![], 10),
            (vec![changes(0, 10)], 10),
            (vec![image(10)], 20),
            (vec![image(10), changes(10, 20)], 10),
            (vec![image(10), changes(11, 20)], 20),
            (vec![image(10), image(20)], 20),
            (vec![image(10), changes(10, 10)], 10),
            (vec![image(10), changes(10, 20), changes(10, 30)], 30),
        ];
        for (layers, checkpoint) in bad {
            assert!(
                decode(&chain_index(layers.clone(), checkpoint)).is_err(),
                "{layers:?} at {checkpoint} accepted"
            );
        }
    }

    /// A version 1 index (one image layer, written before chains) is still read; a version 1
    /// index naming a chain is not.
    #[test]
    fn version_1_indexes_are_read() {
        let mut v1 = sample();
        v1.version = 1;
        let back = decode(&v1).unwrap();
        assert_eq!(back.layers, sample().layers);
        let mut chain = chain_index(
            vec![
                LayerRef::image("image-a".into(), Generation(3), &meta(10, 4), 0),
                LayerRef::changes("changes-b".into(), Generation(3), Lsn(10), &meta(20, 1), 0),
            ],
            20,
        );
        chain.version = 1;
        assert!(decode(&chain).is_err());
        let mut v2 = sample();
        v2.version = 2;
        assert_eq!(decode(&v2).unwrap().layers, sample().layers);
        let mut v3 = sample();
        v3.version = 3;
        assert_eq!(decode(&v3).unwrap().layers, sample().layers);
        let mut v5 = sample();
        v5.version = 5;
        assert!(decode(&v5).unwrap_err().0.contains("version"));
    }

    fn window_index() -> SegmentIndex {
        let mut index = chain_index(
            vec![LayerRef::image(
                "image-b".into(),
                Generation(3),
                &meta(20, 4),
                3,
            )],
            20,
        );
        index.history = vec![
            LayerRef::image("image-a".into(), Generation(2), &meta(5, 4), 1),
            LayerRef::changes("changes-c".into(), Generation(3), Lsn(5), &meta(10, 1), 2),
        ];
        index.deltas = vec![
            LayerRef::delta(
                "delta-a".into(),
                Generation(2),
                (Lsn(3), Lsn(10)),
                2,
                300,
                4,
            ),
            LayerRef::delta(
                "delta-b".into(),
                Generation(3),
                (Lsn(10), Lsn(20)),
                1,
                200,
                5,
            ),
        ];
        index.history_from = Some(Lsn(5));
        index.checkpoints = vec![(Lsn(5), 1000), (Lsn(10), 2000), (Lsn(20), 3000)];
        index
    }

    /// Pins version 3's window fields (RFC 0010).
    #[test]
    fn window_snapshot_and_rules() {
        let text = String::from_utf8(window_index().encode()).unwrap();
        assert_eq!(text, WINDOW_SNAPSHOT);
        let back = decode(&window_index()).unwrap();
        assert_eq!(back, {
            let mut i = window_index();
            i.crc32c = back.crc32c;
            i
        });
        assert_eq!(back.named().count(), 5);
        // Deltas that leave a gap, or do not end at the checkpoint, are refused.
        let mut gap = window_index();
        gap.deltas[1].from_lsn = Some(Lsn(11));
        assert!(decode(&gap).unwrap_err().0.contains("does not follow"));
        let mut short = window_index();
        short.deltas.pop();
        assert!(decode(&short).is_err());
        // A window start the deltas do not reach, or a history layer above the checkpoint.
        let mut early = window_index();
        early.history_from = Some(Lsn(2));
        assert!(decode(&early).unwrap_err().0.contains("not covered"));
        let mut above = window_index();
        above.history[1].lsn = Lsn(25);
        assert!(decode(&above).is_err());
        let mut marks = window_index();
        marks.checkpoints.swap(0, 1);
        assert!(decode(&marks).is_err());
    }

    /// Version 4 (RFC 0011): the chain may end below the checkpoint when the deltas cover the
    /// gap; version 3 may not, and a gap the deltas do not cover is refused.
    #[test]
    fn a_chain_below_the_checkpoint_needs_the_deltas_and_version_4() {
        let mut below = window_index();
        below.history.pop();
        below.layers = vec![LayerRef::image(
            "image-c".into(),
            Generation(3),
            &meta(10, 4),
            3,
        )];
        below.history_from = Some(Lsn(10));
        below.checkpoints = vec![(Lsn(10), 2000), (Lsn(20), 3000)];
        let back = decode(&below).unwrap();
        assert_eq!(back.chain_top(), Some(Lsn(10)));
        let mut v3 = below.clone();
        v3.version = 3;
        assert!(decode(&v3).unwrap_err().0.contains("the chain ends at"));
        let mut uncovered = below.clone();
        uncovered.history_from = Some(Lsn(15));
        uncovered.checkpoints = vec![(Lsn(15), 2500), (Lsn(20), 3000)];
        assert!(decode(&uncovered).unwrap_err().0.contains("do not cover"));
        let mut none = below;
        none.deltas.clear();
        none.history_from = None;
        none.checkpoints.clear();
        assert!(decode(&none).unwrap_err().0.contains("do not cover"));
    }

    const WINDOW_SNAPSHOT: &str = concat!(
        r#"{"magic":"borealis-segment-index","version":4,"tenant":"00000000000000ab","segment":0,"g"#,
        r#"eneration":3,"checkpoint_lsn":20,"last_record_lsn":20,"layers":[{"name":"image-b","gener"#,
        r#"ation":3,"kind":"image","lsn":20,"pages":4,"bytes":16544,"crc32c":3}],"history":[{"name""#,
        r#":"image-a","generation":2,"kind":"image","lsn":5,"pages":4,"bytes":16544,"crc32c":1},{"n"#,
        r#"ame":"changes-c","generation":3,"kind":"changes","lsn":10,"from_lsn":5,"pages":1,"bytes""#,
        r#":4184,"crc32c":2}],"deltas":[{"name":"delta-a","generation":2,"kind":"delta","lsn":10,"f"#,
        r#"rom_lsn":3,"pages":2,"bytes":300,"crc32c":4},{"name":"delta-b","generation":3,"kind":"de"#,
        r#"lta","lsn":20,"from_lsn":10,"pages":1,"bytes":200,"crc32c":5}],"history_from":5,"checkpo"#,
        r#"ints":[[5,1000],[10,2000],[20,3000]],"crc32c":511714452}"#,
    );
}
