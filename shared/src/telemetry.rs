//! Logging setup shared by the binaries.
//!
//! `RUST_LOG` filters (default `info`); `LOG_FORMAT=json` switches to one JSON
//! object per line for log shippers. Message bodies and tokens are never logged
//! anywhere in this codebase, so no scrubbing layer is needed here.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops),
/// which keeps tests that start several apps in one process simple.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let result = if json {
        fmt()
            .with_env_filter(filter)
            .json()
            .with_current_span(false)
            .try_init()
    } else {
        fmt().with_env_filter(filter).try_init()
    };
    // Err means a subscriber is already installed: fine.
    let _ = result;
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT): the start of a graceful shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Encodes a registry in the Prometheus text format, for `/metrics`.
pub fn render_metrics(registry: &prometheus::Registry) -> Result<Vec<u8>, prometheus::Error> {
    use prometheus::Encoder;
    crate::metrics::init();
    let mut families = registry.gather();
    families.extend(prometheus::default_registry().gather());
    let mut buf = Vec::new();
    prometheus::TextEncoder::new().encode(&families, &mut buf)?;
    Ok(buf)
}
