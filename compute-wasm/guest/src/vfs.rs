//! The Borealis VFS: SQLite's main database file, made of pages the host serves, committed as one
//! mini-transaction per SQLite commit.
//!
//! ## How a commit flows
//!
//! The VFS declares `SQLITE_IOCAP_BATCH_ATOMIC`. With `journal_mode=MEMORY`, `synchronous` not OFF
//! and `cache_spill=OFF`, SQLite's pager then commits every write transaction as:
//!
//! ```text
//! xFileControl(BEGIN_ATOMIC_WRITE)
//! xWrite(page, 4096, page_no * 4096)      once per dirty page (and a zero page if the image grew
//!                                         past what was ever written)
//! xFileControl(COMMIT_ATOMIC_WRITE)       -> one `commit` import carrying one `Mtr`
//! ```
//!
//! Between BEGIN and COMMIT the written pages are only collected ([`Batch`]). At COMMIT each one is
//! turned into a redo body against the host's current image of that page (`RedoBody::between`: a
//! delta or a full image, whichever is smaller) and the whole set is shipped in one `commit`
//! call. A page SQLite rewrote without changing it is left out (and a commit that changed nothing
//! ships nothing). Nothing else ever leaves the compute: there is no rollback journal file, no temp file,
//! no page write outside a batch.
//!
//! ## Failure modes
//!
//! - A refused or failed `commit` answers `SQLITE_READONLY`, *not* an IOERR code: on an IOERR
//!   SQLite would fall back to a journal-based commit and write pages outside a batch.
//! - A failed `get_page` answers `SQLITE_IOERR_READ`.
//! - Anything that breaks the model (a write outside a batch that changes a page, a partial page
//!   write in a batch, a second file) is refused with an error and printed to stderr.
//!
//! Every such failure is remembered ([`take_storage_failure`]) so that `bx_exec` reports it as
//! a storage failure rather than an SQL error.
//!
//! ## Size
//!
//! The file's size is `pages * 4096`, tracked here: at open from the in-header database size of
//! page 0 (bytes 28..32, big-endian), then grown by writes and shrunk by `xTruncate`. Truncation
//! and the zero page that extends the file are size changes only; the header's page count, which
//! every commit rewrites, is the truth for the next instance that opens the volume. Pages beyond
//! the size read as zeros (`SQLITE_IOERR_SHORT_READ`), without asking the host.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use borealis_core::redo::RedoBody;
use borealis_core::PAGE_SIZE_BYTES;
use compute_abi::{Mtr, PageChange, PageChangeBody};
use rusqlite::ffi;

use crate::host::{self, CommitOutcome, PageRead};

/// The name the VFS is registered under (it is also the default VFS).
pub const VFS_NAME: &str = "borealis";
const VFS_NAME_C: &CStr = c"borealis";

const PAGE: usize = PAGE_SIZE_BYTES;
const PAGE_U64: u64 = PAGE_SIZE_BYTES as u64;

/// Pragmas that would break the commit model or the page size if changed. `bx_open` sets them
/// itself; afterwards a `PRAGMA name = value` on them fails to prepare.
const FIXED_PRAGMAS: &[&str] = &[
    "page_size",
    "journal_mode",
    "locking_mode",
    "synchronous",
    "cache_spill",
    "cache_size",
    "mmap_size",
    "temp_store",
    "temp_store_directory",
    "data_store_directory",
];

type Page = Box<[u8; PAGE]>;

fn zero_page() -> Page {
    Box::new([0u8; PAGE])
}

thread_local! {
    /// Whether the main database file is open (there is only ever one).
    static MAIN_OPEN: Cell<bool> = const { Cell::new(false) };
    /// While `bx_open` configures the connection, the fixed pragmas may be set.
    static CONFIG_PRAGMAS_ALLOWED: Cell<bool> = const { Cell::new(false) };
    /// The first storage failure since the last [`take_storage_failure`].
    static STORAGE_FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Returns (and clears) the first storage failure seen since the last call.
pub fn take_storage_failure() -> Option<String> {
    STORAGE_FAILURE.with(|f| f.borrow_mut().take())
}

/// Lets `bx_open` set the fixed pragmas.
pub fn allow_config_pragmas(allowed: bool) {
    CONFIG_PRAGMAS_ALLOWED.with(|c| c.set(allowed));
}

fn note_storage_failure(message: String) {
    STORAGE_FAILURE.with(|f| {
        let mut f = f.borrow_mut();
        if f.is_none() {
            *f = Some(message);
        }
    });
}

/// A broken invariant of the VFS: printed (the host logs the guest's stderr) and remembered.
fn model_violation(message: String) {
    eprintln!("borealis vfs: {message}");
    note_storage_failure(message);
}

/// Pages written since `BEGIN_ATOMIC_WRITE`.
struct Batch {
    pages: BTreeMap<u32, Page>,
    size_pages_before: u32,
}

/// The state of the open main database file.
struct FileState {
    size_pages: u32,
    batch: Option<Batch>,
}

/// What SQLite allocates for an open file (`szOsFile`): the base struct, then our state.
#[repr(C)]
struct MainFile {
    base: ffi::sqlite3_file,
    state: *mut FileState,
}

/// # Safety
/// `file` must be a `MainFile` this VFS opened successfully and not yet closed.
unsafe fn state<'a>(file: *mut ffi::sqlite3_file) -> &'a mut FileState {
    // SAFETY: per the contract; SQLite never calls into one file re-entrantly.
    unsafe { &mut *(*file.cast::<MainFile>()).state }
}

impl FileState {
    fn open() -> Result<FileState, c_int> {
        let mut page0 = zero_page();
        let size_pages = match host::get_page(0, &mut page0) {
            PageRead::Absent => 0,
            PageRead::Present => {
                // Bytes 16..18: the page size, big-endian (1 means 65536).
                let page_size = u16::from_be_bytes([page0[16], page0[17]]);
                if usize::from(page_size) != PAGE {
                    model_violation(format!(
                        "page 0 says the page size is {page_size}, Borealis pages are {PAGE}"
                    ));
                    return Err(ffi::SQLITE_CANTOPEN);
                }
                // Bytes 28..32: the in-header database size. A present page 0 is at least one page.
                let pages = u32::from_be_bytes([page0[28], page0[29], page0[30], page0[31]]);
                pages.max(1)
            }
            PageRead::Failed => {
                note_storage_failure("reading page 0 failed".into());
                return Err(ffi::SQLITE_IOERR_READ);
            }
        };
        Ok(FileState {
            size_pages,
            batch: None,
        })
    }

    fn size_bytes(&self) -> u64 {
        u64::from(self.size_pages) * PAGE_U64
    }

    fn pending(&self, page_no: u64) -> Option<&Page> {
        let batch = self.batch.as_ref()?;
        batch.pages.get(&u32::try_from(page_no).ok()?)
    }

    /// Reads `out.len()` bytes at `offset`, any alignment.
    fn read(&self, out: &mut [u8], offset: u64) -> c_int {
        let size = self.size_bytes();
        let mut short = false;
        let mut scratch: Option<Page> = None;
        let mut pos = 0usize;
        while pos < out.len() {
            let at = offset + pos as u64;
            let page_no = at / PAGE_U64;
            let in_page = (at % PAGE_U64) as usize;
            let n = (PAGE - in_page).min(out.len() - pos);
            let dst = &mut out[pos..pos + n];
            pos += n;
            if at >= size {
                dst.fill(0);
                short = true;
                continue;
            }
            if let Some(page) = self.pending(page_no) {
                dst.copy_from_slice(&page[in_page..in_page + n]);
                continue;
            }
            // `at < size` and the size is a u32 page count, so this fits.
            let page_no = page_no as u32;
            let full: Option<&mut [u8; PAGE]> = if n == PAGE { dst.try_into().ok() } else { None };
            let read = match full {
                Some(whole) => host::get_page(page_no, whole),
                None => {
                    let buf = scratch.get_or_insert_with(zero_page);
                    let r = host::get_page(page_no, buf);
                    dst.copy_from_slice(&buf[in_page..in_page + n]);
                    r
                }
            };
            if let PageRead::Failed = read {
                note_storage_failure(format!("reading page {page_no} failed"));
                return ffi::SQLITE_IOERR_READ;
            }
        }
        if short {
            ffi::SQLITE_IOERR_SHORT_READ
        } else {
            ffi::SQLITE_OK
        }
    }

    fn write(&mut self, data: &[u8], offset: u64) -> c_int {
        let whole_page = offset.is_multiple_of(PAGE_U64) && data.len() == PAGE;
        let page_no = u32::try_from(offset / PAGE_U64)
            .ok()
            .filter(|&p| p < u32::MAX);
        let (Some(page_no), true) = (page_no, whole_page) else {
            model_violation(format!(
                "write of {} bytes at offset {offset}: only whole pages are written",
                data.len()
            ));
            return ffi::SQLITE_IOERR_WRITE;
        };
        let Some(batch) = self.batch.as_mut() else {
            return self.write_outside_batch(page_no, data);
        };
        let mut page = zero_page();
        page.copy_from_slice(data);
        batch.pages.insert(page_no, page);
        self.size_pages = self.size_pages.max(page_no + 1);
        ffi::SQLITE_OK
    }

    /// SQLite writes outside a batch only to grow the file with a zero page, or (rolling back
    /// after a failed commit) to put back a page's committed image. Both change nothing stored;
    /// anything else would be a change that no redo record carries.
    fn write_outside_batch(&mut self, page_no: u32, data: &[u8]) -> c_int {
        if page_no >= self.size_pages && data.iter().all(|&b| b == 0) {
            self.size_pages = page_no + 1;
            return ffi::SQLITE_OK;
        }
        if page_no < self.size_pages {
            let mut current = zero_page();
            match host::get_page(page_no, &mut current) {
                PageRead::Present | PageRead::Absent if current[..] == *data => {
                    return ffi::SQLITE_OK
                }
                PageRead::Failed => {
                    note_storage_failure(format!("reading page {page_no} failed"));
                    return ffi::SQLITE_IOERR_READ;
                }
                _ => {}
            }
        }
        model_violation(format!(
            "write of page {page_no} outside an atomic batch (size {} pages): refused",
            self.size_pages
        ));
        ffi::SQLITE_IOERR_WRITE
    }

    fn truncate(&mut self, size_bytes: u64) -> c_int {
        let Ok(pages) = u32::try_from(size_bytes.div_ceil(PAGE_U64)) else {
            return ffi::SQLITE_IOERR_TRUNCATE;
        };
        if let Some(batch) = self.batch.as_mut() {
            batch.pages.retain(|&p, _| p < pages);
        }
        self.size_pages = pages;
        ffi::SQLITE_OK
    }

    fn begin_batch(&mut self) -> c_int {
        if self.batch.is_some() {
            model_violation("BEGIN_ATOMIC_WRITE inside a batch".into());
            return ffi::SQLITE_MISUSE;
        }
        self.batch = Some(Batch {
            pages: BTreeMap::new(),
            size_pages_before: self.size_pages,
        });
        ffi::SQLITE_OK
    }

    fn rollback_batch(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.size_pages = batch.size_pages_before;
        }
    }

    /// Ships the batch as one mini-transaction. Every failure answers a non-IOERR code (see the
    /// module docs) and leaves the file as it was before the batch.
    fn commit_batch(&mut self) -> c_int {
        let Some(batch) = self.batch.take() else {
            model_violation("COMMIT_ATOMIC_WRITE outside a batch".into());
            return ffi::SQLITE_MISUSE;
        };
        if batch.pages.is_empty() {
            return ffi::SQLITE_OK;
        }
        let rc = ship(&batch.pages, batch.size_pages_before);
        if rc != ffi::SQLITE_OK {
            self.size_pages = batch.size_pages_before;
        }
        rc
    }
}

/// Turns dirty pages (ascending) into one `Mtr` and calls the `commit` import.
///
/// A page at or past the file's size before the batch is new to SQLite: it ships as a full image,
/// without asking storage for a previous image. That keeps commits that grow the file going while
/// no pageserver answers (docs/design.md §6), and it is the only safe body for such a page: storage may
/// still hold a stale image of it from before a shrink, which a delta would be applied to.
fn ship(pages: &BTreeMap<u32, Page>, size_pages_before: u32) -> c_int {
    let mut changes = Vec::with_capacity(pages.len());
    let mut old = zero_page();
    for (&page_no, new) in pages {
        if page_no >= size_pages_before {
            changes.push(PageChange {
                page_no,
                body: PageChangeBody::Image(new.to_vec()),
            });
            continue;
        }
        let old_image = match host::get_page(page_no, &mut old) {
            PageRead::Present => Some(&old[..]),
            PageRead::Absent => None,
            PageRead::Failed => {
                note_storage_failure(format!("reading page {page_no} (to build its redo) failed"));
                return ffi::SQLITE_READONLY;
            }
        };
        let body = match RedoBody::between(old_image, &new[..]) {
            RedoBody::Image(b) => PageChangeBody::Image(b),
            // SQLite sometimes rewrites a page unchanged: there is nothing to ship for it.
            RedoBody::Delta(d) if d.is_empty() => continue,
            RedoBody::Delta(d) => PageChangeBody::Delta(d),
        };
        changes.push(PageChange { page_no, body });
    }
    if changes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let bytes = match postcard::to_allocvec(&Mtr { changes }) {
        Ok(b) => b,
        Err(e) => {
            model_violation(format!("encoding a mini-transaction failed: {e}"));
            return ffi::SQLITE_READONLY;
        }
    };
    match host::commit(&bytes) {
        CommitOutcome::Ok => ffi::SQLITE_OK,
        CommitOutcome::Refused => {
            note_storage_failure("commit refused: no write quorum".into());
            ffi::SQLITE_READONLY
        }
        CommitOutcome::Failed => {
            note_storage_failure("commit failed in the host".into());
            ffi::SQLITE_READONLY
        }
    }
}

/// Answers `SQLITE_FCNTL_PRAGMA`: refuses to change a fixed pragma.
///
/// # Safety
/// `arg` is the `char*[3..]` array SQLite passes with this file control.
unsafe fn pragma(arg: *mut c_void) -> c_int {
    if CONFIG_PRAGMAS_ALLOWED.with(Cell::get) {
        return ffi::SQLITE_NOTFOUND;
    }
    let args = arg.cast::<*mut c_char>();
    // SAFETY: SQLite passes [result, name, value-or-NULL, ...].
    let (name, value) = unsafe { (*args.add(1), *args.add(2)) };
    if name.is_null() || value.is_null() {
        return ffi::SQLITE_NOTFOUND;
    }
    // SAFETY: a NUL-terminated pragma name.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    if !FIXED_PRAGMAS
        .iter()
        .any(|p| p.as_bytes().eq_ignore_ascii_case(name))
    {
        return ffi::SQLITE_NOTFOUND;
    }
    let message = format!(
        "PRAGMA {} cannot be changed in Borealis: the storage model depends on it",
        String::from_utf8_lossy(name)
    );
    // SAFETY: SQLite frees the result slot with sqlite3_free, so it must come from sqlite3_malloc.
    unsafe {
        let buf = ffi::sqlite3_malloc((message.len() + 1) as c_int).cast::<u8>();
        if !buf.is_null() {
            ptr::copy_nonoverlapping(message.as_ptr(), buf, message.len());
            *buf.add(message.len()) = 0;
            *args = buf.cast();
        }
    }
    ffi::SQLITE_ERROR
}

// ---------------------------------------------------------------------------------------------
// sqlite3_io_methods

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each file it opened exactly once.
    unsafe {
        let f = file.cast::<MainFile>();
        drop(Box::from_raw((*f).state));
        (*f).state = ptr::null_mut();
    }
    MAIN_OPEN.with(|o| o.set(false));
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (Ok(amount), Ok(offset)) = (usize::try_from(amount), u64::try_from(offset)) else {
        return ffi::SQLITE_IOERR_READ;
    };
    // SAFETY: SQLite hands a writable buffer of `amount` bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), amount) };
    // SAFETY: SQLite calls the methods of a file only between its successful xOpen and its
    // xClose, so `file` is a `MainFile` this VFS opened (see [`state`]).
    unsafe { state(file) }.read(out, offset)
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (Ok(amount), Ok(offset)) = (usize::try_from(amount), u64::try_from(offset)) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite hands a readable buffer of `amount` bytes.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), amount) };
    // SAFETY: SQLite calls the methods of a file only between its successful xOpen and its
    // xClose, so `file` is a `MainFile` this VFS opened (see [`state`]).
    unsafe { state(file) }.write(data, offset)
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let Ok(size) = u64::try_from(size) else {
        return ffi::SQLITE_IOERR_TRUNCATE;
    };
    // SAFETY: SQLite calls the methods of a file only between its successful xOpen and its
    // xClose, so `file` is a `MainFile` this VFS opened (see [`state`]).
    unsafe { state(file) }.truncate(size)
}

/// Durability is the host's business: the redo left in `commit`.
unsafe extern "C" fn x_sync(_file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite calls the methods of a file only between its successful xOpen and its
    // xClose, so `file` is a `MainFile` this VFS opened (see [`state`]).
    let bytes = unsafe { state(file) }.size_bytes();
    // SAFETY: SQLite passes a valid out pointer. A u32 page count times 4096 fits in i64.
    unsafe { *size = bytes as ffi::sqlite3_int64 };
    ffi::SQLITE_OK
}

/// One writer per volume (the gateway guarantees it), and `locking_mode=EXCLUSIVE`: no locks.
unsafe extern "C" fn x_lock(_file: *mut ffi::sqlite3_file, _level: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_check_reserved_lock(
    _file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes a valid out pointer.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY (every `state(file)` below): SQLite calls the methods of a file only between its
    // successful xOpen and its xClose, so `file` is a `MainFile` this VFS opened.
    match op {
        // SAFETY: see above.
        ffi::SQLITE_FCNTL_BEGIN_ATOMIC_WRITE => unsafe { state(file) }.begin_batch(),
        // SAFETY: see above.
        ffi::SQLITE_FCNTL_COMMIT_ATOMIC_WRITE => unsafe { state(file) }.commit_batch(),
        ffi::SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE => {
            // SAFETY: see above.
            unsafe { state(file) }.rollback_batch();
            ffi::SQLITE_OK
        }
        // SAFETY: with SQLITE_FCNTL_PRAGMA, SQLite passes `arg` as the `char*[3..]` array
        // `pragma` expects.
        ffi::SQLITE_FCNTL_PRAGMA => unsafe { pragma(arg) },
        _ => ffi::SQLITE_NOTFOUND,
    }
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    PAGE as c_int
}

unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_BATCH_ATOMIC
        | ffi::SQLITE_IOCAP_SAFE_APPEND
        | ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_lock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

// ---------------------------------------------------------------------------------------------
// sqlite3_vfs

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: `file` points at `szOsFile` writable bytes. A null pMethods tells SQLite that the
    // open failed and nothing needs closing.
    unsafe { (*file).pMethods = ptr::null() };
    let name = if name.is_null() {
        "(anonymous)".into()
    } else {
        // SAFETY: a NUL-terminated file name.
        unsafe { CStr::from_ptr(name) }.to_string_lossy()
    };
    // Refusals are not storage failures: the statement fails with SQLite's "unable to open"
    // (ATTACH and VACUUM INTO a file land here, as would any journal or temp file, which the
    // configuration rules out). They are printed, so an unexpected one shows in the host's log.
    if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
        eprintln!(
            "borealis vfs: refusing to open {name} (flags {flags:#x}): only the volume exists \
             (journals and temp storage are in memory)"
        );
        return ffi::SQLITE_CANTOPEN;
    }
    if MAIN_OPEN.with(Cell::get) {
        eprintln!("borealis vfs: refusing to open {name}: a compute has one volume, already open");
        return ffi::SQLITE_CANTOPEN;
    }
    let st = match FileState::open() {
        Ok(st) => st,
        Err(rc) => return rc,
    };
    let main = MainFile {
        base: ffi::sqlite3_file {
            pMethods: &IO_METHODS,
        },
        state: Box::into_raw(Box::new(st)),
    };
    // SAFETY: `file` has room for a MainFile (`szOsFile`).
    unsafe {
        ptr::write(file.cast::<MainFile>(), main);
        if !out_flags.is_null() {
            *out_flags = flags;
        }
    }
    MAIN_OPEN.with(|o| o.set(true));
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    ffi::SQLITE_OK
}

/// No journal, WAL or other file ever exists.
unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes a valid out pointer.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: `name` is NUL-terminated and `out` has room for `n_out` bytes.
    unsafe {
        let bytes = CStr::from_ptr(name).to_bytes_with_nul();
        if bytes.len() > usize::try_from(n_out).unwrap_or(0) {
            return ffi::SQLITE_CANTOPEN;
        }
        ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), out, bytes.len());
    }
    ffi::SQLITE_OK
}

/// Seeds SQLite's PRNG (random(), randomblob()) from the host's randomness, through the hasher
/// keys std draws from WASI `random_get`.
unsafe extern "C" fn x_randomness(
    _vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    use std::hash::{BuildHasher, Hasher};
    let n = usize::try_from(n).unwrap_or(0);
    // SAFETY: SQLite hands `n` writable bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(out.cast::<u8>(), n) };
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
    }
    n as c_int
}

unsafe extern "C" fn x_sleep(_vfs: *mut ffi::sqlite3_vfs, microseconds: c_int) -> c_int {
    microseconds
}

/// Milliseconds since the Julian epoch, as SQLite wants them.
fn julian_ms() -> i64 {
    const UNIX_EPOCH_JULIAN_MS: i64 = 210_866_760_000_000;
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    UNIX_EPOCH_JULIAN_MS + since_unix
}

unsafe extern "C" fn x_current_time(_vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: SQLite passes a valid out pointer.
    unsafe { *out = julian_ms() as f64 / 86_400_000.0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_current_time_int64(
    _vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite passes a valid out pointer.
    unsafe { *out = julian_ms() };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_get_last_error(
    _vfs: *mut ffi::sqlite3_vfs,
    _n: c_int,
    _out: *mut c_char,
) -> c_int {
    0
}

/// Registers the VFS as SQLite's default. Called once, from `sqlite3_os_init`.
pub fn register() -> c_int {
    let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: std::mem::size_of::<MainFile>() as c_int,
        mxPathname: 512,
        pNext: ptr::null_mut(),
        zName: VFS_NAME_C.as_ptr(),
        pAppData: ptr::null_mut(),
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: None,
        xDlError: None,
        xDlSym: None,
        xDlClose: None,
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }));
    // SAFETY: the VFS lives for the rest of the program (leaked).
    unsafe { ffi::sqlite3_vfs_register(vfs, 1) }
}
