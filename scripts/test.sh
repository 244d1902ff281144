#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (README.md, "Run the tests").
#
#   1. install what the build needs if missing (scripts/setup.sh: wasm target, clang, wasi-libc, s3s-fs)
#   2. formatting (cargo fmt --check, for the workspace and the wasm guest)
#   3. one build of every target: the wasm guest (through compute-host's build.rs), the services,
#      the borealis command, and every test executable
#   4. clippy with warnings as errors (the workspace's lints are in Cargo.toml; the wasm guest is
#      checked too, for its own), and the developer docs with warnings as errors
#   5. the tests: unit tests, the simulator (10,000 seeds), then the system tests, which start the
#      binaries built in step 3
#
# Prints how long each phase took.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -a PHASES=()
phase() {
  local name=$1; shift
  local t0=$SECONDS
  printf '\n=== %s\n' "$name"
  "$@"
  PHASES+=("$(printf '%-28s %5d s' "$name" $((SECONDS - t0)))")
}
summary() {
  printf '\n=== phase timings\n'
  for p in "${PHASES[@]}"; do printf '  %s\n' "$p"; done
  printf '  %-28s %5d s\n' "total" "$SECONDS"
}
trap summary EXIT

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

phase "setup" bash scripts/setup.sh
phase "fmt" bash -c 'cargo fmt --all --check && cargo fmt --manifest-path compute-wasm/guest/Cargo.toml --check'
phase "build (guest, services, tests)" cargo build --workspace --all-targets --locked
phase "clippy" bash -c 'cargo clippy --workspace --all-targets --locked -- -D warnings \
  && (cd compute-wasm/guest && cargo clippy --locked --target-dir ../../target/wasm-guest -- -D warnings)'
phase "docs" env RUSTDOCFLAGS="-D warnings" \
  cargo doc --workspace --no-deps --document-private-items --locked
# System tests start whole clusters (9 processes each): run test binaries one at a time, and
# within a binary at most two tests at once, to fit 2 cores.
phase "tests" cargo test --workspace --locked -- --test-threads=2
