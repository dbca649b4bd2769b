//! PostgreSQL is the truth, the legacy keys a view of it: `check` lists where the view
//! drifted, `rebuild` rewrites it, and the writer's catch-up rewrites recent rows.

use std::collections::HashSet;

use redis::{AsyncCommands, aio::ConnectionManager};
use uuid::Uuid;

use super::{LegacyKeys, LegacyTask, MirrorError, MirrorEvent, Place, writer};
use crate::{broker::Broker, store::Store, task::Codec};

const PAGE: i64 = 1000;

/// Differences between PostgreSQL and the legacy keys, one line each.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Drift {
    /// Tasks PostgreSQL has that the legacy keys do not show.
    pub missing: Vec<String>,
    /// Tasks shown in the wrong place or with other attempts, errors or results.
    pub stale: Vec<String>,
    /// Entries of processing/completed/failed with no task in PostgreSQL.
    pub extra: Vec<String>,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.stale.is_empty() && self.extra.is_empty()
    }
}

/// Every place the legacy keys show task `id`, with its JSON there.
pub async fn shown(
    redis: &mut ConnectionManager,
    keys: &LegacyKeys,
    id: &str,
) -> redis::RedisResult<Vec<(Place, String)>> {
    let (completed, failed, processing, waiting): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = redis::pipe()
        .hget(&keys.completed_tasks, id)
        .hget(&keys.failed_tasks, id)
        .hget(&keys.processing_tasks, id)
        .hget(&keys.mirrored_waiting, id)
        .query_async(redis)
        .await?;
    let mut places = Vec::new();
    for (place, json) in [
        (Place::Completed, completed),
        (Place::Failed, failed),
        (Place::Processing, processing),
    ] {
        if let Some(json) = json {
            places.push((place, json));
        }
    }
    if let Some(member) = waiting {
        let (waiting, scheduled): (Option<f64>, Option<f64>) = redis::pipe()
            .zscore(&keys.agent_tasks, &member)
            .zscore(&keys.scheduled_tasks, &member)
            .query_async(redis)
            .await?;
        if waiting.is_some() {
            places.push((Place::Waiting, member.clone()));
        }
        if scheduled.is_some() {
            places.push((Place::Scheduled, member));
        }
    }
    Ok(places)
}

/// The fields a tool relies on; timestamps may differ by the moment they were taken.
fn same_task(expected: &str, actual: &str) -> bool {
    let (Ok(expected), Ok(actual)) = (
        serde_json::from_str::<LegacyTask>(expected),
        serde_json::from_str::<LegacyTask>(actual),
    ) else {
        return false;
    };
    expected.id == actual.id
        && expected.data == actual.data
        && expected.priority == actual.priority
        && expected.attempts == actual.attempts
        && expected.max_attempts == actual.max_attempts
        && expected.last_error == actual.last_error
        && expected.result == actual.result
}

/// Compares every task row with the legacy keys.
///
/// Fails when PostgreSQL or Redis cannot be read.
pub async fn check(
    store: &Store,
    redis: &mut ConnectionManager,
    keys: &LegacyKeys,
) -> Result<Drift, MirrorError> {
    let mut drift = Drift::default();
    let mut ids = HashSet::new();
    let mut after = None;
    loop {
        let rows = store.tasks().page(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        for row in &rows {
            ids.insert(row.id.to_string());
            let Some(expected) = MirrorEvent::from_row(row) else {
                continue;
            };
            let places = shown(redis, keys, &expected.id).await?;
            if places.is_empty() && expected.place == Place::Waiting && !keys.show_waiting {
                // Waiting fleet tasks are not shown while legacy consumers pop agent_tasks.
                continue;
            }
            match places.as_slice() {
                [] => drift.missing.push(format!(
                    "{} ({}) is not in the legacy keys",
                    row.id, row.status
                )),
                [(place, _)] if *place != expected.place => drift.stale.push(format!(
                    "{}: shown as {}, the database says {}",
                    row.id,
                    place.as_str(),
                    row.status
                )),
                [(_, json)] if !same_task(&expected.json, json) => drift
                    .stale
                    .push(format!("{}: legacy JSON differs: {json}", row.id)),
                [_] => {}
                several => drift.stale.push(format!(
                    "{}: shown in {} places at once ({}), the database says {}",
                    row.id,
                    several.len(),
                    several
                        .iter()
                        .map(|(p, _)| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    row.status
                )),
            }
        }
    }
    for key in [
        &keys.processing_tasks,
        &keys.completed_tasks,
        &keys.failed_tasks,
    ] {
        let shown_ids: Vec<String> = redis.hkeys(key).await?;
        for id in shown_ids.into_iter().filter(|id| !ids.contains(id)) {
            drift
                .extra
                .push(format!("{id} in {key} has no task in the database"));
        }
    }
    Ok(drift)
}

/// What a rebuild wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rebuilt {
    pub from_database: usize,
    pub waiting_in_stream: usize,
}

/// Rewrites the fleet's part of the legacy keys: from every task row, and for tasks still
/// waiting in the stream that no worker claimed yet. Legacy producers' members not yet
/// taken in are left alone.
///
/// Fails when PostgreSQL, Redis or the stream cannot be read.
pub async fn rebuild(
    store: &Store,
    broker: &Broker,
    redis: &mut ConnectionManager,
    keys: &LegacyKeys,
) -> Result<Rebuilt, MirrorError> {
    let ours: Vec<String> = redis.hvals(&keys.mirrored_waiting).await?;
    for chunk in ours.chunks(500) {
        let _: () = redis.zrem(&keys.agent_tasks, chunk).await?;
        let _: () = redis.zrem(&keys.scheduled_tasks, chunk).await?;
    }
    let _: () = redis
        .del(&[
            &keys.processing_tasks,
            &keys.completed_tasks,
            &keys.failed_tasks,
            &keys.mirrored_waiting,
            &keys.mirror_state,
        ])
        .await?;

    let mut rebuilt = Rebuilt::default();
    let mut known: HashSet<Uuid> = HashSet::new();
    let mut after = None;
    loop {
        let rows = store.tasks().page(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        known.extend(rows.iter().map(|r| r.id));
        let events: Vec<MirrorEvent> = rows.iter().filter_map(MirrorEvent::from_row).collect();
        writer::write(redis, keys, &events, true).await?;
        rebuilt.from_database += events.len();
    }

    // Tasks published but never claimed have no row: read them from the stream.
    let waiting = waiting_in_stream(broker, &known).await?;
    writer::write(redis, keys, &waiting, false).await?;
    rebuilt.waiting_in_stream = waiting.len();
    Ok(rebuilt)
}

async fn waiting_in_stream(
    broker: &Broker,
    known: &HashSet<Uuid>,
) -> Result<Vec<MirrorEvent>, MirrorError> {
    let stream_error = |e: String| MirrorError::Stream(e);
    let mut stream = broker
        .jetstream()
        .get_stream(&broker.settings().stream)
        .await
        .map_err(|e| stream_error(e.to_string()))?;
    let state = stream
        .info()
        .await
        .map_err(|e| stream_error(e.to_string()))?
        .state
        .clone();
    let mut events = Vec::new();
    if state.messages == 0 {
        return Ok(events);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue; // acknowledged and removed meanwhile
        };
        let content_type = message
            .headers
            .get(crate::broker::headers::CONTENT_TYPE)
            .map(|v| v.as_str().to_string());
        let Ok(codec) = Codec::for_message(content_type.as_deref(), &message.payload) else {
            continue;
        };
        if let Ok(task) = codec.decode(&message.payload)
            && !known.contains(&task.id)
        {
            events.push(MirrorEvent::published(&task));
        }
    }
    Ok(events)
}
