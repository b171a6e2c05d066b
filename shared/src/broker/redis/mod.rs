//! The Redis engine: a stream for durability, pub/sub for fan-out, a sorted set
//! per chat for the recent window, and Lua scripts to make appends atomic.
//!
//! Commands go over one multiplexed [`Conn`] (concurrent sessions' commands are
//! pipelined on it and it reconnects by itself) — a single Redis or a Redis
//! Cluster, the same code either way; pub/sub uses a few dedicated connections
//! ([`pubsub::Subscriber`]) or, on a cluster, sharded pub/sub
//! ([`sharded::ShardedSubscriber`]); the persister's blocking stream reads use
//! a connection of their own per shard ([`stream::RedisEventLog`]) because a
//! blocking command would stall a multiplexed connection.

pub mod conn;
pub mod keys;
mod presence;
pub mod pubsub;
pub mod scripts;
pub mod sharded;
pub mod stream;

use super::template::MessageTemplate;
use super::{
    Appended, Broker, BrokerError, Envelope, Inbox, MessageDraft, Participants, SeqWindow,
};
use crate::config::RedisSettings;
use crate::domain::{ChatId, SessionId, UserId};
use crate::protocol::Message;
use async_trait::async_trait;
use conn::{Blocking, Conn};
use keys::Keyspace;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many recent messages per chat Redis keeps for read-your-writes and resume.
pub const DEFAULT_RECENT_WINDOW: usize = 500;

/// How long a `client_msg_id` is remembered for idempotent re-sends.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How many replicas must have an append before it is acknowledged.
#[derive(Debug, Clone, Copy)]
struct Replication {
    replicas: u32,
    timeout: Duration,
}

/// How this node receives what is published to its users.
enum Subscriptions {
    /// Classic pub/sub on a single Redis.
    Single(pubsub::Subscriber),
    /// Sharded pub/sub on a Redis Cluster.
    Sharded(sharded::ShardedSubscriber),
}

/// The Redis broker engine.
pub struct RedisBroker {
    conn: Conn,
    keys: Keyspace,
    /// `PUBLISH` on a single Redis, `SPUBLISH` on a cluster.
    publish_command: &'static str,
    /// With `REDIS_WAIT_REPLICAS`: dedicated connections for appends, because
    /// `WAIT` blocks its connection and would stall the multiplexed one.
    durable: Option<(deadpool_redis::Pool, Replication)>,
    timeout: Duration,
    subscriptions: Option<Subscriptions>,
    recent_window: usize,
    idempotency_ttl: Duration,
}

impl RedisBroker {
    /// Connects. With an inbox, also starts the subscriber shards (gateways);
    /// without one, the broker can only publish (persisters).
    pub async fn connect(
        settings: &RedisSettings,
        inbox: Option<Arc<dyn Inbox>>,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        let conn = Conn::connect(settings, Blocking::No).await?;
        let keys = agree_on_shards(&conn, settings).await?;
        let subscriptions = match inbox {
            None => None,
            Some(inbox) if conn.is_cluster() => Some(Subscriptions::Sharded(
                sharded::ShardedSubscriber::connect(settings, keys, inbox).await?,
            )),
            Some(inbox) => {
                let client = redis::Client::open(settings.url.as_str())
                    .map_err(|e| BrokerError::Unavailable(format!("REDIS_URL: {e}")))?;
                Some(Subscriptions::Single(pubsub::Subscriber::start(
                    client,
                    keys,
                    settings.pubsub_connections,
                    settings.timeout,
                    inbox,
                    shutdown,
                )))
            }
        };
        let durable = match settings.wait_replicas {
            0 => None,
            replicas => Some((
                blocking_pool(settings)?,
                Replication {
                    replicas,
                    timeout: settings.wait_timeout,
                },
            )),
        };
        Ok(Self {
            publish_command: if conn.is_cluster() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            },
            conn,
            keys,
            durable,
            timeout: settings.timeout,
            subscriptions,
            recent_window: DEFAULT_RECENT_WINDOW,
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
        })
    }

    /// The key layout every gateway and persister agreed on.
    pub fn keyspace(&self) -> Keyspace {
        self.keys
    }

    fn subscriptions(&self) -> Result<&Subscriptions, BrokerError> {
        self.subscriptions
            .as_ref()
            .ok_or_else(|| BrokerError::Protocol("this broker was built without an inbox".into()))
    }
}

/// Records this process's `REDIS_SHARDS` in Redis, or checks it against the
/// one recorded: processes that disagree would put one chat's counter under
/// two keys and hand out the same `seq` twice, so a mismatch stops start-up.
pub async fn agree_on_shards(
    conn: &Conn,
    settings: &RedisSettings,
) -> Result<Keyspace, BrokerError> {
    let mut conn = conn.clone();
    let recorded: Option<u16> = with_timeout("ping", settings.timeout, async {
        redis::pipe()
            .cmd("SET")
            .arg(keys::SHARDS)
            .arg(settings.shards)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(keys::SHARDS)
            .query_async::<(Option<u16>,)>(&mut conn)
            .await
            .map(|(v,)| v)
    })
    .await?;
    match recorded {
        Some(n) if n != settings.shards => Err(BrokerError::Protocol(format!(
            "REDIS_SHARDS is {} here but {n} in Redis ({}): every gateway and persister must use the same value",
            settings.shards,
            keys::SHARDS
        ))),
        _ => Ok(Keyspace::new(settings.shards)),
    }
}

/// A pool of dedicated connections for commands that block on the server
/// (`XREADGROUP … BLOCK`, `WAIT`). The driver's own response timeout (500 ms by
/// default) is switched off on them: it would cut a legitimately blocking
/// command short — after which Redis may still deliver entries to a reader that
/// stopped listening. Every call on these connections has its own timeout
/// covering the blocking time instead.
fn blocking_pool(settings: &RedisSettings) -> Result<deadpool_redis::Pool, BrokerError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(None);
    let manager = deadpool_redis::Manager::new_with_config(settings.url.as_str(), config)
        .map_err(|e| BrokerError::Unavailable(format!("REDIS_URL: {e}")))?;
    deadpool_redis::Pool::builder(manager)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|e| BrokerError::Unavailable(format!("redis pool: {e}")))
}

/// Runs a Redis call under the configured timeout, mapping failures.
pub(super) async fn with_timeout<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    with_timeout_for(op, None, timeout, fut).await
}

/// Like [`with_timeout`], turning the scripts' `NOSEQ` error into
/// [`BrokerError::SeqUnknown`] for `chat`. Every call is recorded in
/// [`crate::metrics::REDIS`] under `op`.
async fn with_timeout_for<T>(
    op: &'static str,
    chat: Option<ChatId>,
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => match chat {
            Some(chat) if e.to_string().contains("NOSEQ") => Err(BrokerError::SeqUnknown(chat)),
            _ => Err(BrokerError::Unavailable(e.to_string())),
        },
        Err(_) => Err(BrokerError::Unavailable("redis command timed out".into())),
    };
    let ok = !matches!(result, Err(BrokerError::Unavailable(_)));
    crate::metrics::REDIS.observe(op, started.elapsed(), ok);
    result
}

fn floor_arg(floor: Option<u64>) -> String {
    floor.map(|f| f.to_string()).unwrap_or_default()
}

fn decode_message(json: &str) -> Result<Message, BrokerError> {
    serde_json::from_str(json).map_err(|e| BrokerError::Protocol(format!("stored message: {e}")))
}

impl RedisBroker {
    /// Runs an append script; with `REDIS_WAIT_REPLICAS` set, on a dedicated
    /// connection followed by `WAIT`, so the append is acknowledged only once
    /// enough replicas have it. When they do not confirm in time the caller is
    /// told `unavailable` (the client retries with the same `client_msg_id`
    /// and gets the original message back, so nothing is stored twice).
    async fn append<T: redis::FromRedisValue>(
        &self,
        chat: ChatId,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let Some((pool, replication)) = &self.durable else {
            let mut conn = self.conn.clone();
            return with_timeout_for(
                "append",
                Some(chat),
                self.timeout,
                invocation.invoke_async(&mut conn),
            )
            .await;
        };
        let mut conn = tokio::time::timeout(self.timeout, pool.get())
            .await
            .map_err(|_| BrokerError::Unavailable("redis pool timed out".into()))?
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let value: T = with_timeout_for(
            "append",
            Some(chat),
            self.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        let acked: u32 = with_timeout(
            "wait",
            self.timeout + replication.timeout,
            redis::cmd("WAIT")
                .arg(replication.replicas)
                .arg(replication.timeout.as_millis() as u64)
                .query_async(&mut conn),
        )
        .await?;
        if acked < replication.replicas {
            return Err(BrokerError::Unavailable(format!(
                "append reached {acked} of {} replicas in time",
                replication.replicas
            )));
        }
        Ok(value)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn append_message(
        &self,
        draft: &MessageDraft,
        participants: &Participants,
        origin: SessionId,
        floor_seq: Option<u64>,
    ) -> Result<Appended, BrokerError> {
        let template = MessageTemplate::new(draft)?;
        let (keys, chat) = (&self.keys, draft.chat_id);
        let shard = keys.shard_of(chat);
        let mut invocation = scripts::APPEND_MESSAGE.prepare_invoke();
        invocation
            .key(keys.seq(chat))
            .key(keys.recent(chat))
            .key(keys.client_msg(chat, &draft.client_msg_id))
            .key(shard.stream())
            .arg(&template.rest)
            .arg(floor_arg(floor_seq))
            .arg(self.recent_window)
            .arg(self.idempotency_ttl.as_secs())
            .arg(shard.user_channel(&participants.patient))
            .arg(shard.user_channel(&participants.doctor))
            .arg(Envelope::prefix(Some(origin)))
            .arg(self.publish_command);
        let (stored, json): (i64, String) = self.append(draft.chat_id, &invocation).await?;
        let message = decode_message(&json)?;
        Ok(if stored == 1 {
            Appended::New(message)
        } else {
            Appended::Duplicate(message)
        })
    }

    async fn append_read(
        &self,
        chat_id: ChatId,
        reader: &UserId,
        peer: &UserId,
        up_to_seq: u64,
        floor_seq: Option<u64>,
    ) -> Result<u64, BrokerError> {
        // Ids are restricted to JSON-safe characters by their parsers.
        let head = format!(
            "{}{{\"type\":\"read\",\"chat_id\":\"{chat_id}\",\"user_id\":\"{reader}\",\"up_to_seq\":",
            Envelope::prefix(None)
        );
        let shard = self.keys.shard_of(chat_id);
        let mut invocation = scripts::APPEND_READ.prepare_invoke();
        invocation
            .key(self.keys.seq(chat_id))
            .key(shard.stream())
            .arg(chat_id.to_string())
            .arg(reader.as_str())
            .arg(up_to_seq)
            .arg(floor_arg(floor_seq))
            .arg(shard.user_channel(peer))
            .arg(head)
            .arg(self.publish_command);
        self.append(chat_id, &invocation).await
    }

    async fn publish(&self, user: &UserId, envelope: Envelope) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let channel = self.keys.shard_of_user(user).user_channel(user);
        let payload = envelope.encode();
        let command = self.publish_command;
        with_timeout("publish", self.timeout, async move {
            redis::cmd(command)
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await
        .map(|_| ())
    }

    async fn recent(
        &self,
        chat_id: ChatId,
        window: SeqWindow,
    ) -> Result<Vec<Message>, BrokerError> {
        let key = self.keys.recent(chat_id);
        let lo = window
            .after
            .map(|a| format!("({a}"))
            .unwrap_or_else(|| "-inf".into());
        let hi = window
            .before
            .map(|b| format!("({b}"))
            .unwrap_or_else(|| "+inf".into());
        let mut conn = self.conn.clone();
        let mut cmd = if window.after.is_some() {
            let mut c = redis::cmd("ZRANGEBYSCORE");
            c.arg(&key).arg(&lo).arg(&hi);
            c
        } else {
            let mut c = redis::cmd("ZREVRANGEBYSCORE");
            c.arg(&key).arg(&hi).arg(&lo);
            c
        };
        // Redis refuses a count above i64::MAX ("no limit" spelled usize::MAX).
        let limit = i64::try_from(window.limit).unwrap_or(i64::MAX);
        cmd.arg("LIMIT").arg(0).arg(limit);
        let raw: Vec<String> = with_timeout("recent", self.timeout, async move {
            cmd.query_async(&mut conn).await
        })
        .await?;
        let mut messages = raw
            .iter()
            .map(|j| decode_message(j))
            .collect::<Result<Vec<_>, _>>()?;
        messages.sort_by_key(|m| m.seq);
        Ok(messages)
    }

    async fn subscribe(&self, user: &UserId) -> Result<(), BrokerError> {
        match self.subscriptions()? {
            Subscriptions::Single(s) => s.subscribe(user).await,
            Subscriptions::Sharded(s) => s.subscribe(user).await,
        }
    }

    async fn unsubscribe(&self, user: &UserId) -> Result<(), BrokerError> {
        match self.subscriptions()? {
            Subscriptions::Single(s) => s.unsubscribe(user).await,
            Subscriptions::Sharded(s) => s.unsubscribe(user).await,
        }
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        with_timeout("ping", self.timeout, async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(|_| ())
    }
}
