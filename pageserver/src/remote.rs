//! Object storage for checkpoints: generations, layer uploads and downloads, indexes, deletions.
//!
//! Keys follow `borealis_objstore::keys`; per (tenant, segment):
//!
//! ```text
//! tenants/<tenant>/segments/<segment>/generations/<gen>         a generation's claim
//! tenants/<tenant>/segments/<segment>/index-<gen>.json          that generation's newest index
//! tenants/<tenant>/segments/<segment>/layers/<name>-<gen>       layers it wrote
//! ```
//!
//! ## Generations: who may write what
//!
//! Every attachment of a segment (a pageserver process following it) gets a new **generation**:
//! it lists the claims and indexes already there and takes `max + 1`, claiming it with a
//! create-only PUT (`If-None-Match: *` on S3) so two attachments starting at once cannot both
//! take it (on a store without conditional writes the claim is an ordinary PUT, logged). The
//! generation is derived from object storage, not persisted locally, because local state is a
//! cache that may be wiped (and is, at every start).
//!
//! What fences two pageservers that both write one segment (Neon RFC 025, without a control
//! plane to hand out generations):
//!
//! - every object an attachment writes carries its generation in its key, so it can never
//!   overwrite another attachment's layers or index;
//! - an attachment deletes **its own** layers only after its newer index naming others is
//!   durable, never one that index names, and only while no newer generation has been claimed
//!   ([`Remote::newest_claim`]); it uploads an index only while its claim is still the newest,
//!   and once it sees a newer one it uploads and deletes nothing more (it is stale). Objects of
//!   older generations are deleted by the newest attachment only, by the rule of [`crate::gc`]
//!   (which says why a stale attachment cannot lose what it names);
//! - a reader takes the index with the **highest checkpoint LSN** among all generations (ties:
//!   the newest generation). Every index is a valid checkpoint (it reflects only durable records),
//!   and the safekeepers may have been trimmed up to any of them, so the highest is the one to
//!   start from.
//!
//! Every operation here is one attempt; callers retry with [`Backoff`].

use crate::index::{LayerRef, SegmentIndex};
use borealis_core::{SegmentId, TenantId};
use borealis_objstore::keys::{self, Generation};
use bytes::Bytes;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes read from a local layer file per upload write (and buffered before a multipart part).
pub const UPLOAD_CHUNK_BYTES: usize = 1024 * 1024;
/// Parts of a multipart upload: the object store's writer buffers this much before sending a
/// part (S3's minimum part is 5 MiB).
pub const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;
/// Generations tried after a lost claim race before giving up this attempt.
pub const CLAIM_ATTEMPTS_MAX: u32 = 16;
/// Keys listed, then deleted, per round when deleting a tenant's objects.
pub const DELETE_PAGE_KEYS: usize = 1000;
/// Index objects read when choosing the newest: a bound on a listing that grows with restarts.
pub const INDEXES_READ_MAX: usize = 4096;

impl RemoteError {
    /// Whether trying again may succeed (the object store may come back); a local file problem
    /// will not go away by itself.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, RemoteError::Io(_))
    }
}

#[derive(Debug, Error)]
pub enum RemoteError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A local file could not be read or written: retrying will not help.
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
    /// Writing to the object store failed (surfaced by its writer as an i/o error).
    #[error("object store upload: {0}")]
    Transfer(std::io::Error),
    #[error("{key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("could not claim a generation after {CLAIM_ATTEMPTS_MAX} attempts (last tried {0})")]
    ClaimRace(u32),
}

/// The object store, as the pageserver uses it.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    node_id: String,
}

/// What was uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub bytes: u64,
    pub crc32c: u32,
}

impl Remote {
    pub fn new(store: Arc<dyn ObjectStore>, node_id: String) -> Remote {
        Remote { store, node_id }
    }

    /// Generations seen under the segment: claimed, or with an index.
    async fn generations(
        &self,
        tenant: TenantId,
        segment: SegmentId,
    ) -> Result<(Vec<Generation>, Vec<Generation>), RemoteError> {
        let prefix = keys::segment_prefix(tenant, segment);
        let listed = self.store.list_with_delimiter(Some(&prefix)).await?;
        let mut indexes: Vec<Generation> = listed
            .objects
            .iter()
            .filter_map(|o| keys::parse_index_name(o.location.filename()?))
            .collect();
        indexes.sort();
        let claims_prefix = prefix.child("generations");
        let mut claims: Vec<Generation> = self
            .store
            .list_with_delimiter(Some(&claims_prefix))
            .await?
            .objects
            .iter()
            .filter_map(|o| keys::parse_generation(o.location.filename()?))
            .collect();
        claims.sort();
        Ok((claims, indexes))
    }

    /// The newest generation claimed for the segment (0 if none).
    pub async fn newest_claim(
        &self,
        tenant: TenantId,
        segment: SegmentId,
    ) -> Result<Generation, RemoteError> {
        let (claims, indexes) = self.generations(tenant, segment).await?;
        Ok(claims
            .into_iter()
            .chain(indexes)
            .max()
            .unwrap_or(Generation(0)))
    }

    /// Claims a new generation for this attachment of the segment (see the module docs).
    pub async fn claim_generation(
        &self,
        tenant: TenantId,
        segment: SegmentId,
    ) -> Result<Generation, RemoteError> {
        let mut next = self
            .newest_claim(tenant, segment)
            .await?
            .0
            .saturating_add(1);
        for _ in 0..CLAIM_ATTEMPTS_MAX {
            let key = keys::generation_key(tenant, segment, Generation(next));
            let body = PutPayload::from(format!("{{\"node\":{:?}}}\n", self.node_id).into_bytes());
            let create = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self.store.put_opts(&key, body.clone(), create).await {
                Ok(_) => return Ok(Generation(next)),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    next = next.saturating_add(1);
                }
                Err(object_store::Error::NotImplemented) => {
                    tracing::warn!(%tenant, %segment, generation = next,
                        "the object store has no conditional writes: claiming the generation without fencing");
                    self.store.put(&key, body).await?;
                    return Ok(Generation(next));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RemoteError::ClaimRace(next))
    }

    /// Reads and checks the index of `generation`.
    pub async fn load_index(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        generation: Generation,
    ) -> Result<SegmentIndex, RemoteError> {
        let key = keys::index_key(tenant, segment, generation);
        let bytes = self.store.get(&key).await?.bytes().await?;
        SegmentIndex::decode(&bytes, tenant, segment, generation).map_err(|e| {
            RemoteError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            }
        })
    }

    /// The index to restore from: the highest checkpoint LSN of every generation's index (ties:
    /// the newest generation); `None` if the segment was never checkpointed.
    pub async fn newest_index(
        &self,
        tenant: TenantId,
        segment: SegmentId,
    ) -> Result<Option<SegmentIndex>, RemoteError> {
        let (_, indexes) = self.generations(tenant, segment).await?;
        let mut best: Option<SegmentIndex> = None;
        // Newest generations first: on a (pathological) listing beyond the bound, the newest
        // ones are the ones read.
        for generation in indexes.into_iter().rev().take(INDEXES_READ_MAX) {
            let index = match self.load_index(tenant, segment, generation).await {
                Ok(index) => index,
                // Deleted since the listing (superseded: `crate::gc`).
                Err(RemoteError::Store(object_store::Error::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            };
            let better = best.as_ref().is_none_or(|b| {
                (index.checkpoint_lsn, index.generation) > (b.checkpoint_lsn, b.generation)
            });
            if better {
                best = Some(index);
            }
        }
        Ok(best)
    }

    pub fn layer_key(&self, tenant: TenantId, segment: SegmentId, layer: &LayerRef) -> ObjPath {
        keys::layer_key(tenant, segment, &layer.name, Generation(layer.generation))
    }

    /// Uploads the local file `from` to `key`, streaming it (bounded memory); returns its size
    /// and CRC32C.
    pub async fn upload_file(&self, from: &Path, key: &ObjPath) -> Result<Uploaded, RemoteError> {
        let mut file = tokio::fs::File::open(from).await?;
        let mut writer =
            BufWriter::with_capacity(self.store.clone(), key.clone(), UPLOAD_PART_BYTES);
        let mut buf = vec![0u8; UPLOAD_CHUNK_BYTES];
        let mut uploaded = Uploaded {
            bytes: 0,
            crc32c: 0,
        };
        let written: Result<(), RemoteError> = async {
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                uploaded.crc32c = crc32c::crc32c_append(uploaded.crc32c, &buf[..n]);
                uploaded.bytes += n as u64;
                writer
                    .write_all(&buf[..n])
                    .await
                    .map_err(RemoteError::Transfer)?;
            }
        }
        .await;
        if let Err(e) = written {
            // A half-done multipart upload is cleaned up on a best-effort basis. (Only before
            // `shutdown`: the writer refuses, by panicking, to abort after it.)
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.shutdown().await.map_err(RemoteError::Transfer)?;
        Ok(uploaded)
    }

    /// Downloads a layer to the local file `to`, streaming it, and checks its size and CRC
    /// against the index.
    pub async fn download_layer(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        layer: &LayerRef,
        to: &Path,
    ) -> Result<u64, RemoteError> {
        let key = self.layer_key(tenant, segment, layer);
        let mut stream = self.store.get(&key).await?.into_stream();
        let mut file = tokio::fs::File::create(to).await?;
        let (mut bytes, mut crc) = (0u64, 0u32);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            if bytes > layer.bytes {
                return Err(RemoteError::Corrupt {
                    key: key.to_string(),
                    reason: format!("longer than the {} bytes the index says", layer.bytes),
                });
            }
            crc = crc32c::crc32c_append(crc, &chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        if bytes != layer.bytes || crc != layer.crc32c {
            return Err(RemoteError::Corrupt {
                key: key.to_string(),
                reason: format!(
                    "{bytes} bytes with crc {crc:#010x}; the index says {} bytes, crc {:#010x}",
                    layer.bytes, layer.crc32c
                ),
            });
        }
        Ok(bytes)
    }

    /// Reads a version 2 layer's header and its tail (directory and footer) with one request
    /// of two ranges: what a restore needs to know which pages the layer holds. Lengths are
    /// checked here, contents by `crate::layer`.
    pub async fn layer_head_and_tail(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        layer: &LayerRef,
    ) -> Result<(Bytes, Bytes), RemoteError> {
        let key = self.layer_key(tenant, segment, layer);
        let ranges = [
            0..crate::layer::LAYER_HEADER_BYTES as u64,
            crate::layer::tail_range(layer.pages),
        ];
        let mut got = self.store.get_ranges(&key, &ranges).await?;
        if got.len() != 2
            || got
                .iter()
                .zip(&ranges)
                .any(|(b, r)| b.len() as u64 != r.end - r.start)
        {
            return Err(RemoteError::Corrupt {
                key: key.to_string(),
                reason: "a ranged read returned other lengths than asked".into(),
            });
        }
        let tail = got.pop().unwrap_or_default();
        let head = got.pop().unwrap_or_default();
        Ok((head, tail))
    }

    /// Reads record `slot` of a layer (one ranged read); its contents are checked by the caller
    /// (`crate::layer::decode_record`).
    pub async fn layer_record(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        layer: &LayerRef,
        slot: u32,
    ) -> Result<Bytes, RemoteError> {
        self.layer_range(tenant, segment, layer, crate::layer::record_range(slot))
            .await
    }

    /// Reads bytes `range` of a layer (one ranged read); the contents are checked by the
    /// caller (`crate::delta` for delta layers).
    pub async fn layer_range(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        layer: &LayerRef,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, RemoteError> {
        let key = self.layer_key(tenant, segment, layer);
        if range.end > layer.bytes || range.start > range.end {
            return Err(RemoteError::Corrupt {
                key: key.to_string(),
                reason: format!(
                    "bytes {range:?} lie beyond the layer's {} bytes",
                    layer.bytes
                ),
            });
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let got = self.store.get_range(&key, range.clone()).await?;
        if got.len() as u64 != range.end - range.start {
            return Err(RemoteError::Corrupt {
                key: key.to_string(),
                reason: format!(
                    "a ranged read of {} bytes returned {}",
                    range.end - range.start,
                    got.len()
                ),
            });
        }
        Ok(got)
    }

    /// Makes `index` the attachment's index (replacing its previous one): the checkpoint's
    /// commit point.
    pub async fn upload_index(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        index: &SegmentIndex,
    ) -> Result<u64, RemoteError> {
        let key = keys::index_key(tenant, segment, index.generation());
        let bytes = index.encode();
        let n = bytes.len() as u64;
        self.store.put(&key, PutPayload::from(bytes)).await?;
        Ok(n)
    }

    /// Layers of `generation` under the segment, by name.
    pub async fn own_layers(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        generation: Generation,
    ) -> Result<Vec<String>, RemoteError> {
        let prefix = keys::segment_prefix(tenant, segment).child("layers");
        let listed = self.store.list_with_delimiter(Some(&prefix)).await?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|o| {
                let (name, g) = keys::parse_layer_name(o.location.filename()?)?;
                (g == generation).then(|| name.to_string())
            })
            .collect())
    }

    /// Deletes a layer of `generation`; deleting one that is already gone succeeds (idempotent).
    /// Deletes every object under the tenant's prefix (all segments, all generations), a
    /// listing page at a time; returns how many were deleted. Idempotent.
    pub async fn delete_tenant(&self, tenant: TenantId) -> Result<u64, RemoteError> {
        let prefix = keys::tenant_prefix(tenant);
        let mut deleted = 0u64;
        loop {
            // A page of keys at a time: memory stays bounded however many objects there are.
            let page: Vec<ObjPath> = self
                .store
                .list(Some(&prefix))
                .take(DELETE_PAGE_KEYS)
                .map(|m| m.map(|m| m.location))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            if page.is_empty() {
                return Ok(deleted);
            }
            let keys = futures::stream::iter(page.into_iter().map(Ok)).boxed();
            let mut results = self.store.delete_stream(keys);
            let mut this_round = 0u64;
            while let Some(r) = results.next().await {
                match r {
                    Ok(_) => this_round += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if this_round == 0 {
                // Listed but already gone each time (a lagging listing): do not spin on it.
                return Err(RemoteError::Transfer(std::io::Error::other(format!(
                    "objects under {prefix} are listed but not found when deleted; try again \
                     later"
                ))));
            }
            deleted += this_round;
        }
    }

    /// Every claim, index and layer of the segment (`crate::gc` plans from it), with the bytes of
    /// all its objects: one listing of everything under the segment's prefix.
    pub async fn listing(
        &self,
        tenant: TenantId,
        segment: SegmentId,
    ) -> Result<SegmentObjects, RemoteError> {
        let prefix = keys::segment_prefix(tenant, segment);
        let mut objects = SegmentObjects::default();
        let mut stream = self.store.list(Some(&prefix));
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            objects.bytes += meta.size;
            let Some(rest) = meta.location.prefix_match(&prefix) else {
                continue;
            };
            let rest: Vec<_> = rest.collect();
            match rest.as_slice() {
                [file] => objects
                    .indexes
                    .extend(keys::parse_index_name(file.as_ref())),
                [dir, file] if dir.as_ref() == "generations" => {
                    objects.claims.extend(keys::parse_generation(file.as_ref()))
                }
                [dir, file] if dir.as_ref() == "layers" => {
                    if let Some((name, g)) = keys::parse_layer_name(file.as_ref()) {
                        objects.layers.push((name.to_string(), g));
                    }
                }
                _ => {}
            }
        }
        objects.claims.sort();
        objects.indexes.sort();
        Ok(objects)
    }

    /// Deletes `generation`'s index; already gone is fine (idempotent).
    pub async fn delete_index(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        generation: Generation,
    ) -> Result<(), RemoteError> {
        self.delete_quietly(&keys::index_key(tenant, segment, generation))
            .await
    }

    /// Deletes `generation`'s claim; already gone is fine (idempotent).
    pub async fn delete_claim(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        generation: Generation,
    ) -> Result<(), RemoteError> {
        self.delete_quietly(&keys::generation_key(tenant, segment, generation))
            .await
    }

    async fn delete_quietly(&self, key: &ObjPath) -> Result<(), RemoteError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_layer(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        name: &str,
        generation: Generation,
    ) -> Result<(), RemoteError> {
        match self
            .store
            .delete(&keys::layer_key(tenant, segment, name, generation))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A segment's objects, by kind.
#[derive(Clone, Debug, Default)]
pub struct SegmentObjects {
    pub claims: Vec<Generation>,
    pub indexes: Vec<Generation>,
    pub layers: Vec<(String, Generation)>,
    /// Bytes of every object under the segment's prefix.
    pub bytes: u64,
}

/// Exponential backoff between attempts of an operation that must eventually succeed.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause between retries while the object store is unavailable: short enough that
/// uploads resume soon after it is back.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: RETRY_BACKOFF_MIN,
            max: RETRY_BACKOFF_MAX,
        }
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        assert!(
            min <= max && !min.is_zero(),
            "a backoff grows from a positive minimum"
        );
        Backoff { next: min, max }
    }

    /// Waits, then doubles the next wait (up to the maximum).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }
}

/// A URL fit for logs and status pages: scheme, host and path, never the query or a
/// `user:password@` (which may hold credentials).
pub fn redact_url(url: &str) -> String {
    borealis_objstore::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerMeta;
    use borealis_core::Lsn;
    use borealis_objstore::faulty::FaultyStore;
    use object_store::memory::InMemory;

    const T: TenantId = TenantId(5);
    const S: SegmentId = SegmentId(0);

    fn index(generation: u32, lsn: u64) -> SegmentIndex {
        let meta = LayerMeta {
            version: crate::layer::LAYER_VERSION_V1,
            kind: crate::layer::LayerKind::Image,
            tenant: T,
            segment: S,
            lsn: Lsn(lsn),
            last_record_lsn: Lsn(lsn),
            page_count: 0,
        };
        let name = crate::layer::image_layer_name(Lsn(lsn));
        let layer = LayerRef::image(name, Generation(generation), &meta, 0);
        SegmentIndex::new(
            T,
            S,
            Generation(generation),
            Lsn(lsn),
            Lsn(lsn),
            vec![layer],
        )
    }

    #[tokio::test]
    async fn generations_increase_and_the_highest_checkpoint_wins() {
        let remote = Remote::new(Arc::new(InMemory::new()), "ps-test".into());
        assert_eq!(remote.newest_index(T, S).await.unwrap(), None);
        assert_eq!(remote.claim_generation(T, S).await.unwrap(), Generation(1));
        assert_eq!(remote.claim_generation(T, S).await.unwrap(), Generation(2));
        remote.upload_index(T, S, &index(1, 50)).await.unwrap();
        remote.upload_index(T, S, &index(2, 40)).await.unwrap();
        assert_eq!(remote.claim_generation(T, S).await.unwrap(), Generation(3));
        // A stale generation's index with the highest LSN is still the one to restore from.
        let best = remote.newest_index(T, S).await.unwrap().unwrap();
        assert_eq!((best.generation, best.checkpoint_lsn), (1, Lsn(50)));
        remote.upload_index(T, S, &index(3, 50)).await.unwrap();
        let best = remote.newest_index(T, S).await.unwrap().unwrap();
        assert_eq!((best.generation, best.checkpoint_lsn), (3, Lsn(50)));
        assert_eq!(remote.newest_claim(T, S).await.unwrap(), Generation(3));
        // An index object that fails its checks is an error, not a checkpoint.
        let key = keys::index_key(T, S, Generation(7));
        remote
            .store
            .put(&key, PutPayload::from_static(b"{\"magic\":\"x\"}"))
            .await
            .unwrap();
        assert!(matches!(
            remote.newest_index(T, S).await,
            Err(RemoteError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn a_claim_taken_by_someone_else_moves_to_the_next_generation() {
        let store = Arc::new(InMemory::new());
        let remote = Remote::new(store.clone(), "ps-test".into());
        // Another attachment claimed 1 and 2 without writing an index yet.
        for g in [1, 2] {
            store
                .put(
                    &keys::generation_key(T, S, Generation(g)),
                    PutPayload::from_static(b"{}"),
                )
                .await
                .unwrap();
        }
        assert_eq!(remote.claim_generation(T, S).await.unwrap(), Generation(3));
    }

    #[tokio::test]
    async fn upload_download_round_trip_checks_size_and_crc_and_deletes_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let faults = faulty.handle();
        let remote = Remote::new(Arc::new(faulty), "ps-test".into());
        let local = dir.path().join("layer");
        // Bigger than one multipart part, not a multiple of the chunk.
        let data: Vec<u8> = (0..UPLOAD_PART_BYTES + 12_345)
            .map(|i| (i % 253) as u8)
            .collect();
        std::fs::write(&local, &data).unwrap();
        let meta = LayerMeta {
            version: crate::layer::LAYER_VERSION_V1,
            kind: crate::layer::LayerKind::Image,
            tenant: T,
            segment: S,
            lsn: Lsn(9),
            last_record_lsn: Lsn(9),
            page_count: 0,
        };
        let mut layer = LayerRef::image("image-9".into(), Generation(4), &meta, 0);
        let key = remote.layer_key(T, S, &layer);

        faults.set_unavailable(true);
        assert!(remote.upload_file(&local, &key).await.is_err());
        faults.set_unavailable(false);
        let up = remote.upload_file(&local, &key).await.unwrap();
        assert_eq!(up.bytes, data.len() as u64);
        assert_eq!(up.crc32c, crc32c::crc32c(&data));
        layer.bytes = up.bytes;
        layer.crc32c = up.crc32c;

        let back = dir.path().join("back");
        remote.download_layer(T, S, &layer, &back).await.unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
        let mut wrong = layer.clone();
        wrong.crc32c ^= 1;
        assert!(matches!(
            remote.download_layer(T, S, &wrong, &back).await,
            Err(RemoteError::Corrupt { .. })
        ));

        assert_eq!(
            remote.own_layers(T, S, Generation(4)).await.unwrap(),
            ["image-9"]
        );
        assert!(remote
            .own_layers(T, S, Generation(5))
            .await
            .unwrap()
            .is_empty());
        remote
            .delete_layer(T, S, "image-9", Generation(4))
            .await
            .unwrap();
        remote
            .delete_layer(T, S, "image-9", Generation(4))
            .await
            .unwrap();
        assert!(remote
            .own_layers(T, S, Generation(4))
            .await
            .unwrap()
            .is_empty());
    }

    #[test]
    fn credentials_never_reach_a_log() {
        assert_eq!(
            redact_url("s3://b?endpoint=http://x&secret_access_key=s"),
            "s3://b?…"
        );
        assert_eq!(redact_url("file:///tmp/objects"), "file:///tmp/objects");
    }
}
