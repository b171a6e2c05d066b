//! Configuration pieces both services read, parsed and validated once.
//!
//! Each binary composes these `clap` argument groups (every flag mirrors an
//! environment variable of the contract) and turns them into typed settings at
//! start-up. A bad value stops start-up with one line naming the variable.

use crate::auth::{KeySource, TokenVerifier};
use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The environment variable (the flag mirrors it).
    pub var: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// A problem with `var`.
    pub fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

/// Token verification settings.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// HS256 shared secret (required outside --dev unless JWT_PUBLIC_KEY_FILE is set).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key: RS256 (RSA) or ES256 (EC P-256) instead of HS256.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// Validated token settings.
#[derive(Clone)]
pub struct AuthSettings {
    /// Where the key came from (the dev token endpoint signs with a secret).
    pub source: KeySource,
    /// The verifier built from it.
    pub verifier: TokenVerifier,
}

impl AuthArgs {
    /// Validates; `dev_fallback` is the generated secret `--dev` may use when none is set.
    pub fn validate(
        &self,
        dev_fallback: Option<SecretString>,
    ) -> Result<AuthSettings, ConfigError> {
        let (source, var) = match (&self.jwt_public_key_file, &self.jwt_secret) {
            (Some(path), _) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ConfigError::new("JWT_PUBLIC_KEY_FILE", format!("{}: {e}", path.display()))
                })?;
                (KeySource::PublicKeyPem(pem), "JWT_PUBLIC_KEY_FILE")
            }
            (None, Some(secret)) => (
                KeySource::Secret(SecretString::from(secret.clone())),
                "JWT_SECRET",
            ),
            (None, None) => match dev_fallback {
                Some(s) => (KeySource::Secret(s), "JWT_SECRET"),
                None => {
                    return Err(ConfigError::new(
                        "JWT_SECRET",
                        "required (or set JWT_PUBLIC_KEY_FILE); only --dev may run without one",
                    ))
                }
            },
        };
        let verifier = TokenVerifier::new(
            &source,
            self.jwt_issuer.as_deref(),
            self.jwt_audience.as_deref(),
        )
        .map_err(|reason| ConfigError::new(var, reason))?;
        Ok(AuthSettings { source, verifier })
    }
}

/// Event stream shards on a Redis Cluster unless `REDIS_SHARDS` says otherwise:
/// a few per master of a typical 3–6 master cluster, so shards spread evenly.
pub const DEFAULT_CLUSTER_SHARDS: u16 = 16;

/// Upper bound of `REDIS_SHARDS`: each shard costs every persister a blocking
/// reader and every user one subscription per gateway.
pub const MAX_SHARDS: u16 = 256;

/// Redis settings.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RedisArgs {
    /// `redis://host:port/db`; unset means standalone mode. With Redis Cluster,
    /// one or more seed nodes, comma-separated.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Talk to a Redis Cluster (sharded pub/sub, slot-aware routing). Implied
    /// when `REDIS_URL` lists several nodes.
    #[arg(long, env = "REDIS_CLUSTER", default_value = "false", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub redis_cluster: bool,
    /// Shards of the event stream (and of the chats' keys). Every gateway and
    /// persister must agree; the first one to start records it in Redis and the
    /// others refuse to start with a different value. Default: 1 on a single
    /// Redis, 16 on a cluster.
    #[arg(long, env = "REDIS_SHARDS")]
    pub redis_shards: Option<u16>,
    /// Timeout for each Redis command, in milliseconds.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 2000)]
    pub redis_timeout_ms: u64,
    /// Number of multiplexed pub/sub connections per gateway node.
    #[arg(long, env = "REDIS_PUBSUB_CONNECTIONS", default_value_t = 2)]
    pub redis_pubsub_connections: usize,
    /// Replicas that must confirm an append (`WAIT`) before it is acknowledged; 0 = none.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
    /// How long to wait for those replicas, in milliseconds.
    #[arg(long, env = "REDIS_WAIT_TIMEOUT_MS", default_value_t = 500)]
    pub redis_wait_timeout_ms: u64,
}

/// Validated Redis settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Connection URL (the first seed node on a cluster).
    pub url: String,
    /// Redis Cluster seed nodes; empty for a single Redis.
    pub cluster_nodes: Vec<String>,
    /// Event stream shards (1..=256).
    pub shards: u16,
    /// Per-command timeout.
    pub timeout: Duration,
    /// Pub/sub connections per node (≥ 1).
    pub pubsub_connections: usize,
    /// Replicas that must confirm each append (0: none).
    pub wait_replicas: u32,
    /// How long to wait for them.
    pub wait_timeout: Duration,
}

impl RedisArgs {
    /// `None` when `REDIS_URL` is unset (standalone mode).
    pub fn validate(&self) -> Result<Option<RedisSettings>, ConfigError> {
        let Some(url) = self.redis_url.as_ref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        let Some(first) = urls.first().cloned() else {
            return Err(ConfigError::new("REDIS_URL", "lists no node"));
        };
        for u in &urls {
            redis::Client::open(u.as_str())
                .map_err(|e| ConfigError::new("REDIS_URL", format!("not a Redis URL: {e}")))?;
        }
        let cluster = self.redis_cluster || urls.len() > 1;
        let shards = self
            .redis_shards
            .unwrap_or(if cluster { DEFAULT_CLUSTER_SHARDS } else { 1 });
        if !(1..=MAX_SHARDS).contains(&shards) {
            return Err(ConfigError::new(
                "REDIS_SHARDS",
                format!("must be 1..={MAX_SHARDS}"),
            ));
        }
        if cluster && self.redis_wait_replicas > 0 {
            return Err(ConfigError::new(
                "REDIS_WAIT_REPLICAS",
                "is not supported with REDIS_CLUSTER (WAIT must follow the write on the same node connection)",
            ));
        }
        if self.redis_timeout_ms == 0 {
            return Err(ConfigError::new("REDIS_TIMEOUT_MS", "must be positive"));
        }
        if !(1..=64).contains(&self.redis_pubsub_connections) {
            return Err(ConfigError::new(
                "REDIS_PUBSUB_CONNECTIONS",
                "must be 1..=64",
            ));
        }
        if self.redis_wait_replicas > 0 && self.redis_wait_timeout_ms == 0 {
            return Err(ConfigError::new(
                "REDIS_WAIT_TIMEOUT_MS",
                "must be positive",
            ));
        }
        Ok(Some(RedisSettings {
            url: first,
            cluster_nodes: if cluster { urls } else { Vec::new() },
            shards,
            timeout: Duration::from_millis(self.redis_timeout_ms),
            pubsub_connections: self.redis_pubsub_connections,
            wait_replicas: self.redis_wait_replicas,
            wait_timeout: Duration::from_millis(self.redis_wait_timeout_ms),
        }))
    }
}

/// MongoDB settings.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MongoArgs {
    /// `mongodb://…` connection string.
    #[arg(long, env = "MONGODB_URL", hide_env_values = true)]
    pub mongodb_url: Option<String>,
    /// Database name.
    #[arg(long, env = "MONGODB_DB", default_value = "chat")]
    pub mongodb_db: String,
}

/// Validated MongoDB settings.
#[derive(Debug, Clone)]
pub struct MongoSettings {
    /// Connection string.
    pub url: String,
    /// Database name.
    pub db: String,
}

impl MongoArgs {
    /// `None` when `MONGODB_URL` is unset.
    pub fn validate(&self) -> Result<Option<MongoSettings>, ConfigError> {
        let Some(url) = self.mongodb_url.as_ref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        if !(url.starts_with("mongodb://") || url.starts_with("mongodb+srv://")) {
            return Err(ConfigError::new(
                "MONGODB_URL",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        let db = self.mongodb_db.trim();
        if db.is_empty() || db.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(ConfigError::new("MONGODB_DB", "not a valid database name"));
        }
        Ok(Some(MongoSettings {
            url: url.clone(),
            db: db.to_owned(),
        }))
    }
}

/// Parses the command line and environment into `T`; a bad value prints one
/// line naming the flag and its variable (e.g. `--gateway-addr <GATEWAY_ADDR>`)
/// and exits with status 2. `--help` and `--version` print and exit 0.
pub fn parse_args<T: clap::Parser>(program: &str) -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let rendered = e.to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("{program}: configuration error: {line}");
            std::process::exit(2);
        }
    }
}

/// This node's name: `NODE_ID`, else the host name.
pub fn node_id(explicit: Option<&str>) -> Result<String, ConfigError> {
    let id = match explicit {
        Some(s) => s.trim().to_owned(),
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    };
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(ConfigError::new(
            "NODE_ID",
            "must be 1–128 printable characters",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_secret_is_required_outside_dev() {
        let err = AuthArgs::default().validate(None).err().unwrap();
        assert_eq!(err.var, "JWT_SECRET");
        assert!(AuthArgs::default()
            .validate(Some(SecretString::from("generated-dev-secret-0123456789")))
            .is_ok());
    }

    #[test]
    fn a_missing_key_file_names_the_variable() {
        let args = AuthArgs {
            jwt_public_key_file: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            args.validate(None).err().unwrap().var,
            "JWT_PUBLIC_KEY_FILE"
        );
    }

    #[test]
    fn redis_url_unset_means_standalone_and_bad_urls_are_refused() {
        assert!(RedisArgs::default().validate().unwrap().is_none());
        let bad = RedisArgs {
            redis_url: Some("http://x".into()),
            redis_timeout_ms: 100,
            redis_pubsub_connections: 1,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().var, "REDIS_URL");
    }

    #[test]
    fn mongodb_settings_are_checked() {
        let bad = MongoArgs {
            mongodb_url: Some("postgres://x".into()),
            mongodb_db: "chat".into(),
        };
        assert_eq!(bad.validate().unwrap_err().var, "MONGODB_URL");
        let bad_db = MongoArgs {
            mongodb_url: Some("mongodb://localhost".into()),
            mongodb_db: "a.b".into(),
        };
        assert_eq!(bad_db.validate().unwrap_err().var, "MONGODB_DB");
    }
}
