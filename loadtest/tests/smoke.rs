//! Runs every scenario, tiny, against a real standalone `chat-gateway --dev`
//! process (built beforehand with `cargo build -p chat-gateway`). Asserts
//! correctness only, never performance.

use chat_loadtest::chat::{self, ChatOptions};
use chat_loadtest::idle::{self, IdleOptions};
use chat_loadtest::storm::{self, StormOptions};
use chat_loadtest::{Target, TokenSource};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The gateway child process, killed on drop.
struct Gateway {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_binary() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target_dir.join("debug").join("chat-gateway");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p chat-gateway` before this test",
        bin.display()
    );
    bin
}

async fn start_gateway() -> Gateway {
    let data = tempfile::tempdir().expect("a temporary directory");
    let addr = format!("127.0.0.1:{}", chat_testkit::free_port());
    let child = Command::new(gateway_binary())
        .arg("--dev")
        .env_remove("REDIS_URL")
        .env_remove("JWT_SECRET")
        .env("DATA_DIR", data.path())
        .env("GATEWAY_ADDR", &addr)
        .env("NODE_ID", "smoke")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chat-gateway");
    let gw = Gateway {
        child,
        addr,
        _data: data,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = http
            .get(format!("http://{}/readyz", gw.addr))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return gw;
        }
        assert!(Instant::now() < deadline, "gateway did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_against_a_real_gateway() {
    let gw = start_gateway().await;
    let pid = gw.child.id();
    let target = Target::new(vec![gw.addr.clone()], TokenSource::Dev, 4).unwrap();
    let deadline = || Instant::now() + Duration::from_secs(60);

    let r = idle::run(
        &target,
        &IdleOptions {
            connections: 50,
            pids: vec![pid],
            concurrency: 16,
            settle: Duration::from_millis(300),
            hold: Duration::from_millis(300),
            prefix: "smoke-idle".into(),
        },
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!(r.opened, 50, "{r:?}");
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(r.disconnects, 0, "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(r.rss_before_bytes.is_some() && r.rss_after_bytes.is_some());

    let r = chat::run(
        &target,
        &ChatOptions {
            pairs: 5,
            rate: 50.0,
            duration: Duration::from_secs(3),
            drain: Duration::from_secs(10),
            prefix: "smoke-chat".into(),
        },
        deadline(),
    )
    .await
    .unwrap();
    assert!(r.sent >= 140, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.disconnects, 0, "{r:?}");
    assert_eq!(r.acked, r.sent, "{r:?}");
    assert_eq!(r.delivered, r.sent, "{r:?}");
    assert_eq!(r.ack_latency.count, r.sent);
    assert_eq!(r.delivery_latency.count, r.sent);

    let r = storm::run(
        &target,
        &StormOptions {
            clients: 20,
            gap_messages: 2,
            live_messages: 1,
            concurrency: 16,
            send_concurrency: 8,
            ack_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
            drain_backlog: true,
            prefix: "smoke-storm".into(),
        },
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!(r.reconnected, 20, "{r:?}");
    assert_eq!(r.resynced, 20, "{r:?}");
    assert_eq!(r.expected, 20 * 3, "{r:?}");
    assert_eq!(r.missed, 0, "{r:?}");
    assert_eq!(r.duplicates, 0, "{r:?}");
    assert_eq!(r.errors, 0, "{r:?}");
    assert!(r.time_to_all_resynced_ms.is_some(), "{r:?}");
}
