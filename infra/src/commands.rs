//! The subcommands.

use crate::cluster::{pid_alive, signal, Cluster};
use crate::supervisor::{self, Watch};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// How long `up` waits for the gateway to answer /healthz (it compiles the SQLite module first).
const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_GRACE: Duration = Duration::from_secs(10);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building an HTTP client")
}

/// The file that tells a new safekeeper it is new (`safekeeper::rebuild::NEW_NODE_MARKER`).
pub const SAFEKEEPER_NEW_NODE_MARKER: &str = "new-node";

/// The shape of a new cluster (`borealis up --segment-size --safekeepers --pageservers`); on an
/// existing cluster each given value must be the one it was created with.
pub struct Pool {
    pub segment_size: Option<String>,
    pub safekeepers: Option<usize>,
    pub pageservers: Option<usize>,
}

pub async fn up(
    dir: &Path,
    object_store: Option<String>,
    idle_timeout: &str,
    pool: Pool,
) -> anyhow::Result<()> {
    let Pool {
        segment_size,
        safekeepers,
        pageservers,
    } = pool;
    humantime::parse_duration(idle_timeout)
        .with_context(|| format!("--idle-timeout {idle_timeout:?}"))?;
    // Credentials in the URL go no further than this command: not into cluster.json, a printed
    // line or a node's command line (`crate::object_store_credentials`).
    let (object_store, credentials) = match object_store {
        Some(url) => {
            let (url, credentials) = crate::object_store_credentials::split(&url)?;
            (Some(url), credentials)
        }
        None => (None, Default::default()),
    };
    borealis_utils::owner_only::create_dir_all(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    // Owner-only even if it was made by hand or before this rule: it holds the admin token,
    // the tenants' data and the logs (docs/security.md).
    {
        use std::os::unix::fs::PermissionsExt;
        let owner_only = std::fs::Permissions::from_mode(borealis_utils::owner_only::DIR_MODE);
        if let Err(e) = std::fs::set_permissions(&dir, owner_only) {
            eprintln!(
                "warning: could not make {} owner-only ({e}); other users may read the \
                 cluster's admin token and data",
                dir.display()
            );
        }
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("no directory for this executable")?
        .to_path_buf();
    let mut cluster = if crate::cluster::cluster_file(&dir).exists() {
        let c = Cluster::load(&dir)?;
        for n in &c.nodes {
            if let Some(pid) = n.pid.filter(|p| pid_alive(*p, &n.id)) {
                bail!("node {} of the cluster in {} is still running (pid {pid}); is another `borealis up` running?", n.id, dir.display());
            }
        }
        for (flag, given, role) in [
            ("--safekeepers", safekeepers, "safekeeper"),
            ("--pageservers", pageservers, "pageserver"),
        ] {
            let has = c.nodes.iter().filter(|n| n.role == role).count();
            if let Some(n) = given.filter(|n| *n != has) {
                bail!("this cluster was created with {flag} {has}; it cannot be changed to {n} (adding and removing nodes is `borealis node add/remove`, not built yet)");
            }
        }
        if let Some(size) = &segment_size {
            if *size != c.segment_size {
                bail!(
                    "this cluster was created with --segment-size {}; it cannot be changed to {size} (every page would move)",
                    c.segment_size
                );
            }
        }
        if let Some(os) = &object_store {
            if *os != c.object_store {
                bail!(
                    "this cluster was created with object store {}; it cannot be changed to {os}",
                    c.object_store
                );
            }
        }
        println!("restarting the cluster in {}", dir.display());
        c
    } else {
        let mut c = Cluster::plan(
            &dir,
            &bin_dir,
            object_store,
            idle_timeout,
            segment_size
                .as_deref()
                .unwrap_or(crate::cluster::DEFAULT_SEGMENT_SIZE),
            safekeepers.unwrap_or(crate::cluster::SAFEKEEPERS_DEFAULT),
            pageservers.unwrap_or(crate::cluster::PAGESERVERS_DEFAULT),
        )?;
        c.admin_token = format!("ba_{:032x}", rand::random::<u128>());
        let token_path = dir.join("admin_token");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&token_path)?;
            writeln!(f, "{}", c.admin_token)?;
            f.sync_all()?;
        }
        // Before cluster.json exists (a crash in between plans a new cluster again). Each
        // safekeeper is new: it never acknowledged anything, so it starts as a witness. A
        // safekeeper that later finds no log and no such marker had its disk replaced, and
        // rebuilds before it testifies (`safekeeper::rebuild`).
        for n in c.nodes.iter().filter(|n| n.role == "safekeeper") {
            borealis_utils::owner_only::create_dir_all(&n.data_dir)?;
            std::fs::File::create(n.data_dir.join(SAFEKEEPER_NEW_NODE_MARKER))?.sync_all()?;
            std::fs::File::open(&n.data_dir)?.sync_all()?;
        }
        c.save(&dir)?;
        println!("created a new cluster in {}", dir.display());
        c
    };
    if !credentials.is_empty() {
        credentials.save(&dir)?;
        eprintln!(
            "note: the credentials in --object-store are kept in {}/{} (owner-only) and given to \
             the pageservers in their environment, never on a command line; next time give them \
             as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment instead (this \
             command's own arguments are visible to every user of the machine)",
            dir.display(),
            crate::object_store_credentials::CREDENTIALS_FILE
        );
    }
    cluster.provision_auth(&dir)?;
    // The binaries may have moved (a new build directory): point the commands at ours.
    for n in &mut cluster.nodes {
        if let Some(prog) = n.command.first_mut() {
            let name = Path::new(prog.as_str())
                .file_name()
                .map(|f| f.to_os_string())
                .unwrap_or_default();
            *prog = bin_dir.join(name).display().to_string();
        }
    }
    cluster.save(&dir)?;

    let started = Instant::now();
    let mut children: Vec<(String, Child)> = Vec::new();
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    for id in &ids {
        // `up` starts every node: holds left by an earlier run are released.
        supervisor::release(&dir, id)?;
        match cluster.start_node(&dir, id) {
            Ok(child) => children.push((id.clone(), child)),
            Err(e) => {
                stop_all(&dir, &mut children);
                return Err(e);
            }
        }
    }
    // Wait for the gateway.
    let client = http();
    let health = format!("{}/healthz", cluster.gateway.url);
    loop {
        if let Ok(r) = client
            .get(&health)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if r.status().is_success() {
                break;
            }
        }
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = dir.join("logs").join(format!("{id}.log"));
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                let id = id.clone();
                stop_all(&dir, &mut children);
                bail!(
                    "{id} exited during start-up ({status}); last lines of {}:\n{}",
                    log.display(),
                    tail.join("\n")
                );
            }
        }
        if started.elapsed() > GATEWAY_READY_TIMEOUT {
            stop_all(&dir, &mut children);
            bail!(
                "the gateway did not answer {health} within {} s; see {}/logs/gateway.log",
                GATEWAY_READY_TIMEOUT.as_secs(),
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = dir.display();
    println!(
        "Borealis is up in {:.1} s: 6 safekeepers (AZ a, b, c), 2 pageservers, gateway.",
        started.elapsed().as_secs_f64()
    );
    println!("  gateway:      {}", cluster.gateway.url);
    println!("  admin token:  {d}/admin_token");
    println!("  object store: {}", cluster.object_store);
    println!("  logs:         {d}/logs/");
    println!("Try:");
    println!("  borealis tenant create acme --data-dir {d}");
    println!(
        "  borealis sql --data-dir {d} acme \"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)\""
    );
    println!("Stop everything with Ctrl-C (or SIGTERM to this process).");
    let _ = std::io::stdout().flush();

    // Both streams are made once, before the loop: a signal is kept for the stream from the
    // moment it exists, while a `tokio::signal::ctrl_c()` made anew in each round misses a SIGINT
    // that arrives during `supervise` (between two rounds), and `up` then never stops.
    use tokio::signal::unix::{signal as on_signal, SignalKind};
    let mut term = on_signal(SignalKind::terminate())?;
    let mut int = on_signal(SignalKind::interrupt())?;
    let mut watches: BTreeMap<String, Watch> = BTreeMap::new();
    let mut tick = tokio::time::interval(supervisor::TICK);
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = tick.tick() => supervisor::supervise(&dir, &mut children, &mut watches),
        }
    }
    println!("stopping the cluster...");
    stop_all(&dir, &mut children);
    println!("stopped; start it again with `borealis up --data-dir {d}`");
    Ok(())
}

/// SIGTERM every node the cluster file knows (ours or restarted by `node start`), then SIGKILL
/// what is still alive after the grace period; reap our children; clear the pids.
fn stop_all(dir: &Path, children: &mut [(String, Child)]) {
    let mut cluster = match Cluster::load(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: {e:#}; stopping only the processes this command started");
            for (_, c) in children.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            return;
        }
    };
    let live: Vec<(String, u32)> = cluster
        .nodes
        .iter()
        .filter_map(|n| {
            n.pid
                .filter(|p| pid_alive(*p, &n.id))
                .map(|p| (n.id.clone(), p))
        })
        .collect();
    for (_, pid) in &live {
        signal(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        for (_, c) in children.iter_mut() {
            let _ = c.try_wait();
        }
        if live.iter().all(|(id, p)| !pid_alive(*p, id)) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (id, pid) in &live {
        if pid_alive(*pid, id) {
            eprintln!(
                "{id} did not stop within {} s; killing it",
                STOP_GRACE.as_secs()
            );
            signal(*pid, libc::SIGKILL);
        }
    }
    for (_, c) in children.iter_mut() {
        let _ = c.wait();
    }
    // Re-read under the lock, and clear only the pids stopped here: a `borealis node start`
    // during the grace period keeps its record.
    let _lock = supervisor::ClusterLock::take(dir);
    if let Ok(fresh) = Cluster::load(dir) {
        cluster = fresh;
    }
    for n in &mut cluster.nodes {
        if live.iter().any(|(id, p)| *id == n.id && n.pid == Some(*p)) {
            n.pid = None;
        }
    }
    if live
        .iter()
        .any(|(id, p)| *id == cluster.gateway.id && cluster.gateway.pid == Some(*p))
    {
        cluster.gateway.pid = None;
    }
    if let Err(e) = cluster.save(dir) {
        eprintln!("warning: could not update cluster.json: {e:#}");
    }
}

fn resolve(
    dir: &Path,
    url: Option<String>,
    token: Option<String>,
) -> anyhow::Result<(String, String)> {
    let cluster = Cluster::load(dir);
    let url = match (url, &cluster) {
        (Some(u), _) => u,
        (None, Ok(c)) => c.gateway.url.clone(),
        (None, Err(e)) => bail!("no --url given and {e:#}"),
    };
    let token = match (token, &cluster) {
        (Some(t), _) => t,
        (None, Ok(c)) => c.admin_token.clone(),
        (None, Err(e)) => bail!("no --token given and {e:#}"),
    };
    Ok((url.trim_end_matches('/').to_string(), token))
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = http().request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("could not reach {url}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, v))
}

fn api_error(status: u16, v: &Value) -> anyhow::Error {
    let code = v
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let msg = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    anyhow::anyhow!("{code} (HTTP {status}): {msg}")
}

pub async fn sql(
    url: Option<String>,
    token: Option<String>,
    dir: &Path,
    tenant: &str,
    sql: &str,
) -> anyhow::Result<()> {
    let (url, token) = resolve(dir, url, token)?;
    let (status, v) = call(
        reqwest::Method::POST,
        &format!("{url}/v1/tenants/{tenant}/sql"),
        &token,
        Some(json!({"sql": sql})),
    )
    .await?;
    if status != 200 {
        return Err(api_error(status, &v));
    }
    let Some(result) = v.pointer("/results/0") else {
        bail!("unexpected answer: {v}")
    };
    print!("{}", render_table(result));
    Ok(())
}

/// Renders one statement result as an aligned text table.
pub fn render_table(result: &Value) -> String {
    let columns: Vec<String> = result["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|x| x.as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = result["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|cells| cells.iter().map(cell).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = String::new();
    if columns.is_empty() {
        out.push_str(&format!(
            "OK, {} row(s) affected\n",
            result["rows_affected"].as_u64().unwrap_or(0)
        ));
        return out;
    }
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                // Padded by hand: `format!`'s width is a u16 and panics on a wider cell
                // (a hex dump of a blob is millions of characters).
                let width = widths.get(i).copied().unwrap_or(0);
                format!("{c}{}", " ".repeat(width.saturating_sub(c.chars().count())))
            })
            .collect();
        format!(" {} \n", parts.join(" | ")).trim_end().to_string() + "\n"
    };
    out.push_str(&line(&columns));
    out.push_str(&format!(
        "{}\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    ));
    for r in &rows {
        out.push_str(&line(r));
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("base64") => {
            format!("<blob {}>", o["base64"].as_str().unwrap_or(""))
        }
        other => other.to_string(),
    }
}

/// A time limit as the API takes it: whole milliseconds, at most `u32::MAX`.
fn timeout_ms(d: std::time::Duration) -> anyhow::Result<u64> {
    let ms = d.as_millis();
    anyhow::ensure!(
        d.subsec_nanos().is_multiple_of(1_000_000) && ms <= u128::from(u32::MAX),
        "a statement timeout maximum is whole milliseconds up to {} ms (about 49 days), not {}",
        u32::MAX,
        humantime::format_duration(d)
    );
    Ok(ms as u64)
}

pub async fn tenant_create(
    dir: &Path,
    name: &str,
    statement_timeout_max: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let (url, token) = resolve(dir, None, None)?;
    let mut body = json!({"name": name});
    if let Some(d) = statement_timeout_max {
        body["statement_timeout_max_ms"] = json!(timeout_ms(d)?);
    }
    let (status, v) = call(
        reqwest::Method::POST,
        &format!("{url}/v1/tenants"),
        &token,
        Some(body),
    )
    .await?;
    if status != 201 {
        return Err(api_error(status, &v));
    }
    println!("created tenant {name}");
    println!("token: {}", v["token"].as_str().unwrap_or("?"));
    println!("(shown once; pass it as --token or BOREALIS_TOKEN)");
    Ok(())
}

/// `borealis tenant set NAME --statement-timeout-max 1h|gateway`.
pub async fn tenant_set(dir: &Path, name: &str, statement_timeout_max: &str) -> anyhow::Result<()> {
    let ms = match statement_timeout_max {
        "gateway" => serde_json::Value::Null,
        d => json!(timeout_ms(humantime::parse_duration(d).map_err(|e| {
            anyhow::anyhow!(
                "--statement-timeout-max {d:?}: {e} (a duration such as 10m, or `gateway`)"
            )
        })?)?),
    };
    let (url, token) = resolve(dir, None, None)?;
    let (status, v) = call(
        reqwest::Method::PATCH,
        &format!("{url}/v1/tenants/{name}"),
        &token,
        Some(json!({ "statement_timeout_max_ms": ms })),
    )
    .await?;
    if status != 200 {
        return Err(api_error(status, &v));
    }
    println!(
        "tenant {name}: requests may ask for up to {} ms (the {}'s maximum)",
        v["statement_timeout_max_ms"],
        v["statement_timeout_max_from"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub async fn tenant_show(dir: &Path, name: &str) -> anyhow::Result<()> {
    let (url, token) = resolve(dir, None, None)?;
    let (status, v) = call(
        reqwest::Method::GET,
        &format!("{url}/v1/tenants/{name}"),
        &token,
        None,
    )
    .await?;
    if status != 200 {
        return Err(api_error(status, &v));
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `borealis status --tenant NAME`: the tenant's segments as a table, one row per segment that
/// holds data: its protection group (node ids), its pageserver and each member's SCL.
pub async fn tenant_segments(dir: &Path, name: &str) -> anyhow::Result<()> {
    let cluster = Cluster::load(dir)?;
    let (status, v) = call(
        reqwest::Method::GET,
        &format!("{}/v1/tenants/{name}", cluster.gateway.url),
        &cluster.admin_token,
        None,
    )
    .await?;
    if status != 200 {
        return Err(api_error(status, &v));
    }
    let id_of = |addr: &str| {
        cluster
            .nodes
            .iter()
            .find(|n| n.addr == addr)
            .map_or(addr.to_string(), |n| n.id.clone())
    };
    println!(
        "tenant {name} (id {}): vdl {}, epoch {}, segments of {} bytes",
        v["id"].as_str().unwrap_or("?"),
        v["vdl"],
        v["epoch"],
        v["segment_size_bytes"]
    );
    let segments = v["segments"].as_array().cloned().unwrap_or_default();
    println!(
        "{:>8}  {:<41}  {:<10}  scls (in member order; - = no answer or nothing held)",
        "segment", "safekeepers", "pageserver"
    );
    for s in &segments {
        let members: Vec<String> = s["safekeepers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| id_of(a.as_str().unwrap_or("?")))
            .collect();
        let scls: Vec<String> = s["scls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l.as_u64().map_or("-".to_string(), |l| l.to_string()))
            .collect();
        println!(
            "{:>8}  {:<41}  {:<10}  {}",
            s["segment"]
                .as_u64()
                .map_or("?".to_string(), |n| n.to_string()),
            members.join(","),
            id_of(s["pageserver"].as_str().unwrap_or("?")),
            scls.join(" ")
        );
    }
    println!("{} segments hold data", segments.len());
    Ok(())
}

pub async fn tenant_delete(dir: &Path, name: &str) -> anyhow::Result<()> {
    let (url, token) = resolve(dir, None, None)?;
    let (status, v) = call(
        reqwest::Method::DELETE,
        &format!("{url}/v1/tenants/{name}"),
        &token,
        None,
    )
    .await?;
    if status != 204 {
        return Err(api_error(status, &v));
    }
    println!(
        "deleted tenant {name}; its storage (safekeeper logs, pageserver state, object-store \
         checkpoints) is reclaimed in the background (gateway metric \
         borealis_gateway_tenants_reclaiming)"
    );
    Ok(())
}

pub async fn status(dir: &Path) -> anyhow::Result<()> {
    let cluster = Cluster::load(dir)?;
    let client = http();
    let supervised = supervisor::State::load_live(dir);
    match &supervised {
        Some(s) => println!(
            "supervised by `borealis up` (pid {}): a node that dies is started again",
            s.pid
        ),
        None => println!("no `borealis up` is running: a node that dies stays down"),
    }
    println!(
        "{:<8} {:<11} {:<3} {:<22} {:<8} {:>8} health",
        "node", "role", "az", "address", "pid", "segments"
    );
    for n in &cluster.nodes {
        let alive = n.pid.is_some_and(|p| pid_alive(p, &n.id));
        let health_url = match (&n.http_addr, n.role.as_str()) {
            (Some(h), _) => Some(format!("http://{h}/healthz")),
            (None, "gateway") => Some(format!("{}/healthz", cluster.gateway.url)),
            _ => None,
        };
        let health = match (alive, health_url) {
            (false, _) => "down".to_string(),
            (true, Some(u)) => match client.get(&u).timeout(Duration::from_secs(2)).send().await {
                Ok(r) if r.status().is_success() => "ok".into(),
                Ok(r) => format!("unhealthy ({})", r.status()),
                Err(_) => "not answering".into(),
            },
            (true, None) => "running".into(),
        };
        // Segments held (safekeepers) or followed (pageservers), over all tenants.
        let segments = match (&n.http_addr, alive) {
            (Some(h), true) => client
                .get(format!("http://{h}/status"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()
                .and_then(|r| r.status().is_success().then_some(r))
                .map(|r| r.json::<serde_json::Value>()),
            _ => None,
        };
        let node_status = match segments {
            Some(v) => v.await.ok(),
            None => None,
        };
        let segments = node_status
            .as_ref()
            .and_then(|v| v["segment_count"].as_u64())
            .map_or("-".to_string(), |n| n.to_string());
        // A safekeeper whose disk was replaced says so until it is rebuilt (RFC 0013).
        let health = match node_status.as_ref().and_then(|v| v["rebuilding"].as_bool()) {
            Some(true) => format!("{health}, rebuilding (not a witness yet)"),
            _ => health,
        };
        let health = supervisor::note(health, alive, dir, &n.id, supervised.as_ref());
        let pid = n
            .pid
            .filter(|_| alive)
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<8} {:<11} {:<3} {:<22} {:<8} {:>8} {health}",
            n.id, n.role, n.az, n.addr, pid, segments
        );
    }
    match call(
        reqwest::Method::GET,
        &format!("{}/v1/tenants", cluster.gateway.url),
        &cluster.admin_token,
        None,
    )
    .await
    {
        Ok((200, v)) => {
            println!();
            println!(
                "{:<24} {:<8} {:>12} {:>6}",
                "tenant", "compute", "vdl", "epoch"
            );
            for t in v["tenants"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{:<24} {:<8} {:>12} {:>6}",
                    t["name"].as_str().unwrap_or("?"),
                    t["compute"].as_str().unwrap_or("?"),
                    t["vdl"].to_string(),
                    t["epoch"].to_string()
                );
            }
            let deleting = v["deleting"].as_array().cloned().unwrap_or_default();
            if !deleting.is_empty() {
                let names: Vec<&str> = deleting
                    .iter()
                    .map(|d| d["name"].as_str().unwrap_or("?"))
                    .collect();
                println!(
                    "\ndeleted, storage still being reclaimed (a node is down?): {}",
                    names.join(", ")
                );
            }
        }
        Ok((s, v)) => println!("\ntenants: {}", api_error(s, &v)),
        Err(e) => println!("\ntenants: gateway unreachable ({e:#})"),
    }
    Ok(())
}

pub async fn node(dir: &Path, action: &str, id: &str, hold: bool) -> anyhow::Result<()> {
    let dir =
        std::fs::canonicalize(dir).with_context(|| format!("{} does not exist", dir.display()))?;
    if hold && action != "kill" {
        bail!("--hold goes with `kill` (`stop` always holds the node down; `start` releases it)");
    }
    let node = Cluster::load(&dir)?.node(id)?.clone();
    match action {
        "start" => {
            if let Some(pid) = node.pid.filter(|p| pid_alive(*p, &node.id)) {
                supervisor::release(&dir, id)?;
                println!("{id} is already running (pid {pid}); it is not held down");
                return Ok(());
            }
            // Started, then released: the supervisor never sees it dead and unheld in between
            // (it would start a second one).
            let child = {
                let _lock = supervisor::ClusterLock::take(&dir)?;
                Cluster::load(&dir)?.start_node(&dir, id)?
            };
            supervisor::release(&dir, id)?;
            println!("started {id} (pid {}) on {}", child.id(), node.addr);
            // Not waited on: it outlives this command and is reparented to init.
            std::mem::forget(child);
        }
        "stop" | "kill" => {
            // Held before the signal, and the pid read, under the cluster file's lock: the
            // supervisor never sees the node dead and unheld, and a restart it has under way is
            // either done (its pid is the one signalled) or sees the hold.
            let held = action == "stop" || hold;
            let live = {
                let _lock = supervisor::ClusterLock::take(&dir)?;
                if held {
                    supervisor::hold(&dir, id)?;
                }
                let node = Cluster::load(&dir)?.node(id)?.clone();
                node.pid.filter(|p| pid_alive(*p, &node.id))
            };
            let Some(pid) = live else {
                println!(
                    "{id} is not running{}",
                    if held {
                        " (held down until `borealis node start`)"
                    } else {
                        ""
                    }
                );
                return Ok(());
            };
            let sig = if action == "kill" {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            signal(pid, sig);
            // Stopped means its data directory's lock is released too: the main thread of a
            // killed process can be a zombie while its other threads, with the lock's file, are
            // still being torn down (a `node start` right after failed "in use" in a benchmark).
            // (Unless the supervisor already started it again after a plain kill: then the lock
            // is the new process's.)
            let restarted = || {
                Cluster::load(&dir)
                    .ok()
                    .and_then(|c| c.node(id).ok().and_then(|n| n.pid))
                    .is_some_and(|p| p != pid)
            };
            let stopped = || {
                !pid_alive(pid, id)
                    && (!borealis_utils::lock_file::is_locked(&node.data_dir) || restarted())
            };
            let deadline = Instant::now() + STOP_GRACE;
            while !stopped() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !stopped() {
                bail!(
                    "{id} (pid {pid}) is still alive, or still holds {}, {} s after the signal",
                    node.data_dir.display(),
                    STOP_GRACE.as_secs()
                );
            }
            {
                let _lock = supervisor::ClusterLock::take(&dir)?;
                let mut cluster = Cluster::load(&dir)?;
                // Only if nobody started it again meanwhile (the supervisor, after a plain kill).
                if let Some(n) = cluster.node_mut(id).filter(|n| n.pid == Some(pid)) {
                    n.pid = None;
                    cluster.save(&dir)?;
                }
            }
            println!(
                "{}ed {id} (pid {pid}){}",
                if action == "kill" { "kill" } else { "stopp" },
                if held {
                    "; held down until `borealis node start`"
                } else {
                    "; `borealis up` will start it again"
                }
            );
        }
        other => bail!("unknown action {other}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let t = render_table(
            &json!({"columns": ["id", "name"], "rows": [[1, "a"], [22, null]], "rows_affected": 0}),
        );
        assert_eq!(
            t,
            " id | name\n----+------\n 1  | a\n 22 | NULL\n(2 rows)\n"
        );
        let t = render_table(&json!({"columns": [], "rows": [], "rows_affected": 3}));
        assert_eq!(t, "OK, 3 row(s) affected\n");
        // Wider than format!'s u16 width: rendered, not a panic.
        let wide = "ab".repeat(40_000);
        let t = render_table(&json!({"columns": ["id", "b"], "rows": [[1, wide], [2, "x"]]}));
        assert!(t.contains(&wide), "the wide cell is printed whole");
        let x_line = t.lines().find(|l| l.starts_with(" 2 ")).expect("row 2");
        assert_eq!(x_line, " 2  | x", "trailing padding is trimmed");
    }
}
