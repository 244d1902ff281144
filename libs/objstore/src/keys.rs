//! The object key layout. Every key ends with the writer's generation (8 hex digits), so objects
//! written by two attachments of the same segment never collide:
//!
//! ```text
//! tenants/<tenant hex>/segments/<segment>/layers/<name>-<generation>
//! tenants/<tenant hex>/segments/<segment>/index-<generation>.json
//! tenants/<tenant hex>/segments/<segment>/generations/<generation>
//! ```
//!
//! The last one is a generation's *claim*: an attachment creates it (create-only, so two
//! attachments cannot both claim one generation where the store supports conditional writes)
//! before it writes anything else under that generation.

use borealis_core::{SegmentId, TenantId};
use object_store::path::Path;

/// A pageserver attachment's generation: increases each time a segment is (re)attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation(pub u32);

/// Everything of one tenant: deleting a tenant deletes this prefix.
pub fn tenant_prefix(tenant: TenantId) -> Path {
    Path::from(format!("tenants/{tenant}"))
}

pub fn segment_prefix(tenant: TenantId, segment: SegmentId) -> Path {
    Path::from(format!("tenants/{tenant}/segments/{}", segment.0))
}

pub fn layer_key(tenant: TenantId, segment: SegmentId, name: &str, generation: Generation) -> Path {
    assert!(!name.contains('/'), "layer names are single path segments");
    Path::from(format!(
        "tenants/{tenant}/segments/{}/layers/{name}-{:08x}",
        segment.0, generation.0
    ))
}

pub fn index_key(tenant: TenantId, segment: SegmentId, generation: Generation) -> Path {
    Path::from(format!(
        "tenants/{tenant}/segments/{}/index-{:08x}.json",
        segment.0, generation.0
    ))
}

pub fn generation_key(tenant: TenantId, segment: SegmentId, generation: Generation) -> Path {
    Path::from(format!(
        "tenants/{tenant}/segments/{}/generations/{:08x}",
        segment.0, generation.0
    ))
}

/// The generation of an index key's file name (`index-<generation>.json`), if it is one.
pub fn parse_index_name(name: &str) -> Option<Generation> {
    parse_generation(name.strip_prefix("index-")?.strip_suffix(".json")?)
}

/// The generation of a claim key's file name (`<generation>`), if it is one.
pub fn parse_generation(hex: &str) -> Option<Generation> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(Generation)
}

/// The generation suffix of a layer key's file name (`<name>-<generation>`), if it has one.
pub fn parse_layer_name(file_name: &str) -> Option<(&str, Generation)> {
    let (name, generation) = file_name.rsplit_once('-')?;
    Some((name, parse_generation(generation)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_generation() {
        let k = layer_key(TenantId(0xab), SegmentId(2), "image-10", Generation(7));
        assert_eq!(
            k.as_ref(),
            "tenants/00000000000000ab/segments/2/layers/image-10-00000007"
        );
        let a = index_key(TenantId(1), SegmentId(0), Generation(1));
        let b = index_key(TenantId(1), SegmentId(0), Generation(2));
        assert_ne!(a, b);
        assert!(a
            .as_ref()
            .starts_with(segment_prefix(TenantId(1), SegmentId(0)).as_ref()));
    }

    #[test]
    fn names_parse_back_to_their_generation() {
        let g = Generation(0x1a2b);
        let index = index_key(TenantId(1), SegmentId(0), g);
        assert_eq!(parse_index_name(index.filename().unwrap()), Some(g));
        let claim = generation_key(TenantId(1), SegmentId(0), g);
        assert_eq!(
            claim.as_ref(),
            "tenants/0000000000000001/segments/0/generations/00001a2b"
        );
        assert_eq!(parse_generation(claim.filename().unwrap()), Some(g));
        let layer = layer_key(TenantId(1), SegmentId(0), "image-00000000000000ff", g);
        assert_eq!(
            parse_layer_name(layer.filename().unwrap()),
            Some(("image-00000000000000ff", g))
        );
        for bad in [
            "index-1.json",
            "index-0000000g.json",
            "index-00000001.jsn",
            "x",
        ] {
            assert_eq!(parse_index_name(bad), None, "{bad}");
        }
        assert_eq!(parse_layer_name("image-10"), None);
    }
}
