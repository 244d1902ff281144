//! The `safekeeper` binary: configuration, logging, then [`safekeeper::run`].

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    // Everything this process creates is owner-only (docs/security.md).
    borealis_utils::owner_only::restrict_umask();
    let config = safekeeper::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A panic is a bug of ours, possibly half-way through changing the log's in-memory state:
    // stop the whole process (its disk state is always recoverable) rather than limp on.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(safekeeper::run(config))
}
