//! Presence: who is online, across nodes.

use super::BrokerError;
use crate::domain::UserId;
use async_trait::async_trait;
use std::time::Duration;

/// Who is online across the cluster.
///
/// A user is online while any node holds a session of theirs. Sessions are
/// counted per node, and nodes renew a heartbeat: a node that dies (kill -9)
/// stops counting once its heartbeat expires and a living node reaps it — no
/// per-user timers that a dead node could never clear.
///
/// Announcements are debounced: going offline is only a *candidate* until a
/// grace period passes without a new session, and peers are told "online" only
/// if they were last told "offline". A user who hops from a draining node to
/// another within the grace period causes no presence traffic at all, which is
/// what keeps a mass reconnect from becoming a broadcast storm.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Renews `node`'s heartbeat for `ttl`.
    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<(), BrokerError>;

    /// A session of `user` opened on `node`. `true` when peers must be told
    /// the user is online.
    async fn session_opened(&self, user: &UserId, node: &str) -> Result<bool, BrokerError>;

    /// A session of `user` on `node` closed. If it was their last anywhere,
    /// they become an offline candidate, due after `grace`.
    async fn session_closed(
        &self,
        user: &UserId,
        node: &str,
        grace: Duration,
    ) -> Result<(), BrokerError>;

    /// Forgets every session recorded for `node` (a node restarting under the
    /// same name calls this first: its old sessions died with it). Users left
    /// with none become offline candidates, due after `grace`.
    async fn forget_node(&self, node: &str, grace: Duration) -> Result<(), BrokerError>;

    /// Removes the sessions of nodes whose heartbeat expired; users left with
    /// none become offline candidates, due after `grace`. Returns how many
    /// nodes were reaped.
    async fn reap_dead_nodes(&self, grace: Duration) -> Result<usize, BrokerError>;

    /// Takes due offline candidates (each is handed to exactly one caller) and
    /// returns those who are still without a session and whose peers were told
    /// "online": peers must now be told "offline".
    async fn due_offline(&self, max: usize) -> Result<Vec<UserId>, BrokerError>;

    /// Whether each user is online.
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BrokerError>;
}
