//! `POST /v1/dlq/replay` and `POST /v1/dlq/purge`: replay or delete, server-side, every dead
//! letter matching a filter (what `swarmd dlq replay --all` does), or only the chosen ones
//! among them (`ids`). The dashboard asks `GET /v1/dlq` for the count first and shows it in
//! its confirmation.

use std::sync::Arc;

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{
    request::{ApiError, object_body},
    state::ApiState,
};
use crate::dlq::{self, DeadLetterStream, DeadReason, Filter};

/// Which dead letters: all of them when every part is left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Matching {
    #[serde(default)]
    agent_type: Option<String>,
    #[serde(default)]
    reason: Option<DeadReason>,
    #[serde(
        default,
        deserialize_with = "crate::duration::deserialize_instant_or_age_strictly"
    )]
    since: Option<DateTime<Utc>>,
    #[serde(
        default,
        deserialize_with = "crate::duration::deserialize_instant_or_age_strictly"
    )]
    until: Option<DateTime<Utc>>,
    /// Only these among the matching ones (a selection).
    #[serde(default)]
    ids: Option<Vec<uuid::Uuid>>,
}

impl Matching {
    /// The stored dead letters this names.
    async fn targets(
        self,
        dead_letters: &DeadLetterStream,
    ) -> Result<Vec<dlq::StoredDeadLetter>, ApiError> {
        let filter = Filter {
            agent_type: self.agent_type,
            reason: self.reason,
            since: self.since,
            until: self.until,
        };
        let mut targets = dead_letters
            .list(&filter)
            .await
            .map_err(|e| ApiError::internal("cannot read the dead letters", e))?;
        if let Some(ids) = self.ids {
            targets.retain(|stored| ids.contains(&stored.letter.id));
        }
        Ok(targets)
    }
}

/// The dead letters a request's body names, with the stream they are in.
async fn chosen(
    state: &ApiState,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(DeadLetterStream, Vec<dlq::StoredDeadLetter>), ApiError> {
    let matching: Matching = object_body(body)?;
    let dead_letters = DeadLetterStream::of(&state.broker);
    let targets = matching.targets(&dead_letters).await?;
    Ok((dead_letters, targets))
}

/// `POST /v1/dlq/replay`.
pub(super) async fn replay_matching(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (dead_letters, targets) = chosen(&state, body).await?;
    let mut replayed = Vec::new();
    let mut failed = Vec::new();
    for stored in &targets {
        match dlq::replay(&state.broker, &dead_letters, stored).await {
            Ok(new_id) => replayed.push(json!({ "id": stored.letter.id, "replay": new_id })),
            Err(error) => {
                failed.push(json!({ "id": stored.letter.id, "error": error.to_string() }))
            }
        }
    }
    Ok(Json(json!({
        "matched": targets.len(),
        "replayed": replayed,
        "failed": failed,
    }))
    .into_response())
}

/// `POST /v1/dlq/purge`: deletes them for good.
pub(super) async fn purge_matching(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (dead_letters, targets) = chosen(&state, body).await?;
    let mut purged = Vec::new();
    for stored in &targets {
        dead_letters
            .delete(stored.sequence)
            .await
            .map_err(|e| ApiError::internal("cannot delete a dead letter", e))?;
        purged.push(stored.letter.id);
    }
    Ok(Json(json!({ "matched": targets.len(), "purged": purged })).into_response())
}
