//! The S3-protocol test server (`s3s-fs`, docs/rfcs/0001-local-object-store.md), started on a
//! free loopback port over a temporary directory and stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "borealis-test";
pub const SECRET_KEY: &str = "borealis-test-secret";

pub struct S3Server {
    child: Child,
    _root: tempfile::TempDir,
    pub port: u16,
}

impl S3Server {
    /// Starts s3s-fs with one bucket, `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join(bucket)).expect("bucket dir");
        let port = crate::free_port();
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
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs is not installed: run scripts/setup.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        S3Server {
            child,
            _root: root,
            port,
        }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
