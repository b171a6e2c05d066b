//! WebSocket frames on the upgraded connection (RFC 6455, with actix-http's
//! `ws::Codec` doing the framing and masking).
//!
//! Why not a `Framed`: its read and write buffers are allocated up front
//! (8 KiB each) and kept for the connection's life, and an idle session is
//! almost nothing but those buffers. Here a connection keeps **no buffer while
//! it is idle**: bytes are read through a scratch array on the stack of the
//! poll, copied into the session's buffer only when a frame is incomplete, and
//! the buffer is released as soon as it is empty again; outgoing frames are
//! encoded into a buffer that lives for one write.

use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, Message, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes read from the socket per system call (on the poll's stack, not kept).
const SCRATCH_BYTES: usize = 4096;

/// A complete message from the client (continuations already joined).
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message: a client frame of the protocol.
    Text(ByteString),
    /// A binary message (refused by the protocol; its bytes are not kept).
    Binary,
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong (ignored).
    Pong,
    /// The client closes, with its close code if it gave one.
    Close(Option<u16>),
}

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A frame, or a message of continuation frames, is larger than allowed.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    /// A text message is not UTF-8.
    #[error("text message is not valid UTF-8")]
    NotUtf8,
    /// The client broke the framing rules (unmasked frame, bad opcode, …).
    #[error("websocket protocol error: {0}")]
    Protocol(ProtocolError),
    /// The connection failed.
    #[error("reading the connection: {0}")]
    Io(#[from] io::Error),
}

/// Reads messages from the client half of a connection.
pub struct FrameReader<R> {
    io: R,
    codec: Codec,
    max_bytes: usize,
    /// Bytes of an incomplete frame; empty (unallocated) between frames.
    buf: BytesMut,
    /// The fragments of a text message sent as continuation frames.
    fragments: Option<BytesMut>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from `io`, starting with `buffered` (bytes the client sent right
    /// after its upgrade request, already read by the HTTP layer). Frames and
    /// joined messages above `max_bytes` are refused.
    pub fn new(io: R, buffered: BytesMut, max_bytes: usize) -> Self {
        let mut reader = Self {
            io,
            codec: Codec::new().max_size(max_bytes),
            max_bytes,
            buf: buffered,
            fragments: None,
        };
        reader.release_if_empty();
        reader
    }

    /// The next complete message; `None` once the client has closed the
    /// connection (end of stream).
    pub async fn next(&mut self) -> Option<Result<Incoming, ReadError>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    self.release_if_empty();
                    match self.join(frame) {
                        Ok(Some(message)) => return Some(Ok(message)),
                        Ok(None) => continue,
                        Err(e) => return Some(Err(e)),
                    }
                }
                Ok(None) => {}
                Err(ProtocolError::Overflow) => {
                    return Some(Err(ReadError::TooLarge(self.max_bytes)))
                }
                Err(e) => return Some(Err(ReadError::Protocol(e))),
            }
            match self.fill().await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(ReadError::Io(e))),
            }
        }
    }

    /// Turns a frame into a message, joining continuation frames.
    fn join(&mut self, frame: Frame) -> Result<Option<Incoming>, ReadError> {
        Ok(Some(match frame {
            Frame::Text(bytes) => text(bytes)?,
            Frame::Binary(_) | Frame::Continuation(Item::FirstBinary(_)) => Incoming::Binary,
            Frame::Continuation(Item::FirstText(bytes)) => {
                self.fragments = Some(BytesMut::from(&bytes[..]));
                return Ok(None);
            }
            Frame::Continuation(Item::Continue(bytes)) => {
                self.append(&bytes)?;
                return Ok(None);
            }
            Frame::Continuation(Item::Last(bytes)) => {
                self.append(&bytes)?;
                match self.fragments.take() {
                    Some(whole) => text(whole.freeze())?,
                    // The last fragment of a binary message.
                    None => Incoming::Binary,
                }
            }
            Frame::Ping(payload) => Incoming::Ping(payload),
            Frame::Pong(_) => Incoming::Pong,
            Frame::Close(reason) => Incoming::Close(reason.map(|r| u16::from(r.code))),
        }))
    }

    /// Adds a fragment to the text message being joined (fragments of a binary
    /// message are dropped: the first one already ended the session).
    fn append(&mut self, bytes: &[u8]) -> Result<(), ReadError> {
        if let Some(fragments) = self.fragments.as_mut() {
            if fragments.len() + bytes.len() > self.max_bytes {
                self.fragments = None;
                return Err(ReadError::TooLarge(self.max_bytes));
            }
            fragments.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Reads once from the socket into the buffer.
    async fn fill(&mut self) -> io::Result<usize> {
        let (io, buf) = (&mut self.io, &mut self.buf);
        poll_fn(|cx| {
            let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH_BYTES];
            let mut read = ReadBuf::uninit(&mut scratch);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        })
        .await
    }

    /// Frees the buffer once it holds nothing (frames already decoded keep
    /// their own reference to the bytes they need).
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }
}

fn text(bytes: Bytes) -> Result<Incoming, ReadError> {
    ByteString::try_from(bytes)
        .map(Incoming::Text)
        .map_err(|_| ReadError::NotUtf8)
}

/// One frame the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text message (a server frame of the protocol).
    Text(ByteString),
    /// The answer to a client's ping.
    Pong(Bytes),
}

/// Writes frames to the client half of a connection.
pub struct FrameWriter<W> {
    io: W,
    codec: Codec,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Writes to `io`.
    pub fn new(io: W) -> Self {
        Self {
            io,
            codec: Codec::new(),
        }
    }

    /// Writes `frames` with one write (and drains the list).
    pub async fn send(&mut self, frames: &mut Vec<Outgoing>) -> io::Result<()> {
        let len = frames
            .iter()
            .map(|f| match f {
                Outgoing::Text(t) => t.len() + 10,
                Outgoing::Pong(p) => p.len() + 2,
            })
            .sum();
        let mut out = BytesMut::with_capacity(len);
        for frame in frames.drain(..) {
            let message = match frame {
                Outgoing::Text(t) => Message::Text(t),
                Outgoing::Pong(p) => Message::Pong(p),
            };
            self.codec.encode(message, &mut out).map_err(encode_error)?;
        }
        self.write(&out).await
    }

    /// Writes a close frame with `code` and `reason`.
    pub async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut out = BytesMut::with_capacity(reason.len() + 8);
        let reason = CloseReason {
            code: CloseCode::from(code),
            description: (!reason.is_empty()).then(|| reason.to_owned()),
        };
        self.codec
            .encode(Message::Close(Some(reason)), &mut out)
            .map_err(encode_error)?;
        self.write(&out).await?;
        self.io.shutdown().await
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        // TLS streams buffer what they encrypt: push it to the socket now.
        self.io.flush().await
    }
}

fn encode_error(e: ProtocolError) -> io::Error {
    io::Error::other(format!("encoding a websocket frame: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Client frames `(opcode, fin, payload)`: masked, as RFC 6455 requires
    /// of clients, and encoded by one codec (it tracks continuations).
    fn client_frames(frames: &[(u8, bool, &[u8])]) -> Vec<u8> {
        let mut codec = Codec::new().client_mode();
        let mut out = BytesMut::new();
        for &(opcode, fin, payload) in frames {
            let bytes = Bytes::copy_from_slice(payload);
            let message = match (opcode, fin) {
                (1, true) => Message::Text(ByteString::try_from(bytes).expect("test text")),
                (2, true) => Message::Binary(bytes),
                (9, _) => Message::Ping(bytes),
                (1, false) => Message::Continuation(Item::FirstText(bytes)),
                (0, false) => Message::Continuation(Item::Continue(bytes)),
                (0, true) => Message::Continuation(Item::Last(bytes)),
                other => panic!("no test frame for {other:?}"),
            };
            codec.encode(message, &mut out).expect("encodes");
        }
        out.to_vec()
    }

    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        client_frames(&[(opcode, fin, payload)])
    }

    async fn read_all(bytes: Vec<u8>, buffered: &[u8], max: usize) -> Vec<String> {
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            client.write_all(&bytes).await.expect("writes");
            client.shutdown().await.expect("shuts down");
        });
        let mut reader = FrameReader::new(server, BytesMut::from(buffered), max);
        let mut seen = Vec::new();
        while let Some(next) = reader.next().await {
            seen.push(match next {
                Ok(message) => format!("{message:?}"),
                Err(e) => format!("error: {e}"),
            });
            if seen.last().is_some_and(|s| s.starts_with("error")) {
                break;
            }
        }
        writer.await.expect("writer finishes");
        seen
    }

    #[tokio::test]
    async fn frames_split_across_reads_are_decoded_whole() {
        let mut bytes = client_frame(1, true, "x".repeat(300).as_bytes());
        bytes.extend(client_frame(9, true, b"p"));
        let seen = read_all(bytes, b"", 1024).await;
        assert_eq!(
            seen,
            [
                format!("Text({:?})", "x".repeat(300)),
                "Ping(b\"p\")".to_owned()
            ]
        );
    }

    #[tokio::test]
    async fn bytes_read_with_the_upgrade_request_come_first() {
        let first = client_frame(1, true, b"first");
        let second = client_frame(1, true, b"second");
        let seen = read_all(second, &first, 1024).await;
        assert_eq!(seen, ["Text(\"first\")", "Text(\"second\")"]);
    }

    #[tokio::test]
    async fn continuation_frames_are_joined_into_one_text_message() {
        let bytes = client_frames(&[
            (1, false, b"hel"),
            (9, true, b"between"),
            (0, false, b"lo "),
            (0, true, b"world"),
        ]);
        let seen = read_all(bytes, b"", 1024).await;
        assert_eq!(seen, ["Ping(b\"between\")", "Text(\"hello world\")"]);
    }

    #[tokio::test]
    async fn a_joined_message_above_the_limit_is_refused() {
        let bytes = client_frames(&[(1, false, &[b'a'; 600]), (0, true, &[b'b'; 600])]);
        let seen = read_all(bytes, b"", 1024).await;
        assert_eq!(seen, ["error: message larger than 1024 bytes"]);
    }

    #[tokio::test]
    async fn a_single_frame_above_the_limit_is_refused() {
        let seen = read_all(client_frame(1, true, &[b'a'; 2000]), b"", 1024).await;
        assert_eq!(seen, ["error: message larger than 1024 bytes"]);
    }

    #[tokio::test]
    async fn binary_messages_are_reported_without_their_bytes() {
        let seen = read_all(client_frame(2, true, &[1, 2, 3]), b"", 1024).await;
        assert_eq!(seen, ["Binary"]);
    }

    #[tokio::test]
    async fn text_that_is_not_utf8_is_refused() {
        let mut codec = Codec::new().client_mode();
        let mut out = BytesMut::new();
        codec
            .encode(
                Message::Continuation(Item::FirstText(Bytes::from_static(&[0xff, 0xfe]))),
                &mut out,
            )
            .expect("encodes");
        codec
            .encode(Message::Continuation(Item::Last(Bytes::new())), &mut out)
            .expect("encodes");
        let seen = read_all(out.to_vec(), b"", 1024).await;
        assert_eq!(seen, ["error: text message is not valid UTF-8"]);
    }

    #[tokio::test]
    async fn an_unmasked_client_frame_is_a_protocol_error() {
        let mut out = BytesMut::new();
        Codec::new()
            .encode(Message::Text("plain".into()), &mut out)
            .expect("encodes");
        let seen = read_all(out.to_vec(), b"", 1024).await;
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0].starts_with("error: websocket protocol error"),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn the_buffer_is_released_between_frames() {
        let (mut client, server) = tokio::io::duplex(4096);
        client
            .write_all(&client_frame(1, true, b"hi"))
            .await
            .expect("writes");
        let mut reader = FrameReader::new(server, BytesMut::new(), 1024);
        assert!(matches!(reader.next().await, Some(Ok(Incoming::Text(_)))));
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn written_frames_decode_on_the_client_side() {
        let (client, server) = tokio::io::duplex(4096);
        let mut writer = FrameWriter::new(server);
        let mut frames = vec![
            Outgoing::Text("one".into()),
            Outgoing::Pong(Bytes::from_static(b"p")),
            Outgoing::Text("two".into()),
        ];
        writer.send(&mut frames).await.expect("sends");
        assert!(frames.is_empty());
        writer.close(1013, "slow consumer").await.expect("closes");
        let mut bytes = BytesMut::new();
        let mut client = client;
        tokio::io::AsyncReadExt::read_buf(&mut client, &mut bytes)
            .await
            .expect("reads");
        let mut codec = Codec::new().client_mode();
        let mut seen = Vec::new();
        while let Some(frame) = codec.decode(&mut bytes).expect("decodes") {
            seen.push(match frame {
                Frame::Close(Some(r)) => format!("close {} {:?}", u16::from(r.code), r.description),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(
            seen,
            [
                "Text(b\"one\")",
                "Pong(b\"p\")",
                "Text(b\"two\")",
                "close 1013 Some(\"slow consumer\")"
            ]
        );
    }
}
