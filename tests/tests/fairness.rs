//! Fairness between tenants (issue 15, budgets): one tenant flooding the gateway from many
//! clients with CPU-heavy statements and large results must not slow another tenant's point
//! reads much, and must itself be held to its budget of requests in flight (`429 rate_limited`).
//!
//! Tenant A: [`FLOOD_CLIENTS`] clients, each sending, back to back, either a recursive CTE that
//! counts to a few hundred thousand (CPU in A's compute) or a query returning about 4 MB of rows
//! (memory and encoding in the gateway). A's budget is [`TENANT_INFLIGHT_REQUESTS`] requests,
//! a third of its clients, so A gets refusals; a refused client retries after a short pause (an
//! impatient client, not one that honours `Retry-After: 1`).
//!
//! Tenant B: one client, point reads by primary key, [`SAMPLES`] timed while A is idle and
//! [`SAMPLES`] while A floods, in the same run. B's p99 under the flood must stay within twice
//! its idle p99, plus [`SLACK`] (sub-millisecond figures are noise-dominated: a few scheduler
//! wake-ups on a loaded two-core machine). B gets no refusal.
//!
//! Making the comparison robust: the samples are taken in [`ROUNDS`] rounds, each idle then
//! flooded (A's flood pauses and drains before each idle part), so that whatever else loads the
//! machine weighs on both figures alike; B's client has its own thread and runtime, so the
//! flood's clients in this process never delay it; B's reads are spaced out so that they sample
//! seconds of the flood, not a burst. What this checks is isolation, not speed: the figures are
//! printed either way.

use borealis_tests::cluster::{ClusterOptions, TestCluster};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A's budget of requests in flight (`BOREALIS_TENANT_INFLIGHT_REQUESTS`).
const TENANT_INFLIGHT_REQUESTS: usize = 8;
/// A's concurrent clients: three times its budget.
const FLOOD_CLIENTS: usize = 3 * TENANT_INFLIGHT_REQUESTS;
/// B's timed point reads, idle and under the flood each.
const SAMPLES: usize = 200;
/// Rounds of (idle, flooded) measurements the samples are split into.
const ROUNDS: usize = 4;
/// Absolute slack on the p99 bound.
const SLACK: Duration = Duration::from_millis(5);
/// B's pause between point reads, so that its samples spread over seconds of the flood.
const PACE: Duration = Duration::from_millis(15);
/// Rows in B's table.
const B_ROWS: i64 = 1000;
/// A's CPU-heavy statement: a recursive count, no rows kept.
const HEAVY_SQL: &str = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                         WHERE x < 300000) SELECT count(*) FROM n";
/// Rows of A's large result, about 110 bytes each (about 4 MB of JSON).
const LARGE_ROWS: usize = 30_000;
const LARGE_SQL: &str = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                         WHERE x < 30000) SELECT x, printf('%0100d', x) FROM n";
/// How long a refused flood client waits before it sends again.
const REFUSED_PAUSE: Duration = Duration::from_millis(50);

/// Tallies of A's answers, and the switch that pauses its clients.
#[derive(Default)]
struct Flood {
    ok: AtomicU64,
    rate_limited: AtomicU64,
    /// Refusals that carried `Retry-After`.
    retry_after: AtomicU64,
    other: AtomicU64,
    paused: AtomicBool,
    stop: AtomicBool,
}

async fn flood_client(
    http: reqwest::Client,
    url: String,
    token: String,
    sql: &'static str,
    flood: Arc<Flood>,
) {
    while !flood.stop.load(Ordering::Relaxed) {
        if flood.paused.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let resp = http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({ "sql": sql }))
            .send()
            .await;
        let Ok(resp) = resp else {
            flood.other.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let status = resp.status().as_u16();
        let retry_after = resp.headers().contains_key(reqwest::header::RETRY_AFTER);
        // Read the whole answer (that is the load), but do not parse a large one.
        let bytes = resp.bytes().await.unwrap_or_default();
        match status {
            200 => {
                flood.ok.fetch_add(1, Ordering::Relaxed);
            }
            429 => {
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                assert_eq!(
                    body.pointer("/error/code").and_then(Value::as_str),
                    Some("rate_limited"),
                    "a 429 answer: {body}"
                );
                flood.rate_limited.fetch_add(1, Ordering::Relaxed);
                if retry_after {
                    flood.retry_after.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(REFUSED_PAUSE).await;
            }
            _ => {
                eprintln!(
                    "flood answer {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                );
                flood.other.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Tenant B's client, on its own thread with its own runtime and connection.
struct Prober {
    jobs: std::sync::mpsc::Sender<(usize, tokio::sync::oneshot::Sender<Vec<Duration>>)>,
}

impl Prober {
    fn start(url: String, token: String) -> Prober {
        let (jobs, rx) = std::sync::mpsc::channel::<(usize, tokio::sync::oneshot::Sender<_>)>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("prober runtime");
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client");
            let mut next = 0i64;
            while let Ok((n, reply)) = rx.recv() {
                let latencies = rt.block_on(point_reads(&http, &url, &token, n, &mut next));
                let _ = reply.send(latencies);
            }
        });
        Prober { jobs }
    }

    /// `n` point reads of B, one after another, [`PACE`] apart: their latencies. Every one must
    /// be answered (a refusal or an error fails the test).
    async fn measure(&self, n: usize) -> Vec<Duration> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs.send((n, tx)).expect("prober thread");
        rx.await.expect("the prober panicked (see above)")
    }
}

async fn point_reads(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    n: usize,
    next: &mut i64,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        tokio::time::sleep(PACE).await;
        *next += 1;
        let k = (*next * 7919) % B_ROWS + 1;
        let started = Instant::now();
        let resp = http
            .post(url)
            .bearer_auth(token)
            .json(&json!({"sql": "SELECT v FROM kv WHERE k = ?", "params": [k]}))
            .send()
            .await
            .expect("tenant B's point read");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("a JSON answer");
        latencies.push(started.elapsed());
        assert_eq!(
            status, 200,
            "tenant B's point read was not answered: {body}"
        );
        assert_eq!(
            body.pointer("/results/0/rows/0/0"),
            Some(&json!(format!("value {k}"))),
            "{body}"
        );
    }
    latencies
}

/// Waits until the gateway's gauge `borealis_gateway_requests_in_flight` satisfies `done`.
async fn wait_in_flight(c: &TestCluster, what: &str, done: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = c
            .gateway_metric("borealis_gateway_requests_in_flight")
            .await
            .expect("the gateway's requests_in_flight gauge");
        if done(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {n} requests in flight after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_is_held_to_its_budget_and_does_not_slow_another() {
    let started = Instant::now();
    let c = TestCluster::start_with(ClusterOptions {
        env: vec![(
            "BOREALIS_TENANT_INFLIGHT_REQUESTS".into(),
            TENANT_INFLIGHT_REQUESTS.to_string(),
        )],
        ..ClusterOptions::default()
    })
    .await;
    let a = c.create_tenant("a").await;
    let b = c.create_tenant("b").await;
    c.sql("b", &b, "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)")
        .await
        .ok();
    c.sql_params(
        "b",
        &b,
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) \
         INSERT INTO kv SELECT x, 'value ' || x FROM n",
        json!([B_ROWS]),
    )
    .await
    .ok();
    // Both computes warm (no cold start in any figure), and A's statements fit its limits.
    c.sql("a", &a, HEAVY_SQL).await.ok();
    let large = c.sql("a", &a, LARGE_SQL).await.ok();
    assert_eq!(large.rows().len(), LARGE_ROWS);
    let prober = Prober::start(format!("{}/v1/tenants/b/sql", c.url), b.clone());
    prober.measure(20).await;

    let flood = Arc::new(Flood {
        paused: AtomicBool::new(true),
        ..Flood::default()
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let url = format!("{}/v1/tenants/a/sql", c.url);
    let clients: Vec<_> = (0..FLOOD_CLIENTS)
        .map(|i| {
            let sql = if i % 2 == 0 { HEAVY_SQL } else { LARGE_SQL };
            tokio::spawn(flood_client(
                http.clone(),
                url.clone(),
                a.clone(),
                sql,
                flood.clone(),
            ))
        })
        .collect();

    let (mut idle, mut loaded) = (Vec::new(), Vec::new());
    let mut flooded_for = Duration::ZERO;
    for round in 0..ROUNDS {
        // Idle: A's flood paused and drained (B has nothing in flight between its reads).
        flood.paused.store(true, Ordering::Relaxed);
        wait_in_flight(&c, "draining A's flood", |n| n == 0.0).await;
        let idle_round = prober.measure(SAMPLES / ROUNDS).await;
        // Flooded: A at its budget (B adds at most one more).
        flood.paused.store(false, Ordering::Relaxed);
        wait_in_flight(&c, "A's flood reaching its budget", |n| {
            n >= TENANT_INFLIGHT_REQUESTS as f64
        })
        .await;
        let t = Instant::now();
        let loaded_round = prober.measure(SAMPLES / ROUNDS).await;
        flooded_for += t.elapsed();
        let (mut i, mut l) = (idle_round.clone(), loaded_round.clone());
        i.sort();
        l.sort();
        println!(
            "round {round}: B's max idle {:.2} ms, under the flood {:.2} ms",
            ms(i[i.len() - 1]),
            ms(l[l.len() - 1])
        );
        idle.extend(idle_round);
        loaded.extend(loaded_round);
    }
    flood.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("flood client");
    }
    idle.sort();
    loaded.sort();

    let (ok, refused, retry_after, other) = (
        flood.ok.load(Ordering::Relaxed),
        flood.rate_limited.load(Ordering::Relaxed),
        flood.retry_after.load(Ordering::Relaxed),
        flood.other.load(Ordering::Relaxed),
    );
    let refusals_metric = c
        .gateway_metric("borealis_gateway_requests_refused_total")
        .await
        .unwrap_or(0.0);
    let (idle_p99, loaded_p99) = (p99(&idle), p99(&loaded));
    let bound = idle_p99 * 2 + SLACK;
    println!(
        "tenant B point reads, p50 / p99 / max: idle {:.2} / {:.2} / {:.2} ms; under A's flood \
         {:.2} / {:.2} / {:.2} ms (bound {:.2} ms), {} samples each, {:.1} s of flood sampled",
        ms(idle[idle.len() / 2]),
        ms(idle_p99),
        ms(idle[idle.len() - 1]),
        ms(loaded[loaded.len() / 2]),
        ms(loaded_p99),
        ms(loaded[loaded.len() - 1]),
        ms(bound),
        loaded.len(),
        flooded_for.as_secs_f64()
    );
    println!(
        "tenant A ({FLOOD_CLIENTS} clients, budget {TENANT_INFLIGHT_REQUESTS}): {ok} answered, \
         {refused} refused rate_limited ({retry_after} with Retry-After), {other} other; \
         borealis_gateway_requests_refused_total{{reason=\"tenant_requests\"}} = \
         {refusals_metric}; test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        refused > 0,
        "tenant A was never refused: the budget was not exercised"
    );
    assert_eq!(retry_after, refused, "every refusal carries Retry-After");
    assert!(
        refusals_metric >= refused as f64,
        "the refusals are counted in the metric ({refusals_metric} < {refused})"
    );
    assert!(ok > 0, "tenant A's admitted requests were answered");
    assert_eq!(other, 0, "tenant A got only answers and refusals");
    assert!(
        loaded_p99 <= bound,
        "tenant B's p99 under A's flood ({:.2} ms) is more than twice its idle p99 ({:.2} ms) \
         plus {} ms",
        ms(loaded_p99),
        ms(idle_p99),
        SLACK.as_millis()
    );
}
