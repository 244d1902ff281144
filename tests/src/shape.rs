//! The two shapes of volume that drills 1–4 and the differential test run on (issue #17: "pass on
//! a multi-segment volume as well as a one-segment one").
//!
//! - [`Shape::OneSegment`]: the default cluster, six safekeepers, two pageservers and 10 GiB
//!   segments, so a test's volume is one segment on one protection group.
//! - [`Shape::ManySegments`]: `--safekeepers 9 --pageservers 3 --segment-size 1MiB`, and the
//!   volume padded past its first segment before the test's own tables grow, so its commits are
//!   MTRs that span protection groups: a bank transfer updates `accounts` (segment 0) and appends
//!   to `history` (segment 1 and on), and every commit touches page 1 (SQLite's header,
//!   segment 0).
//!
//! The faults are named by role, not by node id, so one drill body serves both shapes: "a member
//! of segment 0's group in AZ b" is `sk-b1` on the six-node cluster and whichever of the pool's
//! AZ b nodes rendezvous hashing put in that group on the nine-node one
//! ([`segment_groups`] asks the gateway).

use crate::cluster::{ClusterOptions, TestCluster};
use crate::workload::Workload;
use serde_json::json;
use std::collections::BTreeMap;

/// Segment size of [`Shape::ManySegments`]: the smallest the cluster accepts.
pub const MANY_SEGMENTS_SEGMENT_SIZE: &str = "1MiB";
/// Safekeepers and pageservers of [`Shape::ManySegments`].
pub const MANY_SEGMENTS_POOL: (usize, usize) = (9, 3);
/// Bytes written into a padding table by [`Shape::spread_workload`]: the workload's `history`
/// and `items` then grow from segment 1 on, while `accounts` stays in segment 0.
const WORKLOAD_PAD_BYTES: usize = 1280 << 10;
/// Rows of one padding transaction, and their payload.
const PAD_ROWS: usize = 64;
const PAD_ROW_BYTES: usize = 4000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    OneSegment,
    ManySegments,
}

impl Shape {
    pub const ALL: [Shape; 2] = [Shape::OneSegment, Shape::ManySegments];

    pub fn name(self) -> &'static str {
        match self {
            Shape::OneSegment => "one segment",
            Shape::ManySegments => "many segments (9 safekeepers, 3 pageservers, 1 MiB segments)",
        }
    }

    /// The cluster of this shape, on top of `base` (its idle timeout, environment, ...).
    pub fn options(self, base: ClusterOptions) -> ClusterOptions {
        match self {
            Shape::OneSegment => base,
            Shape::ManySegments => ClusterOptions {
                segment_size: Some(MANY_SEGMENTS_SEGMENT_SIZE.into()),
                pool: Some(MANY_SEGMENTS_POOL),
                ..base
            },
        }
    }

    pub async fn start(self) -> TestCluster {
        TestCluster::start_with(self.options(ClusterOptions::default())).await
    }

    /// After [`Workload::setup`]: on [`Shape::ManySegments`], fills a padding table of its own
    /// (`pad`, which no checker reads) with 1.25 MiB, so that the pages the load appends lie past
    /// segment 0 while the accounts stay in it. Nothing on [`Shape::OneSegment`].
    pub async fn spread_workload(self, c: &TestCluster, w: &Workload) {
        if self == Shape::ManySegments {
            pad(c, &w.tenant, &c.admin_token, WORKLOAD_PAD_BYTES).await;
            let groups = segment_groups(c, &w.tenant).await;
            assert!(
                groups.len() >= 2,
                "the padded volume holds data in {} segment(s), 2 at least expected",
                groups.len()
            );
        }
    }

    /// Before a test creates its own tables on tenant `tenant`: on [`Shape::ManySegments`],
    /// fills a padding table with `bytes`, so that the test's tables start at that offset.
    pub async fn pad_before_tables(self, c: &TestCluster, tenant: &str, token: &str, bytes: usize) {
        if self == Shape::ManySegments {
            pad(c, tenant, token, bytes).await;
        }
    }
}

/// Creates table `pad` (if missing) and appends about `bytes` of rows to it.
async fn pad(c: &TestCluster, tenant: &str, token: &str, bytes: usize) {
    c.sql(
        tenant,
        token,
        "CREATE TABLE IF NOT EXISTS pad (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
    )
    .await
    .ok();
    let payload = "p".repeat(PAD_ROW_BYTES);
    let rows = bytes.div_ceil(PAD_ROW_BYTES);
    for chunk_start in (0..rows).step_by(PAD_ROWS) {
        let batch: Vec<_> = (chunk_start..rows.min(chunk_start + PAD_ROWS))
            .map(|_| json!({"sql": "INSERT INTO pad (payload) VALUES (?)", "params": [payload]}))
            .collect();
        c.request(
            reqwest::Method::POST,
            &format!("/v1/tenants/{tenant}/sql"),
            token,
            Some(json!({ "batch": batch })),
        )
        .await
        .ok();
    }
}

/// Each segment of tenant `name` that holds data, with its protection group as node ids in
/// member order (two per AZ: a, a, b, b, c, c), from the gateway's `GET /v1/tenants/{name}`.
pub async fn segment_groups(c: &TestCluster, name: &str) -> BTreeMap<u64, Vec<String>> {
    let status = c.tenant_status(name).await;
    let nodes = c.nodes();
    let id_of = |addr: &str| {
        nodes
            .iter()
            .find(|n| n.addr == addr)
            .map(|n| n.id.clone())
            .unwrap_or_else(|| panic!("no node has address {addr}"))
    };
    status["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /v1/tenants/{name} has no segments: {status}"))
        .iter()
        .map(|s| {
            let segment = s["segment"].as_u64().expect("segment number");
            let group = s["safekeepers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| id_of(a.as_str().unwrap_or("?")))
                .collect();
            (segment, group)
        })
        .collect()
}

/// The AZ of a safekeeper id (`sk-b2` → `b`).
pub fn az_of(id: &str) -> &str {
    id.strip_prefix("sk-").map_or("", |rest| &rest[..1])
}

/// The `nth` (from 0) member in AZ `az` of segment `segment`'s group.
pub fn member_in_az(
    groups: &BTreeMap<u64, Vec<String>>,
    segment: u64,
    az: &str,
    nth: usize,
) -> String {
    let group = groups
        .get(&segment)
        .unwrap_or_else(|| panic!("segment {segment} holds no data: {groups:?}"));
    group
        .iter()
        .filter(|id| az_of(id) == az)
        .nth(nth)
        .unwrap_or_else(|| {
            panic!("segment {segment}'s group {group:?} has no member {nth} in AZ {az}")
        })
        .clone()
}

/// Greedily, in their order, the members of `candidates` that, started again, leave every group of
/// `groups` with a write quorum (4 of 6) up, given the safekeepers in `down`.
pub fn restore_write_quorum(
    groups: &BTreeMap<u64, Vec<String>>,
    down: &[String],
    candidates: &[String],
) -> Vec<String> {
    let mut back: Vec<String> = Vec::new();
    let live = |g: &Vec<String>, back: &[String]| {
        g.iter()
            .filter(|id| !down.contains(id) || back.contains(id))
            .count()
    };
    for candidate in candidates {
        if groups.values().all(|g| live(g, &back) >= 4) {
            break;
        }
        if groups
            .values()
            .any(|g| live(g, &back) < 4 && g.contains(candidate))
        {
            back.push(candidate.clone());
        }
    }
    assert!(
        groups.values().all(|g| live(g, &back) >= 4),
        "starting {candidates:?} again does not give every group a write quorum: {groups:?}, down {down:?}"
    );
    back
}

/// One cluster at a time within a test executable: a test that runs both shapes holds this for
/// each, so two nine-node clusters never share the two cores (the drills' timings assume one).
pub async fn one_cluster_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(gs: &[(u64, [&str; 6])]) -> BTreeMap<u64, Vec<String>> {
        gs.iter()
            .map(|(s, g)| (*s, g.iter().map(|x| x.to_string()).collect()))
            .collect()
    }

    #[test]
    fn restore_write_quorum_starts_what_each_group_needs() {
        let down: Vec<String> = ["sk-c1", "sk-c2", "sk-c3", "sk-b1"]
            .map(String::from)
            .to_vec();
        let az_c: Vec<String> = ["sk-c1", "sk-c2", "sk-c3"].map(String::from).to_vec();
        // One group: one AZ c member is enough.
        let one = groups(&[(0, ["sk-a1", "sk-a2", "sk-b1", "sk-b2", "sk-c1", "sk-c2"])]);
        assert_eq!(restore_write_quorum(&one, &down, &az_c), ["sk-c1"]);
        // Two groups that share no AZ c member: one each.
        let two = groups(&[
            (0, ["sk-a1", "sk-a2", "sk-b1", "sk-b2", "sk-c1", "sk-c3"]),
            (1, ["sk-a1", "sk-a3", "sk-b1", "sk-b3", "sk-c2", "sk-c3"]),
        ]);
        assert_eq!(restore_write_quorum(&two, &down, &az_c), ["sk-c1", "sk-c2"]);
        assert_eq!(az_of("sk-b2"), "b");
        assert_eq!(member_in_az(&two, 1, "c", 1), "sk-c3");
    }
}
