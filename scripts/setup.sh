#!/usr/bin/env bash
# Installs what building and testing Borealis needs on a fresh Debian machine of this kind.
# Idempotent and fast when everything is present (each step checks before it acts).
#   - the wasm32-wasip1 Rust target (the compute guest is built for it)
#   - Debian's clang and wasi-libc (SQLite's C source is compiled for wasm with them)
#   - s3s-fs, the S3-protocol server the system tests run against (docs/rfcs/0001-local-object-store.md)
set -euo pipefail

S3S_FS_VERSION="0.14.1"   # 0.17 needs a newer Rust than this machine has (docs/design.md §11)

step() { printf '[setup] %s\n' "$*"; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  step "adding rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

need_apt=()
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
[ -f /usr/include/wasm32-wasi/stdio.h ] || need_apt+=(wasi-libc)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v s3s-fs >/dev/null 2>&1 || ! s3s-fs --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
  step "installing s3s-fs $S3S_FS_VERSION (S3-protocol test server, ~2 min)"
  cargo install --locked --quiet "s3s-fs@${S3S_FS_VERSION}" --features binary
fi
step "ok: wasm32-wasip1, clang $(clang --version | head -1 | grep -o '[0-9][0-9.]*' | head -1), wasi-libc, s3s-fs"
