//! `borealis`: start a local Borealis cluster, run SQL against it, inspect it, break it.
//!
//! See docs/design.md §8 for the contract. `borealis up` lays a cluster out in a data directory
//! (`cluster.json` names every process, its address, pid and data directory), starts each
//! process in its own process group, and stops them all on Ctrl-C. `borealis node` acts on one
//! process for fault drills; the others read `cluster.json` and talk to the gateway over HTTP.

mod cluster;
mod commands;
mod object_store_credentials;
mod supervisor;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = ".borealis";

#[derive(Parser)]
#[command(
    name = "borealis",
    version,
    about = "Borealis: a serverless, log-structured SQL database (local cluster tool)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local cluster (3 AZs x 2 safekeepers, 2 pageservers, the gateway by default); runs
    /// until Ctrl-C.
    Up {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Object store URL (default: file://DIR/objects).
        #[arg(long)]
        object_store: Option<String>,
        /// A tenant's compute stops after this long idle.
        #[arg(long, default_value = "60s")]
        idle_timeout: String,
        /// How volumes are cut into segments, each its own protection group and checkpoint unit
        /// (default 10GiB; any whole number of MiB from 1MiB). Fixed when the cluster is created.
        #[arg(long)]
        segment_size: Option<String>,
        /// Safekeepers in the pool: a multiple of three, at least six, spread evenly over AZs
        /// a, b, c (default 6). Each segment's group is six of them, two per AZ. Fixed when the
        /// cluster is created.
        #[arg(long)]
        safekeepers: Option<usize>,
        /// Pageservers in the pool (default 2); each segment is served by one of them. Fixed
        /// when the cluster is created.
        #[arg(long)]
        pageservers: Option<usize>,
    },
    /// Run one SQL statement through the gateway and print the result as a table.
    Sql {
        /// Gateway URL (default: from DIR/cluster.json).
        #[arg(long)]
        url: Option<String>,
        /// Tenant token (default: BOREALIS_TOKEN, else the cluster's admin token).
        #[arg(long, env = "BOREALIS_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        tenant: String,
        sql: String,
    },
    /// Create, show or delete a tenant.
    Tenant {
        #[command(subcommand)]
        action: TenantCmd,
    },
    /// Show the cluster's processes, their health and how many segments each holds, and each
    /// tenant's VDL; with `--tenant NAME`, that tenant's segments: each one's safekeepers,
    /// pageserver and every member's SCL.
    Status {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Start, stop (SIGTERM) or kill (SIGKILL) one process of the cluster. `borealis up`
    /// restarts a node that dies, with backoff: a killed node comes back by itself (a crash),
    /// unless `--hold`; a stopped node stays down until `node start`.
    Node {
        #[arg(value_parser = ["start", "stop", "kill"])]
        action: String,
        node: String,
        /// With `kill`: keep the node down (`borealis up` does not restart it) until `node
        /// start`. `stop` always does.
        #[arg(long)]
        hold: bool,
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Benchmark Borealis against PostgreSQL and SQLite: runs `borealis-bench` (built next to
    /// this binary) with the arguments that follow, e.g. `borealis bench --quick`.
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Replaces this process with `borealis-bench` from this binary's directory.
fn exec_bench(args: &[String]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let bench = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("borealis-bench"),
        Err(e) => return e,
    };
    if !bench.exists() {
        return std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} is missing: build it with `cargo build -p borealis-bench`",
                bench.display()
            ),
        );
    }
    std::process::Command::new(&bench).args(args).exec()
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant and print its token.
    Create {
        name: String,
        /// The longest time limit (`"timeout_ms"`) the tenant's requests may ask for, e.g.
        /// `1h` (default: the gateway's `--statement-timeout-max`).
        #[arg(long, value_parser = humantime::parse_duration)]
        statement_timeout_max: Option<std::time::Duration>,
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Change a tenant's settings.
    Set {
        name: String,
        /// The longest time limit (`"timeout_ms"`) the tenant's requests may ask for, e.g.
        /// `1h`, or `gateway` for the gateway's `--statement-timeout-max`.
        #[arg(long)]
        statement_timeout_max: String,
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    Show {
        name: String,
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    Delete {
        name: String,
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

fn main() {
    // The cluster directory, its logs and cluster.json (which holds the admin token) are
    // owner-only, and so is everything the nodes started from here create (docs/security.md).
    borealis_utils::owner_only::restrict_umask();
    // Output piped into `head` or `less` that closes early ends the command quietly, as any
    // Unix tool does, instead of a panic on a failed print.
    cluster::default_sigpipe();
    let cli = Cli::parse();
    if let Cmd::Bench { args } = &cli.command {
        let e = exec_bench(args);
        eprintln!("error: cannot run borealis-bench: {e}");
        std::process::exit(1);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Cmd::Up {
                data_dir,
                object_store,
                idle_timeout,
                segment_size,
                safekeepers,
                pageservers,
            } => {
                let pool = commands::Pool {
                    segment_size,
                    safekeepers,
                    pageservers,
                };
                commands::up(&data_dir, object_store, &idle_timeout, pool).await
            }
            Cmd::Sql {
                url,
                token,
                data_dir,
                tenant,
                sql,
            } => commands::sql(url, token, &data_dir, &tenant, &sql).await,
            Cmd::Tenant { action } => match action {
                TenantCmd::Create {
                    name,
                    statement_timeout_max,
                    data_dir,
                } => commands::tenant_create(&data_dir, &name, statement_timeout_max).await,
                TenantCmd::Set {
                    name,
                    statement_timeout_max,
                    data_dir,
                } => commands::tenant_set(&data_dir, &name, &statement_timeout_max).await,
                TenantCmd::Show { name, data_dir } => commands::tenant_show(&data_dir, &name).await,
                TenantCmd::Delete { name, data_dir } => {
                    commands::tenant_delete(&data_dir, &name).await
                }
            },
            Cmd::Status { data_dir, tenant } => match tenant {
                Some(name) => commands::tenant_segments(&data_dir, &name).await,
                None => commands::status(&data_dir).await,
            },
            Cmd::Node {
                action,
                node,
                hold,
                data_dir,
            } => commands::node(&data_dir, &action, &node, hold).await,
            Cmd::Bench { .. } => unreachable!("`bench` replaced this process before the runtime"),
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
