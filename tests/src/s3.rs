//! The S3-protocol test server (`s3s-fs`, docs/rfcs/0001-local-object-store.md), started on a
//! free loopback port over a temporary directory and stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "borealis-test";
pub const SECRET_KEY: &str = "borealis-test-secret";

pub struct S3Server {
    child: Option<Child>,
    root: tempfile::TempDir,
    pub port: u16,
}

impl S3Server {
    /// Starts s3s-fs with one bucket, `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join(bucket)).expect("bucket dir");
        let mut server = S3Server {
            child: None,
            root,
            port: crate::free_port(),
        };
        server.start_again();
        server
    }

    /// Stops the server (SIGKILL): the object store is unavailable until [`S3Server::start_again`].
    /// What it stored stays on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, over the same objects.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "s3s-fs is already running");
        let (root, port) = (self.root.path(), self.port);
        let child = Command::new("s3s-fs")
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs is not installed: run scripts/setup.sh");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the server keeps its buckets (one folder each).
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }

    pub fn url(&self, bucket: &str) -> String {
        format!(
            "s3://{bucket}?endpoint=http://127.0.0.1:{}&access_key_id={ACCESS_KEY}&secret_access_key={SECRET_KEY}&region=us-east-1",
            self.port
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
