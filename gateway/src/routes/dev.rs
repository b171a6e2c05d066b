//! `/dev/*` and the demo client, registered only with `--dev` (404 otherwise).

use crate::dev::{DevSettings, DEMO_USERS};
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use chat_shared::domain::{Role, UserId};
use chat_shared::protocol::ErrorCode;
use serde::Deserialize;

/// The demo client, embedded in the binary (read from disk in debug builds).
#[derive(rust_embed::RustEmbed)]
#[folder = "web/"]
#[exclude = "tests/**"]
#[exclude = ".*"]
struct Assets;

/// How long a dev token lives.
const DEV_TOKEN_SECS: i64 = 12 * 3600;

/// Registers the dev routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dev/users", web::get().to(users))
        .route("/dev/token", web::post().to(token))
        .route("/", web::get().to(asset))
        .route("/{file:[A-Za-z0-9_.-]+}", web::get().to(asset));
}

async fn users() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "users": DEMO_USERS }))
}

#[derive(Deserialize)]
struct TokenRequest {
    sub: UserId,
    role: Role,
    #[serde(default)]
    name: Option<String>,
}

async fn token(
    dev: web::Data<DevSettings>,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let token = dev
        .signer
        .token_for(
            body.sub.as_str(),
            body.role,
            body.name.as_deref(),
            DEV_TOKEN_SECS,
        )
        .map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "token": token })))
}

async fn asset(req: HttpRequest) -> HttpResponse {
    let path = req.match_info().get("file").unwrap_or("index.html");
    match Assets::get(path) {
        Some(file) => HttpResponse::Ok()
            .content_type(file.metadata.mimetype())
            .insert_header(("Cache-Control", "no-cache"))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .insert_header((
                "Content-Security-Policy",
                "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                 style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'",
            ))
            .body(file.data.into_owned()),
        None => HttpResponse::NotFound().finish(),
    }
}
