//! The WebSocket upgrade, below the web application.
//!
//! actix-http hands every HTTP/1.1 request that asks to switch protocols to
//! this service, together with the connection itself and whatever the client
//! sent after its request. For `/ws` it admits the caller
//! ([`routes::ws::admit`]), answers `101 Switching Protocols` and runs the
//! session on the connection ([`session::run`]); anything else gets the JSON
//! error a web route would give, and the connection is closed.
//!
//! Why here and not in a web handler: a handler-side upgrade (actix-ws) keeps
//! the HTTP dispatcher — its two 8 KiB buffers — and a streaming response
//! with its channel alive for the session's whole life, which was most of an
//! idle session's memory. Here the dispatcher hands over the socket and is
//! done (figures: `loadtest/README.md`, memory per idle connection).

use crate::error::ApiError;
use crate::routes::ws::{admit, not_an_upgrade};
use crate::session;
use crate::startup::AppState;
use actix_codec::{AsyncRead, AsyncWrite, Framed};
use actix_http::body::{BodySize, MessageBody};
use actix_http::{h1, ws, ConnectionType, Request};
use actix_service::{fn_service, ServiceFactory};
use actix_web::{web, ResponseError};
use bytes::BytesMut;
use chat_shared::protocol::ErrorCode;
use futures_util::SinkExt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The path of the WebSocket endpoint.
pub const PATH: &str = "/ws";

/// How long writing the answer to an upgrade request may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the service returns per connection: the whole session, boxed so the
/// HTTP dispatcher that holds it stays small.
type Upgrade = Pin<Box<dyn Future<Output = Result<(), actix_http::Error>>>>;

/// The upgrade service for connections of type `T` (plain TCP or TLS).
pub fn service<T>(
    state: web::Data<AppState>,
) -> impl ServiceFactory<
    (Request, Framed<T, h1::Codec>),
    Config = (),
    Response = (),
    Error = actix_http::Error,
    InitError = (),
>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    fn_service(move |(req, framed): (Request, Framed<T, h1::Codec>)| {
        let upgrade: Upgrade = Box::pin(upgrade(state.clone(), req, framed));
        upgrade
    })
}

/// Answers one upgrade request; with `101`, runs the session to its end.
async fn upgrade<T>(
    state: web::Data<AppState>,
    req: Request,
    mut framed: Framed<T, h1::Codec>,
) -> Result<(), actix_http::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    if req.path() != PATH {
        let error = ApiError::new(
            ErrorCode::NotFound,
            format!("no such resource: {}", req.path()),
        );
        refuse(&mut framed, &error).await;
        return Ok(());
    }
    let identity = match admit(req.head(), &state) {
        Ok(identity) => identity,
        Err(error) => {
            refuse(&mut framed, &error).await;
            return Ok(());
        }
    };
    let response = match ws::handshake(req.head()) {
        Ok(mut builder) => builder.message_body(())?,
        Err(e) => {
            refuse(&mut framed, &not_an_upgrade(e)).await;
            return Ok(());
        }
    };
    drop(req);
    match tokio::time::timeout(
        RESPONSE_TIMEOUT,
        framed.send((response, BodySize::None).into()),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "writing the upgrade response failed");
            return Ok(());
        }
        Err(_) => {
            tracing::debug!("upgrade response not accepted in time");
            return Ok(());
        }
    }
    let (io, buffered) = into_connection(framed);
    session::run(state, identity, io, buffered).await;
    Ok(())
}

/// The connection and the bytes the client sent after its request. The rest
/// (the HTTP codec and its 8 KiB write buffer) is dropped here, not kept for
/// the session's life.
fn into_connection<T>(framed: Framed<T, h1::Codec>) -> (T, BytesMut) {
    let parts = framed.into_parts();
    (parts.io, parts.read_buf)
}

/// Answers with `error`'s status and JSON body, then closes the connection.
async fn refuse<T>(framed: &mut Framed<T, h1::Codec>, error: &ApiError)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let response: actix_http::Response<_> = error.error_response().into();
    let (mut head, body) = response.into_parts();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let body = match body.try_into_bytes() {
        Ok(bytes) => bytes,
        // Error bodies are built whole; an empty one still carries the status.
        Err(_) => bytes::Bytes::new(),
    };
    // Head and body are buffered, then written together: one write.
    let send = async {
        framed
            .feed((head, BodySize::Sized(body.len() as u64)).into())
            .await?;
        framed.feed(h1::Message::Chunk(Some(body))).await?;
        framed.feed(h1::Message::Chunk(None)).await?;
        framed.flush().await
    };
    match tokio::time::timeout(RESPONSE_TIMEOUT, send).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "writing an upgrade refusal failed"),
        Err(_) => tracing::debug!("upgrade refusal not accepted in time"),
    }
}
