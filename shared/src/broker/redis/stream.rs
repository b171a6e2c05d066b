//! The persister's side of the Redis stream: one member of the consumer group
//! of one shard's stream.
//!
//! Each shard stream holds the events of its chats in `seq` order; a persister
//! runs one [`RedisEventLog`] per shard, so replicas share every shard's work
//! through the shard's consumer group.

use super::conn::{Blocking, Conn};
use super::keys::{self, Shard};
use crate::broker::{Backlog, BrokerError, Claimed, EventLog, StreamEntry, StreamEvent};
use crate::config::RedisSettings;
use crate::domain::{ChatId, UserId};
use async_trait::async_trait;
use redis::streams::{StreamId, StreamReadReply};
use std::sync::Mutex;
use std::time::Duration;

/// Reads one shard's event stream as consumer `consumer` of group [`keys::GROUP`].
///
/// Its connection is its own (blocking reads would stall a shared one). After a start or a failed batch it first re-reads this consumer's own pending
/// entries (delivered before, never acknowledged), so nothing a crash
/// interrupted is skipped; only then does it ask for new entries.
pub struct RedisEventLog {
    conn: Conn,
    stream: String,
    consumer: String,
    timeout: Duration,
    /// `Some(cursor)` while re-reading this consumer's pending entries: the id
    /// after which to continue (so an entry that is never acknowledged cannot
    /// trap the reader in a loop).
    pending_cursor: Mutex<Option<String>>,
}

impl RedisEventLog {
    /// Connects and creates the consumer group if it does not exist yet (from
    /// the start of the stream, so events appended before any persister ran are
    /// not skipped).
    pub async fn connect(
        settings: &RedisSettings,
        shard: Shard,
        consumer: &str,
    ) -> Result<Self, BrokerError> {
        let log = Self {
            conn: Conn::connect(settings, Blocking::Yes).await?,
            stream: shard.stream(),
            consumer: consumer.to_owned(),
            timeout: settings.timeout,
            pending_cursor: Mutex::new(Some("0".into())),
        };
        log.ensure_group().await?;
        Ok(log)
    }

    /// Creates the group (idempotent).
    pub async fn ensure_group(&self) -> Result<(), BrokerError> {
        let mut conn = self.conn().await?;
        let r: redis::RedisResult<String> = tokio::time::timeout(
            self.timeout,
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&self.stream)
                .arg(keys::GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn),
        )
        .await
        .map_err(|_| BrokerError::Unavailable("XGROUP CREATE timed out".into()))?;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(BrokerError::Unavailable(e.to_string())),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BrokerError> {
        let mut conn = self.conn().await?;
        super::with_timeout("stream", self.timeout, cmd.query_async(&mut conn)).await
    }

    async fn conn(&self) -> Result<Conn, BrokerError> {
        Ok(self.conn.clone())
    }
}

fn field(entry: &StreamId, name: &str) -> Result<String, String> {
    entry
        .get::<String>(name)
        .ok_or_else(|| format!("entry {} has no field {name:?}", entry.id))
}

/// Decodes one stream entry written by the append scripts.
pub fn decode(entry: &StreamId) -> Result<StreamEvent, String> {
    match field(entry, "t")?.as_str() {
        "m" => serde_json::from_str(&field(entry, "d")?)
            .map(StreamEvent::Message)
            .map_err(|e| format!("entry {}: bad message: {e}", entry.id)),
        "r" => Ok(StreamEvent::Read {
            chat_id: ChatId::parse(&field(entry, "c")?).map_err(|e| e.to_string())?,
            user_id: UserId::parse(field(entry, "u")?).map_err(|e| e.to_string())?,
            up_to_seq: field(entry, "s")?
                .parse()
                .map_err(|e| format!("entry {}: bad seq: {e}", entry.id))?,
        }),
        other => Err(format!("entry {}: unknown event type {other:?}", entry.id)),
    }
}

#[async_trait]
impl EventLog for RedisEventLog {
    async fn read_batch(
        &self,
        max: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, BrokerError> {
        let cursor = self.pending_cursor.lock().ok().and_then(|c| c.clone());
        let pending = cursor.is_some();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(keys::GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max.max(1));
        if !pending {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS")
            .arg(&self.stream)
            .arg(cursor.as_deref().unwrap_or(">"));
        let mut conn = self.conn().await?;
        let reply: Option<StreamReadReply> =
            match tokio::time::timeout(self.timeout + block, cmd.query_async(&mut conn)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) if e.code() == Some("NOGROUP") => {
                    // The stream or group vanished (Redis lost its data): recreate.
                    drop(conn);
                    self.ensure_group().await?;
                    return Ok(Vec::new());
                }
                Ok(Err(e)) => return Err(BrokerError::Unavailable(e.to_string())),
                Err(_) => return Err(BrokerError::Unavailable("XREADGROUP timed out".into())),
            };
        let entries: Vec<StreamEntry> = reply
            .map(|r| r.keys)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|k| k.ids)
            .map(|e| StreamEntry {
                event: decode(&e),
                id: e.id,
            })
            .collect();
        if pending {
            if let Ok(mut c) = self.pending_cursor.lock() {
                *c = entries.last().map(|e| e.id.clone());
            }
        }
        Ok(entries)
    }

    async fn ack(&self, ids: &[String]) -> Result<(), BrokerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let r: redis::RedisResult<i64> = tokio::time::timeout(
            self.timeout,
            redis::cmd("XACK")
                .arg(&self.stream)
                .arg(keys::GROUP)
                .arg(ids)
                .query_async(&mut conn),
        )
        .await
        .map_err(|_| BrokerError::Unavailable("XACK timed out".into()))?;
        r.map(|_| ())
            .map_err(|e| BrokerError::Unavailable(e.to_string()))
    }

    fn replay_pending(&self) {
        if let Ok(mut c) = self.pending_cursor.lock() {
            *c = Some("0".into());
        }
    }

    async fn claim_stale(
        &self,
        min_idle: Duration,
        max_deliveries: u64,
        max: usize,
    ) -> Result<Claimed, BrokerError> {
        let idle_ms = min_idle.as_millis() as u64;
        // XPENDING key group IDLE ms - + count → [[id, consumer, idle, deliveries], …]
        let stale: Vec<(String, String, u64, u64)> = self
            .query(
                redis::cmd("XPENDING")
                    .arg(&self.stream)
                    .arg(keys::GROUP)
                    .arg("IDLE")
                    .arg(idle_ms)
                    .arg("-")
                    .arg("+")
                    .arg(max.max(1)),
            )
            .await?;
        let mut claimed = Claimed::default();
        let mut retry = Vec::new();
        for (id, consumer, _, deliveries) in stale {
            if consumer == self.consumer {
                // Our own pending entries are replayed by `read_batch`.
                continue;
            }
            if deliveries >= max_deliveries {
                self.dead_letter(&id, &format!("not persisted after {deliveries} deliveries"))
                    .await?;
                claimed.dead_lettered += 1;
            } else {
                retry.push(id);
            }
        }
        if retry.is_empty() {
            return Ok(claimed);
        }
        // XCLAIM re-checks the idle time, so two replicas never both take an entry.
        let reply: redis::streams::StreamClaimReply = self
            .query(
                redis::cmd("XCLAIM")
                    .arg(&self.stream)
                    .arg(keys::GROUP)
                    .arg(&self.consumer)
                    .arg(idle_ms)
                    .arg(&retry),
            )
            .await?;
        claimed.entries = reply
            .ids
            .into_iter()
            .map(|e| StreamEntry {
                event: decode(&e),
                id: e.id,
            })
            .collect();
        Ok(claimed)
    }

    async fn dead_letter(&self, id: &str, reason: &str) -> Result<(), BrokerError> {
        let original: redis::streams::StreamRangeReply = self
            .query(redis::cmd("XRANGE").arg(&self.stream).arg(id).arg(id))
            .await?;
        let mut add = redis::cmd("XADD");
        add.arg(keys::DEAD_LETTERS)
            .arg("*")
            .arg("entry")
            .arg(id)
            .arg("reason")
            .arg(reason);
        if let Some(entry) = original.ids.first() {
            for (k, v) in &entry.map {
                if let redis::Value::BulkString(bytes) = v {
                    add.arg(format!("f:{k}")).arg(bytes.as_slice());
                }
            }
        }
        let _: String = self.query(&add).await?;
        tracing::error!(entry = %id, %reason, "stream entry moved to the dead-letter stream {}", keys::DEAD_LETTERS);
        self.ack(&[id.to_owned()]).await
    }

    async fn trim(&self) -> Result<u64, BrokerError> {
        // The oldest entry still needed: the oldest pending one, else the first
        // one not yet delivered (everything before it is acknowledged).
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&self.stream))
            .await?;
        let Some(group) = groups.iter().find(|g| {
            g.get("name")
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .as_deref()
                == Some(keys::GROUP)
        }) else {
            return Ok(0);
        };
        let last_delivered: String = group
            .get("last-delivered-id")
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .unwrap_or_else(|| "0-0".to_owned());
        let summary: (u64, Option<String>, Option<String>, redis::Value) = self
            .query(redis::cmd("XPENDING").arg(&self.stream).arg(keys::GROUP))
            .await?;
        let keep_from = match summary {
            (n, Some(oldest_pending), _, _) if n > 0 => oldest_pending,
            _ => next_id(&last_delivered),
        };
        // Exact trimming (no `~`): MINID removes only entries below `keep_from`.
        self.query(
            redis::cmd("XTRIM")
                .arg(&self.stream)
                .arg("MINID")
                .arg(&keep_from),
        )
        .await
    }

    async fn backlog(&self) -> Result<Backlog, BrokerError> {
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&self.stream))
            .await?;
        let group = groups.iter().find(|g| {
            g.get("name")
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .as_deref()
                == Some(keys::GROUP)
        });
        let num = |name: &str| -> u64 {
            group
                .and_then(|g| g.get(name))
                .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
                .unwrap_or(0)
        };
        Ok(Backlog {
            pending: num("pending"),
            undelivered: num("lag"),
        })
    }
}

/// The smallest stream id after `id` (`ms-seq` → `ms-(seq+1)`).
fn next_id(id: &str) -> String {
    match id.split_once('-') {
        Some((ms, seq)) => match seq.parse::<u64>() {
            Ok(s) => format!("{ms}-{}", s.saturating_add(1)),
            Err(_) => id.to_owned(),
        },
        None => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::next_id;

    #[test]
    fn the_next_stream_id_increments_the_sequence_part() {
        assert_eq!(next_id("1700000000000-0"), "1700000000000-1");
        assert_eq!(next_id("0-0"), "0-1");
    }
}
