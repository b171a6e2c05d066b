//! The gateway's configuration: environment variables of the contract (flags
//! mirror them), validated once into [`Settings`].

use crate::dev::DevSettings;
use crate::presence::PresenceSettings;
use chat_shared::auth::{KeySource, TokenSigner};
use chat_shared::config::{
    node_id, AuthArgs, AuthSettings, ConfigError, MongoArgs, MongoSettings, RedisArgs,
    RedisSettings,
};
use chat_shared::domain::DEFAULT_MAX_MESSAGE_CHARS;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// Command line and environment.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "chat-gateway",
    version,
    about = "WebSocket + REST chat gateway node"
)]
pub struct Args {
    /// Probe this process's own `/healthz` (at the configured address) and
    /// exit 0 if it answers 200: the container `HEALTHCHECK` (no shell or curl
    /// in the image).
    #[arg(long)]
    pub healthcheck: bool,
    /// Development mode: demo users and chats, `/dev/token`, the demo client at `/`.
    #[arg(long)]
    pub dev: bool,
    /// Listen address.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_addr: SocketAddr,
    /// Redis (cluster mode when set).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// MongoDB (history and chat registry in cluster mode).
    #[command(flatten)]
    pub mongo: MongoArgs,
    /// Token verification.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Embedded store directory (standalone mode).
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Comma-separated origins allowed for CORS and WebSocket upgrades.
    #[arg(long, env = "ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// This node's name (default: host name).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Longest message body, in characters.
    #[arg(long, env = "MAX_MESSAGE_CHARS", default_value_t = DEFAULT_MAX_MESSAGE_CHARS)]
    pub max_message_chars: usize,
    /// Outbound frames queued per session before it counts as a slow consumer
    /// and is disconnected with 1013.
    #[arg(long, env = "SESSION_QUEUE", default_value_t = 256)]
    pub session_queue: usize,
    /// Timeout of each MongoDB operation, in milliseconds.
    #[arg(long, env = "MONGODB_TIMEOUT_MS", default_value_t = 5000)]
    pub mongodb_timeout_ms: u64,
    /// Sustained sends per second per user (per node).
    #[arg(long, env = "SEND_RATE_PER_SECOND", default_value_t = 10)]
    pub send_rate_per_second: u32,
    /// Sends a user may make at once before the rate applies.
    #[arg(long, env = "SEND_BURST", default_value_t = 30)]
    pub send_burst: u32,
    /// Concurrent sessions per user (per node); more are refused with 429.
    #[arg(long, env = "MAX_SESSIONS_PER_USER", default_value_t = 16)]
    pub max_sessions_per_user: usize,
    /// A node whose heartbeat is this old (ms) counts as dead; its users go offline.
    #[arg(long, env = "PRESENCE_TTL_MS", default_value_t = 15_000)]
    pub presence_ttl_ms: u64,
    /// Offline is announced only after this long (ms) without any session.
    #[arg(long, env = "PRESENCE_GRACE_MS", default_value_t = 5_000)]
    pub presence_grace_ms: u64,
    /// Seconds over which sessions are closed (1012) after SIGTERM.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 20)]
    pub drain_seconds: u64,
    /// Serve TLS directly: PEM certificate chain (with `TLS_KEY_FILE`).
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serve TLS directly: PEM private key (with `TLS_CERT_FILE`).
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
}

/// Which engines run behind the gateway, chosen by configuration alone.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `REDIS_URL` set: Redis broker, MongoDB store, separate persisters.
    Cluster {
        /// Redis.
        redis: RedisSettings,
        /// MongoDB.
        mongo: MongoSettings,
        /// MongoDB operation timeout.
        mongo_timeout: Duration,
    },
    /// `REDIS_URL` unset: in-process broker and persister, embedded store in `DATA_DIR`.
    Standalone {
        /// `DATA_DIR`.
        data_dir: PathBuf,
    },
}

/// Validated settings.
#[derive(Clone)]
pub struct Settings {
    /// Listen address.
    pub addr: SocketAddr,
    /// Cluster or standalone, with that mode's engines.
    pub mode: Mode,
    /// Token verification.
    pub auth: AuthSettings,
    /// Allowed origins; empty means any.
    pub allowed_origins: Vec<String>,
    /// Node name.
    pub node_id: String,
    /// `MAX_MESSAGE_CHARS`.
    pub max_message_chars: usize,
    /// `SESSION_QUEUE`.
    pub session_queue: usize,
    /// `DRAIN_SECONDS`.
    pub drain: Duration,
    /// `SEND_RATE_PER_SECOND`.
    pub send_rate: NonZeroU32,
    /// `SEND_BURST`.
    pub send_burst: NonZeroU32,
    /// `MAX_SESSIONS_PER_USER`.
    pub max_sessions_per_user: usize,
    /// `PRESENCE_TTL_MS`, `PRESENCE_GRACE_MS`.
    pub presence: PresenceSettings,
    /// `--dev`.
    pub dev: Option<DevSettings>,
    /// `TLS_CERT_FILE` + `TLS_KEY_FILE`: serve TLS directly.
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Args {
    /// Validates everything, naming the first bad variable.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        if self.mongodb_timeout_ms == 0 {
            return Err(ConfigError::new("MONGODB_TIMEOUT_MS", "must be positive"));
        }
        let mode = match (self.redis.validate()?, self.mongo.validate()?) {
            (Some(redis), Some(mongo)) => Mode::Cluster {
                redis,
                mongo,
                mongo_timeout: Duration::from_millis(self.mongodb_timeout_ms),
            },
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "MONGODB_URL",
                    "required in cluster mode (REDIS_URL is set)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "MONGODB_URL",
                    "set without REDIS_URL: standalone mode keeps its data in DATA_DIR \
                     (unset MONGODB_URL, or set REDIS_URL for cluster mode)",
                ))
            }
            (None, None) => {
                if self.data_dir.as_os_str().is_empty() {
                    return Err(ConfigError::new("DATA_DIR", "must not be empty"));
                }
                Mode::Standalone {
                    data_dir: self.data_dir.clone(),
                }
            }
        };
        // --dev may run without a secret: one is generated for this process.
        let generated = self
            .dev
            .then(|| SecretString::from(format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new())));
        let auth = self.auth.validate(generated)?;
        let dev = match (&auth.source, self.dev) {
            (_, false) => None,
            (KeySource::Secret(secret), true) => Some(DevSettings {
                signer: TokenSigner::hs256(secret),
            }),
            (KeySource::PublicKeyPem(_), true) => {
                return Err(ConfigError::new(
                    "JWT_PUBLIC_KEY_FILE",
                    "--dev mints HS256 tokens: use JWT_SECRET (or nothing) with --dev",
                ))
            }
        };
        if !(1..=100_000).contains(&self.max_message_chars) {
            return Err(ConfigError::new("MAX_MESSAGE_CHARS", "must be 1..=100000"));
        }
        if !(8..=65_536).contains(&self.session_queue) {
            return Err(ConfigError::new("SESSION_QUEUE", "must be 8..=65536"));
        }
        let send_rate = NonZeroU32::new(self.send_rate_per_second)
            .ok_or_else(|| ConfigError::new("SEND_RATE_PER_SECOND", "must be positive"))?;
        let send_burst = NonZeroU32::new(self.send_burst)
            .ok_or_else(|| ConfigError::new("SEND_BURST", "must be positive"))?;
        if self.max_sessions_per_user == 0 {
            return Err(ConfigError::new(
                "MAX_SESSIONS_PER_USER",
                "must be positive",
            ));
        }
        if !(1_000..=600_000).contains(&self.presence_ttl_ms) {
            return Err(ConfigError::new("PRESENCE_TTL_MS", "must be 1000..=600000"));
        }
        if self.presence_grace_ms > 600_000 {
            return Err(ConfigError::new(
                "PRESENCE_GRACE_MS",
                "must be at most 600000",
            ));
        }
        if self.drain_seconds > 3600 {
            return Err(ConfigError::new("DRAIN_SECONDS", "must be at most 3600"));
        }
        let allowed_origins = self
            .allowed_origins
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect::<Vec<_>>();
        if let Some(bad) = allowed_origins
            .iter()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")))
        {
            return Err(ConfigError::new(
                "ALLOWED_ORIGINS",
                format!("{bad:?} is not an http(s) origin"),
            ));
        }
        Ok(Settings {
            addr: self.gateway_addr,
            mode,
            auth,
            allowed_origins,
            node_id: node_id(self.node_id.as_deref())?,
            max_message_chars: self.max_message_chars,
            session_queue: self.session_queue,
            drain: Duration::from_secs(self.drain_seconds),
            send_rate,
            send_burst,
            max_sessions_per_user: self.max_sessions_per_user,
            presence: PresenceSettings {
                ttl: Duration::from_millis(self.presence_ttl_ms),
                grace: Duration::from_millis(self.presence_grace_ms),
                // Heartbeats several times per TTL, so one late beat never kills a node.
                tick: Duration::from_millis((self.presence_ttl_ms / 5).min(1000)),
            },
            dev,
            tls: crate::tls::load(self.tls_cert_file.as_deref(), self.tls_key_file.as_deref())?,
        })
    }
}
