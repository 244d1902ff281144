//! One way to take a lock: [`LockExt::locked`] for a `Mutex`, [`RwLockExt`] for an `RwLock`.
//!
//! A mutex is poisoned when a thread panicked while holding it. The services never observe that:
//! a panic ends the process (each `main` installs a hook that exits), so the state a poisoned
//! lock guards is never used again. In tests, and in the bench harness, a panicking thread
//! fails its test already; the others go on with the data as the panic left it, which is what
//! `into_inner` gives. So every lock in the workspace is taken through this one helper, instead
//! of a `lock()` helper per module.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Poison-tolerant locking (see the module docs).
pub trait LockExt<T: ?Sized> {
    /// Locks the mutex, ignoring poison.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Poison-tolerant locking of an `RwLock` (see the module docs).
pub trait RwLockExt<T: ?Sized> {
    /// Locks for reading, ignoring poison.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// Locks for writing, ignoring poison.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_with_its_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let mut g = m2.locked();
            *g = 2;
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*m.locked(), 2);
    }
}
