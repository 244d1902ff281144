//! The two host imports of module `borealis` (see `compute_abi`), behind safe wrappers.

use borealis_core::PAGE_SIZE_BYTES;
use compute_abi::{COMMIT_OK, COMMIT_REFUSED, PAGE_ABSENT, PAGE_OK};

mod raw {
    // The Rust names differ from the import names so that nothing here can clash with a C symbol
    // of the same name in SQLite or wasi-libc.
    #[link(wasm_import_module = "borealis")]
    extern "C" {
        #[link_name = "get_page"]
        pub fn host_get_page(page_no: u32, out: *mut u8) -> i32;
        #[link_name = "commit"]
        pub fn host_commit(ptr: *const u8, len: u32) -> i32;
    }
}

/// What `get_page` found.
pub enum PageRead {
    /// The page was copied into the buffer.
    Present,
    /// The page was never written: it reads as zeros (the buffer was zeroed).
    Absent,
    /// The host failed; it holds the detail.
    Failed,
}

/// Reads page `page_no` into `out`.
pub fn get_page(page_no: u32, out: &mut [u8; PAGE_SIZE_BYTES]) -> PageRead {
    // SAFETY: `out` is a valid, writable buffer of exactly one page, which is what the import
    // writes (the host bounds-checks it against linear memory as well).
    let rc = unsafe { raw::host_get_page(page_no, out.as_mut_ptr()) };
    match rc {
        PAGE_OK => PageRead::Present,
        PAGE_ABSENT => {
            out.fill(0);
            PageRead::Absent
        }
        _ => PageRead::Failed,
    }
}

/// What `commit` answered.
pub enum CommitOutcome {
    Ok,
    /// No write quorum: nothing left the compute.
    Refused,
    /// The host failed; it holds the detail.
    Failed,
}

/// Ships one postcard-encoded `Mtr`.
pub fn commit(mtr: &[u8]) -> CommitOutcome {
    let Ok(len) = u32::try_from(mtr.len()) else {
        return CommitOutcome::Failed;
    };
    // SAFETY: `mtr` is a valid readable buffer of `len` bytes for the duration of the call.
    let rc = unsafe { raw::host_commit(mtr.as_ptr(), len) };
    match rc {
        COMMIT_OK => CommitOutcome::Ok,
        COMMIT_REFUSED => CommitOutcome::Refused,
        _ => CommitOutcome::Failed,
    }
}
