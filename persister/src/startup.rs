//! Builds the persister from settings: engines, worker, HTTP endpoints.

use crate::configuration::Settings;
use crate::metrics::PersisterMetrics;
use crate::worker::Worker;
use actix_web::{web, App, HttpResponse, HttpServer};
use chat_shared::broker::redis::stream::RedisEventLog;
use chat_shared::broker::redis::RedisBroker;
use chat_shared::broker::{Broker, BrokerError};
use chat_shared::store::mongo::MongoStore;
use chat_shared::store::{Store, StoreError};
use prometheus::Registry;
use std::net::TcpListener;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why the persister could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Redis.
    #[error("connecting to Redis: {0}")]
    Broker(#[from] BrokerError),
    /// MongoDB.
    #[error("preparing MongoDB: {0}")]
    Store(#[from] StoreError),
    /// The HTTP listener.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Metric registration (a bug).
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

struct State {
    registry: Registry,
    /// `chat_ready`: 1 when `/readyz` answers 200.
    ready: prometheus::IntGauge,
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
}

/// A running persister.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    workers: JoinSet<()>,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects to Redis and MongoDB, creates indexes and the consumer group,
    /// binds the HTTP listener and starts the worker.
    pub async fn build(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Result<Self, StartupError> {
        let store = MongoStore::connect(&settings.mongo, settings.mongo_timeout).await?;
        store.prepare().await?;
        let store: Arc<dyn Store> = Arc::new(store);
        let redis = Arc::new(RedisBroker::connect(&settings.redis, None, shutdown.clone()).await?);
        let broker: Arc<dyn Broker> = redis.clone();
        let registry = Registry::new();
        let metrics = PersisterMetrics::new(&registry)?;
        let ready = prometheus::IntGauge::new("chat_ready", "1 when /readyz answers 200")?;
        registry.register(Box::new(ready.clone()))?;
        // One worker per shard stream: each keeps its shard's (and so each
        // chat's) events in order, and replicas share every shard through its
        // consumer group.
        let mut workers = JoinSet::new();
        for shard in redis.keyspace().shards() {
            let log =
                Arc::new(RedisEventLog::connect(&settings.redis, shard, &settings.consumer).await?);
            let worker = Worker::new(
                log,
                store.clone(),
                broker.clone(),
                metrics.clone(),
                settings.worker.clone(),
            );
            workers.spawn(worker.run(shutdown.clone()));
        }

        let listener = TcpListener::bind(settings.addr).map_err(|source| StartupError::Bind {
            addr: settings.addr,
            source,
        })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let state = web::Data::new(State {
            registry,
            ready,
            store,
            broker,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().body("ok") }),
                )
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_endpoint))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: settings.addr,
            source,
        })?
        .run();
        Ok(Self {
            port,
            server,
            workers,
            shutdown,
        })
    }

    /// The HTTP port (useful when binding port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until the shutdown token is cancelled, then stops the HTTP server
    /// and waits for the worker.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        self.shutdown.cancelled().await;
        let mut workers = self.workers;
        while workers.join_next().await.is_some() {}
        handle.stop(true).await;
        let _ = server.await;
        Ok(())
    }
}

/// Why the persister is not ready, if it is not.
async fn readiness(state: &State) -> Result<(), String> {
    match (state.store.ping().await, state.broker.ping().await) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), _) => Err(format!("store: {e}")),
        (_, Err(e)) => Err(format!("broker: {e}")),
    }
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    let ready = readiness(&state).await;
    state.ready.set(i64::from(ready.is_ok()));
    match ready {
        Ok(()) => HttpResponse::Ok().body("ready"),
        Err(why) => HttpResponse::ServiceUnavailable().body(why),
    }
}

async fn metrics_endpoint(state: web::Data<State>) -> HttpResponse {
    let ready = readiness(&state).await.is_ok();
    state.ready.set(i64::from(ready));
    match chat_shared::telemetry::render_metrics(&state.registry) {
        Ok(buf) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(buf),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}
