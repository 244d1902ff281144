//! The object key layout. Every key ends with the writer's generation (8 hex digits), so objects
//! written by two attachments of the same segment never collide:
//!
//! ```text
//! tenants/<tenant hex>/segments/<segment>/layers/<name>-<generation>
//! tenants/<tenant hex>/segments/<segment>/index-<generation>.json
//! ```

use borealis_core::{SegmentId, TenantId};
use object_store::path::Path;

/// A pageserver attachment's generation: increases each time a segment is (re)attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation(pub u32);

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
}
