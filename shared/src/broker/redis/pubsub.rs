//! The node's pub/sub side on a single Redis: a few multiplexed subscriber
//! connections, each owning a share of the channels of the users held by this
//! node. (On a Redis Cluster, [`super::sharded`] takes its place.)
//!
//! Each shard is a task that owns one Redis pub/sub connection and the set of
//! channels it should be subscribed to. Subscribe/unsubscribe requests arrive on
//! a bounded channel. When the connection drops, the task reconnects with
//! exponential back-off, re-subscribes every channel in its set, and tells the
//! inbox, so sessions can `sync` whatever was published in between — delivery
//! never silently stops after a Redis restart.

use super::keys::{self, Keyspace};
use crate::broker::{BrokerError, Envelope, Inbox};
use crate::domain::{Timestamp, UserId};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Pending subscribe/unsubscribe requests per shard before callers wait.
const COMMAND_QUEUE: usize = 1024;

enum Command {
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(String),
}

/// Handle to the subscriber shards.
pub struct Subscriber {
    keys: Keyspace,
    shards: Vec<mpsc::Sender<Command>>,
    hasher: std::collections::hash_map::RandomState,
    timeout: Duration,
}

impl Subscriber {
    /// Starts `shards` subscriber tasks delivering to `inbox` until `shutdown`.
    pub fn start(
        client: redis::Client,
        keys: Keyspace,
        shards: usize,
        timeout: Duration,
        inbox: Arc<dyn Inbox>,
        shutdown: CancellationToken,
    ) -> Self {
        let shards = (0..shards.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
                tokio::spawn(run_shard(
                    i,
                    client.clone(),
                    rx,
                    inbox.clone(),
                    timeout,
                    shutdown.clone(),
                ));
                tx
            })
            .collect();
        Self {
            keys,
            shards,
            hasher: Default::default(),
            timeout,
        }
    }

    fn shard_of(&self, channel: &str) -> &mpsc::Sender<Command> {
        &self.shards[(self.hasher.hash_one(channel) % self.shards.len() as u64) as usize]
    }

    /// Subscribes to `user`'s channels; returns once Redis confirmed (or a
    /// shard is reconnecting, in which case it subscribes on reconnect).
    pub async fn subscribe(&self, user: &UserId) -> Result<(), BrokerError> {
        let calls = self
            .keys
            .user_channels(user)
            .into_iter()
            .map(|channel| async move {
                let (tx, rx) = oneshot::channel();
                self.shard_of(&channel)
                    .send(Command::Subscribe(channel, tx))
                    .await
                    .map_err(|_| BrokerError::Unavailable("subscriber stopped".into()))?;
                match tokio::time::timeout(self.timeout, rx).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(BrokerError::Unavailable("subscriber stopped".into())),
                    Err(_) => Err(BrokerError::Unavailable("subscribe timed out".into())),
                }
            });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }

    /// Unsubscribes from `user`'s channels (fire and forget).
    pub async fn unsubscribe(&self, user: &UserId) -> Result<(), BrokerError> {
        for channel in self.keys.user_channels(user) {
            self.shard_of(&channel)
                .send(Command::Unsubscribe(channel))
                .await
                .map_err(|_| BrokerError::Unavailable("subscriber stopped".into()))?;
        }
        Ok(())
    }
}

async fn run_shard(
    index: usize,
    client: redis::Client,
    mut commands: mpsc::Receiver<Command>,
    inbox: Arc<dyn Inbox>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut channels: HashSet<String> = HashSet::new();
    let mut backoff = Duration::from_millis(50);
    // When the subscription was lost (None on the first connection).
    let mut lost_at: Option<Timestamp> = None;
    loop {
        // Connect and restore every subscription this shard owns.
        let connected = async {
            let conn = tokio::time::timeout(timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            let (mut sink, stream) = conn.split();
            if !channels.is_empty() {
                let all: Vec<&String> = channels.iter().collect();
                tokio::time::timeout(timeout, sink.subscribe(all))
                    .await
                    .map_err(|_| "resubscribe timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>((sink, stream))
        };
        let (mut sink, mut stream) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connected => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(shard = index, error = %e, "pub/sub connect failed; retrying");
                    // Requests that arrive while disconnected are recorded and
                    // answered; they take effect on reconnect.
                    let sleep = tokio::time::sleep(backoff);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = &mut sleep => break,
                            cmd = commands.recv() => match cmd {
                                None => return,
                                Some(Command::Subscribe(c, done)) => { channels.insert(c); let _ = done.send(Ok(())); }
                                Some(Command::Unsubscribe(c)) => { channels.remove(&c); }
                            }
                        }
                    }
                    // Capped low: while we are away, other nodes may already be
                    // appending again, and their events are missed live.
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        };
        backoff = Duration::from_millis(50);
        if let Some(since) = lost_at.take() {
            crate::metrics::REDIS.pubsub_reconnects.inc();
            tracing::info!(
                shard = index,
                channels = channels.len(),
                "pub/sub reconnected"
            );
            inbox.resubscribed(since);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Subscribe(c, done)) => {
                        let r = tokio::time::timeout(timeout, sink.subscribe(&c)).await;
                        channels.insert(c);
                        let _ = done.send(match r {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(BrokerError::Unavailable(e.to_string())),
                            Err(_) => Err(BrokerError::Unavailable("subscribe timed out".into())),
                        });
                    }
                    Some(Command::Unsubscribe(c)) => {
                        if keys::user_of_channel(&c).is_some_and(|u| inbox.wants(&u)) {
                            continue;
                        }
                        channels.remove(&c);
                        if let Ok(Err(e)) = tokio::time::timeout(timeout, sink.unsubscribe(&c)).await {
                            tracing::debug!(shard = index, error = %e, "unsubscribe failed");
                        }
                    }
                },
                msg = stream.next() => match msg {
                    Some(msg) => {
                        let Some(user) = keys::user_of_channel(msg.get_channel_name()) else { continue };
                        match Envelope::decode(bytes::Bytes::copy_from_slice(msg.get_payload_bytes())) {
                            Some(env) => inbox.deliver(&user, env),
                            None => tracing::warn!(shard = index, "undecodable pub/sub payload dropped"),
                        }
                    }
                    None => {
                        tracing::warn!(shard = index, "pub/sub connection lost; reconnecting");
                        lost_at = Some(Timestamp::now());
                        break;
                    }
                }
            }
        }
    }
}
