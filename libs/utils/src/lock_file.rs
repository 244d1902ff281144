//! The data directory lock: `<data dir>/LOCK`, held with `flock(2)` for the life of the process.
//!
//! A service takes it before it reads or writes anything else in its data directory. The lock
//! belongs to the open file, so the kernel releases it when the process exits however it exits
//! (`kill -9` included): there is no stale lock to clean up by hand after a crash. The file's
//! content is the holder's pid, written after the lock is taken; it is only for the error
//! message a second process prints, never trusted for anything else.
//!
//! What it does not cover: `flock` is advisory and local, so it does not fence a process on
//! another machine sharing the directory over a network file system. Borealis data directories
//! are local disks.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The lock file's name inside the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "data directory {dir} is in use by another process{holder}: \
         stop it first, or give this one another --data-dir"
    )]
    InUse { dir: PathBuf, holder: String },
    #[error("locking data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while the process uses the directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `dir` if needed and locks it for this process, or says who holds it.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    // A new data directory is owner-only (it will hold tenants' data); an existing one keeps
    // the mode its operator gave it.
    crate::owner_only::create_dir_all(dir).map_err(io)?;
    let path = dir.join(LOCK_FILE_NAME);
    // Not truncated on open: the holder's pid stays readable to a process that fails to lock.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::owner_only::FILE_MODE)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            // Best effort: the holder may be writing its pid right now.
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!(" (pid {pid})"),
                Err(_) => String::new(),
            };
            return Err(LockError::InUse {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DataDirLock { _file: file, path })
}

/// Whether some process holds `dir`'s lock now. A process killed with SIGKILL keeps it until
/// its **last thread** has exited: its main thread may show as a zombie (`/proc/<pid>/stat`
/// state `Z`) while others are still being torn down with the file table open, so this, not the
/// process state, is what says a data directory is free. Never creates anything: a directory or
/// lock file that does not exist is not held.
pub fn is_locked(dir: &Path) -> bool {
    let Ok(file) = OpenOptions::new().read(true).open(dir.join(LOCK_FILE_NAME)) else {
        return false;
    };
    // Taken and at once released (the file is dropped) if free.
    matches!(file.try_lock(), Err(TryLockError::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_locked_tells_a_held_directory_from_a_free_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert!(!is_locked(&data), "no directory, no lock");
        let held = lock_data_dir(&data).unwrap();
        assert!(is_locked(&data));
        drop(held);
        assert!(!is_locked(&data));
        lock_data_dir(&data).expect("asking did not take the lock");
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = lock_data_dir(&data).expect("the first lock is taken (and the dir created)");
        assert_eq!(
            std::fs::read_to_string(held.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock belongs to the open file, so a second open in this process is a second holder.
        let err = lock_data_dir(&data).expect_err("the directory is in use");
        let text = err.to_string();
        assert!(matches!(err, LockError::InUse { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(held);
        lock_data_dir(&data).expect("released when the holder drops it");
    }

    #[test]
    fn a_new_data_directory_and_its_lock_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node/data");
        let held = lock_data_dir(&data).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&dir.path().join("node")), 0o700);
        assert_eq!(mode(held.path()), 0o600);
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        // A crashed holder leaves the file (with its pid) but not the lock.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE_NAME), "999999\n").unwrap();
        let held = lock_data_dir(dir.path()).expect("a file without a holder is no lock");
        assert_eq!(
            std::fs::read_to_string(held.path()).unwrap().trim(),
            std::process::id().to_string()
        );
    }
}
