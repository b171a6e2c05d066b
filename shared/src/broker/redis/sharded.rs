//! The node's pub/sub side on a Redis Cluster: sharded pub/sub.
//!
//! Classic `PUBLISH` on a cluster is broadcast to every node over the cluster
//! bus, so fan-out would not scale with masters. Sharded pub/sub (`SSUBSCRIBE`
//! / `SPUBLISH`, Redis 7) keeps a channel on the master owning its slot. One
//! RESP3 cluster connection carries every subscription of this node; redis-rs
//! routes each `SSUBSCRIBE` to the right master and re-subscribes by itself
//! after a disconnection or a slot move. Pushes are handed straight to the
//! inbox (which never blocks: session queues are bounded and `try_send`).
//!
//! A lost connection is reported by the driver as a `Disconnection` push; the
//! next subscription confirmation after it tells the inbox, so sessions catch
//! up on whatever was published in between (as the single-Redis subscriber
//! does after a reconnect).

use super::conn::cluster_builder;
use super::keys::{self, Keyspace};
use crate::broker::{BrokerError, Envelope, Inbox};
use crate::config::RedisSettings;
use crate::domain::{Timestamp, UserId};
use redis::aio::{AsyncPushSender, SendError};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Subscriptions of one node on a Redis Cluster.
pub struct ShardedSubscriber {
    conn: ClusterConnection,
    keys: Keyspace,
    timeout: Duration,
    inbox: Arc<dyn Inbox>,
}

/// Receives the connection's pushes.
struct Pushes {
    inbox: Arc<dyn Inbox>,
    /// Since when subscriptions were lost, until they are confirmed again.
    lost_at: Mutex<Option<Timestamp>>,
}

impl AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match info.kind {
            PushKind::SMessage => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (info.data.first(), info.data.get(1))
                else {
                    tracing::warn!("malformed sharded pub/sub push dropped");
                    return Ok(());
                };
                let user = std::str::from_utf8(channel)
                    .ok()
                    .and_then(keys::user_of_channel);
                match (
                    user,
                    Envelope::decode(bytes::Bytes::copy_from_slice(payload)),
                ) {
                    (Some(user), Some(env)) => self.inbox.deliver(&user, env),
                    _ => tracing::warn!("undecodable sharded pub/sub payload dropped"),
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("sharded pub/sub connection lost; redis-rs reconnects");
                let mut lost = self.lost_at.lock().unwrap_or_else(|p| p.into_inner());
                lost.get_or_insert_with(Timestamp::now);
            }
            PushKind::SSubscribe => {
                let since = self
                    .lost_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some(since) = since {
                    crate::metrics::REDIS.pubsub_reconnects.inc();
                    tracing::info!("sharded pub/sub resubscribed");
                    self.inbox.resubscribed(since);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl ShardedSubscriber {
    /// Connects the node's subscription connection.
    pub async fn connect(
        settings: &RedisSettings,
        keys: Keyspace,
        inbox: Arc<dyn Inbox>,
    ) -> Result<Self, BrokerError> {
        let pushes = Pushes {
            inbox: inbox.clone(),
            lost_at: Mutex::new(None),
        };
        let connecting = async {
            cluster_builder(settings)
                .response_timeout(settings.timeout)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes)
                .build()?
                .get_async_connection()
                .await
        };
        let conn = match tokio::time::timeout(settings.timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(BrokerError::Unavailable(format!(
                    "connecting the sharded subscriber: {e}"
                )))
            }
            Err(_) => {
                return Err(BrokerError::Unavailable(
                    "connecting the sharded subscriber timed out".into(),
                ))
            }
        };
        Ok(Self {
            conn,
            keys,
            timeout: settings.timeout,
            inbox,
        })
    }

    /// Subscribes to every shard channel of `user` (each on its own slot, so
    /// one command each, sent concurrently).
    pub async fn subscribe(&self, user: &UserId) -> Result<(), BrokerError> {
        let calls = self.keys.user_channels(user).into_iter().map(|channel| {
            let mut conn = self.conn.clone();
            async move { conn.ssubscribe(channel).await }
        });
        match tokio::time::timeout(self.timeout, futures_util::future::join_all(calls)).await {
            Ok(results) => results
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .map(|_| ())
                .map_err(|e| BrokerError::Unavailable(format!("SSUBSCRIBE: {e}"))),
            Err(_) => Err(BrokerError::Unavailable("SSUBSCRIBE timed out".into())),
        }
    }

    /// Unsubscribes `user`'s channels unless a session of theirs is back.
    pub async fn unsubscribe(&self, user: &UserId) -> Result<(), BrokerError> {
        if self.inbox.wants(user) {
            return Ok(());
        }
        let calls = self.keys.user_channels(user).into_iter().map(|channel| {
            let mut conn = self.conn.clone();
            async move { conn.sunsubscribe(channel).await }
        });
        if let Ok(results) =
            tokio::time::timeout(self.timeout, futures_util::future::join_all(calls)).await
        {
            for e in results.into_iter().filter_map(Result::err) {
                tracing::debug!(error = %e, "SUNSUBSCRIBE failed");
            }
        }
        Ok(())
    }
}
