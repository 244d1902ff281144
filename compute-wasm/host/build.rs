//! Builds the SQLite guest (`compute-wasm/guest`) for `wasm32-wasip1` and hands the module to the
//! host crate through `OUT_DIR/compute_guest.wasm` (the host `include_bytes!`es it).
//!
//! The guest is its own cargo workspace with its own lock file, build flags
//! (`guest/.cargo/config.toml`: the clang target fix and `LIBSQLITE3_FLAGS`) and target directory
//! (`<workspace>/target/wasm-guest`: `LIBSQLITE3_FLAGS` is not per target, so sharing a target
//! directory with native SQLite builds would make each rebuild the other). The nested cargo runs
//! in the guest directory so that it reads that config, and without the variables the outer cargo
//! sets for build scripts, which would otherwise leak into the nested build.
//!
//! Cargo reruns this script only when a guest input changes, so an unchanged guest costs nothing.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-wasip1";
const WASM_NAME: &str = "compute_guest.wasm";
const SETUP_HINT: &str =
    "run `scripts/setup.sh` (it installs the wasm32-wasip1 target, clang and wasi-libc)";

/// Variables the outer cargo (or the user) set that must not reach the nested build: they would
/// redirect its output, change its flags, or make it think it is itself a build script.
const SCRUBBED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "OUT_DIR",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_LINKER",
    "RUSTDOC",
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "CARGO_TARGET_TMPDIR",
    "CARGO_PROFILE_RELEASE_DEBUG",
    "CARGO_INCREMENTAL",
    "CARGO_BUILD_JOBS",
];

/// Prefixes of variables scrubbed the same way (`CARGO_CFG_*`, `CARGO_FEATURE_*`, `DEP_*`, ...).
const SCRUBBED_PREFIXES: &[&str] = &[
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PKG_",
    "DEP_",
    "CARGO_TARGET_",
    "CARGO_PROFILE_",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let compute_dir = manifest_dir
        .parent()
        .expect("host lives in compute-wasm/")
        .to_path_buf();
    let workspace = compute_dir
        .parent()
        .expect("compute-wasm lives in the workspace")
        .to_path_buf();
    let guest_dir = compute_dir.join("guest");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    for input in [
        guest_dir.join("src"),
        guest_dir.join("Cargo.toml"),
        guest_dir.join("Cargo.lock"),
        guest_dir.join(".cargo/config.toml"),
        compute_dir.join("abi/src"),
        compute_dir.join("abi/Cargo.toml"),
        workspace.join("libs/core/src"),
        workspace.join("libs/core/Cargo.toml"),
        // libs/core inherits its version and dependencies from the root workspace.
        workspace.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", input.display());
    }

    check_toolchain();

    let target_dir = workspace.join("target").join("wasm-guest");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest_dir)
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--manifest-path")
        .arg(guest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if SCRUBBED_VARS.contains(&key) || SCRUBBED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo for the guest: {e}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "building the compute guest ({}) failed; if a compiler, a target or wasi-libc is \
             missing, {SETUP_HINT}.\n--- cargo output (tail) ---\n{}",
            guest_dir.display(),
            tail.join("\n")
        );
    }

    let wasm = target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(WASM_NAME);
    let dest = out_dir.join(WASM_NAME);
    std::fs::copy(&wasm, &dest)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", wasm.display(), dest.display()));
}

/// Fails early, with the fix, when the guest cannot possibly build.
fn check_toolchain() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = sysroot {
        let lib = sysroot.join("lib/rustlib").join(GUEST_TARGET).join("lib");
        if !lib.is_dir() {
            panic!(
                "the Rust target {GUEST_TARGET} is not installed (no {}); {SETUP_HINT}",
                lib.display()
            );
        }
    }
    let clang_ok = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !clang_ok {
        panic!(
            "clang is needed to compile SQLite for {GUEST_TARGET} and was not found; {SETUP_HINT}"
        );
    }
    let sysroot_headers = env::var_os("WASI_SYSROOT").map(|s| PathBuf::from(s).join("include"));
    let headers_ok = [
        Some(PathBuf::from("/usr/include/wasm32-wasi")),
        sysroot_headers,
    ]
    .into_iter()
    .flatten()
    .any(|dir| Path::new(&dir).join("stdio.h").is_file());
    if !headers_ok {
        panic!("wasi-libc headers (/usr/include/wasm32-wasi/stdio.h) were not found; {SETUP_HINT}");
    }
}
