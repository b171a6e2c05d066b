//! `/api/chats…` and `/api/unread`.

use crate::authn::{Participant, ServiceCaller};
use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::{web, HttpResponse};
use chat_shared::domain::ChatId;
use chat_shared::protocol::rest::{ChatList, CreateChatRequest, HistoryQuery, ReadRequest};
use chat_shared::protocol::ErrorCode;

fn chat_id(raw: &str) -> Result<ChatId, ApiError> {
    // A malformed id names no chat: the same answer as a foreign one.
    ChatId::parse(raw).map_err(|_| ApiError::new(ErrorCode::NotFound, "chat not found"))
}

/// `POST /api/chats` (service role): 201 with a new chat, 200 with the existing one.
pub async fn create(
    _caller: ServiceCaller,
    state: web::Data<AppState>,
    body: web::Json<CreateChatRequest>,
) -> Result<HttpResponse, ApiError> {
    let (record, created) = state.service.create_chat(body.into_inner()).await?;
    // The booking app is neither participant: it sees the chat from the patient's side.
    let chat = state.service.view(&record, &record.patient_id).await;
    Ok(if created {
        HttpResponse::Created().json(chat)
    } else {
        HttpResponse::Ok().json(chat)
    })
}

/// `GET /api/chats`.
pub async fn list(
    Participant(who): Participant,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let chats = state.service.list_chats(&who).await?;
    Ok(HttpResponse::Ok().json(ChatList { chats }))
}

/// `GET /api/chats/{id}/messages?after_seq=&before_seq=&limit=`.
pub async fn history(
    Participant(who): Participant,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let chat = chat_id(&path)?;
    let page = state.service.history(&who, chat, &query).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `POST /api/chats/{id}/read` `{"up_to_seq"}` → 204.
pub async fn read(
    Participant(who): Participant,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<ReadRequest>,
) -> Result<HttpResponse, ApiError> {
    let chat = chat_id(&path)?;
    state.service.mark_read(&who, chat, body.up_to_seq).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/unread`.
pub async fn unread(
    Participant(who): Participant,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.service.unread(&who).await?))
}
