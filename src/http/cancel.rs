//! `POST /v1/tasks/{id}/cancel` and `POST /v1/tasks/cancel` (by ids or by filter): what
//! `swarmd cancel` does. The caller is recorded as `cancelled_by` (`api: write token #N`).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{
    request::{ApiError, object_body, task_id},
    state::ApiState,
};
use crate::store::{CancelFilter, CancelReport};

/// Most ids one bulk cancel names.
const MAX_IDS: usize = 1000;
/// Unfinished statuses a cancel by filter may name.
const UNFINISHED: [&str; 4] = ["queued", "scheduled", "processing", "failed"];

/// `POST /v1/tasks/{id}/cancel`.
pub(super) async fn one(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let by = format!("api:{}", state.access.caller(&headers));
    let report = cancel_ids(&state, &[id], &by).await?;
    if let Some((_, status)) = report.finished.first() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_finished",
            format!("task {id} is already {status}"),
        ));
    }
    let (code, status) = if report.requested.is_empty() {
        (StatusCode::OK, "cancelled")
    } else {
        (StatusCode::ACCEPTED, "cancel_requested")
    };
    Ok((
        code,
        Json(json!({ "id": id, "status": status, "cancelled_by": by })),
    )
        .into_response())
}

/// A bulk cancel: ids, or a filter over unfinished rows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Bulk {
    #[serde(default)]
    ids: Option<Vec<Uuid>>,
    #[serde(default)]
    agent_type: Option<String>,
    #[serde(default)]
    status: Option<Vec<String>>,
}

/// `POST /v1/tasks/cancel`.
pub(super) async fn many(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let bulk: Bulk = object_body(body)?;
    let invalid =
        |why: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", why);
    let by = format!("api:{}", state.access.caller(&headers));
    match (bulk.ids, bulk.agent_type) {
        (Some(ids), None) if bulk.status.is_none() => {
            if ids.is_empty() || ids.len() > MAX_IDS {
                return Err(invalid(format!("ids: 1 to {MAX_IDS} task ids")));
            }
            let report = cancel_ids(&state, &ids, &by).await?;
            let finished: Vec<_> = report
                .finished
                .iter()
                .map(|(id, status)| json!({ "id": id, "status": status }))
                .collect();
            Ok(Json(json!({
                "cancelled": report.cancelled,
                "requested": report.requested,
                "finished": finished,
                "cancelled_by": by,
            }))
            .into_response())
        }
        (None, Some(agent_type)) => {
            if !crate::task::valid_agent_type(&agent_type) {
                return Err(invalid(format!(
                    "agent_type: {agent_type:?} is not an agent type"
                )));
            }
            let statuses = bulk.status.unwrap_or_default();
            if let Some(bad) = statuses.iter().find(|s| !UNFINISHED.contains(&s.as_str())) {
                return Err(invalid(format!(
                    "status: {bad:?} is not one of {}",
                    UNFINISHED.join(", ")
                )));
            }
            let filter = CancelFilter {
                agent_type: Some(agent_type),
                statuses,
            };
            let ids = state
                .store
                .cancellations()
                .cancel_matching(&filter, &by)
                .await
                .map_err(|e| ApiError::internal("cannot cancel the tasks", e))?;
            tell_workers(&state, &ids, &by).await;
            Ok(Json(json!({
                "cancelled": ids,
                "requested": [],
                "finished": [],
                "cancelled_by": by,
            }))
            .into_response())
        }
        _ => Err(invalid(
            "either ids, or agent_type (with an optional status list)".into(),
        )),
    }
}

async fn cancel_ids(state: &ApiState, ids: &[Uuid], by: &str) -> Result<CancelReport, ApiError> {
    let report = state
        .store
        .cancellations()
        .cancel(ids, by)
        .await
        .map_err(|e| ApiError::internal("cannot cancel the tasks", e))?;
    tell_workers(state, &report.to_stop(), by).await;
    Ok(report)
}

/// Tells the workers at once; one that misses it reads PostgreSQL within seconds, so the
/// cancel stands either way.
async fn tell_workers(state: &ApiState, ids: &[Uuid], by: &str) {
    if let Err(error) = state.broker.cancellations().announce(ids, by).await {
        tracing::warn!(%error, "cannot tell the workers of a cancel; they read it shortly");
    }
}
