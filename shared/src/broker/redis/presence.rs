//! [`Presence`] on Redis.
//!
//! Keys: `presence:{user}:sessions` (hash node → session count) and
//! `presence:{user}:announced` (set while peers believe the user online) share
//! the user's hash tag, so the scripts touching them stay within one Redis
//! Cluster slot; `presence:nodes` (sorted set of node → heartbeat expiry),
//! `presence:node:<node>` (users with sessions there, for reaping) and
//! `presence:offline` (sorted set of candidates → due time) are shared.
//! Times come from the Redis server's clock, so node clocks may differ.

use super::{with_timeout, RedisBroker};
use crate::broker::{BrokerError, Presence};
use crate::domain::UserId;
use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

const NODES: &str = "presence:nodes";
const OFFLINE: &str = "presence:offline";

fn sessions_key(user: &UserId) -> String {
    format!("presence:{{{user}}}:sessions")
}

fn announced_key(user: &UserId) -> String {
    format!("presence:{{{user}}}:announced")
}

fn node_key(node: &str) -> String {
    format!("presence:node:{node}")
}

/// KEYS: nodes. ARGV: node, ttl ms.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now
"#,
    )
});

/// KEYS: sessions, announced. ARGV: node. Returns 1 when peers must hear "online".
static OPENED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if redis.call('SET', KEYS[2], '1', 'NX') then return 1 end
return 0
"#,
    )
});

/// KEYS: sessions. ARGV: node. Returns 1 when no session is left anywhere.
static CLOSED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
if redis.call('HLEN', KEYS[1]) == 0 then return 1 end
return 0
"#,
    )
});

/// KEYS: sessions, announced. Returns 1 when peers must hear "offline".
static CONFIRM_OFFLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HLEN', KEYS[1]) == 0 and redis.call('DEL', KEYS[2]) == 1 then return 1 end
return 0
"#,
    )
});

/// KEYS: a sorted set. ARGV: extra ms. Members with score ≤ now (server time) + extra.
static DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now + tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
"#,
    )
});

/// KEYS: offline candidates. ARGV: user, grace ms.
static CANDIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"#,
    )
});

impl RedisBroker {
    async fn make_candidate(&self, user: &UserId, grace: Duration) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let mut inv = CANDIDATE.prepare_invoke();
        inv.key(OFFLINE)
            .arg(user.as_str())
            .arg(grace.as_millis() as u64);
        with_timeout("presence", self.timeout, inv.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Presence for RedisBroker {
    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let mut inv = HEARTBEAT.prepare_invoke();
        inv.key(NODES).arg(node).arg(ttl.as_millis() as u64);
        with_timeout("presence", self.timeout, inv.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    async fn session_opened(&self, user: &UserId, node: &str) -> Result<bool, BrokerError> {
        let mut conn = self.conn.clone();
        let mut inv = OPENED.prepare_invoke();
        inv.key(sessions_key(user))
            .key(announced_key(user))
            .arg(node);
        let announce: i64 =
            with_timeout("presence", self.timeout, inv.invoke_async(&mut conn)).await?;
        let mut conn = self.conn.clone();
        with_timeout("presence", self.timeout, async move {
            redis::cmd("SADD")
                .arg(node_key(node))
                .arg(user.as_str())
                .query_async::<i64>(&mut conn)
                .await
        })
        .await?;
        Ok(announce == 1)
    }

    async fn session_closed(
        &self,
        user: &UserId,
        node: &str,
        grace: Duration,
    ) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let mut inv = CLOSED.prepare_invoke();
        inv.key(sessions_key(user)).arg(node);
        let last: i64 = with_timeout("presence", self.timeout, inv.invoke_async(&mut conn)).await?;
        if last == 1 {
            self.make_candidate(user, grace).await?;
        }
        Ok(())
    }

    async fn forget_node(&self, node: &str, grace: Duration) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let key = node_key(node);
        let users: Vec<String> = with_timeout("presence", self.timeout, async {
            redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut conn)
                .await
        })
        .await?;
        for user in users.iter().filter_map(|u| UserId::parse(u.as_str()).ok()) {
            let mut conn = self.conn.clone();
            let sessions = sessions_key(&user);
            let left: i64 = with_timeout("presence", self.timeout, async {
                redis::pipe()
                    .cmd("HDEL")
                    .arg(&sessions)
                    .arg(node)
                    .ignore()
                    .cmd("HLEN")
                    .arg(&sessions)
                    .query_async::<(i64,)>(&mut conn)
                    .await
                    .map(|(n,)| n)
            })
            .await?;
            if left == 0 {
                self.make_candidate(&user, grace).await?;
            }
        }
        // Two keys in two slots: two commands (a cluster refuses a cross-slot
        // pipeline); the node leaves the heartbeat set last, so a failure in
        // between is retried by the next reaper.
        let mut conn = self.conn.clone();
        with_timeout("presence", self.timeout, async {
            redis::cmd("DEL")
                .arg(&key)
                .query_async::<()>(&mut conn)
                .await?;
            redis::cmd("ZREM")
                .arg(NODES)
                .arg(node)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn reap_dead_nodes(&self, grace: Duration) -> Result<usize, BrokerError> {
        let mut conn = self.conn.clone();
        let mut due = DUE.prepare_invoke();
        due.key(NODES).arg(0).arg(100);
        let dead: Vec<String> =
            with_timeout("presence", self.timeout, due.invoke_async(&mut conn)).await?;
        for node in &dead {
            tracing::warn!(%node, "node heartbeat expired; reaping its sessions");
            self.forget_node(node, grace).await?;
        }
        Ok(dead.len())
    }

    async fn due_offline(&self, max: usize) -> Result<Vec<UserId>, BrokerError> {
        let mut conn = self.conn.clone();
        let mut due = DUE.prepare_invoke();
        due.key(OFFLINE).arg(0).arg(max.max(1));
        let users: Vec<String> =
            with_timeout("presence", self.timeout, due.invoke_async(&mut conn)).await?;
        let mut offline = Vec::new();
        for raw in users {
            let mut conn = self.conn.clone();
            // ZREM hands each candidate to exactly one node.
            let mine: i64 = with_timeout("presence", self.timeout, async {
                redis::cmd("ZREM")
                    .arg(OFFLINE)
                    .arg(&raw)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
            let Ok(user) = UserId::parse(raw) else {
                continue;
            };
            if mine == 0 {
                continue;
            }
            let mut conn = self.conn.clone();
            let mut inv = CONFIRM_OFFLINE.prepare_invoke();
            inv.key(sessions_key(&user)).key(announced_key(&user));
            let announce: i64 =
                with_timeout("presence", self.timeout, inv.invoke_async(&mut conn)).await?;
            if announce == 1 {
                offline.push(user);
            }
        }
        Ok(offline)
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BrokerError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        // One key per user, each in its own slot on a cluster: concurrent
        // commands, which the multiplexed connection pipelines anyway.
        let lookups = users.iter().map(|u| {
            let mut conn = self.conn.clone();
            let key = sessions_key(u);
            async move {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
            }
        });
        let found = with_timeout("presence", self.timeout, async {
            futures_util::future::join_all(lookups)
                .await
                .into_iter()
                .collect::<redis::RedisResult<Vec<i64>>>()
        })
        .await?;
        Ok(found.into_iter().map(|n| n > 0).collect())
    }
}
