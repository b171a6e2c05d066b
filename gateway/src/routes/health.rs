//! Liveness, readiness and metrics.

use crate::startup::AppState;
use actix_web::{web, HttpResponse};

/// `GET /healthz`: 200 while the process lives.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// Why the node is not ready, if it is not: draining, or the broker does not answer.
async fn readiness(state: &AppState) -> Result<(), String> {
    if state.draining.is_cancelled() {
        return Err("draining".into());
    }
    state
        .service
        .broker
        .ping()
        .await
        .map_err(|e| format!("broker: {e}"))
}

/// `GET /readyz`: 200 when the broker answers and the node is not draining.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = readiness(&state).await;
    state.metrics.ready.set(i64::from(ready.is_ok()));
    match ready {
        Ok(()) => HttpResponse::Ok().body("ready"),
        Err(why) => HttpResponse::ServiceUnavailable().body(why),
    }
}

/// `GET /metrics`: Prometheus text format. Gauges that are cheaper to read
/// than to maintain (readiness, online users) are refreshed here.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let ready = readiness(&state).await.is_ok();
    state.metrics.ready.set(i64::from(ready));
    state
        .metrics
        .online_users
        .set(state.hub.user_count() as i64);
    match chat_shared::telemetry::render_metrics(&state.metrics.registry) {
        Ok(buf) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(buf),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}
