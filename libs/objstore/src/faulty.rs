//! A fault-injecting [`ObjectStore`] wrapper for tests: fails or delays operations on demand.
//!
//! Object storage is an I/O boundary like any other (STYLE.md habit 3), so code that uploads
//! checkpoints must be tested against a store that is down, flaky or slow. [`FaultyStore`] wraps
//! any store; a [`FaultHandle`] (cloneable, shared with the wrapper) switches faults while the
//! code under test runs:
//!
//! - [`FaultHandle::set_unavailable`]: every operation fails until switched back (a server down);
//! - [`FaultHandle::fail_next`]: the next `n` operations fail, then the store recovers (a flaky
//!   network);
//! - [`FaultHandle::set_delay`]: every operation first waits this long (a slow server).
//!
//! A failed operation returns [`object_store::Error::Generic`] and has **no effect** on the inner
//! store, which is the worst case for a caller that retries (it must redo all of it). A multipart
//! upload is faulted when it is opened, not per part.

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const STORE_NAME: &str = "FaultyStore";

#[derive(Debug, Default)]
struct Faults {
    unavailable: AtomicBool,
    fail_next: AtomicU64,
    delay_ms: AtomicU64,
    operations: AtomicU64,
    failures: AtomicU64,
}

/// Switches the faults of a [`FaultyStore`].
#[derive(Clone, Debug, Default)]
pub struct FaultHandle(Arc<Faults>);

impl FaultHandle {
    /// While `true`, every operation fails.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.0.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// The next `n` operations fail.
    pub fn fail_next(&self, n: u64) {
        self.0.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every operation waits `delay` before it runs (or fails).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.0.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Operations attempted so far.
    pub fn operations(&self) -> u64 {
        self.0.operations.load(Ordering::SeqCst)
    }

    /// Operations failed on purpose so far.
    pub fn failures(&self) -> u64 {
        self.0.failures.load(Ordering::SeqCst)
    }

    /// Counts an operation and decides whether it fails.
    fn should_fail(&self) -> bool {
        self.0.operations.fetch_add(1, Ordering::SeqCst);
        let fail = self.0.unavailable.load(Ordering::SeqCst)
            || self
                .0
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            self.0.failures.fetch_add(1, Ordering::SeqCst);
        }
        fail
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(self.0.delay_ms.load(Ordering::SeqCst))
    }

    /// Waits the configured delay, then fails the operation or lets it run.
    async fn gate(&self, op: &str, location: Option<&Path>) -> Result<()> {
        let delay = self.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.should_fail() {
            return Err(injected(op, location));
        }
        Ok(())
    }
}

fn injected(op: &str, location: Option<&Path>) -> object_store::Error {
    let at = location.map_or(String::new(), |l| format!(" of {l}"));
    object_store::Error::Generic {
        store: STORE_NAME,
        source: format!("injected fault: {op}{at} failed").into(),
    }
}

/// An [`ObjectStore`] that fails or delays on demand (see the module docs).
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: FaultHandle,
}

impl FaultyStore {
    /// Wraps `inner`; no fault is active until switched on through [`FaultyStore::handle`].
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            faults: FaultHandle::default(),
        }
    }

    pub fn handle(&self) -> FaultHandle {
        self.faults.clone()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.faults.gate("put", Some(location)).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.faults.gate("put_multipart", Some(location)).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.faults.gate("get", Some(location)).await?;
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.faults.gate("delete", Some(location)).await?;
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let faults = self.faults.clone();
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        stream::once(async move {
            match faults.gate("list", prefix.as_ref()).await {
                Ok(()) => inner.list(prefix.as_ref()),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.faults.gate("list", prefix).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.faults.gate("copy", Some(to)).await?;
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.faults.gate("copy_if_not_exists", Some(to)).await?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn faults_switch_on_and_off_and_leave_the_inner_store_alone() {
        let store = FaultyStore::new(Arc::new(InMemory::new()));
        let h = store.handle();
        let key = Path::from("a/b");
        store
            .put(&key, PutPayload::from_static(b"1"))
            .await
            .unwrap();

        h.set_unavailable(true);
        assert!(store
            .put(&key, PutPayload::from_static(b"2"))
            .await
            .is_err());
        assert!(store.get(&key).await.is_err());
        assert!(store.delete(&key).await.is_err());
        let listed: Result<Vec<_>> = store.list(None).try_collect().await;
        assert!(listed.is_err());
        h.set_unavailable(false);
        let got = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"1", "a failed put changed nothing");

        h.fail_next(2);
        assert!(store.head(&key).await.is_err());
        assert!(store.list_with_delimiter(None).await.is_err());
        assert!(store.head(&key).await.is_ok(), "recovers after n failures");
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(h.failures(), 6);
        assert!(h.operations() >= 9);
    }

    #[tokio::test]
    async fn delays_every_operation() {
        let store = FaultyStore::new(Arc::new(InMemory::new()));
        store.handle().set_delay(Duration::from_millis(50));
        let started = std::time::Instant::now();
        store
            .put(&Path::from("k"), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
