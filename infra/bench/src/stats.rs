//! Latency samples, percentiles, and the closed-loop driver every concurrency figure comes from.
//!
//! **Closed loop.** Each of `clients` clients issues one operation, waits for its answer, and
//! issues the next, for a fixed wall-clock time. Throughput is the number of operations that
//! succeeded divided by the time from the start until the last client's last answer; latency is
//! measured per operation from just before the request to just after the answer, so it
//! includes any queueing inside the system (lock waits, a busy compute, group commit).
//! A closed loop cannot show coordinated-omission stalls the way an open-loop load generator
//! would: a system that stalls for a second simply issues fewer operations. The p99 is still
//! honest about the operations that were issued.
//!
//! Percentiles are exact (every sample is kept and sorted), nearest-rank.

use borealis_utils::LockExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every latency sample of one measurement.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
    sorted: bool,
}

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.samples.push(d);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The sum of every sample.
    pub fn total(&self) -> Duration {
        self.samples.iter().sum()
    }

    /// Nearest-rank percentile, `p` in 0..=100; zero when there are no samples.
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        self.samples[rank.clamp(1, self.samples.len()) - 1]
    }

    pub fn p50(&mut self) -> Duration {
        self.percentile(50.0)
    }

    pub fn p99(&mut self) -> Duration {
        self.percentile(99.0)
    }
}

/// The outcome of one closed-loop run.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub ok: u64,
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// Milliseconds of CPU per 1,000 completed operations, per kind of process, then `"total"`
    /// ([`crate::cpu`]); empty when not measured.
    pub cpu_ms_per_1000: Vec<(String, f64)>,
}

impl Run {
    pub fn per_sec(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.ok as f64 / self.elapsed.as_secs_f64()
        }
    }

    fn absorb(&mut self, other: Run) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }
}

/// Runs `clients` async clients in a closed loop for `duration`. `op(client, seq)` performs one
/// operation; its error is counted, not fatal (the caller judges the error count).
pub async fn drive_async<F, Fut>(clients: usize, duration: Duration, op: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match op(client, seq).await {
                    Ok(()) => {
                        run.ok += 1;
                        run.latencies.push(t0.elapsed());
                    }
                    Err(e) => {
                        run.errors += 1;
                        if run.first_error.is_none() {
                            run.first_error = Some(format!("{e:#}"));
                        }
                    }
                }
                seq += 1;
            }
            run
        }));
    }
    let mut total = Run::default();
    for t in tasks {
        match t.await {
            Ok(run) => total.absorb(run),
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert(format!("client task failed: {e}"));
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Runs `clients` OS threads in a closed loop for `duration` (for in-process SQLite, whose calls
/// block). `make_client(i)` builds client `i`'s state (its connection) on its own thread before
/// the clock starts; `op(&mut state, seq)` performs one operation.
pub fn drive_threads<S, M, F>(clients: usize, duration: Duration, make_client: M, op: F) -> Run
where
    M: Fn(usize) -> anyhow::Result<S> + Send + Sync + 'static,
    F: Fn(&mut S, u64) -> anyhow::Result<()> + Send + Sync + 'static,
{
    let make_client = Arc::new(make_client);
    let op = Arc::new(op);
    // Every client opens its connection, then all start together.
    let barrier = Arc::new(std::sync::Barrier::new(clients + 1));
    let start_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut threads = Vec::with_capacity(clients);
    for client in 0..clients {
        let (make_client, op, barrier, start_at) = (
            make_client.clone(),
            op.clone(),
            barrier.clone(),
            start_at.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut run = Run::default();
            let state = make_client(client);
            barrier.wait();
            let mut state = match state {
                Ok(s) => s,
                Err(e) => {
                    run.errors += 1;
                    run.first_error = Some(format!("opening client {client}: {e:#}"));
                    return run;
                }
            };
            let started = start_at.locked().unwrap_or_else(Instant::now);
            let deadline = started + duration;
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match op(&mut state, seq) {
                    Ok(()) => {
                        run.ok += 1;
                        run.latencies.push(t0.elapsed());
                    }
                    Err(e) => {
                        run.errors += 1;
                        if run.first_error.is_none() {
                            run.first_error = Some(format!("{e:#}"));
                        }
                    }
                }
                seq += 1;
            }
            run
        }));
    }
    let started = Instant::now();
    *start_at.locked() = Some(started);
    barrier.wait();
    let mut total = Run::default();
    for t in threads {
        match t.join() {
            Ok(run) => total.absorb(run),
            Err(_) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert("a client thread panicked".into());
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// A small deterministic PRNG (splitmix64): the same seed gives the same workload on every
/// system.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant at these sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.push(Duration::from_millis(ms));
        }
        assert_eq!(l.p50(), Duration::from_millis(50));
        assert_eq!(l.p99(), Duration::from_millis(99));
        assert_eq!(l.percentile(100.0), Duration::from_millis(100));
        assert_eq!(Latencies::default().p99(), Duration::ZERO);
    }

    #[test]
    fn thread_driver_counts_every_operation() {
        let run = drive_threads(
            3,
            Duration::from_millis(50),
            |_| Ok(0u64),
            |n, seq| {
                *n += 1;
                if seq % 2 == 1 {
                    anyhow::bail!("odd");
                }
                Ok(())
            },
        );
        assert!(run.ok > 0 && run.errors > 0);
        assert_eq!(run.latencies.len() as u64, run.ok);
        assert_eq!(run.first_error.as_deref(), Some("odd"));
    }
}
