//! Starting a pageserver: prepare the data directory, bind both listeners, spawn the servers.

use crate::cache::PageCache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::remote::Remote;
use crate::safekeepers::SafekeeperPool;
use crate::tenant::{Shared, Tenants};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, Error)]
#[error("{what}: {source}")]
pub struct StartError {
    what: String,
    source: io::Error,
}

fn ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> StartError {
    let what = what.into();
    move |source| StartError { what, source }
}

/// A started pageserver.
pub struct Running {
    pub wire_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub tenants: Arc<Tenants>,
    wire: JoinHandle<io::Result<()>>,
    http: JoinHandle<io::Result<()>>,
    /// This process's hold on `DATA_DIR`, released when it exits.
    _lock: borealis_utils::DataDirLock,
}

impl Running {
    /// Waits until one of the servers stops (which only happens when its listener fails).
    pub async fn stopped(self) -> io::Error {
        let (name, joined) = tokio::select! {
            r = self.wire => ("wire", r),
            r = self.http => ("http", r),
        };
        match joined {
            Ok(Ok(())) => io::Error::other(format!("{name} server stopped")),
            Ok(Err(e)) => io::Error::other(format!("{name} server failed: {e}")),
            Err(e) => io::Error::other(format!("{name} server task failed: {e}")),
        }
    }
}

/// Starts a pageserver. Wipes `DATA_DIR/tenants` first: local state is rebuilt on demand from
/// object storage and the safekeepers (see the crate docs).
pub async fn start(config: Config) -> Result<Running, StartError> {
    // Before anything in the directory is touched: a second pageserver on it would wipe the
    // first one's layers under it.
    let lock = borealis_utils::lock_data_dir(&config.data_dir).map_err(|e| StartError {
        what: "locking the data directory".to_string(),
        source: io::Error::other(e.to_string()),
    })?;
    let verifying_key =
        borealis_auth::VerifyingKey::load(&config.auth_verifying_key).map_err(|e| StartError {
            what: "loading --auth-verifying-key (a pageserver does not run without authentication)"
                .to_string(),
            source: io::Error::other(e.to_string()),
        })?;
    let token = borealis_auth::read_token_file(&config.token_file).map_err(|e| StartError {
        what: "loading --token-file".to_string(),
        source: io::Error::other(e.to_string()),
    })?;
    let tenants_dir = config.data_dir.join("tenants");
    match std::fs::remove_dir_all(&tenants_dir) {
        Ok(()) => tracing::info!(dir = %tenants_dir.display(), "wiped local tenant state"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ctx(format!("wiping {}", tenants_dir.display()))(e)),
    }
    std::fs::create_dir_all(&tenants_dir)
        .map_err(ctx(format!("creating {}", tenants_dir.display())))?;

    let wire = TcpListener::bind(&config.listen)
        .await
        .map_err(ctx(format!("binding {}", config.listen)))?;
    let http = TcpListener::bind(&config.http)
        .await
        .map_err(ctx(format!("binding {}", config.http)))?;
    let wire_addr = wire.local_addr().map_err(ctx("wire listener address"))?;
    let http_addr = http.local_addr().map_err(ctx("http listener address"))?;

    let store = borealis_objstore::open(&config.object_store).map_err(|e| StartError {
        what: format!(
            "opening the object store {}",
            crate::remote::redact_url(&config.object_store)
        ),
        source: io::Error::other(e.to_string()),
    })?;
    let addrs: Arc<[String]> = config.safekeepers.clone().into();
    let shared = Arc::new(Shared {
        cache: Arc::new(PageCache::new(config.cache_pages)),
        safekeepers: Arc::new(SafekeeperPool::new(addrs, token)),
        metrics: Metrics::default(),
        remote: Remote::new(store, config.id.clone()),
        hydrations: tokio::sync::Semaphore::new(crate::restore::HYDRATIONS_MAX),
        batch_reads: tokio::sync::Semaphore::new(crate::get_page::BATCH_READS_MAX),
        history_bytes: Default::default(),
        config,
    });
    let tenants = Arc::new(Tenants::new(
        shared.clone(),
        Box::new(crate::ingest::spawn_follower),
    ));
    tracing::info!(
        id = %shared.config.id, wire = %wire_addr, http = %http_addr,
        safekeepers = ?shared.config.safekeepers,
        placement = if shared.safekeepers.is_placed() {
            "each segment read from the six of its group in the pool"
        } else {
            "every safekeeper listed holds every segment"
        },
        pages_per_segment = shared.config.layout.pages_per_segment(),
        cache_pages = shared.config.cache_pages.get(),
        object_store = %crate::remote::redact_url(&shared.config.object_store),
        checkpoint_records = shared.config.checkpoint_records,
        checkpoint_interval = ?shared.config.checkpoint_interval, "pageserver serving"
    );
    let wire = tokio::spawn(crate::page_service::serve(
        wire,
        tenants.clone(),
        verifying_key.clone(),
    ));
    let _compaction = crate::compaction::spawn(tenants.clone());
    let router = crate::http::router(tenants.clone(), verifying_key);
    let http = tokio::spawn(async move { axum::serve(http, router).await });
    Ok(Running {
        wire_addr,
        http_addr,
        tenants,
        wire,
        http,
        _lock: lock,
    })
}
