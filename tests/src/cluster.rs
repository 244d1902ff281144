//! A local cluster started through `borealis up`, and a small client for its HTTP API.

use borealis_utils::LockExt;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestCluster {
    dir: tempfile::TempDir,
    up: Option<Child>,
    pub url: String,
    pub admin_token: String,
    http: reqwest::Client,
    idle_timeout: String,
    object_store: Option<String>,
    env: Vec<(String, String)>,
    segment_size: Option<String>,
    pool: Option<(usize, usize)>,
    /// What `borealis up` printed on stdout, every run.
    up_output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// How many times [`TestCluster::up`] plans a new cluster whose planned port was taken.
const UP_ATTEMPTS_MAX: usize = 3;

/// How to start a [`TestCluster`] (see [`TestCluster::start_with`]).
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `borealis up --idle-timeout`.
    pub idle_timeout: String,
    /// `borealis up --object-store` (default: the embedded filesystem store).
    pub object_store: Option<String>,
    /// Environment of `borealis up` and `borealis node`, inherited by every node they start
    /// (e.g. `PAGESERVER_CHECKPOINT_INTERVAL`).
    pub env: Vec<(String, String)>,
    /// `borealis up --segment-size` (default: the cluster's default, 10 GiB).
    pub segment_size: Option<String>,
    /// `borealis up --safekeepers N --pageservers M` (default: 6 and 2).
    pub pool: Option<(usize, usize)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            idle_timeout: "60s".into(),
            object_store: None,
            env: Vec::new(),
            segment_size: None,
            pool: None,
        }
    }
}

/// What an API call returned.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn rows(&self) -> Vec<Vec<Value>> {
        self.body
            .pointer("/results/0/rows")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .map(|row| row.as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The single integer of a one-row, one-column result.
    pub fn scalar(&self) -> i64 {
        let rows = self.rows();
        assert_eq!(rows.len(), 1, "expected one row: {:?}", self.body);
        rows[0][0]
            .as_i64()
            .unwrap_or_else(|| panic!("not an integer: {:?}", self.body))
    }
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.status, 200, "request failed: {}", self.body);
        self
    }
}

/// One process of the cluster, from `DIR/cluster.json` (docs/design.md §8).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    /// `safekeeper`, `pageserver` or `gateway`.
    pub role: String,
    pub az: String,
    pub addr: String,
    /// Admin HTTP address (`/status`, `/metrics`) of safekeepers and pageservers.
    pub http_addr: Option<String>,
    /// `None` while the node is down (after `borealis node stop|kill`).
    pub pid: Option<u32>,
    pub data_dir: PathBuf,
}

impl TestCluster {
    pub async fn start() -> TestCluster {
        Self::start_with_idle("60s").await
    }

    pub async fn start_with_idle(idle_timeout: &str) -> TestCluster {
        Self::start_with(ClusterOptions {
            idle_timeout: idle_timeout.to_string(),
            ..ClusterOptions::default()
        })
        .await
    }

    pub async fn start_with(options: ClusterOptions) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("borealis-test-")
            .tempdir()
            .expect("tempdir");
        let mut c = TestCluster {
            dir,
            up: None,
            url: String::new(),
            admin_token: String::new(),
            // Long enough for a cold scan of a few hundred MB in a debug build
            // (`tests/tests/many_segments.rs`); a hung request fails the test anyway.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(150))
                .build()
                .expect("http client"),
            idle_timeout: options.idle_timeout,
            object_store: options.object_store,
            env: options.env,
            segment_size: options.segment_size,
            pool: options.pool,
            up_output: Default::default(),
        };
        c.up().await;
        c
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The lines `borealis up` printed on stdout so far (every run of it).
    pub fn up_output(&self) -> Vec<String> {
        self.up_output.locked().clone()
    }

    /// Runs `borealis up` on the data directory and waits until it reports the cluster up.
    pub async fn up(&mut self) {
        assert!(self.up.is_none(), "cluster already up");
        let started = Instant::now();
        // A new cluster whose node lost its planned port to another cluster starting at the same
        // moment (ports are chosen at random and released before the nodes bind them:
        // `borealis_utils::ports`) is planned again on new ports: it holds nothing yet.
        let fresh = !self.dir.path().join("cluster.json").exists();
        let mut attempt = 1;
        let child = loop {
            match self.start_up_process().await {
                Ok(child) => break child,
                Err(why) if fresh && attempt < UP_ATTEMPTS_MAX && self.lost_a_port() => {
                    eprintln!("[borealis up] attempt {attempt}: {why}; a planned port was taken by another process: planning the new cluster again");
                    self.wipe_new_cluster();
                    attempt += 1;
                }
                Err(why) => panic!("{why} (see the output above)"),
            }
        };
        self.up = Some(child);
        let cluster: Value = serde_json::from_slice(
            &std::fs::read(self.dir.path().join("cluster.json")).expect("cluster.json"),
        )
        .expect("cluster.json parses");
        self.url = cluster["gateway"]["url"]
            .as_str()
            .expect("gateway url")
            .to_string();
        self.admin_token = cluster["admin_token"]
            .as_str()
            .expect("admin token")
            .to_string();
        eprintln!(
            "cluster up in {:.1} s at {}",
            started.elapsed().as_secs_f64(),
            self.url
        );
    }

    /// Runs `borealis up` and waits until it reports the cluster up (at most 180 s).
    async fn start_up_process(&mut self) -> Result<Child, String> {
        let mut command = Command::new(crate::bin_dir().join("borealis"));
        command
            .args(["up", "--data-dir"])
            .arg(self.dir.path())
            .args(["--idle-timeout", &self.idle_timeout]);
        if let Some(url) = &self.object_store {
            command.args(["--object-store", url]);
        }
        if let Some(size) = &self.segment_size {
            command.args(["--segment-size", size]);
        }
        if let Some((safekeepers, pageservers)) = self.pool {
            command.args([
                "--safekeepers",
                &safekeepers.to_string(),
                "--pageservers",
                &pageservers.to_string(),
            ]);
        }
        let mut child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting borealis up");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let output = self.up_output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[borealis up] {line}");
                output.locked().push(line.clone());
                if line.starts_with("Borealis is up") {
                    let _ = tx.send(());
                }
            }
        });
        let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(180)))
            .await
            .expect("join");
        match ready {
            Ok(()) => Ok(child),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().ok();
                Err(format!(
                    "borealis up exited before the cluster was up ({status:?})"
                ))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("the cluster did not come up within 180 s".to_string())
            }
        }
    }

    /// Whether a node's log says it could not bind its address.
    fn lost_a_port(&self) -> bool {
        let logs = self.dir.path().join("logs");
        std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path())
                    .is_ok_and(|text| text.contains("Address already in use"))
            })
    }

    /// Removes everything a failed first `borealis up` left in the data directory.
    fn wipe_new_cluster(&self) {
        for entry in std::fs::read_dir(self.dir.path())
            .expect("data dir")
            .flatten()
        {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
        }
    }

    /// Stops the whole cluster the way a user does (SIGINT to `borealis up`) and waits for it.
    #[allow(unsafe_code)] // libc calls, each with its SAFETY comment
    pub fn down(&mut self) {
        if let Some(mut child) = self.up.take() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "borealis up exited with {status}");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("borealis up did not stop within 30 s of SIGINT");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `borealis node ACTION ID`. A drill's `kill` is `kill --hold`: the node stays down until
    /// the drill starts it (`borealis up` restarts a node that dies otherwise, which
    /// `operator_mistakes` tests on its own).
    pub fn node(&self, action: &str, id: &str) {
        let hold: &[&str] = if action == "kill" { &["--hold"] } else { &[] };
        let out = Command::new(crate::bin_dir().join("borealis"))
            .args(["node", action, id])
            .args(hold)
            .arg("--data-dir")
            .arg(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running borealis node");
        assert!(
            out.status.success(),
            "borealis node {action} {id} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "[borealis node] {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }

    /// `borealis node ACTION ID` that reports failure instead of panicking: `Ok(stdout)` or
    /// `Err(stdout + stderr)`. `kill` holds the node down, as [`TestCluster::node`] does.
    pub fn try_node(&self, action: &str, id: &str) -> Result<String, String> {
        if action == "kill" {
            self.borealis(&["node", action, id, "--hold"])
        } else {
            self.borealis(&["node", action, id])
        }
    }

    /// `borealis ARGS... --data-dir DIR` against this cluster: `Ok(stdout)` or
    /// `Err(stdout + stderr)`.
    pub fn borealis(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(crate::bin_dir().join("borealis"))
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .map_err(|e| format!("running borealis {args:?}: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// `DIR/cluster.json` as it is now.
    fn cluster_json(&self) -> Value {
        let path = self.dir.path().join("cluster.json");
        serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every process of the cluster, as `DIR/cluster.json` lists it now.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let cluster = self.cluster_json();
        cluster["nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("cluster.json has no nodes: {cluster}"))
            .iter()
            .map(|n| {
                let text = |k: &str| n[k].as_str().map(str::to_string);
                NodeInfo {
                    id: text("id").expect("node id"),
                    role: text("role").expect("node role"),
                    az: text("az").unwrap_or_default(),
                    addr: text("addr").unwrap_or_default(),
                    http_addr: text("http_addr"),
                    pid: n["pid"].as_u64().map(|p| p as u32),
                    data_dir: PathBuf::from(text("data_dir").expect("node data_dir")),
                }
            })
            .collect()
    }

    /// The command line `borealis node start` runs for node `id`.
    pub fn node_command(&self, id: &str) -> Vec<String> {
        let cluster = self.cluster_json();
        let node = cluster["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == id))
            .unwrap_or_else(|| panic!("no node {id} in cluster.json"));
        serde_json::from_value(node["command"].clone())
            .unwrap_or_else(|e| panic!("node {id}'s command: {e}"))
    }

    /// Rewrites the command line of node `id` in `DIR/cluster.json`, which the next
    /// `borealis node start` runs: for drills that put a fault injector between two nodes.
    pub fn edit_node_command(&self, id: &str, edit: impl FnOnce(&mut Vec<String>)) {
        let path = self.dir.path().join("cluster.json");
        let mut cluster = self.cluster_json();
        let node = cluster["nodes"]
            .as_array_mut()
            .and_then(|nodes| nodes.iter_mut().find(|n| n["id"] == id))
            .unwrap_or_else(|| panic!("no node {id} in cluster.json"));
        let mut command: Vec<String> = serde_json::from_value(node["command"].clone())
            .unwrap_or_else(|e| panic!("node {id}'s command: {e}"));
        edit(&mut command);
        node["command"] = json!(command);
        let text = serde_json::to_vec_pretty(&cluster).expect("cluster.json serializes");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Waits until the gateway answers `GET /healthz` with 200 (after a `node start gateway`).
    pub async fn wait_gateway_up(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let up = self
                .http
                .get(format!("{}/healthz", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not answer /healthz within {} s",
                within.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One node of `DIR/cluster.json`.
    #[track_caller]
    pub fn node_info(&self, id: &str) -> NodeInfo {
        self.nodes()
            .into_iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in cluster.json"))
    }

    /// The ids of the nodes with `role`, in cluster.json order.
    pub fn node_ids(&self, role: &str) -> Vec<String> {
        self.nodes()
            .into_iter()
            .filter(|n| n.role == role)
            .map(|n| n.id)
            .collect()
    }

    /// `GET http://<http_addr>/<path>` of a safekeeper or pageserver, as the operator (so
    /// `/status` lists tenants); `None` if it does not answer.
    pub async fn node_http(&self, id: &str, path: &str) -> Option<String> {
        let addr = self.node_info(id).http_addr?;
        self.get_text(format!("http://{addr}/{}", path.trim_start_matches('/')))
            .await
    }

    /// The cluster's storage keys (`DIR/keys`): tests play the operator, or an outsider
    /// holding some other credential.
    pub fn storage_keys(&self) -> borealis_auth::ClusterKeys {
        borealis_auth::ClusterKeys::open(self.data_dir()).expect("the cluster's storage keys")
    }

    /// `GET url`'s body, with the operator's storage token; `None` if it does not answer with
    /// a success within 5 s.
    async fn get_text(&self, url: String) -> Option<String> {
        let token = self.storage_keys().operator_token().ok()?;
        let resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.text().await.ok()
    }

    /// `GET /v1/tenants/{name}` (admin): id, compute state, VDL, epoch, pageserver.
    pub async fn tenant_status(&self, name: &str) -> Value {
        self.request(
            reqwest::Method::GET,
            &format!("/v1/tenants/{name}"),
            &self.admin_token,
            None,
        )
        .await
        .ok()
        .body
    }

    /// The pageserver node serving tenant `name` (the gateway's `GET /v1/tenants/{name}` names
    /// its address).
    pub async fn serving_pageserver(&self, name: &str) -> String {
        let r = self
            .request(
                reqwest::Method::GET,
                &format!("/v1/tenants/{name}"),
                &self.admin_token,
                None,
            )
            .await
            .ok();
        let addr = r.body["pageserver"]
            .as_str()
            .unwrap_or_else(|| panic!("no pageserver for {name}: {}", r.body))
            .to_string();
        self.node_ids("pageserver")
            .into_iter()
            .find(|id| self.node_info(id).addr == addr)
            .unwrap_or_else(|| panic!("no pageserver at {addr}"))
    }

    /// Segment 0 of tenant `tenant_id` (hex) on pageserver `ps`'s `/status` (`Null`: not
    /// attached, or no answer).
    pub async fn pageserver_segment(&self, ps: &str, tenant_id: &str) -> Value {
        let Some(status) = self.node_status(ps).await else {
            return Value::Null;
        };
        status["tenants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["tenant"] == tenant_id)
            .flat_map(|t| t["segments"].as_array().into_iter().flatten())
            .find(|s| s["segment"] == 0)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// A node's `/status` as JSON; `None` if it does not answer.
    pub async fn node_status(&self, id: &str) -> Option<Value> {
        let text = self.node_http(id, "/status").await?;
        serde_json::from_str(&text).ok()
    }

    /// The first series named `name` (with any labels) of a node's `/metrics`; `None` if the
    /// node does not answer or has no such series.
    pub async fn node_metric(&self, id: &str, name: &str) -> Option<f64> {
        metric_value(&self.node_http(id, "/metrics").await?, name)
    }

    /// The first series named `name` (with any labels) of the gateway's `/metrics`; `None` if it
    /// does not answer or has no such series.
    pub async fn gateway_metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.get_text(format!("{}/metrics", self.url)).await?, name)
    }

    /// Deletes a node's data directory, as a replaced disk would. The node must be down.
    #[track_caller]
    pub fn wipe_node_data(&self, id: &str) {
        let node = self.node_info(id);
        if let Some(pid) = node.pid {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{id} (pid {pid}) is still running: stop it before wiping its data"
            );
        }
        match std::fs::remove_dir_all(&node.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("wiping {}: {e}", node.data_dir.display()),
        }
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{id}.log"))
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    /// Creates a tenant; returns its token.
    pub async fn create_tenant(&self, name: &str) -> String {
        let r = self
            .request(
                reqwest::Method::POST,
                "/v1/tenants",
                &self.admin_token,
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(r.status, 201, "creating {name}: {}", r.body);
        r.body["token"].as_str().expect("token").to_string()
    }

    pub async fn sql(&self, tenant: &str, token: &str, sql: &str) -> Reply {
        self.sql_params(tenant, token, sql, json!([])).await
    }

    pub async fn sql_params(&self, tenant: &str, token: &str, sql: &str, params: Value) -> Reply {
        self.request(
            reqwest::Method::POST,
            &format!("/v1/tenants/{tenant}/sql"),
            token,
            Some(json!({"sql": sql, "params": params})),
        )
        .await
    }

    pub async fn batch(&self, tenant: &str, token: &str, statements: Vec<Value>) -> Reply {
        self.request(
            reqwest::Method::POST,
            &format!("/v1/tenants/{tenant}/sql"),
            token,
            Some(json!({"batch": statements})),
        )
        .await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.up.is_some() {
            self.down();
        }
        if std::thread::panicking() {
            // Keep the logs of a failed test where a human can read them.
            let kept = self.dir.path().to_path_buf();
            eprintln!("test failed; cluster logs kept in {}/logs", kept.display());
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            let _ = dir.keep();
        }
    }
}

/// The checkpointed LSN in a pageserver segment status (0 if none).
/// The value of the first series named `name` (unlabelled, or with any labels) in a Prometheus
/// text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
        })
        .and_then(|(_, v)| v.trim().parse().ok())
}

pub fn checkpointed_lsn(segment: &Value) -> u64 {
    segment["checkpoint"]["checkpointed_lsn"]
        .as_u64()
        .unwrap_or(0)
}
