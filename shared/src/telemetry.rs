//! Logging, tracing and metrics rendering shared by the binaries.
//!
//! **Logs.** `RUST_LOG` filters (default `info`); `LOG_FORMAT=json` switches to
//! one JSON object per line for log shippers. Message bodies and tokens are
//! never logged anywhere in this codebase, so no scrubbing layer is needed here.
//!
//! **Traces.** `tracing` spans are exported with OpenTelemetry (OTLP over
//! HTTP/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the signal-specific
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and not otherwise. The other
//! standard variables are the SDK's: `OTEL_SERVICE_NAME` (default: the
//! binary's name), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_*`;
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` switch export off.
//! Only this workspace's own spans are exported (not the libraries'), whatever
//! `RUST_LOG` says: the log filter and the trace filter are separate.
//!
//! Export can never hold the service up. Finished spans go into a bounded
//! queue (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048) with a non-blocking send —
//! when the collector is slow or gone, spans are dropped, never waited for —
//! and a background task on the Tokio runtime exports them in batches, each
//! request bounded by the exporter timeout. [`shutdown`] flushes what is
//! queued before exit, waiting at most [`FLUSH_TIMEOUT`].
//!
//! **Propagation.** The trace context crosses process boundaries inside the
//! event stream, as a W3C `traceparent` string: the broker engines store
//! [`current_traceparent`] with each appended event, and the persister makes
//! its span a child of it with [`set_remote_parent`].

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// The longest [`flush`] or [`shutdown`] waits for the exporter.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The crates whose spans are exported (libraries' spans are not).
const TRACED_CRATES: [&str; 4] = [
    "chat_shared",
    "chat_gateway",
    "chat_persister",
    "chat_loadtest",
];

/// The tracer provider, once [`init`] ran: `Some` when export is on.
static PROVIDER: OnceLock<Option<SdkTracerProvider>> = OnceLock::new();

/// Installs the global subscriber: the log layer, and the OpenTelemetry layer
/// when export is configured (see the module docs). `service_name` is the
/// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// names one. Safe to call more than once: only the first call does anything,
/// which keeps tests that start several apps in one process simple (and lets
/// a test install its own configuration first). Call it inside the Tokio
/// runtime: the exporter runs on it.
pub fn init(service_name: &str, default_filter: &str) {
    PROVIDER.get_or_init(|| install(service_name, default_filter));
}

fn install(service_name: &str, default_filter: &str) -> Option<SdkTracerProvider> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let logs = if json {
        fmt::layer()
            .json()
            .with_current_span(false)
            .with_filter(filter)
            .boxed()
    } else {
        fmt::layer().with_filter(filter).boxed()
    };
    let (provider, problem) = match tracer_provider(service_name) {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let traces = provider.as_ref().map(|p| {
        let targets = Targets::new().with_targets(
            TRACED_CRATES
                .iter()
                .map(|c| (*c, LevelFilter::INFO))
                .collect::<Vec<_>>(),
        );
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("chat"))
            .with_filter(targets)
    });
    // Err means a subscriber is already installed: fine.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    if let Some(problem) = problem {
        // Tracing is an aid, not a dependency: run without it.
        tracing::warn!("tracing export is off: {problem}");
    }
    if provider.is_some() {
        tracing::info!("tracing export on (OTLP over HTTP/protobuf)");
    }
    provider
}

/// Whether the standard variables ask for trace export.
fn export_wanted() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// Builds the provider with a batching OTLP/HTTP exporter, or `None` when
/// export is not configured.
fn tracer_provider(service_name: &str) -> Result<Option<SdkTracerProvider>, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;

    if !export_wanted() {
        return Ok(None);
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("telemetry::init was called outside the Tokio runtime".into());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    // Queue size, batch size, delay and export timeout come from `OTEL_BSP_*`.
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource(service_name))
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Some(provider))
}

/// `service.name` (the binary's unless configured) and `service.version`,
/// plus whatever the environment detectors find.
fn resource(service_name: &str) -> opentelemetry_sdk::Resource {
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attrs| {
            attrs
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .any(|(k, _)| k.trim() == "service.name")
        });
    let builder = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    if named_by_env {
        builder.build()
    } else {
        builder.with_service_name(service_name.to_owned()).build()
    }
}

/// Whether spans are being exported (after [`init`]).
pub fn tracing_enabled() -> bool {
    matches!(PROVIDER.get(), Some(Some(_)))
}

/// Exports every finished span now (waiting at most [`FLUSH_TIMEOUT`]).
/// Does nothing when export is off.
pub async fn flush() {
    with_provider("flush", |p| p.force_flush()).await;
}

/// Flushes and stops the exporter; `main` calls it before exiting so the
/// last batch is not lost. Waits at most [`FLUSH_TIMEOUT`]; spans ended
/// afterwards are dropped.
pub async fn shutdown() {
    with_provider("shutdown", |p| p.shutdown()).await;
}

/// Runs a blocking provider call off the runtime's workers (the exporter task
/// it waits for runs on them), bounded by [`FLUSH_TIMEOUT`].
async fn with_provider(
    what: &'static str,
    call: impl FnOnce(&SdkTracerProvider) -> opentelemetry_sdk::error::OTelSdkResult + Send + 'static,
) {
    let Some(Some(provider)) = PROVIDER.get() else {
        return;
    };
    let provider = provider.clone();
    let task = tokio::task::spawn_blocking(move || call(&provider));
    match tokio::time::timeout(FLUSH_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace export {what} failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "trace export {what} failed"),
        Err(_) => tracing::warn!("trace export {what} timed out; spans may be lost"),
    }
}

/// The W3C `traceparent` of the current span, to store with an event so the
/// consumer's span can join the trace; `None` when export is off (or the
/// current span is not exported).
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span a `traceparent` (from
/// [`current_traceparent`], possibly in another process) names. Call it right
/// after creating the span, before entering it. A malformed value is ignored:
/// the span then starts a trace of its own.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only when export is off or the span is already started.
        let _ = span.set_parent(cx);
    }
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
