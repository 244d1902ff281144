//! Owner-only files: what a Borealis process writes is readable by its own user and nobody else.
//!
//! Data directories hold tenants' rows (segment logs, page files, checkpoints), and a local
//! cluster's directory holds the admin token. A process's umask decides the mode of everything
//! it creates that does not set one itself, so every service and the `borealis` command call
//! [`restrict_umask`] first thing in `main`; directories a library creates for itself (the data
//! directory, [`create_dir_all`]) and files that hold secrets also set their mode explicitly,
//! so they are owner-only even in a process that did not (a test, another binary).
//! docs/security.md lists what is owner-only.

use std::io;
use std::path::Path;

/// Mode of the directories Borealis creates: `rwx------`.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files that hold secrets or tenant data: `rw-------`.
pub const FILE_MODE: u32 = 0o600;
/// The umask [`restrict_umask`] sets: no bit for group or others.
pub const UMASK: u32 = 0o077;

/// Sets the process's umask to [`UMASK`], so that every file and directory it creates from now
/// on is owner-only. Call it before any thread starts (the umask is per process).
#[allow(unsafe_code)] // libc calls, each with its SAFETY comment
pub fn restrict_umask() {
    // SAFETY: umask(2) only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(UMASK as libc::mode_t);
    }
}

/// `create_dir_all` whose new directories are [`DIR_MODE`] whatever the umask. Directories that
/// already exist keep their mode.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_directories_are_owner_only_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(root.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, DIR_MODE, "{d}: {mode:o}");
        }
        create_dir_all(&deep).expect("an existing directory is fine");
    }
}
