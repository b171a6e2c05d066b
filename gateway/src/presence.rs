//! Telling chat peers who is online — the gateway's side of [`Presence`].
//!
//! Sessions report opening and closing; a chore loop renews this node's
//! heartbeat, reaps nodes that died, and announces users whose offline grace
//! period ran out. Announcements go to the user's chat peers only, once per
//! real transition (see [`Presence`] for the debouncing), so presence traffic
//! stays proportional to actual comings and goings.

use chat_shared::broker::{Broker, Envelope, Presence};
use chat_shared::domain::{Role, UserId};
use chat_shared::protocol::ServerFrame;
use chat_shared::store::Store;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Presence timing.
#[derive(Debug, Clone, Copy)]
pub struct PresenceSettings {
    /// A node counts as dead this long after its last heartbeat.
    pub ttl: Duration,
    /// Offline is announced only after this long without any session.
    pub grace: Duration,
    /// How often the chores run (heartbeat, reaping, announcements).
    pub tick: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(15),
            grace: Duration::from_secs(5),
            tick: Duration::from_secs(1),
        }
    }
}

/// Presence announcements for one node.
pub struct PresenceService {
    /// The presence engine.
    pub presence: Arc<dyn Presence>,
    /// Where announcements are published.
    pub broker: Arc<dyn Broker>,
    /// Where chat peers are looked up.
    pub store: Arc<dyn Store>,
    /// This node.
    pub node: String,
    /// Timing.
    pub settings: PresenceSettings,
}

impl PresenceService {
    /// A session of `user` opened here.
    pub async fn opened(&self, user: &UserId) {
        match self.presence.session_opened(user, &self.node).await {
            Ok(true) => self.announce(user, true).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "recording presence failed"),
        }
    }

    /// A session of `user` closed here.
    pub async fn closed(&self, user: &UserId) {
        if let Err(e) = self
            .presence
            .session_closed(user, &self.node, self.settings.grace)
            .await
        {
            tracing::warn!(error = %e, "recording presence failed");
        }
    }

    /// Publishes a `presence` event about `user` to each of their chat peers.
    async fn announce(&self, user: &UserId, online: bool) {
        let mut peers = BTreeSet::new();
        for role in [Role::Patient, Role::Doctor] {
            match self.store.chats_of(user, role).await {
                Ok(chats) => peers.extend(
                    chats
                        .iter()
                        .filter_map(|c| c.participants().peer_of(user).cloned()),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "looking up chat peers for presence failed");
                    return;
                }
            }
        }
        let frame = ServerFrame::Presence {
            user_id: user.clone(),
            online,
        };
        let envelope = Envelope::new(None, &frame);
        for peer in peers {
            if let Err(e) = self.broker.publish(&peer, envelope.clone()).await {
                tracing::warn!(error = %e, "publishing presence failed");
            }
        }
    }

    /// Heartbeat, reaping and offline announcements until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        // Sessions recorded under this node's name by an earlier incarnation
        // died with it.
        if let Err(e) = self
            .presence
            .forget_node(&self.node, self.settings.grace)
            .await
        {
            tracing::warn!(error = %e, "forgetting this node's old sessions failed");
        }
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.chores().await,
            }
        }
    }

    async fn chores(&self) {
        if let Err(e) = self.presence.heartbeat(&self.node, self.settings.ttl).await {
            tracing::warn!(error = %e, "presence heartbeat failed");
            return;
        }
        if let Err(e) = self.presence.reap_dead_nodes(self.settings.grace).await {
            tracing::warn!(error = %e, "reaping dead nodes failed");
        }
        match self.presence.due_offline(1000).await {
            Ok(users) => {
                for user in users {
                    self.announce(&user, false).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "announcing offline users failed"),
        }
    }
}
