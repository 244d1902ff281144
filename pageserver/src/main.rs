//! The `pageserver` binary: parse flags, start, run until interrupted.

use anyhow::Context;
use clap::Parser;
use pageserver::config::{Args, Config};

fn main() -> anyhow::Result<()> {
    // Everything this process creates is owner-only (docs/security.md).
    borealis_utils::owner_only::restrict_umask();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = Config::from_args(Args::parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let running = pageserver::start(config)
            .await
            .context("starting the pageserver")?;
        let tenants = running.tenants.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing a SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
            _ = term.recv() => tracing::info!("terminated, stopping"),
            e = running.stopped() => return Err(e).context("pageserver stopped"),
        }
        // A clean stop checkpoints what was applied since the last checkpoint (bounded).
        pageserver::checkpoint::shutdown(
            &tenants,
            pageserver::checkpoint::SHUTDOWN_CHECKPOINT_TIMEOUT,
        )
        .await;
        Ok(())
    })
}
