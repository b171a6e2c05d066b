//! The persister's side of the Redis stream: one member of the consumer group.

use super::keys;
use crate::broker::{BrokerError, EventLog, StreamEntry, StreamEvent};
use crate::config::RedisSettings;
use crate::domain::{ChatId, UserId};
use async_trait::async_trait;
use deadpool_redis::{Config, Pool, Runtime};
use redis::streams::{StreamId, StreamReadReply};
use std::sync::Mutex;
use std::time::Duration;

/// Reads the event stream as consumer `consumer` of group [`keys::GROUP`].
///
/// After a start or a failed batch it first re-reads this consumer's own pending
/// entries (delivered before, never acknowledged), so nothing a crash
/// interrupted is skipped; only then does it ask for new entries.
pub struct RedisEventLog {
    pool: Pool,
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
    pub async fn connect(settings: &RedisSettings, consumer: &str) -> Result<Self, BrokerError> {
        let pool = Config::from_url(settings.url.as_str())
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| BrokerError::Unavailable(format!("REDIS_URL: {e}")))?;
        let log = Self {
            pool,
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
                .arg(keys::STREAM)
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

    async fn conn(&self) -> Result<deadpool_redis::Connection, BrokerError> {
        tokio::time::timeout(self.timeout, self.pool.get())
            .await
            .map_err(|_| BrokerError::Unavailable("redis pool timed out".into()))?
            .map_err(|e| BrokerError::Unavailable(e.to_string()))
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
            .arg(keys::STREAM)
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
                .arg(keys::STREAM)
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
}
