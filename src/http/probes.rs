//! What every process serves besides its own routes: readiness (can it reach NATS and the
//! database, and Redis where it needs it) and the scale signals. Workers serve them on their
//! metrics port, the API beside its routes.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::{broker::Broker, scale::ScaleMeter, sidecars::Liveness, store::Store};

/// What the probes look at.
#[derive(Clone)]
pub struct Probes {
    pub broker: Broker,
    pub store: Store,
    /// Checked only where the process cannot work without Redis.
    pub redis: Option<redis::aio::ConnectionManager>,
    pub meter: Arc<ScaleMeter>,
    /// A worker's own progress: it is unready while stalled.
    pub liveness: Option<Arc<Liveness>>,
}

/// A worker's HTTP side: `/metrics`, `/health`, `/ready` and `/scale`.
pub fn worker_router(probes: Probes) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/scale", get(scale))
        .with_state(probes)
        .merge(super::metrics_router())
}

/// 200 when NATS is connected, the database (and Redis, when checked) answer and a worker
/// is not stalled; 503 with which one fails, otherwise.
pub async fn ready(State(probes): State<Probes>) -> Response {
    let redis = match probes.redis.clone() {
        None => None,
        Some(mut redis) => {
            let ping = redis::cmd("PING");
            let answer = ping.query_async::<String>(&mut redis);
            Some(matches!(
                tokio::time::timeout(Duration::from_secs(1), answer).await,
                Ok(Ok(_))
            ))
        }
    };
    let nats = matches!(
        probes.broker.client().connection_state(),
        async_nats::connection::State::Connected
    );
    let database = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(probes.store.primary())
        )
        .await,
        Ok(Ok(_))
    );
    let stalled = probes.liveness.as_ref().and_then(|l| l.stall());
    let status = if nats && database && redis != Some(false) && stalled.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "nats": nats, "database": database, "redis": redis });
    if let Some(liveness) = &probes.liveness {
        body["stalled"] = json!(stalled);
        body["held_batches"] = json!(liveness.held().count());
    }
    (status, Json(body)).into_response()
}

/// The scale signals as JSON (`ScaleSignals`); 503 when the stream cannot be read.
pub async fn scale(State(probes): State<Probes>) -> Response {
    match probes.meter.measure(&probes.broker).await {
        Ok(signals) => Json(signals).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": "unavailable", "message": error.to_string()}})),
        )
            .into_response(),
    }
}
