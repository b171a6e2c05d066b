//! One WebSocket connection.
//!
//! Two halves: a writer task that drains the session's bounded outbound queue
//! into the socket, and the read loop below, which parses each text frame
//! ([`chat_shared::protocol::ClientFrame::parse`]) and hands it to
//! [`handlers::handle`]. Replies and fan-out deliveries share the queue; when it
//! is full the session is a slow consumer and closes with 1013 (guarantee 7).
//!
//! Close codes: 1012 shutdown, 1013 slow consumer, 4001 token expired,
//! 4008 oversized or non-text frames.

pub mod handlers;
pub mod outbound;

use crate::hub::SessionHandle;
use crate::startup::AppState;
use actix_web::web;
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use bytestring::ByteString;
use chat_shared::auth::Identity;
use chat_shared::domain::{ChatId, SessionId, Timestamp};
use chat_shared::protocol::{ErrorCode, Message, RequestId, ServerFrame, MAX_FRAME_BYTES};
use futures_util::StreamExt;
use outbound::{Outbound, QueueReceiver, QueueSender, Sequencer};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a close frame may wait for a client to make room for it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the writer may take to flush queued frames when a session ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the read loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client closed or the connection dropped.
    ClientGone,
    /// We close with this code.
    Close(u16, &'static str),
}

/// State of one session, owned by its read loop.
pub struct Session {
    /// Shared application state.
    pub state: web::Data<AppState>,
    /// Who is connected (replaced by an `auth` refresh).
    pub identity: Identity,
    /// This session.
    pub id: SessionId,
    /// The outbound queue (also held by the hub for deliveries).
    pub outbound: QueueSender,
    /// Cancelled when the outbound queue overflowed.
    pub slow: CancellationToken,
    /// When a typing indicator was last forwarded, per chat.
    pub typing_sent: HashMap<ChatId, Instant>,
}

impl Session {
    /// Queues a reply; a full queue makes this a slow consumer.
    pub fn reply(&self, frame: &ServerFrame) {
        self.state
            .metrics
            .frames_out
            .with_label_values(&[frame.kind()])
            .inc();
        if let ServerFrame::Error { code, .. } = frame {
            self.state
                .metrics
                .errors
                .with_label_values(&[code.as_str()])
                .inc();
        }
        self.enqueue(Outbound::Frame(ByteString::from(frame.to_json())));
    }

    /// Queues the `ack` of this session's own message (the sequencer then
    /// never echoes the message itself back here).
    pub fn reply_ack(&self, id: Option<RequestId>, message: Message) {
        self.state
            .metrics
            .frames_out
            .with_label_values(&["ack"])
            .inc();
        let (chat, seq) = (message.chat_id, message.seq);
        let frame = ByteString::from(ServerFrame::Ack { id, message }.to_json());
        self.enqueue(Outbound::Ack { chat, seq, frame });
    }

    /// Queues an item; a full queue makes this a slow consumer.
    pub fn enqueue(&self, item: Outbound) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outbound.try_send(Box::new(item)) {
            self.slow.cancel();
        }
    }

    /// Queues an item, waiting for room (for long `sync` answers, which are
    /// paced by the client's reading instead of dropped). Gives up — and marks
    /// the session slow — if the client does not read for `FLUSH_TIMEOUT`.
    pub async fn enqueue_paced(&self, item: Outbound) -> bool {
        match tokio::time::timeout(FLUSH_TIMEOUT, self.outbound.send(Box::new(item))).await {
            Ok(Ok(())) => true,
            _ => {
                self.slow.cancel();
                false
            }
        }
    }

    /// Queues an `error` reply.
    pub fn reply_error(&self, id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) {
        self.reply(&ServerFrame::Error {
            id,
            code,
            message: message.into(),
            retry_after_ms: None,
        });
    }
}

/// Runs a session until the client leaves or we close it.
///
/// A plain function returning an `async move` block rather than an `async fn`:
/// an `async fn` copies each argument into a local of its future, and both
/// copies stay reserved for the session's whole life (as does every value a
/// local was moved out of). Built here, the session, socket and stream live in
/// the future once — an idle session is its task, so this is per-connection
/// memory (see `loadtest/README.md`, memory per idle connection).
pub fn run(
    state: web::Data<AppState>,
    identity: Identity,
    socket: actix_ws::Session,
    stream: actix_ws::MessageStream,
) -> impl std::future::Future<Output = ()> {
    let (tx, rx) = outbound::queue(state.session_queue);
    let session = Session {
        state,
        identity,
        id: SessionId::generate(),
        outbound: tx,
        slow: CancellationToken::new(),
        typing_sent: HashMap::new(),
    };
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    serve(session, socket, stream, rx)
}

/// The life of a session: register, read until the end, unregister, close.
// Not an `async fn` on purpose: see `run`.
#[allow(clippy::manual_async_fn)]
fn serve(
    mut session: Session,
    mut socket: actix_ws::Session,
    mut stream: AggregatedMessageStream,
    rx: QueueReceiver,
) -> impl std::future::Future<Output = ()> {
    async move {
        let state = session.state.clone();
        let id = session.id;
        let user = session.identity.user_id.clone();
        // `hello` is queued before the hub can deliver anything: it is always the
        // first frame.
        session.reply(&ServerFrame::Hello {
            user_id: user.clone(),
            role: session.identity.role,
            node: state.node_id.clone(),
            session_id: id,
            server_time: Timestamp::now(),
        });
        let first = state.hub.register(
            &user,
            SessionHandle {
                id,
                outbound: session.outbound.clone(),
                slow: session.slow.clone(),
                role: session.identity.role,
            },
        );
        state.metrics.connections.inc();
        state.metrics.connects.inc();
        if first {
            if let Err(e) = state.service.broker.subscribe(&user).await {
                // The subscriber retries on its own; this session still works for
                // requests and will `sync` what it missed.
                tracing::warn!(error = %e, "subscribing a user failed");
            }
        }
        // Boxed, like the frame handler: awaited once, not worth keeping room for.
        Box::pin(state.presence.opened(&user)).await;
        let writer = tokio::spawn(write_loop(
            socket.clone(),
            rx,
            Sequencer::new(state.session_queue),
            session.slow.clone(),
        ));

        let ending = read_loop(&mut session, &mut socket, &mut stream).await;

        if state.hub.unregister(&user, id) {
            if let Err(e) = state.service.broker.unsubscribe(&user).await {
                tracing::debug!(error = %e, "unsubscribing a user failed");
            }
        }
        state.presence.closed(&user).await;
        state.metrics.connections.dec();
        let code = match ending {
            Ending::ClientGone => 1000,
            Ending::Close(code, _) => code,
        };
        state
            .metrics
            .disconnects
            .with_label_values(&[&code.to_string()])
            .inc();
        // Let the writer flush what is queued (unless the client is the problem).
        drop(session);
        if code == 1013 {
            state.metrics.slow_consumers.inc();
            writer.abort();
        } else if tokio::time::timeout(FLUSH_TIMEOUT, writer).await.is_err() {
            tracing::debug!("writer did not flush in time");
        }
        if let Ending::Close(code, reason) = ending {
            // A client that stopped reading may not make room for the close frame
            // for a long time: the session is over either way (unregistered,
            // counted), so the close frame waits on its own, bounded, and the
            // socket handle is dropped if the client never reads again.
            tokio::spawn(async move {
                let close = socket.close(Some(CloseReason {
                    code: CloseCode::Other(code),
                    description: Some(reason.to_owned()),
                }));
                if tokio::time::timeout(CLOSE_TIMEOUT, close).await.is_err() {
                    tracing::debug!(
                        code,
                        "close frame not accepted in time; dropping the socket"
                    );
                }
            });
        }
    }
}

/// Drains the queue into the socket, through the sequencer (not an `async fn`
/// for the reason given at [`run`]).
#[allow(clippy::manual_async_fn)]
fn write_loop(
    mut socket: actix_ws::Session,
    mut rx: QueueReceiver,
    mut sequencer: Sequencer,
    slow: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    async move {
        // Usually one frame per item: room for more is made when needed.
        let mut ready = Vec::with_capacity(1);
        while let Some(item) = rx.recv().await {
            if sequencer.push(*item, &mut ready).is_err() {
                slow.cancel();
                return;
            }
            for text in ready.drain(..) {
                if socket.text(text).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn read_loop(
    session: &mut Session,
    socket: &mut actix_ws::Session,
    stream: &mut AggregatedMessageStream,
) -> Ending {
    let draining = session.state.draining.clone();
    let drain_window = session.state.drain;
    // Each session waits a random share of the drain window before closing,
    // so clients do not all reconnect to the remaining nodes at once.
    let close_for_drain = async move {
        draining.cancelled().await;
        let share = drain_window.mul_f64(fastrand::f64());
        tokio::time::sleep(share).await;
    };
    tokio::pin!(close_for_drain);
    let slow = session.slow.clone();
    loop {
        let expiry = expiry_instant(&session.identity);
        tokio::select! {
            biased;
            _ = slow.cancelled() => return Ending::Close(1013, "slow consumer"),
            _ = &mut close_for_drain => return Ending::Close(1012, "service restart"),
            _ = tokio::time::sleep_until(expiry) => return Ending::Close(4001, "token expired"),
            msg = stream.next() => match msg {
                None => return Ending::ClientGone,
                Some(Ok(AggregatedMessage::Text(text))) => {
                    // Boxed: handling a frame awaits the store and the broker,
                    // a large future that would otherwise be part of every
                    // idle session's task (see loadtest/README.md, memory).
                    if let Some(ending) = Box::pin(handlers::handle(session, &text)).await {
                        return ending;
                    }
                }
                Some(Ok(AggregatedMessage::Ping(p))) => {
                    if socket.pong(&p).await.is_err() {
                        return Ending::ClientGone;
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                // Answer a close with a close (RFC 6455 §5.5.1), echoing the code.
                Some(Ok(AggregatedMessage::Close(reason))) => {
                    let code = reason.map_or(1000, |r| u16::from(r.code));
                    return Ending::Close(code, "");
                }
                Some(Ok(AggregatedMessage::Binary(_))) => {
                    session.state.metrics.frames_in.with_label_values(&["binary"]).inc();
                    return Ending::Close(4008, "binary frames are not supported");
                }
                Some(Err(ProtocolError::Overflow)) => {
                    session.state.metrics.frames_in.with_label_values(&["oversized"]).inc();
                    return Ending::Close(4008, "frame too large");
                }
                // The connection dropped: nobody to send a close frame to.
                Some(Err(ProtocolError::Io(e))) => {
                    tracing::debug!(error = %e, "websocket connection lost");
                    return Ending::ClientGone;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket protocol error");
                    return Ending::Close(4008, "protocol error");
                }
            }
        }
    }
}

/// When the session's token expires, as a tokio instant.
fn expiry_instant(identity: &Identity) -> tokio::time::Instant {
    let left_ms = identity.expires_at.millis() - Timestamp::now().millis();
    let left = Duration::from_millis(left_ms.clamp(0, 365 * 24 * 3600 * 1000) as u64);
    tokio::time::Instant::now() + left
}
