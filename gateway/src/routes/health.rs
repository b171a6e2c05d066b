//! Liveness, readiness and metrics.

use crate::startup::AppState;
use actix_web::{web, HttpResponse};

/// `GET /healthz`: 200 while the process lives.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// `GET /readyz`: 200 when the broker answers and the node is not draining.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.is_cancelled() {
        return HttpResponse::ServiceUnavailable().body("draining");
    }
    match state.service.broker.ping().await {
        Ok(()) => HttpResponse::Ok().body("ready"),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("broker: {e}")),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match chat_shared::telemetry::render_metrics(&state.metrics.registry) {
        Ok(buf) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(buf),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}
