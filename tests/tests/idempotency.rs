//! `Idempotency-Key` (RFC 0014 §6) through a real cluster: a keyed write takes effect once,
//! whether its repeats come concurrently, one after another, or after the gateway was killed
//! and started again (a client retrying an unknown outcome); every answer for the key carries
//! the same results and `lsn`. Another request under the key is a conflict, a read records
//! nothing, and SQL cannot reach the records.
//!
//! One gateway: the failover between gateways of issue #20 is not built yet.

use std::time::Duration;

use borealis_tests::cluster::TestCluster;
use serde_json::{json, Value};

const TENANT: &str = "idem";

/// What a `.../sql` request answered, with the headers this test reads.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    replayed: bool,
}

impl Answer {
    fn lsn(&self) -> u64 {
        self.body["lsn"]
            .as_u64()
            .unwrap_or_else(|| panic!("no lsn in {}", self.body))
    }
    fn ok(self) -> Self {
        assert_eq!(self.status, 200, "{}", self.body);
        self
    }
    fn code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

async fn post(c: &TestCluster, token: &str, key: Option<&str>, body: Value) -> Answer {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/tenants/{TENANT}/sql", c.url))
        .bearer_auth(token)
        .json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        replayed,
    }
}

fn transfer(amount: i64) -> Value {
    json!({"batch": [
        {"sql": "INSERT INTO transfers(amount) VALUES (?)", "params": [amount]},
        {"sql": "UPDATE balance SET total = total + ?", "params": [amount]},
        {"sql": "SELECT total FROM balance"},
    ]})
}

async fn count(c: &TestCluster, token: &str) -> i64 {
    c.sql(TENANT, token, "SELECT count(*) FROM transfers")
        .await
        .ok()
        .scalar()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_write_takes_effect_once_across_duplicates_and_a_gateway_restart() {
    let c = TestCluster::start().await;
    let token = c.create_tenant(TENANT).await;
    c.batch(
        TENANT,
        &token,
        vec![
            json!({"sql": "CREATE TABLE transfers(id INTEGER PRIMARY KEY, amount INTEGER)"}),
            json!({"sql": "CREATE TABLE balance(total INTEGER)"}),
            json!({"sql": "INSERT INTO balance VALUES (0)"}),
        ],
    )
    .await
    .ok();

    // The same key twice at once: one runs, the other replays its answer.
    let (a, b) = tokio::join!(
        post(&c, &token, Some("t-1"), transfer(5)),
        post(&c, &token, Some("t-1"), transfer(5)),
    );
    let (a, b) = (a.ok(), b.ok());
    assert_eq!(a.body, b.body, "identical answers, lsn included");
    assert_eq!(
        [a.replayed, b.replayed].iter().filter(|r| **r).count(),
        1,
        "exactly one of the two ran"
    );
    assert_eq!(count(&c, &token).await, 1);
    let first = a;
    assert_eq!(
        first.body.pointer("/results/2/rows/0/0"),
        Some(&json!(5)),
        "{}",
        first.body
    );

    // Again, later: the same answer, nothing run.
    let again = post(&c, &token, Some("t-1"), transfer(5)).await.ok();
    assert!(again.replayed);
    assert_eq!(again.body, first.body);

    // The key with another request is refused, and runs nothing.
    let other = post(&c, &token, Some("t-1"), transfer(6)).await;
    assert_eq!(
        (other.status, other.code()),
        (409, "conflict"),
        "{}",
        other.body
    );
    assert_eq!(count(&c, &token).await, 1);

    // A keyed read records nothing: it runs again and sees what changed since.
    let read = json!({"sql": "SELECT count(*) FROM transfers"});
    let r1 = post(&c, &token, Some("r-1"), read.clone()).await.ok();
    post(&c, &token, Some("t-2"), transfer(1)).await.ok();
    let r2 = post(&c, &token, Some("r-1"), read.clone()).await.ok();
    assert!(!r1.replayed && !r2.replayed);
    assert_eq!(r1.body.pointer("/results/0/rows/0/0"), Some(&json!(1)));
    assert_eq!(r2.body.pointer("/results/0/rows/0/0"), Some(&json!(2)));

    // What is refused, and how.
    for (key, body, code, says) in [
        (
            Some("t-9"),
            json!({"sql": "SELECT * FROM _borealis_idempotency"}),
            "bad_request",
            "Borealis's own table",
        ),
        (
            None,
            json!({"sql": "DELETE FROM _borealis_idempotency"}),
            "bad_request",
            "Borealis's own table",
        ),
        (
            Some("t-9"),
            json!({"sql": "SELECT 1", "replica": true}),
            "bad_request",
            "replica",
        ),
        (
            Some("with space"),
            json!({"sql": "SELECT 1"}),
            "bad_request",
            "visible ASCII",
        ),
        (
            Some("t-9"),
            json!({"sql": "BEGIN"}),
            "bad_request",
            "transaction control",
        ),
    ] {
        let r = post(&c, &token, key, body.clone()).await;
        assert_eq!((r.status, r.code()), (400, code), "{body}: {}", r.body);
        let message = r.body.pointer("/error/message").and_then(Value::as_str);
        assert!(
            message.is_some_and(|m| m.contains(says)),
            "{body}: {}",
            r.body
        );
    }

    let recorded = c
        .gateway_metric("borealis_gateway_idempotency_keys_recorded_total")
        .await;
    let replays = c
        .gateway_metric("borealis_gateway_idempotent_replays_total")
        .await;
    assert_eq!(recorded, Some(2.0), "t-1 and t-2");
    assert_eq!(
        replays,
        Some(2.0),
        "t-1's concurrent duplicate and its repeat"
    );

    // A client that lost its answer retries after the gateway died and came back: the record
    // was recovered with the write, and answers the same.
    c.node("kill", "gateway");
    c.node("start", "gateway");
    c.wait_gateway_up(Duration::from_secs(30)).await;
    let after = post(&c, &token, Some("t-1"), transfer(5)).await.ok();
    assert!(after.replayed);
    assert_eq!(after.body, first.body, "the original lsn and results");
    assert_eq!(after.lsn(), first.lsn());
    assert_eq!(count(&c, &token).await, 2);
    let total = c
        .sql(TENANT, &token, "SELECT total FROM balance")
        .await
        .ok()
        .scalar();
    assert_eq!(total, 6, "t-1 applied once, t-2 once");
}
