//! `POST /v1/tasks`: tasks from a request checked against the contract, their idempotency
//! keys taken, recorded as `queued`, published (asking for their outcomes to be announced),
//! and — with `?wait=` — answered with their outcomes.

use std::time::Duration;

use axum::{
    Json,
    extract::{
        Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use opentelemetry::context::FutureExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{
    request::ApiError,
    state::{ApiState, MAX_BATCH, Waiting},
};
use crate::{
    broker::PublishOptions,
    fault::{Classify, Fault},
    task::{Codec, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, TaskEnvelope, integral},
    waiter::{Awaited, Look, await_outcomes},
};

/// One task as a client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTask {
    agent_type: String,
    #[serde(default)]
    data: Value,
    #[serde(default, deserialize_with = "integral::de_option_u8")]
    priority: Option<u8>,
    #[serde(default, deserialize_with = "integral::de_option_u32")]
    max_attempts: Option<u32>,
    id: Option<Uuid>,
    timeout: Option<f64>,
    idempotency_key: Option<String>,
    expires_at: Option<chrono::DateTime<Utc>>,
    #[serde(default, deserialize_with = "integral::de_option_u32")]
    unique_for_secs: Option<u32>,
    not_before: Option<chrono::DateTime<Utc>>,
}

/// The tasks of a body: one task, or `{"tasks": [...]}`; errors name the field.
fn tasks_of(body: Value) -> Result<(Vec<NewTask>, bool), ApiError> {
    let invalid = |e: serde_path_to_error::Error<serde_json::Error>| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("{}: {}", e.path(), e.inner()),
        )
    };
    match body {
        Value::Object(mut map) if map.contains_key("tasks") => {
            let tasks = map.remove("tasks").unwrap_or_default();
            let tasks: Vec<NewTask> = serde_path_to_error::deserialize(tasks).map_err(invalid)?;
            Ok((tasks, true))
        }
        other => Ok((
            vec![serde_path_to_error::deserialize(other).map_err(invalid)?],
            false,
        )),
    }
}

/// `?wait=30s` (or `500ms`, `2m`, plain seconds): answer with the tasks' outcomes once
/// final, or with what is known after that long. Cut to `api.max_wait_secs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitQuery {
    #[serde(default)]
    wait: Option<String>,
}

impl WaitQuery {
    pub(super) fn patience(
        query: Result<Query<Self>, QueryRejection>,
        max: Duration,
    ) -> Result<Option<Duration>, ApiError> {
        let invalid =
            |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message);
        let Query(query) = query.map_err(|e| invalid(e.body_text()))?;
        match query.wait.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => Ok(Some(
                crate::duration::parse(text)
                    .map_err(|e| invalid(e.to_string()))?
                    .min(max),
            )),
        }
    }
}

pub(super) async fn publish(
    State(Waiting {
        api: state,
        max_wait,
    }): State<Waiting>,
    headers: HeaderMap,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let wait = WaitQuery::patience(query, max_wait)?;
    // The producer's trace (its `traceparent`), else a new one: every task of the request
    // continues it, its row records it and the response says it.
    let incoming = crate::telemetry::continue_or_start(&headers);
    let span = tracing::info_span!(
        "publish tasks",
        otel.name = "POST /v1/tasks",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/tasks",
    );
    let trace = crate::telemetry::continue_trace(&span, incoming);
    publish_traced(&state, body, wait, &trace)
        .instrument(span)
        .with_context(trace.clone())
        .await
}

async fn publish_traced(
    state: &ApiState,
    body: Result<Json<Value>, JsonRejection>,
    wait: Option<Duration>,
    trace: &opentelemetry::Context,
) -> Result<Response, ApiError> {
    let trace_id = crate::telemetry::trace_id(trace);
    let Json(body) = body?;
    let (tasks, batch) = tasks_of(body)?;
    if tasks.is_empty() || tasks.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
            format!("a batch holds 1 to {MAX_BATCH} tasks"),
        ));
    }
    let envelopes = envelopes_of(tasks, batch)?;
    // Unique tasks: one whose key a live task holds is that task, and is not published.
    let holders = state
        .store
        .keys()
        .take(&envelopes.iter().collect::<Vec<_>>())
        .await
        .map_err(|e| ApiError::internal("cannot take the idempotency keys", e))?;
    let holder = |task: &TaskEnvelope| holders.get(&task.id).copied().unwrap_or(task.id);
    let ids: Vec<Uuid> = envelopes.iter().map(holder).collect();
    let existing: Vec<Uuid> = envelopes
        .iter()
        .filter(|task| holder(task) != task.id)
        .map(holder)
        .collect();
    let fresh: Vec<TaskEnvelope> = envelopes
        .into_iter()
        .filter(|task| holder(task) == task.id)
        .collect();
    // Listening before publishing: an outcome announced at once is not missed.
    let watch = match wait {
        Some(_) => Some(
            state
                .broker
                .outcomes()
                .watch(&ids)
                .await
                .map_err(|e| ApiError::internal("cannot listen for the outcomes", e))?,
        ),
        None => None,
    };
    let mut duplicates = false;
    if !fresh.is_empty() {
        match record_and_publish(state, &fresh, trace_id.as_deref()).await? {
            Ok(receipts) => duplicates = receipts.iter().any(|r| r.duplicate),
            Err(partly) => return Ok(partly),
        }
    }
    if let (Some(watch), Some(patience)) = (watch, wait) {
        // A task held before, or a duplicate publish, may have finished before this request.
        let look = if duplicates || !existing.is_empty() {
            Look::FirstAndAtTheEnd
        } else {
            Look::AtTheEnd
        };
        let awaited = await_outcomes(watch, &state.store, &ids, patience, look)
            .await
            .map_err(|e| ApiError::internal("cannot read the outcomes", e))?;
        return Ok(awaited_response(awaited, batch, trace_id));
    }
    // 200 when nothing new was published (every task already held its key), else 202.
    let status = if fresh.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = if batch {
        json!({ "ids": ids, "trace_id": trace_id, "existing": existing })
    } else {
        json!({ "id": ids[0], "trace_id": trace_id, "existing": !existing.is_empty() })
    };
    Ok((status, Json(body)).into_response())
}

/// The envelopes of a request's tasks, each checked against the contract.
fn envelopes_of(tasks: Vec<NewTask>, batch: bool) -> Result<Vec<TaskEnvelope>, ApiError> {
    let mut envelopes = Vec::with_capacity(tasks.len());
    for (index, task) in tasks.into_iter().enumerate() {
        let envelope = TaskEnvelope {
            id: task.id.unwrap_or_else(Uuid::now_v7),
            agent_type: task.agent_type,
            data: task.data,
            priority: task.priority.unwrap_or(DEFAULT_PRIORITY),
            created_at: Utc::now(),
            max_attempts: task.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            timeout: task.timeout,
            idempotency_key: task.idempotency_key,
            replay_of: None,
            data_ref: None,
            expires_at: task.expires_at,
            unique_for_secs: task.unique_for_secs,
            not_before: task.not_before,
        };
        envelope.validate().map_err(|e| {
            let at = if batch {
                format!("tasks[{index}]: ")
            } else {
                String::new()
            };
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_task",
                format!("{at}{e}"),
            )
        })?;
        envelopes.push(envelope);
    }
    Ok(envelopes)
}

/// Records `tasks` as `queued` (so a read right after finds them), then publishes them,
/// asking for their outcomes to be announced. The inner `Err` is the answer to a batch
/// published only in part.
async fn record_and_publish(
    state: &ApiState,
    tasks: &[TaskEnvelope],
    trace_id: Option<&str>,
) -> Result<Result<Vec<crate::broker::PublishReceipt>, Response>, ApiError> {
    state
        .store
        .tasks()
        .record_queued(tasks, trace_id)
        .await
        .map_err(|e| {
            if e.fault() == Fault::Permanent {
                // The database refuses a value of the request itself: retrying cannot help.
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_task",
                    "the database refuses a value of these tasks",
                )
            } else {
                ApiError::internal("cannot record the tasks", e)
            }
        })?;
    let results = state
        .broker
        // Announced, so any reader may wait for them (`?wait=` here or on `GET`).
        .publish_many(
            tasks,
            PublishOptions {
                codec: Codec::MessagePack,
                announce: true,
                shown_waiting: false,
            },
            256,
            || {},
        )
        .await;
    if results.iter().any(Result::is_err) {
        return Ok(Err(partly_published(state, tasks, results).await));
    }
    Ok(Ok(results.into_iter().flatten().collect()))
}

/// The outcomes of a waiting publish: 200 when every task is final, else 202 with the
/// unfinished ones listed under `pending` (their current status in `outcomes`).
fn awaited_response(awaited: Awaited, batch: bool, trace_id: Option<String>) -> Response {
    let status = if awaited.complete() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let pending = awaited.pending();
    let complete = pending.is_empty();
    let body = if batch {
        let ids: Vec<Uuid> = awaited.outcomes.iter().map(|o| o.id).collect();
        json!({ "ids": ids, "trace_id": trace_id, "complete": complete,
                "pending": pending, "outcomes": awaited.outcomes })
    } else {
        let outcome = &awaited.outcomes[0];
        json!({ "id": outcome.id, "trace_id": trace_id, "complete": complete,
                "pending": pending, "outcome": outcome })
    };
    (status, Json(body)).into_response()
}

/// Some publishes of a request failed: their `queued` rows are removed (nothing would ever
/// process them; a publish that did reach the stream puts its row back at claim), and the
/// response says per task what happened, so the client retries only the failed ones.
async fn partly_published(
    state: &ApiState,
    envelopes: &[TaskEnvelope],
    results: Vec<Result<crate::broker::PublishReceipt, crate::broker::BrokerError>>,
) -> Response {
    let mut failed = Vec::new();
    let mut tasks = Vec::with_capacity(envelopes.len());
    for (task, result) in envelopes.iter().zip(results) {
        match result {
            Ok(_) => tasks.push(json!({ "id": task.id, "status": "accepted" })),
            Err(error) => {
                tracing::error!(task_id = %task.id, %error, "cannot publish a task");
                failed.push(task.id);
                tasks.push(json!({ "id": task.id, "status": "failed" }));
            }
        }
    }
    if let Err(error) = state.store.tasks().forget_queued(&failed).await {
        tracing::error!(%error, "cannot remove the rows of unpublished tasks");
    }
    if let Err(error) = state.store.keys().release(&failed).await {
        tracing::error!(%error, "cannot release the keys of unpublished tasks");
    }
    let message = format!(
        "{} of {} tasks could not be published; retry those marked failed",
        failed.len(),
        envelopes.len()
    );
    let body = json!({
        "error": { "code": "unavailable", "message": message },
        "tasks": tasks,
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
