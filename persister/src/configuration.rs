//! The persister's configuration: environment variables (flags mirror them),
//! validated once into [`Settings`].

use crate::worker::{WorkerSettings, DEFAULT_BATCH_SIZE, DEFAULT_LINGER_MS};
use chat_shared::config::{
    node_id, ConfigError, MongoArgs, MongoSettings, RedisArgs, RedisSettings,
};
use std::net::SocketAddr;
use std::time::Duration;

/// Command line and environment.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "chat-persister",
    version,
    about = "Writes the chat event stream to MongoDB"
)]
pub struct Args {
    /// Probe this process's own `/healthz` (at the configured address) and
    /// exit 0 if it answers 200: the container `HEALTHCHECK` (no shell or curl
    /// in the image).
    #[arg(long)]
    pub healthcheck: bool,
    /// Redis (required).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// MongoDB (required).
    #[command(flatten)]
    pub mongo: MongoArgs,
    /// Consumer name in the group; must be unique per replica and stable across
    /// restarts (so a restarted replica finishes its own pending entries).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Address of the health/metrics HTTP server.
    #[arg(long, env = "PERSISTER_ADDR", default_value = "127.0.0.1:9091")]
    pub persister_addr: SocketAddr,
    /// Most stream entries per batch.
    #[arg(long, env = "PERSISTER_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    pub persister_batch_size: usize,
    /// After a read that did not fill a batch, wait this long (ms) for more
    /// entries before writing (fewer MongoDB round trips under load); 0 = none.
    #[arg(long, env = "PERSISTER_LINGER_MS", default_value_t = DEFAULT_LINGER_MS)]
    pub persister_linger_ms: u64,
    /// Entries a dead replica left unacknowledged this long (ms) are taken over.
    #[arg(long, env = "PERSISTER_CLAIM_IDLE_MS", default_value_t = 30_000)]
    pub persister_claim_idle_ms: u64,
    /// Attempts before an entry is moved to the dead-letter stream.
    #[arg(long, env = "PERSISTER_MAX_DELIVERIES", default_value_t = 5)]
    pub persister_max_deliveries: u64,
    /// Timeout of each MongoDB operation, in milliseconds.
    #[arg(long, env = "MONGODB_TIMEOUT_MS", default_value_t = 5000)]
    pub mongodb_timeout_ms: u64,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Redis.
    pub redis: RedisSettings,
    /// MongoDB.
    pub mongo: MongoSettings,
    /// MongoDB operation timeout.
    pub mongo_timeout: Duration,
    /// Consumer name.
    pub consumer: String,
    /// HTTP address.
    pub addr: SocketAddr,
    /// Loop tuning.
    pub worker: WorkerSettings,
}

impl Args {
    /// Validates everything, naming the first bad variable.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let redis = self
            .redis
            .validate()?
            .ok_or_else(|| ConfigError::new("REDIS_URL", "required by chat-persister"))?;
        let mongo = self
            .mongo
            .validate()?
            .ok_or_else(|| ConfigError::new("MONGODB_URL", "required by chat-persister"))?;
        if self.persister_linger_ms > 10_000 {
            return Err(ConfigError::new(
                "PERSISTER_LINGER_MS",
                "must be at most 10000",
            ));
        }
        if !(1..=10_000).contains(&self.persister_batch_size) {
            return Err(ConfigError::new(
                "PERSISTER_BATCH_SIZE",
                "must be 1..=10000",
            ));
        }
        if self.persister_claim_idle_ms < 100 {
            return Err(ConfigError::new(
                "PERSISTER_CLAIM_IDLE_MS",
                "must be at least 100",
            ));
        }
        if self.persister_max_deliveries == 0 {
            return Err(ConfigError::new(
                "PERSISTER_MAX_DELIVERIES",
                "must be positive",
            ));
        }
        if self.mongodb_timeout_ms == 0 {
            return Err(ConfigError::new("MONGODB_TIMEOUT_MS", "must be positive"));
        }
        Ok(Settings {
            redis,
            mongo,
            mongo_timeout: Duration::from_millis(self.mongodb_timeout_ms),
            consumer: node_id(self.node_id.as_deref())?,
            addr: self.persister_addr,
            worker: WorkerSettings {
                batch_size: self.persister_batch_size,
                linger: Duration::from_millis(self.persister_linger_ms),
                claim_idle: Duration::from_millis(self.persister_claim_idle_ms),
                max_deliveries: self.persister_max_deliveries,
                ..WorkerSettings::default()
            },
        })
    }
}
