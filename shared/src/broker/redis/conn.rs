//! One connection type for a single Redis and a Redis Cluster.
//!
//! Every command in this engine goes through [`Conn`], so the logic is written
//! once: on a single Redis it is a reconnecting multiplexed
//! [`ConnectionManager`]; on a cluster, redis-rs's slot-aware
//! [`ClusterConnection`], which routes each command (and each script, by its
//! first key) to the master owning the slot, follows `MOVED`/`ASK` and
//! refreshes the slot map after a failover.

use crate::broker::BrokerError;
use crate::config::RedisSettings;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// A connection to a single Redis or to a Redis Cluster.
#[derive(Clone)]
pub enum Conn {
    /// A single Redis (with its replicas, if any).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

/// Whether commands on a connection may block on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// Ordinary commands: the driver's response timeout applies.
    No,
    /// `XREADGROUP … BLOCK` and the like: the driver's own response timeout is
    /// switched off (it would cut a legitimately blocking command short, after
    /// which Redis may still hand entries to a reader that stopped listening);
    /// every call has its own timeout covering the blocking time instead.
    Yes,
}

impl Conn {
    /// Connects as `settings` say: to the cluster when seed nodes are listed.
    pub async fn connect(
        settings: &RedisSettings,
        blocking: Blocking,
    ) -> Result<Self, BrokerError> {
        let response_timeout = match blocking {
            Blocking::No => Some(settings.timeout),
            Blocking::Yes => None,
        };
        let connecting = async {
            if settings.cluster_nodes.is_empty() {
                let client = redis::Client::open(settings.url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.timeout))
                    .set_response_timeout(response_timeout)
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(client, config)
                    .await
                    .map(Conn::Single)
            } else {
                let mut builder = cluster_builder(settings);
                if let Some(t) = response_timeout {
                    builder = builder.response_timeout(t);
                } else {
                    // No "off" switch: a day is longer than any call's own timeout.
                    builder = builder.response_timeout(Duration::from_secs(86_400));
                }
                builder
                    .build()?
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
            }
        };
        match tokio::time::timeout(settings.timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(BrokerError::Unavailable(format!(
                "connecting to Redis: {e}"
            ))),
            Err(_) => Err(BrokerError::Unavailable(
                "connecting to Redis timed out".into(),
            )),
        }
    }

    /// Whether this is a cluster connection (publish with `SPUBLISH`).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

/// A cluster client builder with the settings' seeds and timeouts.
pub(super) fn cluster_builder(settings: &RedisSettings) -> ClusterClientBuilder {
    ClusterClientBuilder::new(settings.cluster_nodes.clone())
        .connection_timeout(settings.timeout)
        .retries(3)
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
