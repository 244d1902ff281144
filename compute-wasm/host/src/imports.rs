//! The functions the guest imports: the two of module `borealis` (pages and commits) and the
//! handful of WASI preview-1 calls that Rust's std and wasi-libc still make.
//!
//! Every guest pointer is bounds-checked against linear memory; a bad pointer is a trap (a guest
//! bug), never a host panic. Backend failures are not traps: the import answers an error code,
//! SQLite fails the statement cleanly, and the failure is kept in [`HostState::failure`] for
//! [`Compute::exec`](crate::Compute::exec) to report.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use borealis_core::redo::RedoBody;
use borealis_core::{ErrorKind, PageNo, PAGE_SIZE_BYTES};
use compute_abi::{
    Mtr, PageChangeBody, COMMIT_OK, COMMIT_REFUSED, HOST_ERROR, IMPORT_MODULE, PAGE_ABSENT, PAGE_OK,
};
use wasmtime::{Caller, Linker, Memory};

use crate::error::BackendError;
use crate::Backend;

const WASI: &str = "wasi_snapshot_preview1";
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
/// Guest stderr is logged line by line; longer lines are cut.
const STDERR_LINE_BYTES_MAX: usize = 4096;
/// The last lines of guest stderr kept for error messages (a failed open explains itself there).
const STDERR_LINES_KEPT: usize = 16;

/// What went wrong inside an import during the current call.
#[derive(Debug)]
pub(crate) enum ImportFailure {
    Backend(BackendError),
    /// The guest handed over something malformed.
    Invalid(String),
}

/// Counters of one compute, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ComputeStats {
    /// `get_page` calls (SQLite cache misses, plus one per dirty page at commit for its old image).
    pub pages_read: u64,
    /// Commits the backend accepted.
    pub commits: u64,
    /// Pages in those commits.
    pub pages_committed: u64,
    /// Encoded size of those commits' MTRs.
    pub mtr_bytes: u64,
}

/// The host side of one instance.
pub(crate) struct HostState {
    pub(crate) backend: Box<dyn Backend>,
    /// Set right after instantiation (no import runs before that).
    pub(crate) memory: Option<Memory>,
    /// The first import failure since it was last taken.
    pub(crate) failure: Option<ImportFailure>,
    pub(crate) stats: ComputeStats,
    stderr_line: Vec<u8>,
    stderr_recent: VecDeque<String>,
    started: Instant,
    pub(crate) limits: MemoryLimit,
}

/// The guest's linear-memory cap, as a wasmtime resource limiter that remembers whether the
/// guest asked for more: the trap that usually follows (the guest's allocator aborts) is then
/// reported as running out of memory, a property of the statement, not a bug.
pub(crate) struct MemoryLimit {
    pub(crate) bytes_max: usize,
    /// Set when a memory growth past `bytes_max` was refused; cleared before each call.
    pub(crate) denied: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes_max || maximum.is_some_and(|m| desired > m) {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|m| desired <= m))
    }
}

impl HostState {
    pub(crate) fn new(backend: Box<dyn Backend>, memory_bytes_max: usize) -> Self {
        Self {
            backend,
            memory: None,
            failure: None,
            stats: ComputeStats::default(),
            stderr_line: Vec::new(),
            stderr_recent: VecDeque::new(),
            started: Instant::now(),
            limits: MemoryLimit {
                bytes_max: memory_bytes_max,
                denied: false,
            },
        }
    }

    fn fail(&mut self, failure: ImportFailure) {
        match &failure {
            ImportFailure::Backend(e) => tracing::warn!(error = %e, "compute storage call failed"),
            ImportFailure::Invalid(m) => tracing::error!(error = %m, "compute guest broke the ABI"),
        }
        self.failure.get_or_insert(failure);
    }

    /// The last line the guest printed (or is printing).
    pub(crate) fn last_stderr_line(&self) -> String {
        if self.stderr_line.is_empty() {
            self.stderr_recent.back().cloned().unwrap_or_default()
        } else {
            String::from_utf8_lossy(&self.stderr_line).into_owned()
        }
    }

    /// The last lines the guest printed, for error messages.
    pub(crate) fn recent_stderr(&self) -> String {
        let mut lines: Vec<&str> = self.stderr_recent.iter().map(String::as_str).collect();
        let partial = String::from_utf8_lossy(&self.stderr_line);
        if !partial.is_empty() {
            lines.push(&partial);
        }
        lines.join(" | ")
    }

    fn stderr(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.flush_stderr_line();
            } else if self.stderr_line.len() < STDERR_LINE_BYTES_MAX {
                self.stderr_line.push(b);
            }
        }
    }

    fn flush_stderr_line(&mut self) {
        let line = String::from_utf8_lossy(&self.stderr_line).into_owned();
        self.stderr_line.clear();
        tracing::warn!(target: "compute_guest", "{line}");
        if self.stderr_recent.len() == STDERR_LINES_KEPT {
            self.stderr_recent.pop_front();
        }
        self.stderr_recent.push_back(line);
    }
}

fn memory(caller: &Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("import called before instantiation finished"))
}

/// `ptr..ptr+len` of guest memory, or a trap.
fn guest_range(
    mem: &[u8],
    ptr: u32,
    len: usize,
    what: &str,
) -> wasmtime::Result<std::ops::Range<usize>> {
    let start = ptr as usize;
    match start.checked_add(len) {
        Some(end) if end <= mem.len() => Ok(start..end),
        _ => Err(wasmtime::Error::msg(format!(
            "{what}: guest buffer {start:#x}+{len} is outside linear memory ({} bytes)",
            mem.len()
        ))),
    }
}

fn write_u32(mem: &mut [u8], ptr: u32, value: u32, what: &str) -> wasmtime::Result<()> {
    let r = guest_range(mem, ptr, 4, what)?;
    mem[r].copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Links every import the guest needs.
pub(crate) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(IMPORT_MODULE, "get_page", get_page)?;
    linker.func_wrap(IMPORT_MODULE, "commit", commit)?;
    linker.func_wrap(WASI, "fd_write", fd_write)?;
    linker.func_wrap(WASI, "random_get", random_get)?;
    linker.func_wrap(WASI, "clock_time_get", clock_time_get)?;
    linker.func_wrap(WASI, "environ_sizes_get", environ_sizes_get)?;
    linker.func_wrap(
        WASI,
        "environ_get",
        |_: Caller<'_, HostState>, _: u32, _: u32| ERRNO_SUCCESS,
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the guest exited with code {code}"
            )))
        },
    )?;
    Ok(())
}

/// `get_page(page_no, out) -> PAGE_OK | PAGE_ABSENT | HOST_ERROR`: copies 4096 bytes to `out`.
fn get_page(mut caller: Caller<'_, HostState>, page_no: u32, out: u32) -> wasmtime::Result<i32> {
    let memory = memory(&caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let range = guest_range(mem, out, PAGE_SIZE_BYTES, "get_page")?;
    state.stats.pages_read += 1;
    match state.backend.get_page(PageNo(page_no)) {
        Ok(Some(page)) if page.len() == PAGE_SIZE_BYTES => {
            mem[range].copy_from_slice(&page);
            Ok(PAGE_OK)
        }
        Ok(Some(page)) => {
            let message = format!("backend served page {page_no} with {} bytes", page.len());
            state.fail(ImportFailure::Backend(BackendError::new(
                ErrorKind::Internal,
                message,
            )));
            Ok(HOST_ERROR)
        }
        Ok(None) => Ok(PAGE_ABSENT),
        Err(e) => {
            state.fail(ImportFailure::Backend(e));
            Ok(HOST_ERROR)
        }
    }
}

/// `commit(ptr, len) -> COMMIT_OK | COMMIT_REFUSED | HOST_ERROR`: one postcard `Mtr`.
fn commit(mut caller: Caller<'_, HostState>, ptr: u32, len: u32) -> wasmtime::Result<i32> {
    let memory = memory(&caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let range = guest_range(mem, ptr, len as usize, "commit")?;
    let mtr = match postcard::from_bytes::<Mtr>(&mem[range])
        .map_err(|e| e.to_string())
        .and_then(|m| {
            check_mtr(&m)?;
            Ok(m)
        }) {
        Ok(mtr) => mtr,
        Err(e) => {
            state.fail(ImportFailure::Invalid(format!(
                "malformed mini-transaction: {e}"
            )));
            return Ok(HOST_ERROR);
        }
    };
    let pages = mtr.changes.len() as u64;
    match state.backend.commit(mtr) {
        Ok(()) => {
            state.stats.commits += 1;
            state.stats.pages_committed += pages;
            state.stats.mtr_bytes += u64::from(len);
            Ok(COMMIT_OK)
        }
        Err(e) => {
            let refused = e.kind == ErrorKind::ReadOnly;
            state.fail(ImportFailure::Backend(e));
            Ok(if refused { COMMIT_REFUSED } else { HOST_ERROR })
        }
    }
}

/// Checks what the guest promises about an MTR: non-empty, pages strictly ascending, images
/// exactly one page, deltas well formed (applied to a scratch page).
fn check_mtr(mtr: &Mtr) -> Result<(), String> {
    if mtr.changes.is_empty() {
        return Err("no changes".into());
    }
    let mut scratch = vec![0u8; PAGE_SIZE_BYTES];
    let mut previous: Option<u32> = None;
    for change in &mtr.changes {
        if previous.is_some_and(|p| p >= change.page_no) {
            return Err(format!("page {} out of order", change.page_no));
        }
        previous = Some(change.page_no);
        match &change.body {
            PageChangeBody::Image(img) if img.len() != PAGE_SIZE_BYTES => {
                return Err(format!(
                    "image of page {} is {} bytes",
                    change.page_no,
                    img.len()
                ));
            }
            PageChangeBody::Image(_) => {}
            PageChangeBody::Delta(d) => {
                // Checking bounds needs an owned body; deltas are small.
                RedoBody::Delta(d.clone())
                    .apply(&mut scratch)
                    .map_err(|e| format!("delta of page {}: {e}", change.page_no))?;
            }
        }
    }
    Ok(())
}

fn fd_write(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    iovs: u32,
    iovs_len: u32,
    nwritten: u32,
) -> wasmtime::Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(ERRNO_BADF);
    }
    let memory = memory(&caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let table = guest_range(mem, iovs, (iovs_len as usize).saturating_mul(8), "fd_write")?;
    let mut total: u32 = 0;
    for i in 0..iovs_len as usize {
        let at = table.start + i * 8;
        let ptr = u32::from_le_bytes(mem[at..at + 4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(mem[at + 4..at + 8].try_into().expect("4 bytes"));
        let data = guest_range(mem, ptr, len as usize, "fd_write")?;
        state.stderr(&mem[data]);
        total = total.saturating_add(len);
    }
    write_u32(mem, nwritten, total, "fd_write")?;
    Ok(ERRNO_SUCCESS)
}

/// Seeds hash maps and SQLite's PRNG. Not for cryptography; nothing in the guest needs that.
fn random_get(mut caller: Caller<'_, HostState>, buf: u32, len: u32) -> wasmtime::Result<i32> {
    use std::hash::{BuildHasher, Hasher};
    let memory = memory(&caller)?;
    let mem = memory.data_mut(&mut caller);
    let range = guest_range(mem, buf, len as usize, "random_get")?;
    let state = std::collections::hash_map::RandomState::new();
    for (i, chunk) in mem[range].chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        let bytes = h.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    Ok(ERRNO_SUCCESS)
}

fn clock_time_get(
    mut caller: Caller<'_, HostState>,
    clock: i32,
    _precision: i64,
    out: u32,
) -> wasmtime::Result<i32> {
    let nanos = match clock {
        // realtime
        0 => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        // monotonic (and the process/thread CPU clocks, approximated by it)
        1..=3 => caller.data().started.elapsed().as_nanos() as u64,
        _ => return Ok(ERRNO_INVAL),
    };
    let memory = memory(&caller)?;
    let mem = memory.data_mut(&mut caller);
    let range = guest_range(mem, out, 8, "clock_time_get")?;
    mem[range].copy_from_slice(&nanos.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// The guest gets an empty environment.
fn environ_sizes_get(
    mut caller: Caller<'_, HostState>,
    count: u32,
    size: u32,
) -> wasmtime::Result<i32> {
    let memory = memory(&caller)?;
    let mem = memory.data_mut(&mut caller);
    write_u32(mem, count, 0, "environ_sizes_get")?;
    write_u32(mem, size, 0, "environ_sizes_get")?;
    Ok(ERRNO_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use compute_abi::PageChange;

    fn change(page_no: u32, body: PageChangeBody) -> PageChange {
        PageChange { page_no, body }
    }

    #[test]
    fn well_formed_mtrs_pass() {
        let mtr = Mtr {
            changes: vec![
                change(0, PageChangeBody::Delta(vec![0, 0, 2, 0, 1, 2])),
                change(7, PageChangeBody::Image(vec![1; PAGE_SIZE_BYTES])),
            ],
        };
        assert_eq!(check_mtr(&mtr), Ok(()));
    }

    #[test]
    fn malformed_mtrs_are_refused_not_panicked_on() {
        let image = || PageChangeBody::Image(vec![0; PAGE_SIZE_BYTES]);
        let bad = [
            Mtr { changes: vec![] },
            Mtr {
                changes: vec![change(3, image()), change(3, image())],
            },
            Mtr {
                changes: vec![change(4, image()), change(3, image())],
            },
            Mtr {
                changes: vec![change(1, PageChangeBody::Image(vec![0; 10]))],
            },
            // A run reaching past the end of the page.
            Mtr {
                changes: vec![change(
                    1,
                    PageChangeBody::Delta(vec![0xfa, 0x0f, 10, 0, 1, 2]),
                )],
            },
            // A run header cut short.
            Mtr {
                changes: vec![change(1, PageChangeBody::Delta(vec![0, 0, 5]))],
            },
        ];
        for mtr in bad {
            assert!(check_mtr(&mtr).is_err(), "{mtr:?}");
        }
    }

    #[test]
    fn guest_ranges_are_bounds_checked() {
        let mem = vec![0u8; 100];
        assert_eq!(guest_range(&mem, 10, 90, "t").unwrap(), 10..100);
        assert!(guest_range(&mem, 10, 91, "t").is_err());
        assert!(guest_range(&mem, u32::MAX, 4096, "t").is_err());
        assert!(guest_range(&mem, 100, 0, "t").is_ok());
        assert!(guest_range(&mem, 101, 0, "t").is_err());
    }
}
