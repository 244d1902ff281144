use anyhow::Context;
use clap::Parser;
use gateway::api::{router, AppState};
use gateway::compute_pool::{ComputePool, PoolConfig};
use gateway::config::Config;
use gateway::metrics::Metrics;
use gateway::storage_auth::StorageTokens;
use gateway::tenants::{hash_token, Registry};
use gateway::volume_writer::VolumeWriterConfig;
use std::sync::{Arc, RwLock};

fn main() -> anyhow::Result<()> {
    // Everything this process creates is owner-only (docs/security.md).
    borealis_utils::owner_only::restrict_umask();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = Config::parse();
    let admin_token = config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(config, admin_token))
}

async fn run(config: Config, admin_token: String) -> anyhow::Result<()> {
    // Held until the process exits: two gateways on one directory would each run a writer for
    // the same tenants (the epochs fence them, but they would fight) and rewrite one registry.
    let _lock = borealis_utils::lock_data_dir(&config.data_dir)?;
    let registry = Registry::open(&config.data_dir.join("tenants.json"))?;
    let started = std::time::Instant::now();
    // wasmtime's own cache of the compiled module (validated by wasmtime on load): a restart or
    // failover skips the ~2 s compile.
    let engine = compute_host::ComputeEngine::new(compute_host::EngineConfig {
        module_cache_dir: Some(config.data_dir.join("module-cache")),
        max_instances: config.max_computes,
        ..compute_host::EngineConfig::default()
    })
    .context("compiling the compute module")?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compute module ready"
    );
    let metrics = Arc::new(Metrics::default());
    let tokens =
        Arc::new(StorageTokens::load(&config.auth_signing_key).context(
            "loading --auth-signing-key (the gateway does not talk to storage without it)",
        )?);
    let pool = ComputePool::new(
        engine,
        PoolConfig {
            idle_timeout: config.idle_timeout,
            statement_timeout: config.statement_timeout,
            statement_timeout_max: config.statement_timeout_max,
            idempotency_retention: config.idempotency_retention,
            commit_timeout: config.commit_timeout,
            cache_pages: config.cache_pages,
            host_cache_pages: config.host_cache_pages,
            read_ahead_pages: config.read_ahead_pages,
            log: VolumeWriterConfig {
                layout: config.segment_size,
                ..VolumeWriterConfig::new(config.safekeepers.clone(), tokens.clone())
            },
            pageservers: config.pageservers.clone(),
        },
        metrics.clone(),
        tokio::runtime::Handle::current(),
    );
    let registry = Arc::new(RwLock::new(registry));
    let reclaim = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(gateway::reclaim::run(
        registry.clone(),
        gateway::reclaim::Nodes {
            pageservers: config.pageservers.clone(),
            safekeepers: config.safekeepers.clone(),
            tokens,
        },
        metrics.clone(),
        reclaim.clone(),
    ));
    let state = Arc::new(AppState {
        registry,
        reclaim,
        admin_token_sha256: hash_token(&admin_token),
        pool,
        budgets: gateway::budget::Budgets::new(config.budgets(), metrics.clone()),
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, tenants = state.registry.read().map(|r| r.len()).unwrap_or(0), "gateway serving");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}
