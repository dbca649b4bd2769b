//! The HTTP front door for publishers in other systems: publish tasks, read a task, see the
//! queues. Every route but `/health` and `/ready` needs a bearer token ([`super::auth`]):
//! reads a read or write token, writes a write token. Requests are bounded in time, size and
//! number at once. Every error is JSON with a stable code, never an internal error text.
//! Publishing (`POST /v1/tasks`, with its keys and waits) lives in `super::publish`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::{
    config::ApiSettings,
    dlq::{self, DeadLetter, DeadLetterStream, DeadReason, Filter, ReplayError},
    fault::{Classify, Fault},
    http::{
        auth::{Role, require},
        probes::{self, Probes},
    },
    store::{ReadFrom, TaskStatus},
};

use super::publish::WaitQuery;
pub use super::{
    request::ApiError,
    state::{ApiState, MAX_BATCH, MAX_BODY_BYTES},
};
use super::{
    request::{empty_is_none, task_id},
    state::Waiting,
};

/// How a request is bounded besides its body size.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_concurrent: usize,
    /// Longest `?wait=` honoured; a waiting request may take this much longer.
    pub max_wait: Duration,
}

impl Limits {
    /// The bounds `settings` ask for.
    pub fn of(settings: &ApiSettings) -> Result<Self, std::time::TryFromFloatSecsError> {
        Ok(Self {
            request_timeout: Duration::try_from_secs_f64(settings.request_timeout_secs)?,
            max_concurrent: settings.max_concurrent_requests,
            max_wait: Duration::try_from_secs_f64(settings.max_wait_secs)?,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::of(&ApiSettings::default()).expect("the default timeout is valid")
    }
}

/// The API routes, with request metrics, `/health` and `/metrics`.
pub fn router(state: Arc<ApiState>, limits: Limits) -> Router {
    let access = state.access.clone();
    let guard = |role| middleware::from_fn_with_state((access.clone(), role), require);
    let probes = Probes {
        broker: state.broker.clone(),
        store: state.store.clone(),
        redis: state.redis.clone(),
        meter: state.meter.clone(),
        liveness: None,
    };
    let insecure = access.is_insecure();
    let public = Router::new()
        .route("/ready", get(probes::ready))
        .with_state(probes.clone())
        .route("/health", get(move || health(insecure)))
        .merge(super::ui::router(state.trace_url.clone()));
    // A request that may wait for outcomes has its wait on top of the usual bound.
    let waiting_timeout = limits.request_timeout.saturating_add(limits.max_wait);
    let reads = Router::new()
        .route("/v1/queues", get(queues))
        .route("/v1/dlq", get(dead_letters))
        .route("/v1/schedules", get(super::schedules::list))
        .route("/v1/tasks", get(super::browse::tasks))
        .route("/v1/throughput", get(super::browse::throughput))
        .route("/v1/workers", get(super::browse::workers))
        .route("/v1/events", get(super::events::events))
        .route("/v1/tasks/{id}/legacy", get(super::browse::legacy))
        .with_state(state.clone())
        .route("/v1/scale", get(probes::scale))
        .with_state(probes)
        .route("/metrics", get(super::metrics))
        .route_layer(guard(Role::Read))
        .layer(timeout(limits.request_timeout));
    let waiting = Waiting {
        api: state.clone(),
        max_wait: limits.max_wait,
    };
    let waiting_reads = Router::new()
        .route("/v1/tasks/{id}", get(task))
        .with_state(waiting.clone())
        .route_layer(guard(Role::Read))
        .layer(timeout(waiting_timeout));
    let writes = Router::new()
        .route("/v1/dlq/{id}/replay", post(replay))
        .route(
            "/v1/dlq/replay",
            post(super::dead_letter_actions::replay_matching),
        )
        .route(
            "/v1/dlq/purge",
            post(super::dead_letter_actions::purge_matching),
        )
        .route("/v1/tasks/{id}/cancel", post(super::cancel::one))
        .route("/v1/tasks/cancel", post(super::cancel::many))
        .route("/v1/schedules", post(super::schedules::put))
        .route("/v1/schedules/{name}", delete(super::schedules::remove))
        .with_state(state)
        .route_layer(guard(Role::Write))
        .layer(timeout(limits.request_timeout));
    let waiting_writes = Router::new()
        .route("/v1/tasks", post(super::publish::publish))
        .with_state(waiting)
        .route_layer(guard(Role::Write))
        .layer(timeout(waiting_timeout));
    // Axum layers every route with its own copy of a layer: the limit must share one
    // semaphore to bound the whole API.
    let bounds = tower::ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent.max(1),
        ));
    Router::new()
        .merge(public.layer(timeout(limits.request_timeout)))
        .merge(reads)
        .merge(waiting_reads)
        .merge(writes)
        .merge(waiting_writes)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(bounds)
        .layer(middleware::from_fn(super::track))
}

/// A time bound answered with 503 ([`overloaded`]'s answer) when exceeded.
type TimeoutLayers = tower::ServiceBuilder<
    tower::layer::util::Stack<
        tower::timeout::TimeoutLayer,
        tower::layer::util::Stack<
            HandleErrorLayer<fn(tower::BoxError) -> std::future::Ready<ApiError>, ()>,
            tower::layer::util::Identity,
        >,
    >,
>;

/// Answers 503 to a request not done within `bound`.
fn timeout(bound: Duration) -> TimeoutLayers {
    let handle: fn(tower::BoxError) -> std::future::Ready<ApiError> =
        |error| std::future::ready(refusal(error));
    tower::ServiceBuilder::new()
        .layer(HandleErrorLayer::new(handle))
        .timeout(bound)
}

/// `GET /health`: says so when authentication is off.
async fn health(insecure: bool) -> &'static str {
    if insecure {
        "ok (insecure: API authentication is off)\n"
    } else {
        "ok\n"
    }
}

/// A request refused by the bounds: too many at once, or not answered in time.
async fn overloaded(error: tower::BoxError) -> ApiError {
    refusal(error)
}

fn refusal(error: tower::BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long; try again",
        )
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests at once; try again",
        )
    }
}

async fn task(
    State(Waiting {
        api: state,
        max_wait,
    }): State<Waiting>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let wait = WaitQuery::patience(query, max_wait)?;
    // Listening before reading: an outcome committed in between is still heard.
    let watch = match wait {
        Some(_) => Some(
            state
                .broker
                .outcomes()
                .watch(&[id])
                .await
                .map_err(|e| ApiError::internal("cannot listen for the outcome", e))?,
        ),
        None => None,
    };
    // A replica answers when it has the task; the primary when it lags behind or is away.
    let (mut record, mut from) = state
        .store
        .reads()
        .task(id)
        .await
        .map_err(|e| ApiError::internal("cannot read the task", e))?;
    if let (Some(mut watch), Some(patience), Some(known)) = (watch, wait, &record)
        && !TaskStatus::names_final(&known.status)
    {
        // Announced or not, the answer is the row as the primary has it now: a replica
        // could still show the task unfinished.
        watch.next(patience).await;
        record = state
            .store
            .tasks()
            .get(id)
            .await
            .map_err(|e| ApiError::internal("cannot read the task", e))?;
        from = ReadFrom::Primary;
    }
    let record = record.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no task {id}"))
    })?;
    // A result too large for the row is answered whole, read from the Object Store; one
    // that expired is shown as its reference alone.
    let result = match (&record.result, &record.result_ref) {
        (None, Some(reference)) => match state.broker.payloads().get(reference).await {
            Ok(result) => Some(result),
            Err(error) if error.fault() == Fault::Permanent => None,
            Err(error) => return Err(ApiError::internal("cannot read the task's result", error)),
        },
        (result, _) => result.clone(),
    };
    let served_by = match from {
        ReadFrom::Replica => "replica",
        ReadFrom::Primary => "primary",
    };
    let body = Json(json!({
        "id": record.id,
        "agent_type": record.agent_type,
        "priority": record.priority,
        "data": record.data,
        "status": record.status,
        "attempts": record.attempts,
        "max_attempts": record.max_attempts,
        "result": result,
        "result_ref": record.result_ref,
        "progress": record.progress,
        "not_before": record.not_before,
        "cancelled_by": record.cancelled_by,
        "worker_id": record.worker_id,
        "data_ref": record.data_ref,
        "last_error": record.last_error,
        "errors": record.errors,
        "replay_of": record.replay_of,
        "trace_id": record.trace_id,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "completed_at": record.completed_at,
    }));
    Ok(([(READ_FROM_HEADER, served_by)], body).into_response())
}

/// Which database server answered a read: `replica` or `primary`.
pub const READ_FROM_HEADER: &str = "swarm-read-from";

async fn queues(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let backlog = state
        .broker
        .lanes()
        .backlog()
        .await
        .map_err(|e| ApiError::internal("cannot read the queues", e))?;
    Ok(Json(backlog).into_response())
}

/// Filters of `GET /v1/dlq`, as in `swarmd dlq list`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    #[serde(default, deserialize_with = "empty_is_none")]
    agent_type: Option<String>,
    #[serde(default, deserialize_with = "empty_is_none")]
    reason: Option<DeadReason>,
    #[serde(
        default,
        deserialize_with = "crate::duration::deserialize_instant_or_age"
    )]
    since: Option<chrono::DateTime<Utc>>,
    #[serde(
        default,
        deserialize_with = "crate::duration::deserialize_instant_or_age"
    )]
    until: Option<chrono::DateTime<Utc>>,
    #[serde(default, deserialize_with = "empty_is_none")]
    limit: Option<usize>,
    /// Only records stored before this sequence (the `next_before` of the previous page).
    #[serde(default, deserialize_with = "empty_is_none")]
    before: Option<u64>,
}

async fn dead_letters(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let filter = Filter {
        agent_type: query.agent_type,
        reason: query.reason,
        since: query.since,
        until: query.until,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) || query.before == Some(0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit must be 1 to 1000 and before at least 1",
        ));
    }
    let page = DeadLetterStream::of(&state.broker)
        .page(&filter, query.before, limit)
        .await
        .map_err(|e| ApiError::internal("cannot read the dead letters", e))?;
    let shown: Vec<&DeadLetter> = page.letters.iter().map(|s| &s.letter).collect();
    Ok(Json(json!({
        "total": page.total,
        "dead_letters": shown,
        "next_before": page.next_before,
        "unreadable": page.unreadable,
    }))
    .into_response())
}

async fn replay(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("{id:?} is not a dead letter id"),
        )
    })?;
    let dead_letters = DeadLetterStream::of(&state.broker);
    let stored = dead_letters
        .find(id)
        .await
        .map_err(|e| ApiError::internal("cannot read the dead letters", e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no dead letter {id}"),
            )
        })?;
    match dlq::replay(&state.broker, &dead_letters, &stored).await {
        Ok(new_id) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": new_id, "replay_of": id })),
        )
            .into_response()),
        Err(error @ (ReplayError::NoEnvelope(..) | ReplayError::Truncated(_))) => Err(
            ApiError::new(StatusCode::CONFLICT, "not_replayable", error.to_string()),
        ),
        Err(error) => Err(ApiError::internal("cannot replay the dead letter", error)),
    }
}
