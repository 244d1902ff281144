//! # borealis-tests: Borealis broken on purpose, with real processes
//!
//! The harness here starts a whole local cluster exactly as a user would — the `borealis up`
//! binary, which starts six safekeepers, two pageservers and the gateway as separate processes
//! on loopback ports — and drives it over HTTP. Tests break it with `borealis node kill|stop`,
//! and check that nothing acknowledged is lost and nothing torn is visible.
//!
//! The binaries come from the workspace build (`cargo build --workspace`), found next to the
//! test executable's directory, or in `BOREALIS_BIN_DIR`.

pub mod checkers;
pub mod cluster;
pub mod proxy;
pub mod s3;
pub mod shape;
pub mod workload;

use std::path::PathBuf;

/// Where the workspace's binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BOREALIS_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test exe> -> target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target directory")
        .to_path_buf();
    for b in ["borealis", "safekeeper", "pageserver", "gateway"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: build the binaries first (`cargo build --workspace`), or set BOREALIS_BIN_DIR",
            dir.join(b).display()
        );
    }
    dir
}

/// A free loopback port (bound and released), chosen below the kernel's ephemeral range
/// ([`borealis_utils::ports`] says why).
pub fn free_port() -> u16 {
    borealis_utils::ports::free_port().expect("a free loopback port")
}
pub mod sim;
