//! A real `chat-gateway` process, configured only by environment variables as
//! in production, with stdout and stderr captured.

use crate::harness::{Backend, SECRET};
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a gateway may take to start (connect MongoDB and Redis, bind).
const START_WITHIN: Duration = Duration::from_secs(30);

/// A `chat-gateway` child process.
pub struct Gateway {
    /// Its HTTP/WebSocket port.
    pub port: u16,
    /// Its `NODE_ID`.
    pub node: String,
    child: Child,
    logs: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Starts one against `backend` with `RUST_LOG=debug` and the extra
    /// environment `env`; returns once `/healthz` answers.
    pub async fn spawn(backend: &Backend, node: &str, env: &[(&str, &str)]) -> Self {
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..3 {
            let port = chat_testkit::free_port();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
            cmd.env_clear()
                .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
                .env("REDIS_URL", backend.redis.url())
                .env("MONGODB_URL", backend.mongo.url())
                .env("MONGODB_DB", backend.mongo.db())
                .env("JWT_SECRET", SECRET)
                .env("NODE_ID", node)
                .env("RUST_LOG", "debug")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn chat-gateway");
            let logs = Arc::new(Mutex::new(Vec::new()));
            let mut readers = Vec::new();
            let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
            let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
            for mut pipe in [out, err] {
                let logs = logs.clone();
                readers.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = pipe.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        logs.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                }));
            }
            let mut gw = Self {
                port,
                node: node.to_owned(),
                child,
                logs,
                readers,
            };
            if gw.wait_healthy().await {
                return gw;
            }
            eprintln!(
                "gateway {node} did not start on port {port}; log:\n{}",
                gw.logs()
            );
        }
        panic!("gateway {node} did not start");
    }

    /// Polls `/healthz`; false if the process exited first.
    async fn wait_healthy(&mut self) -> bool {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + START_WITHIN;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            if let Ok(r) = http.get(self.url("/healthz")).send().await {
                if r.status() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway {} not healthy within {START_WITHIN:?}", self.node);
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no flush, connections reset by the kernel.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, as an orchestrator sends it.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM failed");
    }

    /// The exit status, once the process exits within `within` (else `None`).
    pub async fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid()).expect("VmRSS of a live gateway")
    }

    /// HTTP status of `GET path`.
    pub async fn status_of(&self, http: &reqwest::Client, path: &str) -> u16 {
        http.get(self.url(path))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// The value of one Prometheus sample (`name{labels}`) on `/metrics`; 0 if absent.
    pub async fn metric(&self, http: &reqwest::Client, sample: &str) -> f64 {
        let text = http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("/metrics")
            .text()
            .await
            .expect("/metrics body");
        text.lines()
            .find_map(|l| l.strip_prefix(sample).map(str::trim))
            .map_or(0.0, |v| v.parse().expect("sample value"))
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }

    /// The full log, once the process has exited (waits for the pipes to close).
    pub fn final_logs(&mut self) -> (String, String) {
        if self.child.try_wait().expect("try_wait").is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (self.node.clone(), self.logs())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of process `pid` in KiB; `None` once it is gone.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
