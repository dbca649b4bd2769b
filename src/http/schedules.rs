//! `/v1/schedules`: list, define and remove periodic schedules (what `swarmd schedule`
//! does); workers fire them.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde_json::json;

use super::{request::ApiError, state::ApiState};
use crate::schedule::{Definition, DefinitionError};

/// `GET /v1/schedules`.
pub(super) async fn list(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let schedules = state
        .store
        .schedules()
        .list()
        .await
        .map_err(|e| ApiError::internal("cannot read the schedules", e))?;
    Ok(Json(json!({ "schedules": schedules })).into_response())
}

/// `POST /v1/schedules`: creates the schedule, or redefines the one of that name.
pub(super) async fn put(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let definition: Definition = serde_path_to_error::deserialize(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("{}: {}", e.path(), e.inner()),
        )
    })?;
    let schedule = definition.schedule(Utc::now()).map_err(|why| match why {
        DefinitionError::Invalid(why) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_schedule", why)
        }
        // Well-formed, but at odds with the present: nothing is left to fire.
        DefinitionError::NeverFires(why) => ApiError::new(StatusCode::CONFLICT, "never_fires", why),
    })?;
    state
        .store
        .schedules()
        .put(&schedule)
        .await
        .map_err(|e| ApiError::internal("cannot store the schedule", e))?;
    if let Err(error) =
        crate::schedule::alarm::set(&state.broker, &schedule.name, schedule.next_fire).await
    {
        // Stored: the workers' ticker fires it within seconds.
        tracing::debug!(%error, "cannot set the schedule's alarm");
    }
    Ok((StatusCode::CREATED, Json(schedule)).into_response())
}

/// `DELETE /v1/schedules/{name}`.
pub(super) async fn remove(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let removed = state
        .store
        .schedules()
        .remove(&name)
        .await
        .map_err(|e| ApiError::internal("cannot remove the schedule", e))?;
    if removed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no schedule {name:?}"),
        ))
    }
}
