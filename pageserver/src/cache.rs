//! The page cache: a bounded LRU of decoded page images, shared by every tenant.
//!
//! A cached entry is one *version* of a page, `(tenant, page, lsn) → image`. Versions never
//! change once written, so the cache needs no invalidation: an entry is either the right bytes for
//! its key or absent. Evicting an entry loses nothing; the image is still in the tenant's page
//! file ([`crate::page_file`]). The capacity is counted in pages (`--cache-pages`), so the cache
//! holds at most `capacity × 4 KiB` of images.

use borealis_core::{Lsn, PageNo, TenantId};
use borealis_utils::LockExt;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One version of one page of one tenant.
pub type CacheKey = (TenantId, PageNo, Lsn);

pub struct PageCache {
    lru: Mutex<LruCache<CacheKey, Arc<[u8]>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PageCache {
    pub fn new(capacity_pages: NonZeroUsize) -> PageCache {
        PageCache {
            lru: Mutex::new(LruCache::new(capacity_pages)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached image of `key`, counting a hit or a miss.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<[u8]>> {
        let found = self.lru.locked().get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The cached image of `key`, without counting a hit or a miss or refreshing its place in
    /// the LRU order (for background readers such as checkpoints).
    pub fn peek(&self, key: &CacheKey) -> Option<Arc<[u8]>> {
        self.lru.locked().peek(key).cloned()
    }

    pub fn put(&self, key: CacheKey, image: Arc<[u8]>) {
        self.lru.locked().put(key, image);
    }

    /// Pages held now.
    pub fn len(&self) -> usize {
        self.lru.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.lru.locked().cap().get()
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_counts_hits_and_misses() {
        let cache = PageCache::new(NonZeroUsize::new(2).unwrap());
        let key = |p: u32| (TenantId(1), PageNo(p), Lsn(1));
        let img: Arc<[u8]> = Arc::from(vec![1u8; 8]);
        cache.put(key(1), img.clone());
        cache.put(key(2), img.clone());
        assert!(cache.get(&key(1)).is_some());
        cache.put(key(3), img);
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(&key(2)).is_none(),
            "the least recently used entry goes first"
        );
        assert!(cache.get(&key(3)).is_some());
        assert_eq!((cache.hits(), cache.misses()), (2, 1));
        assert_eq!(cache.capacity(), 2);
    }
}
