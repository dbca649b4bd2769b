//! What the dashboard reads besides the publishers' routes: `GET /v1/tasks` (find tasks by
//! status, agent, priority, time, and inside their data, result and errors), `GET
//! /v1/throughput` (outcomes per minute, from the rows), `GET /v1/workers` (the roll call).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{
    request::{ApiError, empty_is_none, task_id},
    state::ApiState,
};
use crate::store::TaskSearch;

/// How long the roll call waits for answers.
const ROLL_CALL_WAIT: Duration = Duration::from_millis(300);

/// Filters of `GET /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TaskQuery {
    /// Comma-separated statuses.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    agent_type: Option<String>,
    #[serde(default, deserialize_with = "empty_is_none")]
    priority: Option<i16>,
    #[serde(
        default,
        deserialize_with = "crate::duration::deserialize_instant_or_age"
    )]
    since: Option<DateTime<Utc>>,
    #[serde(
        default,
        deserialize_with = "crate::duration::deserialize_instant_or_age"
    )]
    until: Option<DateTime<Utc>>,
    /// JSON the task's data must contain (`{"customer": 42}`).
    #[serde(default)]
    contains: Option<String>,
    /// Text in the data, result or last error.
    #[serde(default)]
    q: Option<String>,
    #[serde(default, deserialize_with = "empty_is_none")]
    limit: Option<i64>,
    /// The previous page's last task id (its `next_before`).
    #[serde(default)]
    before: Option<String>,
}

const STATUSES: [&str; 7] = [
    "queued",
    "scheduled",
    "processing",
    "completed",
    "failed",
    "dead",
    "cancelled",
];

/// `GET /v1/tasks`.
pub(super) async fn tasks(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<TaskQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let bad = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", why);
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let nonempty = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    let statuses: Vec<String> = nonempty(query.status)
        .map(|s| s.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    if let Some(unknown) = statuses.iter().find(|s| !STATUSES.contains(&s.as_str())) {
        return Err(bad(format!(
            "status {unknown:?} is not one of {}",
            STATUSES.join(", ")
        )));
    }
    let agent_type = nonempty(query.agent_type);
    if let Some(agent) = &agent_type
        && !crate::task::valid_agent_type(agent)
    {
        return Err(bad(format!("agent_type {agent:?} is not an agent type")));
    }
    let contains = match nonempty(query.contains) {
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(value) if value.is_object() || value.is_array() => {
                // What no task's data can hold (a NUL, deeper nesting) is a query the
                // contract refuses, not one for the database to fail on.
                crate::task::check_value(&value).map_err(|e| bad(format!("contains: {e}")))?;
                Some(value)
            }
            _ => return Err(bad("contains must be a JSON object or array".into())),
        },
        None => None,
    };
    let text = nonempty(query.q);
    if text
        .as_ref()
        .is_some_and(|t| t.len() > 200 || t.contains('\0'))
    {
        return Err(bad("q: at most 200 characters, no NUL".into()));
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) || query.priority.is_some_and(|p| !(0..=9).contains(&p)) {
        return Err(bad("limit must be 1 to 500 and priority 0 to 9".into()));
    }
    let before = match nonempty(query.before) {
        Some(cursor) => Some(
            Uuid::parse_str(&cursor)
                .map_err(|_| bad("before must be a task id (a page's next_before)".into()))?,
        ),
        None => None,
    };
    let search = TaskSearch {
        statuses,
        agent_type,
        priority: query.priority,
        since: query.since,
        until: query.until,
        contains,
        text,
        before,
        limit,
    };
    let found = state
        .store
        .search()
        .tasks(&search)
        .await
        .map_err(|e| ApiError::internal("cannot search the tasks", e))?;
    let next_before = (found.len() as i64 == limit)
        .then(|| found.last().map(|t| t.id))
        .flatten();
    Ok(Json(json!({ "tasks": found, "next_before": next_before })).into_response())
}

/// `GET /v1/throughput`: outcomes per minute over the last hour.
pub(super) async fn throughput(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let minutes = state
        .store
        .search()
        .outcomes_per_minute(60)
        .await
        .map_err(|e| ApiError::internal("cannot count outcomes", e))?;
    Ok(Json(json!({ "minutes": minutes })).into_response())
}

/// `GET /v1/workers`: who answers the roll call now.
pub(super) async fn workers(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let workers = crate::scale::roll_call(&state.broker, ROLL_CALL_WAIT)
        .await
        .map_err(|e| ApiError::internal("cannot call the roll", e))?;
    Ok(Json(json!({ "workers": workers })).into_response())
}

/// `GET /v1/tasks/{id}/legacy`: where the legacy mirror shows the task, and as what JSON.
pub(super) async fn legacy(
    State(state): State<Arc<ApiState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let (Some(redis), Some(keys)) = (&state.redis, &state.legacy_keys) else {
        return Ok(Json(json!({ "mirror": false, "places": [] })).into_response());
    };
    let mut redis = redis.clone();
    let shown = crate::mirror::rebuild::shown(&mut redis, keys, &id.to_string())
        .await
        .map_err(|e| ApiError::internal("cannot read the legacy keys", e))?;
    let places: Vec<_> = shown
        .iter()
        .map(|(place, text)| {
            let task = serde_json::from_str::<serde_json::Value>(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.clone()));
            json!({ "key": place.key(keys), "place": place.as_str(), "task": task })
        })
        .collect();
    Ok(Json(json!({ "mirror": true, "places": places })).into_response())
}
