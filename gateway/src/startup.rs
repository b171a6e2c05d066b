//! Builds the application from validated settings: engines, shared state and
//! the HTTP server. `main` and every black-box test go through
//! [`Application::build`], so tests exercise exactly what production runs.

use crate::access::Access;
use crate::configuration::{Mode, Settings};
use crate::hub::Hub;
use crate::limits::SendLimiter;
use crate::metrics::GatewayMetrics;
use crate::presence::PresenceService;
use crate::routes;
use crate::service::ChatService;
use crate::upgrade;
use actix_http::body::BoxBody;
use actix_http::{HttpService, HttpServiceBuilder, KeepAlive, Request, Response};
use actix_service::{map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::{web, App};
use chat_persister::metrics::PersisterMetrics;
use chat_persister::worker::{Worker, WorkerSettings};
use chat_shared::auth::TokenVerifier;
use chat_shared::broker::local::{Local, LocalBroker};
use chat_shared::broker::redis::RedisBroker;
use chat_shared::broker::{Broker, BrokerError, Inbox, Presence};
use chat_shared::store::embedded::EmbeddedStore;
use chat_shared::store::mongo::MongoStore;
use chat_shared::store::{Store, StoreError};
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Extra time after the drain window for the last sessions to flush and close.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Chats whose participants are cached per node.
const ACCESS_CACHE: usize = 100_000;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Redis.
    #[error("connecting to Redis: {0}")]
    Broker(#[from] BrokerError),
    /// MongoDB.
    #[error("connecting to MongoDB: {0}")]
    Store(#[from] StoreError),
    /// The listener.
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

/// State shared by every handler and session of one node.
pub struct AppState {
    /// The operations.
    pub service: ChatService,
    /// This node's sessions.
    pub hub: Arc<Hub>,
    /// Presence announcements.
    pub presence: Arc<PresenceService>,
    /// Token verification.
    pub verifier: TokenVerifier,
    /// Metrics.
    pub metrics: GatewayMetrics,
    /// This node's name.
    pub node_id: String,
    /// Cancelled when the node starts draining (SIGTERM): readiness fails, new
    /// sessions are refused, open ones close with 1012 spread over `drain`.
    pub draining: CancellationToken,
    /// `DRAIN_SECONDS`: the window over which sessions are closed.
    pub drain: std::time::Duration,
    /// Per-user send rate.
    pub send_limiter: SendLimiter,
    /// `MAX_SESSIONS_PER_USER`.
    pub max_sessions_per_user: usize,
    /// `ALLOWED_ORIGINS`.
    pub allowed_origins: Vec<String>,
    /// `MAX_MESSAGE_CHARS`.
    pub max_message_chars: usize,
    /// `SESSION_QUEUE`.
    pub session_queue: usize,
}

/// A running gateway node.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    state: web::Data<AppState>,
    /// Stops background tasks (pub/sub readers) once the drain is over.
    stop: CancellationToken,
}

/// CORS for the REST API: with `ALLOWED_ORIGINS` set, exactly those origins may
/// call it from a browser; unset, no cross-origin access is granted (the demo
/// client is same-origin). Tokens travel in headers, never cookies.
fn cors(origins: &[String]) -> actix_cors::Cors {
    origins.iter().fold(
        actix_cors::Cors::default()
            .allowed_methods(["GET", "POST"])
            .allowed_headers([
                actix_web::http::header::AUTHORIZATION,
                actix_web::http::header::CONTENT_TYPE,
            ])
            .max_age(3600),
        |cors, origin| cors.allowed_origin(origin),
    )
}

/// HTTP settings of every connection (plain or TLS).
fn http<T, S>(builder: HttpServiceBuilder<T, S>, addr: SocketAddr) -> HttpServiceBuilder<T, S>
where
    S: ServiceFactory<Request, Config = ()>,
    S::Error: Into<Response<BoxBody>> + 'static,
    S::InitError: std::fmt::Debug,
    <S::Service as Service<Request>>::Future: 'static,
{
    builder
        .local_addr(addr)
        .keep_alive(KeepAlive::Timeout(std::time::Duration::from_secs(5)))
        .client_request_timeout(std::time::Duration::from_secs(5))
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        // Without TCP_NODELAY, Nagle's algorithm holds a small frame (an `ack`)
        // written while an earlier one is still unacknowledged until the
        // client's delayed ACK arrives (up to ~40 ms on Linux). Every frame
        // here is latency-sensitive and already written whole, so send at once
        // (before/after figures: loadtest/README.md, Results).
        .tcp_nodelay(true)
}

/// The broker and store a node talks to.
struct Engines {
    broker: Arc<dyn Broker>,
    presence: Arc<dyn Presence>,
    store: Arc<dyn Store>,
}

/// Cluster mode: Redis and MongoDB (persisters run separately). Standalone
/// mode: the in-process broker and embedded store in one redb file, and the
/// persister loop in this process — the same `Worker` the persister binary runs.
async fn connect_engines(
    mode: &Mode,
    inbox: Arc<dyn Inbox>,
    metrics: &GatewayMetrics,
    stop: CancellationToken,
) -> Result<Engines, StartupError> {
    match mode {
        Mode::Cluster {
            redis,
            mongo,
            mongo_timeout,
        } => {
            let store = MongoStore::connect(mongo, *mongo_timeout).await?;
            store.prepare().await?;
            let redis = Arc::new(RedisBroker::connect(redis, Some(inbox), stop).await?);
            Ok(Engines {
                broker: redis.clone(),
                presence: redis,
                store: Arc::new(store),
            })
        }
        Mode::Standalone { data_dir } => {
            tracing::info!(data_dir = %data_dir.display(), "standalone mode: in-process broker, embedded store");
            let dir = data_dir.clone();
            let embedded = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))??;
            let local = Local(Arc::new(LocalBroker::new(embedded.database(), inbox)?));
            let store: Arc<dyn Store> = Arc::new(embedded);
            let broker: Arc<dyn Broker> = Arc::new(local.clone());
            let worker = Worker::new(
                Arc::new(local.clone()),
                store.clone(),
                broker.clone(),
                PersisterMetrics::new(&metrics.registry)?,
                WorkerSettings::default(),
            );
            tokio::spawn(worker.run(stop));
            Ok(Engines {
                broker,
                presence: Arc::new(local),
                store,
            })
        }
    }
}

/// Periodically drops rate-limit state of users who are back to a full budget.
async fn forget_idle_limits(state: web::Data<AppState>, stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => state.send_limiter.forget_idle(),
        }
    }
}

impl Application {
    /// Connects the engines, binds the listener and prepares the server.
    /// Cancelling `draining` starts the graceful drain (guarantee 8).
    pub async fn build(
        settings: Settings,
        draining: CancellationToken,
    ) -> Result<Self, StartupError> {
        let stop = CancellationToken::new();
        let metrics = GatewayMetrics::new()?;
        let hub = Arc::new(Hub::new(metrics.clone()));
        let inbox: Arc<dyn Inbox> = hub.clone();
        let Engines {
            broker,
            presence: presence_engine,
            store,
        } = connect_engines(&settings.mode, inbox, &metrics, stop.clone()).await?;
        let presence = Arc::new(PresenceService {
            presence: presence_engine.clone(),
            broker: broker.clone(),
            store: store.clone(),
            node: settings.node_id.clone(),
            settings: settings.presence,
        });
        tokio::spawn(presence.clone().run(stop.clone()));
        let cache = NonZeroUsize::new(ACCESS_CACHE).unwrap_or(NonZeroUsize::MIN);
        let state = web::Data::new(AppState {
            service: ChatService {
                access: Access::new(store.clone(), cache),
                broker,
                store,
                presence: presence_engine,
            },
            hub,
            presence,
            verifier: settings.auth.verifier.clone(),
            metrics,
            node_id: settings.node_id.clone(),
            draining,
            drain: settings.drain,
            send_limiter: SendLimiter::new(settings.send_rate, settings.send_burst),
            max_sessions_per_user: settings.max_sessions_per_user,
            allowed_origins: settings.allowed_origins.clone(),
            max_message_chars: settings.max_message_chars,
            session_queue: settings.session_queue,
        });
        let listener = TcpListener::bind(settings.addr).map_err(|source| StartupError::Bind {
            addr: settings.addr,
            source,
        })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        if settings.dev.is_some() {
            eprintln!("{}", crate::dev::WARNING);
            tracing::warn!("--dev: development mode is on");
            crate::dev::seed(&state.service)
                .await
                .map_err(|e| StartupError::Store(StoreError::Unavailable(e)))?;
        }
        tokio::spawn(forget_idle_limits(state.clone(), stop.clone()));
        tokio::spawn(crate::recovery::run(
            state.clone(),
            state.hub.catch_up_requests(),
            stop.clone(),
        ));
        let dev = settings.dev.clone().map(web::Data::new);
        let origins = settings.allowed_origins.clone();
        let app_state = state.clone();
        let web_app = move || {
            let app = App::new()
                .wrap(cors(&origins))
                .app_data(app_state.clone())
                .configure(routes::configure);
            let app = match &dev {
                Some(dev) => app.app_data(dev.clone()).configure(routes::dev::configure),
                None => app,
            };
            // The application's own configuration (host name, scheme for URL
            // generation) is not used by any route: the default will do.
            map_config(
                app.into_factory()
                    .map_err(|e: actix_web::Error| e.error_response()),
                |_| AppConfig::default(),
            )
        };
        let addr = settings.addr;
        let upgrade_state = state.clone();
        let server = actix_server::Server::build()
            .disable_signals()
            .shutdown_timeout(5);
        let server = match settings.tls.clone() {
            Some(tls) => server.listen("gateway-tls", listener, move || {
                http(HttpService::build(), addr)
                    .secure()
                    .upgrade(upgrade::service(upgrade_state.clone()))
                    .finish(web_app())
                    .rustls_0_23((*tls).clone())
            }),
            None => server.listen("gateway", listener, move || {
                http(HttpService::build(), addr)
                    .upgrade(upgrade::service(upgrade_state.clone()))
                    .finish(web_app())
                    .tcp()
            }),
        }
        .map_err(|source| StartupError::Bind {
            addr: settings.addr,
            source,
        })?
        .run();
        Ok(Self {
            port,
            server,
            state,
            stop,
        })
    }

    /// The bound port (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the drain token is cancelled, then drains: `/readyz` turns
    /// 503 and upgrades are refused at once, sessions close with 1012 spread
    /// over the drain window (each finishes the frame it is handling), and the
    /// server stops once they are gone or the window (plus a grace) is over.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let state = self.state;
        state.draining.cancelled().await;
        tracing::info!(drain = ?state.drain, sessions = state.metrics.connections.get(), "draining");
        let deadline = tokio::time::Instant::now() + state.drain + DRAIN_GRACE;
        while state.metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        handle.stop(true).await;
        self.stop.cancel();
        tracing::info!("drained");
        match server.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}
