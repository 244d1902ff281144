//! One compute instance: one tenant's SQLite.

use std::sync::Arc;
use std::time::Duration;

use compute_abi::{ExecErrorKind, ExecRequest, ExecResponse, OPEN_OK, OPEN_UNREADABLE};
use wasmtime::{Memory, Store, Trap, TypedFunc};

use crate::engine::{ComputeEngine, EngineInner};
use crate::error::ComputeError;
pub use crate::imports::ComputeStats;
use crate::imports::{HostState, ImportFailure};
use crate::Backend;

/// The guest's exports, looked up once.
struct Exports {
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    free: TypedFunc<(u32, u32), ()>,
    exec: TypedFunc<(u32, u32), u64>,
}

/// One tenant's SQLite, running in its own wasm instance. `Send` (move it to the thread that
/// serves the tenant), not `Sync`.
pub struct Compute {
    store: Store<HostState>,
    exports: Exports,
    /// Keeps the engine (and its epoch ticker) alive while this instance runs.
    engine: Arc<EngineInner>,
    poisoned: Option<String>,
}

/// How a call into the guest went wrong, before it is turned into a [`ComputeError`].
enum CallError {
    Wasm(wasmtime::Error),
    Invalid(String),
}

impl From<wasmtime::Error> for CallError {
    fn from(e: wasmtime::Error) -> Self {
        CallError::Wasm(e)
    }
}

impl Compute {
    /// Instantiates the guest and opens the volume with a SQLite page cache of `cache_pages`
    /// pages (the main memory knob: linear memory never shrinks). A backend failure while
    /// opening (page 0 could not be read) is reported as [`ComputeError::Backend`]; a database
    /// SQLite cannot open (corrupt, malformed schema) as [`ComputeError::Unopenable`]; only an
    /// instance that could not be created (no free slot) or ran out of time opening is
    /// [`ComputeError::Startup`].
    pub fn start(
        engine: &ComputeEngine,
        backend: Box<dyn Backend>,
        cache_pages: u32,
    ) -> Result<Compute, ComputeError> {
        let inner = engine.inner.clone();
        let mut store = Store::new(
            &inner.engine,
            HostState::new(backend, inner.config.memory_bytes_max),
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(inner.deadline_ticks(inner.config.startup_timeout));
        let startup =
            |what: &str, e: wasmtime::Error| ComputeError::Startup(format!("{what}: {e:#}"));
        let instance = inner
            .pre
            .instantiate(&mut store)
            .map_err(|e| startup("instantiating", e))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| ComputeError::Startup("the guest exports no memory".into()))?;
        store.data_mut().memory = Some(memory);
        let exports = Exports {
            memory,
            alloc: instance
                .get_typed_func(&mut store, "bx_alloc")
                .map_err(|e| startup("bx_alloc", e))?,
            free: instance
                .get_typed_func(&mut store, "bx_free")
                .map_err(|e| startup("bx_free", e))?,
            exec: instance
                .get_typed_func(&mut store, "bx_exec")
                .map_err(|e| startup("bx_exec", e))?,
        };
        let open: TypedFunc<u32, i32> = instance
            .get_typed_func(&mut store, "bx_open")
            .map_err(|e| startup("bx_open", e))?;
        let opened = open.call(&mut store, cache_pages);
        if let Some(failure) = store.data_mut().failure.take() {
            return Err(match failure {
                ImportFailure::Backend(e) => ComputeError::Backend(e),
                ImportFailure::Invalid(m) => ComputeError::Invalid(m),
            });
        }
        match opened {
            Ok(OPEN_OK) => {}
            Ok(OPEN_UNREADABLE) => {
                // The guest's last line says why, after its "bx_open: ".
                let line = store.data().last_stderr_line();
                let why = line.strip_prefix("bx_open: ").unwrap_or(&line);
                return Err(ComputeError::Unopenable(why.to_string()));
            }
            Ok(rc) => {
                let why = store.data().recent_stderr();
                return Err(ComputeError::Invalid(format!(
                    "bx_open returned {rc}: {why}"
                )));
            }
            Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                return Err(ComputeError::Startup(format!(
                    "opening the volume took longer than {:?}",
                    inner.config.startup_timeout
                )))
            }
            Err(e) => {
                return Err(ComputeError::Trap(format!(
                    "bx_open trapped: {}",
                    trap_message(&e)
                )))
            }
        }
        Ok(Compute {
            store,
            exports,
            engine: inner,
            poisoned: None,
        })
    }

    /// Runs `req`, stopping it `timeout` (wall clock, rounded up to the next epoch tick) after
    /// the call began. The deadline is checked while guest code runs: time spent blocked in the
    /// backend counts, but a backend call is never interrupted (the backend bounds its own
    /// waits). SQL errors come back as [`ExecResponse::Err`]; a [`ComputeError`] other than
    /// [`ComputeError::RequestTooLarge`] poisons this instance.
    pub fn exec(
        &mut self,
        req: &ExecRequest,
        timeout: Duration,
    ) -> Result<ExecResponse, ComputeError> {
        if let Some(why) = &self.poisoned {
            return Err(ComputeError::Poisoned(why.clone()));
        }
        let bytes = postcard::to_allocvec(req).map_err(|e| {
            self.poison(ComputeError::Invalid(format!("encoding the request: {e}")))
        })?;
        // The guest needs room for the request and its own work; a quarter of its memory is
        // plenty for any sane request.
        let max = self.engine.config.memory_bytes_max / 4;
        if bytes.len() > max {
            return Err(ComputeError::RequestTooLarge {
                bytes: bytes.len(),
                max,
            });
        }
        self.store.data_mut().failure = None;
        self.store.data_mut().limits.denied = false;
        self.store
            .set_epoch_deadline(self.engine.deadline_ticks(timeout));
        let called = self.call_exec(&bytes);
        // A failed import explains everything that followed it, a trap included.
        if let Some(failure) = self.store.data_mut().failure.take() {
            return Err(self.poison(match failure {
                ImportFailure::Backend(e) => ComputeError::Backend(e),
                ImportFailure::Invalid(m) => ComputeError::Invalid(m),
            }));
        }
        let response = match called {
            Ok(r) => r,
            Err(CallError::Invalid(m)) => return Err(self.poison(ComputeError::Invalid(m))),
            Err(CallError::Wasm(e)) => {
                let err = if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    ComputeError::Timeout { limit: timeout }
                } else if self.store.data().limits.denied {
                    ComputeError::OutOfMemory {
                        limit_bytes: self.engine.config.memory_bytes_max,
                    }
                } else {
                    ComputeError::Trap(trap_message(&e))
                };
                return Err(self.poison(err));
            }
        };
        if let ExecResponse::Err(err) = &response {
            if err.kind == ExecErrorKind::Storage {
                // The guest saw storage fail but no import did: the VFS refused something that
                // breaks its model. Its state is suspect.
                let detail = format!("storage failure inside the guest: {}", err.message);
                return Err(self.poison(ComputeError::Invalid(detail)));
            }
        }
        Ok(response)
    }

    /// Whether an earlier failure made this instance unusable (and why).
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Counters since start.
    pub fn stats(&self) -> ComputeStats {
        self.store.data().stats
    }

    fn poison(&mut self, err: ComputeError) -> ComputeError {
        if err.poisons() && self.poisoned.is_none() {
            self.poisoned = Some(err.to_string());
        }
        err
    }

    fn call_exec(&mut self, request: &[u8]) -> Result<ExecResponse, CallError> {
        let store = &mut self.store;
        let ex = &self.exports;
        let len = u32::try_from(request.len())
            .map_err(|_| CallError::Invalid("request over 4 GiB".into()))?;
        let ptr = ex.alloc.call(&mut *store, len)?;
        ex.memory
            .write(&mut *store, ptr as usize, request)
            .map_err(|e| {
                CallError::Invalid(format!("bx_alloc returned an unusable buffer: {e}"))
            })?;
        let packed = ex.exec.call(&mut *store, (ptr, len))?;
        ex.free.call(&mut *store, (ptr, len))?;
        let (rptr, rlen) = ((packed >> 32) as u32, packed as u32);
        let data = ex.memory.data(&*store);
        let response = data
            .get(rptr as usize..rptr as usize + rlen as usize)
            .ok_or_else(|| {
                CallError::Invalid(format!(
                    "bx_exec response {rptr:#x}+{rlen} is outside memory"
                ))
            })
            .and_then(|bytes| {
                postcard::from_bytes::<ExecResponse>(bytes)
                    .map_err(|e| CallError::Invalid(format!("undecodable bx_exec response: {e}")))
            })?;
        ex.free.call(&mut *store, (rptr, rlen))?;
        Ok(response)
    }
}

/// What a trap was, without the wasm backtrace (frames of a stripped module say nothing): the
/// trap code, or the error a host import trapped with.
fn trap_message(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => e.root_cause().to_string(),
    }
}
