//! The pageserver against real `safekeeper` processes, with this test playing the writer
//! (`Hello`, then `Append`s). Ignored by default: it needs a safekeeper binary, which this crate
//! does not build. Run it with
//!
//! ```text
//! cargo build -p safekeeper
//! SAFEKEEPER_BIN=target/debug/safekeeper cargo test -p pageserver --test interop_safekeeper -- --ignored
//! ```

mod support;

use borealis_auth::{ClusterKeys, Role};
use borealis_core::history::EpochStart;
use borealis_core::{Lsn, SegmentId, SegmentLayout, TenantId};
use borealis_wire::{Body, Client};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{free_addr, get_page, History, PageServerProcess};
use tokio::sync::mpsc;

struct Safekeeper {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Safekeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Six safekeepers peered with each other.
async fn start_safekeepers(bin: &str, keys: &ClusterKeys) -> Vec<Safekeeper> {
    let addrs: Vec<String> = (0..6).map(|_| free_addr()).collect();
    let mut out = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, a)| format!("sk-{j}={a}"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        // A new node (`safekeeper::rebuild`): it never acknowledged anything.
        std::fs::write(dir.path().join("new-node"), b"").unwrap();
        let child = Command::new(bin)
            .args([
                "--id",
                &format!("sk-{i}"),
                "--listen",
                addr,
                "--http",
                &free_addr(),
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--peers", &peers.join(",")])
            .arg("--auth-verifying-key")
            .arg(keys.verifying_key_path())
            .arg("--token-file")
            .arg(
                keys.node_token_file(&format!("sk-{i}"), Role::Safekeeper)
                    .unwrap(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a safekeeper");
        out.push(Safekeeper {
            child,
            addr: addr.clone(),
            _dir: dir,
        });
    }
    for sk in &out {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(&sk.addr).await.is_err() {
            assert!(Instant::now() < deadline, "safekeeper did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    out
}

/// A writer of epoch 1 connected to every safekeeper.
struct Writer {
    tenant: TenantId,
    members: Vec<(Client, mpsc::Receiver<Body>)>,
}

impl Writer {
    async fn connect(tenant: TenantId, sks: &[Safekeeper], token: &str) -> Writer {
        let mut members = Vec::new();
        for sk in sks {
            let (tx, rx) = mpsc::channel(1024);
            let c = Client::connect(&sk.addr, token, Duration::from_secs(2), Some(tx))
                .await
                .unwrap();
            let history = vec![EpochStart {
                epoch: 1,
                start: Lsn(0),
            }];
            let hello = Body::Hello {
                tenant,
                epoch: 1,
                epoch_start_lsn: Lsn(0),
                history,
            };
            let answer = c.call(hello, Duration::from_secs(5)).await.unwrap();
            assert!(matches!(answer, Body::HelloOk { .. }), "{answer:?}");
            members.push((c, rx));
        }
        Writer { tenant, members }
    }

    /// Appends records of segment 0 to every member and waits until all acknowledge `upto`.
    async fn append(&mut self, records: &[borealis_core::redo::RedoRecord], vdl: Lsn) {
        let mut bytes = Vec::new();
        records.iter().for_each(|r| r.encode_into(&mut bytes));
        let upto = records.last().unwrap().lsn;
        for (c, _) in &self.members {
            let body = Body::Append {
                tenant: self.tenant,
                segment: SegmentId(0),
                epoch: 1,
                vdl,
                records: bytes.clone(),
            };
            c.send(body).await.unwrap();
        }
        for (_, acks) in &mut self.members {
            loop {
                match tokio::time::timeout(Duration::from_secs(10), acks.recv()).await {
                    Ok(Some(Body::Ack { scl, .. })) if scl >= upto => break,
                    Ok(Some(Body::Ack { .. })) => continue,
                    other => panic!("no ack up to {upto}: {other:?}"),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SAFEKEEPER_BIN (a built safekeeper binary)"]
async fn pages_from_real_safekeepers() {
    let Some(bin) = std::env::var_os("SAFEKEEPER_BIN") else {
        eprintln!("SAFEKEEPER_BIN not set; skipping");
        return;
    };
    let keys_root = tempfile::tempdir().unwrap();
    let keys = ClusterKeys::ensure(keys_root.path()).unwrap();
    let sks = start_safekeepers(bin.to_str().unwrap(), &keys).await;
    let tenant = TenantId(0x1f);
    let mut h = History::new(SegmentLayout::default(), 11);
    for i in 0..40u32 {
        h.change(i % 6);
    }
    let mut writer = Writer::connect(tenant, &sks, &keys.all_roles_token()).await;
    writer.append(&h.records[..30], Lsn(0)).await;
    // The second append tells every member that 30 is durable.
    writer.append(&h.records[30..], Lsn(30)).await;

    let addrs: Vec<String> = sks.iter().map(|s| s.addr.clone()).collect();
    let ps = PageServerProcess::start_with_keys(
        &addrs,
        &["--getpage-wait", "1s"],
        Some(keys_root.path()),
    )
    .await;
    let c = ps.client().await;
    assert_eq!(
        get_page(&c, tenant, 0, Lsn(5), 1).await.unwrap(),
        h.page_at(0, Lsn(5))
    );
    // The follower reaches the members' known VDL (30) by itself, and not beyond.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ps.status().await;
        let caught = status["tenants"][0]["segments"][0]["caught_up_to"]
            .as_u64()
            .unwrap();
        assert!(caught <= 30, "{status}");
        if caught == 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reached the known VDL: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for lsn in [30u64, 17, 40, 33] {
        for page in 0..7u32 {
            let got = get_page(&c, tenant, page, Lsn(lsn), 1).await.unwrap();
            assert_eq!(got, h.page_at(page, Lsn(lsn)), "page {page} at lsn {lsn}");
        }
    }
    // A reader of a newer epoch than every member's: the members may hold records that epoch
    // truncated, so nothing is read from them (Fenced) and the GetPage waits, then gives up.
    let err = get_page(&c, tenant, 0, Lsn(45), 2).await.unwrap_err();
    assert_eq!(err.kind(), borealis_core::ErrorKind::Unavailable, "{err}");
    assert!(
        ps.status().await["tenants"][0]["segments"][0]["last_problem"]
            .as_str()
            .unwrap()
            .contains("Fenced")
    );
}
