//! Test support: real servers, started per test on free ports, killed on drop.
//!
//! - [`RedisServer`]: a `redis-server` child process (Debian package) that a
//!   test can kill and restart on the same port to inject faults;
//! - [`MongoServer`]: `MONGODB_URL` when set (a real MongoDB), otherwise a
//!   `nx-27017` child process (MongoDB wire protocol over SQLite) from the
//!   project's virtualenv (`.venv`, or `NX27017_BIN`).
//!
//! Nothing here depends on anything left running by hand.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now, and one this process has not handed
/// out before: tests run in parallel threads, and a port released by one
/// `free_port` call must not go to two servers that bind it only later.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port on loopback");
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

fn wait_for_port(port: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on port {port} within {within:?}");
}

/// Whether `child` came up listening on `port` (and did not exit, as it does
/// when the port is taken — then someone else may be the one listening).
fn serving(child: &mut Child, port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
            return matches!(child.try_wait(), Ok(None));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A `redis-server` child process.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    aof: bool,
    primary: Option<u16>,
    /// The cluster bus port, for a Redis Cluster node.
    cluster_port: Option<u16>,
}

impl RedisServer {
    /// Starts one without persistence.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts one; with `aof`, every write is fsynced before the reply
    /// (`appendfsync always`), which is what makes "ack means durable" true.
    pub fn start_with(aof: bool) -> Self {
        let mut s = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
            aof,
            primary: None,
            cluster_port: None,
        };
        s.spawn_with(true);
        s
    }

    /// Starts a replica of `primary` (for tests of `WAIT`-based durability).
    pub fn replica_of(primary: &RedisServer) -> Self {
        let mut s = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
            aof: false,
            primary: Some(primary.port),
            cluster_port: None,
        };
        s.spawn_with(true);
        s
    }

    /// One attempt; whether this very process serves the port.
    fn spawn_once(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--protected-mode")
            .arg("no")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(primary) = self.primary {
            cmd.arg("--replicaof")
                .arg("127.0.0.1")
                .arg(primary.to_string());
        }
        if let Some(bus) = self.cluster_port {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .arg("--cluster-port")
            .arg(bus.to_string());
        }
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut child = cmd
            .spawn()
            .expect("redis-server not found: run scripts/test.sh, which installs it");
        let up = serving(&mut child, self.port, Duration::from_secs(20));
        self.child = Some(child);
        up
    }

    /// Starts the server; a port another test grabbed between [`free_port`]
    /// and the bind makes it exit at once, and it is started again on fresh
    /// ports (`fresh_ports`) or, for a restart, on the same ones.
    fn spawn_with(&mut self, fresh_ports: bool) {
        for _ in 0..5 {
            if self.spawn_once() {
                return;
            }
            kill(&mut self.child);
            if fresh_ports {
                self.port = free_port();
                self.cluster_port = self.cluster_port.map(|_| free_port());
            }
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL): connections drop, unsaved data is lost.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port (and data directory).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_with(false);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters (no replicas), made with
/// `redis-cli --cluster create`; every slot is served when `start` returns.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled `redis-server`s and joins them.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let mut s = RedisServer {
                    port: free_port(),
                    dir: tempfile::tempdir().expect("a temporary directory"),
                    child: None,
                    aof: false,
                    primary: None,
                    cluster_port: Some(free_port()),
                };
                s.spawn_with(true);
                s
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli not found: run scripts/test.sh, which installs it");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| n.cluster_ok()) {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Every node's URL, comma-separated (the form `REDIS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

impl RedisServer {
    /// Whether this cluster node sees every slot served.
    fn cluster_ok(&self) -> bool {
        Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(["cluster", "info"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            .unwrap_or(false)
    }
}

/// A MongoDB to test against.
pub struct MongoServer {
    url: String,
    db: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

fn nx_binary() -> PathBuf {
    if let Ok(p) = std::env::var("NX27017_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join(".venv/bin/nx-27017")
}

fn unique_db_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "chat_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl MongoServer {
    /// `MONGODB_URL` with a fresh database name, or a new nx-27017 process.
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("MONGODB_URL") {
            if !url.trim().is_empty() {
                return Self {
                    url,
                    db: unique_db_name(),
                    child: None,
                    _dir: None,
                };
            }
        }
        let port = free_port();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bin = nx_binary();
        let child = Command::new(&bin)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--log-file")
            .arg(dir.path().join("nx.log"))
            .arg("--pid-file")
            .arg(dir.path().join("nx.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run scripts/test.sh, which installs nx-27017, or set MONGODB_URL",
                    bin.display()
                )
            });
        wait_for_port(port, Duration::from_secs(30), "nx-27017");
        Self {
            url: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            db: unique_db_name(),
            child: Some(child),
            _dir: Some(dir),
        }
    }

    /// Connection string.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A database name unique to this test.
    pub fn db(&self) -> &str {
        &self.db
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A TCP proxy in front of a server, to cut and restore connectivity in tests
/// (works the same for a local stand-in and a real remote server).
pub struct TcpProxy {
    port: u16,
    enabled: tokio::sync::watch::Sender<bool>,
    stalled: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        Self::start_inner(target, None).await
    }

    /// A proxy in front of a MongoDB (wire protocol) server that forwards
    /// every request of at most `max_request` bytes and holds any larger one:
    /// never forwarded, never answered, as a server would that cannot finish
    /// a big operation within the client's timeout. The client gives up on
    /// its own; replies flow as usual. Deterministic, unlike a slow server.
    pub async fn mongo_stalling_over(target: &str, max_request: usize) -> Self {
        Self::start_inner(target, Some(max_request)).await
    }

    async fn start_inner(target: &str, max_request: Option<usize>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the proxy");
        let port = listener.local_addr().expect("the proxy port").port();
        let (enabled, watch) = tokio::sync::watch::channel(true);
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let target = target.to_owned();
        let counter = stalled.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*watch.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut watch = watch.clone();
                let target = target.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut a, mut b) = (inbound, outbound);
                    let forward = async {
                        match max_request {
                            None => {
                                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                            }
                            Some(max) => forward_mongo(&mut a, &mut b, max, &counter).await,
                        }
                    };
                    tokio::select! {
                        _ = forward => {}
                        _ = watch.wait_for(|on| !*on) => {}
                    }
                });
            }
        });
        Self {
            port,
            enabled,
            stalled,
            task,
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.enabled.send_replace(false);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.enabled.send_replace(true);
    }

    /// Requests held so far by [`TcpProxy::mongo_stalling_over`].
    pub fn stalled(&self) -> u64 {
        self.stalled.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Forwards MongoDB wire messages from `client` to `server` one by one (each
/// starts with its total length, a little-endian i32) and everything from
/// `server` back. After a message over `max` bytes, nothing more is forwarded
/// on this connection until the client hangs up.
async fn forward_mongo(
    client: &mut tokio::net::TcpStream,
    server: &mut tokio::net::TcpStream,
    max: usize,
    stalled: &std::sync::atomic::AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let replies = tokio::io::copy(&mut server_read, &mut client_write);
    let requests = async {
        loop {
            let mut header = [0u8; 4];
            client_read.read_exact(&mut header).await?;
            let len = usize::try_from(i32::from_le_bytes(header)).unwrap_or(usize::MAX);
            if len > max {
                stalled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Hold it: swallow it and whatever else comes until the client closes.
                tokio::io::copy(&mut client_read, &mut tokio::io::sink()).await?;
                return Ok::<(), std::io::Error>(());
            }
            // At most `max` bytes: bounded by the caller's setting.
            let mut message = vec![0u8; len.saturating_sub(4)];
            client_read.read_exact(&mut message).await?;
            server_write.write_all(&header).await?;
            server_write.write_all(&message).await?;
        }
    };
    tokio::select! {
        _ = replies => {}
        _ = requests => {}
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `check` until it returns `Some`, or panics after `within` naming
/// `what`. Tests wait for conditions this way, never by sleeping a guess.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
