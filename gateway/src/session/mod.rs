//! One WebSocket connection, after the upgrade ([`crate::upgrade`]).
//!
//! Two halves, polled by one task: a writer that drains the session's bounded
//! outbound queue into the socket, and the read loop below, which reads
//! messages ([`wire`]), parses each text frame
//! ([`chat_shared::protocol::ClientFrame::parse`]) and hands it to
//! [`handlers::handle`]. Replies and fan-out deliveries share the queue; when it
//! is full the session is a slow consumer and closes with 1013 (guarantee 7).
//!
//! Close codes: 1007 text that is not UTF-8, 1012 shutdown, 1013 slow consumer,
//! 4001 token expired, 4008 oversized or non-text frames.

pub mod handlers;
pub mod outbound;
pub mod wire;

use crate::hub::SessionHandle;
use crate::startup::AppState;
use actix_web::web;
use bytes::BytesMut;
use bytestring::ByteString;
use chat_shared::auth::Identity;
use chat_shared::domain::{ChatId, SessionId, Timestamp};
use chat_shared::protocol::{ErrorCode, Message, RequestId, ServerFrame, MAX_FRAME_BYTES};
use outbound::{Outbound, QueueReceiver, QueueSender, Sequencer};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wire::{FrameReader, FrameWriter, Incoming, ReadError};

/// How long a close frame may wait for a client to make room for it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the writer may take to flush queued frames when a session ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Most frames the writer puts in one write.
const WRITE_BATCH: usize = 64;

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

/// Runs a session on an upgraded connection until the client leaves or we
/// close it. `buffered` holds bytes the client sent right after its upgrade
/// request.
///
/// A plain function returning an `async move` block rather than an `async fn`:
/// an `async fn` copies each argument into a local of its future, and both
/// copies stay reserved for the session's whole life (as does every value a
/// local was moved out of). Built here, the session and both halves of the
/// connection live in the future once — an idle session is this future, so
/// this is per-connection memory (see `loadtest/README.md`, memory per idle
/// connection).
pub fn run<T>(
    state: web::Data<AppState>,
    identity: Identity,
    io: T,
    buffered: BytesMut,
) -> impl std::future::Future<Output = ()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, rx) = outbound::queue(state.session_queue);
    let sequencer = Sequencer::new(state.session_queue);
    let session = Session {
        state,
        identity,
        id: SessionId::generate(),
        outbound: tx,
        slow: CancellationToken::new(),
        typing_sent: HashMap::new(),
    };
    let (read, write) = tokio::io::split(io);
    serve(
        session,
        FrameReader::new(read, buffered, MAX_FRAME_BYTES),
        FrameWriter::new(write),
        rx,
        sequencer,
    )
}

/// The life of a session: register, read (and write) until the end,
/// unregister, flush, close.
// Not an `async fn` on purpose: see `run`.
#[allow(clippy::manual_async_fn)]
fn serve<R, W>(
    mut session: Session,
    mut reader: FrameReader<R>,
    mut writer: FrameWriter<W>,
    rx: QueueReceiver,
    sequencer: Sequencer,
) -> impl std::future::Future<Output = ()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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

        // The writer runs beside the read loop in this same task (a frame
        // handler may wait for the writer to make room, for long `sync`s). It
        // is never dropped halfway through a write: the close frame that may
        // follow must start on a frame boundary.
        let slow = session.slow.clone();
        let closing = {
            let write = write_loop(&mut writer, rx, sequencer, slow.clone());
            tokio::pin!(write);
            let mut written = None;
            let ending = {
                let read = read_loop(&mut session, &mut reader);
                tokio::pin!(read);
                loop {
                    tokio::select! {
                        ending = &mut read => break ending,
                        end = &mut write, if written.is_none() => written = Some(end),
                    }
                }
            };

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
            if code == 1013 {
                state.metrics.slow_consumers.inc();
            }
            // Dropping the session (and the hub's handle, above) closes the
            // queue: the writer sends what is queued, then ends. A slow
            // consumer's writer stops at the next frame boundary instead.
            drop(session);
            match ending {
                // The client is gone: nobody to flush to.
                Ending::ClientGone => None,
                Ending::Close(code, reason) => {
                    let limit = if code == 1013 {
                        CLOSE_TIMEOUT
                    } else {
                        FLUSH_TIMEOUT
                    };
                    let written = match written {
                        Some(end) => Some(end),
                        None => tokio::time::timeout(limit, &mut write).await.ok(),
                    };
                    match written {
                        Some(WriterEnd::Stopped) => Some((code, reason)),
                        Some(WriterEnd::Broken) => None,
                        None => {
                            tracing::debug!(
                                code,
                                "writer did not finish in time; dropping the socket"
                            );
                            None
                        }
                    }
                }
            }
        };
        let Some((code, reason)) = closing else {
            return;
        };
        // A client that stopped reading may not make room for the close frame
        // for a long time: bounded, then the socket is dropped.
        match tokio::time::timeout(CLOSE_TIMEOUT, writer.close(code, reason)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(code, error = %e, "sending the close frame failed"),
            Err(_) => tracing::debug!(
                code,
                "close frame not accepted in time; dropping the socket"
            ),
        }
    }
}

/// How the writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterEnd {
    /// On a frame boundary: the queue was closed, or the session turned slow.
    Stopped,
    /// Writing failed: the connection is unusable.
    Broken,
}

/// Drains the queue into the socket, through the sequencer, several ready
/// items per write. Between writes it stops as soon as the session is slow
/// (not an `async fn` for the reason given at [`run`]).
#[allow(clippy::manual_async_fn)]
fn write_loop<'a, W: AsyncWrite + Unpin>(
    writer: &'a mut FrameWriter<W>,
    mut rx: QueueReceiver,
    mut sequencer: Sequencer,
    slow: CancellationToken,
) -> impl std::future::Future<Output = WriterEnd> + 'a {
    async move {
        // Usually one frame per write: room for more is made when needed.
        let mut ready = Vec::with_capacity(1);
        loop {
            let item = tokio::select! {
                biased;
                _ = slow.cancelled() => return WriterEnd::Stopped,
                item = rx.recv() => item,
            };
            let Some(item) = item else {
                return WriterEnd::Stopped;
            };
            if sequencer.push(*item, &mut ready).is_err() {
                slow.cancel();
                return WriterEnd::Stopped;
            }
            // Whatever else is already queued goes out in the same write.
            while ready.len() < WRITE_BATCH {
                let Ok(item) = rx.try_recv() else { break };
                if sequencer.push(*item, &mut ready).is_err() {
                    slow.cancel();
                    break;
                }
            }
            if !ready.is_empty() {
                if let Err(e) = writer.send(&mut ready).await {
                    tracing::debug!(error = %e, "websocket write failed");
                    return WriterEnd::Broken;
                }
            }
            if ready.capacity() > WRITE_BATCH {
                ready = Vec::with_capacity(1);
            }
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    session: &mut Session,
    reader: &mut FrameReader<R>,
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
            msg = reader.next() => match msg {
                None => return Ending::ClientGone,
                Some(Ok(Incoming::Text(text))) => {
                    // Boxed: handling a frame awaits the store and the broker,
                    // a large future that would otherwise be part of every
                    // idle session's task (see loadtest/README.md, memory).
                    if let Some(ending) = Box::pin(handlers::handle(session, &text)).await {
                        return ending;
                    }
                }
                Some(Ok(Incoming::Ping(p))) => session.enqueue(Outbound::Pong(p)),
                Some(Ok(Incoming::Pong)) => {}
                // Answer a close with a close (RFC 6455 §5.5.1), echoing the code.
                Some(Ok(Incoming::Close(code))) => {
                    return Ending::Close(code.unwrap_or(1000), "");
                }
                Some(Ok(Incoming::Binary)) => {
                    session.state.metrics.frames_in.with_label_values(&["binary"]).inc();
                    return Ending::Close(4008, "binary frames are not supported");
                }
                Some(Err(ReadError::TooLarge(_))) => {
                    session.state.metrics.frames_in.with_label_values(&["oversized"]).inc();
                    return Ending::Close(4008, "frame too large");
                }
                Some(Err(ReadError::NotUtf8)) => {
                    return Ending::Close(1007, "text frames must be UTF-8");
                }
                // The connection dropped: nobody to send a close frame to.
                Some(Err(ReadError::Io(e))) => {
                    tracing::debug!(error = %e, "websocket connection lost");
                    return Ending::ClientGone;
                }
                Some(Err(e @ ReadError::Protocol(_))) => {
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
