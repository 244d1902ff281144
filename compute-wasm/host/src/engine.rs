//! The shared, compile-once part of every compute: wasmtime engine, module, imports, ticker.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig,
};

use crate::error::ComputeError;
use crate::imports::{self, HostState};

/// The SQLite guest module, built by `build.rs` from `compute-wasm/guest`.
pub static GUEST_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/compute_guest.wasm"));

/// Most function-table slots the guest may declare. The guest (SQLite + Rust) uses about 2,000;
/// the pool reserves this many per instance.
const TABLE_ELEMENTS_MAX: usize = 8192;

/// How the engine is set up. [`EngineConfig::default`] suits a gateway.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most computes alive at once (slots of the pooling allocator; each reserves virtual
    /// address space, not memory). Starting one more fails with [`ComputeError::Startup`].
    pub max_instances: u32,
    /// Linear-memory cap of one compute. SQLite's page cache (`cache_pages`) lives inside it; a
    /// guest that needs more fails its statement or traps.
    pub memory_bytes_max: usize,
    /// How often the ticker advances the epoch: the granularity of statement deadlines.
    pub epoch_tick: Duration,
    /// Deadline for instantiating a compute and opening its volume.
    pub startup_timeout: Duration,
    /// Native stack the guest may use. SQLite recurses about 0.7 KiB per level of expression
    /// depth and allows 1000 levels, so 1 MiB lets it reach its own limit (an SQL error) before
    /// wasmtime's (a trap). **The thread calling [`Compute::exec`](crate::Compute::exec) needs
    /// this much stack plus its own**: Rust's default of 2 MiB for spawned threads is enough;
    /// do not raise this past what the calling threads have.
    pub wasm_stack_bytes_max: usize,
    /// Where wasmtime caches the compiled module across processes (`None`: compile every time
    /// the engine is created, about a second).
    pub module_cache_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            memory_bytes_max: 256 << 20,
            epoch_tick: Duration::from_millis(10),
            startup_timeout: Duration::from_secs(10),
            wasm_stack_bytes_max: 1 << 20,
            module_cache_dir: None,
        }
    }
}

/// The compiled guest and everything instances share. Clone it freely (it is an `Arc`); the
/// ticker thread stops when the engine and every compute started from it are gone.
#[derive(Clone)]
pub struct ComputeEngine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) config: EngineConfig,
    compile_time: Duration,
    _ticker: Ticker,
}

impl ComputeEngine {
    /// Compiles the guest (about a second, or a cache hit with
    /// [`EngineConfig::module_cache_dir`]) and starts the epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self, ComputeError> {
        let startup =
            |what: &str, e: wasmtime::Error| ComputeError::Startup(format!("{what}: {e:#}"));
        if config.max_instances == 0 || config.epoch_tick.is_zero() {
            return Err(ComputeError::Startup(
                "max_instances and epoch_tick must be non-zero".into(),
            ));
        }
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .table_elements(TABLE_ELEMENTS_MAX)
            .max_memory_size(config.memory_bytes_max);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .max_wasm_stack(config.wasm_stack_bytes_max)
            .cranelift_opt_level(OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = &config.module_cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            let cache = wasmtime::Cache::new(cache).map_err(|e| startup("module cache", e))?;
            wasm.cache(Some(cache));
        }
        let engine = Engine::new(&wasm).map_err(|e| startup("creating the engine", e))?;
        let started = Instant::now();
        let module =
            Module::new(&engine, GUEST_WASM).map_err(|e| startup("compiling the guest", e))?;
        let compile_time = started.elapsed();
        let mut linker = Linker::new(&engine);
        imports::define(&mut linker).map_err(|e| startup("linking imports", e))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| startup("resolving the guest's imports", e))?;
        let ticker = Ticker::start(engine.clone(), config.epoch_tick)?;
        tracing::debug!(
            compile_ms = compile_time.as_millis() as u64,
            "compute module ready"
        );
        Ok(Self {
            inner: Arc::new(EngineInner {
                engine,
                pre,
                config,
                compile_time,
                _ticker: ticker,
            }),
        })
    }

    /// How long compiling (or loading from the cache) the guest took.
    pub fn compile_time(&self) -> Duration {
        self.inner.compile_time
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }
}

impl EngineInner {
    /// Epoch ticks for a deadline `timeout` from now: never early, at most one tick late.
    pub(crate) fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = self.config.epoch_tick.as_nanos().max(1);
        let ticks = timeout.as_nanos().div_ceil(tick).saturating_add(1);
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

/// Advances the engine's epoch every `tick`; a store whose deadline passes traps at its next
/// loop back-edge or function entry.
struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Ticker, ComputeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("compute-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| ComputeError::Startup(format!("starting the epoch ticker: {e}")))?;
        Ok(Ticker {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}
