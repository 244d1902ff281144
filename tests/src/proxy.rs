//! A fault-injecting TCP proxy, for drills that corrupt the wire between two real processes.
//!
//! [`CorruptingProxy`] listens on a loopback port and forwards every connection to one upstream
//! address, both ways. While corruption is on, it flips one bit of the byte stream every
//! `every_bytes` bytes, in each direction of each connection, wherever that byte falls: in a
//! frame's header (magic, version, length, CRC) or in its payload (a message, redo records).
//! Whatever it hits, the receiver must detect it (frame magic/version/length checks, frame CRC)
//! and drop the connection rather than act on it; the flipped bytes themselves are never repaired
//! by the proxy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes read from one side before they are written to the other.
const PUMP_BUFFER_BYTES: usize = 8 * 1024;

#[derive(Default)]
struct Counters {
    corrupting: AtomicBool,
    flips: AtomicU64,
    connections: AtomicU64,
}

/// See the module docs. Stops when dropped.
pub struct CorruptingProxy {
    addr: String,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl CorruptingProxy {
    /// Starts forwarding a new loopback port to `upstream`, corruption off.
    pub async fn start(upstream: String, every_bytes: u64) -> CorruptingProxy {
        assert!(every_bytes > 0, "flip every 0 bytes");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue; // upstream down: the client sees its connection close
                };
                c.connections.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, c.clone(), every_bytes));
                tokio::spawn(pump(sr, cw, c.clone(), every_bytes));
            }
        });
        CorruptingProxy {
            addr,
            counters,
            task,
        }
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn set_corrupting(&self, on: bool) {
        self.counters.corrupting.store(on, Ordering::SeqCst);
    }

    /// Bits flipped so far.
    pub fn flips(&self) -> u64 {
        self.counters.flips.load(Ordering::Relaxed)
    }

    /// Connections forwarded so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::Relaxed)
    }
}

impl Drop for CorruptingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either ends, flipping a bit every `every_bytes` while corrupting.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counters: Arc<Counters>,
    every_bytes: u64,
) {
    let mut buf = vec![0u8; PUMP_BUFFER_BYTES];
    // Bytes passed through with corruption on since the last flip.
    let mut since_flip = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if counters.corrupting.load(Ordering::SeqCst) {
            let mut at = 0usize;
            while since_flip + (n - at) as u64 >= every_bytes {
                let step = (every_bytes - since_flip) as usize;
                let i = at + step - 1;
                buf[i] ^= 0x10;
                counters.flips.fetch_add(1, Ordering::Relaxed);
                at = i + 1;
                since_flip = 0;
            }
            since_flip += (n - at) as u64;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
