//! Task rows: claiming a batch of deliveries, settling a batch of outcomes, and the reads
//! that status and tests need.
//!
//! Results are keyed by task id. A row that is `completed` or `dead` never changes again,
//! so a redelivered task is recognised at claim time and a late result is fenced off at
//! settle time.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{
    Store, StoreError,
    rows::{AgentSummary, Claim, Claimed, RowKey, Settled, TaskRecord},
};
use crate::task::{PayloadRef, TaskEnvelope};

/// The envelope's fields of many tasks as column arrays, bound to `UNNEST(...)` by every
/// statement that may create rows (claim, settle, queued).
struct EnvelopeColumns<'a> {
    ids: Vec<Uuid>,
    agent_types: Vec<&'a str>,
    priorities: Vec<i16>,
    data: Vec<&'a Value>,
    max_attempts: Vec<i32>,
    keys: Vec<Option<&'a str>>,
    created: Vec<DateTime<Utc>>,
    replay_of: Vec<Option<Uuid>>,
    data_refs: Vec<Option<Json<&'a PayloadRef>>>,
}

impl<'a> EnvelopeColumns<'a> {
    fn of(tasks: impl ExactSizeIterator<Item = &'a TaskEnvelope>) -> Self {
        let mut columns = Self {
            ids: Vec::with_capacity(tasks.len()),
            agent_types: Vec::with_capacity(tasks.len()),
            priorities: Vec::with_capacity(tasks.len()),
            data: Vec::with_capacity(tasks.len()),
            max_attempts: Vec::with_capacity(tasks.len()),
            keys: Vec::with_capacity(tasks.len()),
            created: Vec::with_capacity(tasks.len()),
            replay_of: Vec::with_capacity(tasks.len()),
            data_refs: Vec::with_capacity(tasks.len()),
        };
        for task in tasks {
            columns.ids.push(task.id);
            columns.agent_types.push(&task.agent_type);
            columns.priorities.push(i16::from(task.priority));
            columns.data.push(&task.data);
            columns.max_attempts.push(task.max_attempts as i32);
            columns.keys.push(task.idempotency_key.as_deref());
            columns.created.push(task.created_at);
            columns.replay_of.push(task.replay_of);
            columns.data_refs.push(task.data_ref.as_ref().map(Json));
        }
        columns
    }
}

concern_handle! {
    /// The task rows: what workers claim and settle, what readers look up.
    pub struct Tasks for Store, tasks
}

impl Tasks<'_> {
    /// Marks a batch of deliveries `processing` (inserting rows for new tasks) in one
    /// statement, and returns the ids that may run with the errors of their earlier
    /// attempts. An id left out is already `completed` or `dead`: its delivery is a
    /// duplicate to acknowledge without running the agent.
    ///
    /// Each id must appear once in `claims`.
    pub async fn claim(
        &self,
        claims: &[Claim<'_>],
        worker_id: &str,
    ) -> Result<HashMap<Uuid, Claimed>, StoreError> {
        if claims.is_empty() {
            return Ok(HashMap::new());
        }
        let columns = EnvelopeColumns::of(claims.iter().map(|c| c.task));
        let attempts: Vec<i32> = claims.iter().map(|c| c.attempt as i32).collect();
        let trace_ids: Vec<Option<&str>> = claims.iter().map(|c| c.trace_id.as_deref()).collect();
        let rows: Vec<(Uuid, Value, DateTime<Utc>, Option<Value>)> = sqlx::query_as(
            "INSERT INTO tasks (id, agent_type, priority, data, status, attempts, max_attempts,
                                idempotency_key, created_at, replay_of, trace_id, worker_id,
                                started_at, updated_at, data_ref)
             SELECT t.id, t.agent_type, t.priority, t.data, 'processing', t.attempts,
                    t.max_attempts, t.idempotency_key, t.created_at, t.replay_of, t.trace_id, $9,
                    now(), now(), t.data_ref
             FROM UNNEST($1::uuid[], $2::text[], $3::int2[], $4::jsonb[], $5::int4[],
                         $6::int4[], $7::text[], $8::timestamptz[], $10::uuid[], $11::text[],
                         $12::jsonb[])
                  AS t(id, agent_type, priority, data, attempts, max_attempts,
                       idempotency_key, created_at, replay_of, trace_id, data_ref)
             ON CONFLICT (id, created_at) DO UPDATE
                SET status = 'processing', attempts = GREATEST(tasks.attempts, EXCLUDED.attempts),
                    worker_id = EXCLUDED.worker_id, started_at = EXCLUDED.started_at,
                    updated_at = now()
              WHERE tasks.status NOT IN ('completed', 'dead', 'cancelled')
             RETURNING id, errors, started_at, progress",
        )
        .bind(&columns.ids)
        .bind(&columns.agent_types)
        .bind(&columns.priorities)
        .bind(&columns.data)
        .bind(&attempts)
        .bind(&columns.max_attempts)
        .bind(&columns.keys)
        .bind(&columns.created)
        .bind(worker_id)
        .bind(&columns.replay_of)
        .bind(&trace_ids)
        .bind(&columns.data_refs)
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("claiming tasks"))?;
        Ok(rows
            .into_iter()
            .map(|(id, errors, started_at, checkpoint)| {
                let claimed = Claimed {
                    previous_errors: serde_json::from_value(errors).unwrap_or_default(),
                    started_at,
                    checkpoint,
                };
                (id, claimed)
            })
            .collect())
    }

    /// Of `tasks`, those whose row is already `completed` or `dead`: a first delivery of one
    /// is a duplicate (re-published after the broker's de-duplication window) to acknowledge
    /// without running. Read-only: first deliveries write nothing before their outcome.
    pub async fn finished_among(&self, tasks: &[RowKey]) -> Result<HashSet<Uuid>, StoreError> {
        if tasks.is_empty() {
            return Ok(HashSet::new());
        }
        let (ids, created): (Vec<Uuid>, Vec<DateTime<Utc>>) =
            tasks.iter().map(|key| (key.id, key.created_at)).unzip();
        // One primary-key probe per task in its day's partition (a LATERAL with LIMIT is
        // never turned into a scan of the table, nor of an index over every finished row),
        // whatever the size of the table when the plan was made.
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT u.id FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, created_at)
              CROSS JOIN LATERAL (SELECT status FROM tasks
                                   WHERE tasks.id = u.id AND tasks.created_at = u.created_at
                                   LIMIT 1) AS t
              WHERE t.status IN ('completed', 'dead', 'cancelled')",
        )
        .bind(&ids)
        .bind(&created)
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("looking for finished tasks"))?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Records tasks accepted by the HTTP API as `queued` (`scheduled` when their `not_before`
    /// lies ahead), with the trace they continue, so they can be read before a worker claims
    /// them; concurrent calls share one statement ([`super::grouped`]). Ids already known
    /// are left alone.
    pub async fn record_queued(
        &self,
        tasks: &[TaskEnvelope],
        trace_id: Option<&str>,
    ) -> Result<(), StoreError> {
        // Grouped with other callers' (the API's concurrent requests) into one statement.
        self.queued_groups()
            .record(tasks.to_vec(), trace_id.map(String::from))
            .await
    }

    /// Removes rows still `queued` among `ids`: tasks recorded by the API whose publish
    /// failed, so no row waits for work that nothing will do.
    pub async fn forget_queued(&self, ids: &[Uuid]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "DELETE FROM tasks WHERE id = ANY($1) AND status IN ('queued', 'scheduled')",
        )
        .bind(ids)
        .execute(&self.primary)
        .await
        .map_err(StoreError::query("removing unpublished tasks"))?;
        Ok(done.rows_affected())
    }

    /// Stores a batch of outcomes in one statement and returns the ids it applied: the row
    /// is created from the outcome's [`Origin`] when the task has none yet (a first
    /// delivery), updated otherwise.
    ///
    /// An outcome is fenced off (not applied) when the row is already `completed` or `dead`,
    /// or when a failure belongs to an older attempt than the row's latest claim: a late
    /// worker never overwrites a newer one.
    pub async fn settle(
        &self,
        outcomes: &[&Settled],
        worker_id: &str,
    ) -> Result<HashSet<Uuid>, StoreError> {
        if outcomes.is_empty() {
            return Ok(HashSet::new());
        }
        let columns = EnvelopeColumns::of(outcomes.iter().map(|o| o.origin.task.as_ref()));
        let attempts: Vec<i32> = outcomes.iter().map(|o| o.attempt as i32).collect();
        let statuses: Vec<&str> = outcomes.iter().map(|o| o.status.as_str()).collect();
        let results: Vec<Option<&Value>> = outcomes.iter().map(|o| o.result.as_ref()).collect();
        let result_refs: Vec<Option<Json<&PayloadRef>>> = outcomes
            .iter()
            .map(|o| o.result_ref.as_ref().map(Json))
            .collect();
        let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.error.as_deref()).collect();
        let trace_ids: Vec<Option<&str>> = outcomes
            .iter()
            .map(|o| o.origin.trace_id.as_deref())
            .collect();
        let started: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.origin.started_at).collect();
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "INSERT INTO tasks AS tasks
                    (id, agent_type, priority, data, status, attempts, max_attempts,
                     idempotency_key, created_at, replay_of, trace_id, worker_id, started_at,
                     result, last_error, errors, completed_at, updated_at, data_ref, result_ref,
                     cancelled_by)
             SELECT t.id, t.agent_type, t.priority, t.data, t.status, t.attempt,
                    t.max_attempts, t.idempotency_key, t.created_at, t.replay_of, t.trace_id,
                    $6, t.started_at, t.result, t.error,
                    CASE WHEN t.error IS NULL THEN '[]'::jsonb
                         ELSE jsonb_build_array(jsonb_build_object(
                              'attempt', t.attempt, 'error', t.error, 'at', now(),
                              'worker', $6::text)) END,
                    CASE WHEN t.status IN ('completed', 'dead', 'cancelled') THEN now() END, now(),
                    t.data_ref, t.result_ref, t.cancelled_by
               FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::jsonb[], $5::text[],
                           $7::text[], $8::int2[], $9::jsonb[], $10::int4[], $11::text[],
                           $12::timestamptz[], $13::uuid[], $14::text[], $15::timestamptz[],
                           $16::jsonb[], $17::jsonb[], $18::text[])
                    AS t(id, attempt, status, result, error, agent_type, priority, data,
                         max_attempts, idempotency_key, created_at, replay_of, trace_id,
                         started_at, data_ref, result_ref, cancelled_by)
             ON CONFLICT (id, created_at) DO UPDATE
                SET status = EXCLUDED.status,
                    attempts = GREATEST(tasks.attempts, EXCLUDED.attempts),
                    result = EXCLUDED.result,
                    result_ref = EXCLUDED.result_ref,
                    last_error = COALESCE(EXCLUDED.last_error, tasks.last_error),
                    errors = CASE WHEN tasks.status = 'cancelled' THEN tasks.errors
                                  ELSE tasks.errors || EXCLUDED.errors END,
                    worker_id = EXCLUDED.worker_id,
                    started_at = COALESCE(tasks.started_at, EXCLUDED.started_at),
                    completed_at = COALESCE(CASE WHEN tasks.status = 'cancelled'
                                                 THEN tasks.completed_at END,
                                            EXCLUDED.completed_at),
                    cancelled_by = COALESCE(tasks.cancelled_by, EXCLUDED.cancelled_by),
                    updated_at = now()
              WHERE (tasks.status NOT IN ('completed', 'dead', 'cancelled')
                     AND (EXCLUDED.status = 'completed' OR tasks.attempts <= EXCLUDED.attempts))
                 -- A worker ending a task cancelled meanwhile agrees with the row: applied,
                 -- so its delivery is acknowledged and the mirror moved.
                 OR (EXCLUDED.status = 'cancelled' AND tasks.status = 'cancelled')
             RETURNING tasks.id",
        )
        .bind(&columns.ids)
        .bind(&attempts)
        .bind(&statuses)
        .bind(&results)
        .bind(&errors)
        .bind(worker_id)
        .bind(&columns.agent_types)
        .bind(&columns.priorities)
        .bind(&columns.data)
        .bind(&columns.max_attempts)
        .bind(&columns.keys)
        .bind(&columns.created)
        .bind(&columns.replay_of)
        .bind(&trace_ids)
        .bind(&started)
        .bind(&columns.data_refs)
        .bind(&result_refs)
        .bind(
            outcomes
                .iter()
                .map(|o| o.cancelled_by.as_deref())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("settling tasks"))?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Stores agents' latest progress reports on their unfinished rows, in one statement;
    /// returns the ids whose row took it (a task may have no row yet).
    pub async fn record_progress(
        &self,
        reports: &[(Uuid, Value)],
    ) -> Result<HashSet<Uuid>, StoreError> {
        if reports.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<Uuid> = reports.iter().map(|(id, _)| *id).collect();
        let values: Vec<&Value> = reports.iter().map(|(_, report)| report).collect();
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "UPDATE tasks SET progress = p.progress
               FROM UNNEST($1::uuid[], $2::jsonb[]) AS p(id, progress)
              WHERE tasks.id = p.id AND tasks.status NOT IN ('completed', 'dead', 'cancelled')
             RETURNING tasks.id",
        )
        .bind(&ids)
        .bind(&values)
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("recording progress"))?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// One task by id.
    pub async fn get(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.primary)
            .await
            .map_err(StoreError::query("reading a task"))
    }

    /// Rows changed at or after `since` (mirror catch-up).
    pub async fn changed_since(&self, since: DateTime<Utc>) -> Result<Vec<TaskRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM tasks WHERE updated_at >= $1 ORDER BY updated_at")
            .bind(since)
            .fetch_all(&self.primary)
            .await
            .map_err(StoreError::query("reading changed tasks"))
    }

    /// Up to `limit` rows with ids after `after`, in id order: pages over every task.
    pub async fn page(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM tasks WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after.unwrap_or(Uuid::nil()))
            .bind(limit)
            .fetch_all(&self.primary)
            .await
            .map_err(StoreError::query("paging over tasks"))
    }

    /// Several tasks by id, in no particular order.
    pub async fn by_ids(&self, ids: &[Uuid]) -> Result<Vec<TaskRecord>, StoreError> {
        sqlx::query_as("SELECT * FROM tasks WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.primary)
            .await
            .map_err(StoreError::query("reading tasks"))
    }
}

impl Tasks<'_> {
    /// Totals and latency percentiles per agent type over `ids`.
    pub async fn agent_summary(&self, ids: &[Uuid]) -> Result<Vec<AgentSummary>, StoreError> {
        sqlx::query_as(
            "SELECT agent_type,
                    count(*) FILTER (WHERE status = 'completed') AS completed,
                    count(*) FILTER (WHERE status = 'dead') AS dead,
                    count(*) FILTER (WHERE status NOT IN ('completed', 'dead', 'cancelled')) AS unfinished,
                    count(*) FILTER (WHERE attempts > 1) AS retried,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY
                        extract(epoch FROM completed_at - created_at))::float8 * 1000 AS p50_ms,
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY
                        extract(epoch FROM completed_at - created_at))::float8 * 1000 AS p99_ms
               FROM tasks WHERE id = ANY($1)
              GROUP BY agent_type ORDER BY agent_type",
        )
        .bind(ids)
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("summarising tasks"))
    }

    /// How many of `ids` are `completed` or `dead`.
    pub async fn count_finished(&self, ids: &[Uuid]) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM tasks WHERE id = ANY($1) AND status IN ('completed', 'dead', 'cancelled')",
        )
        .bind(ids)
        .fetch_one(&self.primary)
        .await
        .map_err(StoreError::query("counting finished tasks"))?;
        Ok(count)
    }
}

/// Writes `tasks` as queued (scheduled when their `not_before` is ahead), each with its
/// trace id (`traces[i]`), in one statement.
pub(super) async fn insert_queued(
    pool: &sqlx::PgPool,
    tasks: &[&TaskEnvelope],
    traces: &[Option<&str>],
) -> Result<(), StoreError> {
    debug_assert_eq!(tasks.len(), traces.len(), "a trace (or none) per task");
    let columns = EnvelopeColumns::of(tasks.iter().copied());
    sqlx::query(
        "INSERT INTO tasks (id, agent_type, priority, data, status, max_attempts,
                            idempotency_key, created_at, trace_id, data_ref, not_before)
         SELECT t.id, t.agent_type, t.priority, t.data,
                CASE WHEN t.not_before > now() THEN 'scheduled' ELSE 'queued' END,
                t.max_attempts, t.idempotency_key, t.created_at, t.trace_id, t.data_ref,
                t.not_before
           FROM UNNEST($1::uuid[], $2::text[], $3::int2[], $4::jsonb[], $5::int4[],
                       $6::text[], $7::timestamptz[], $8::text[], $9::jsonb[], $10::timestamptz[])
                AS t(id, agent_type, priority, data, max_attempts, idempotency_key,
                     created_at, trace_id, data_ref, not_before)
         ON CONFLICT (id, created_at) DO NOTHING",
    )
    .bind(&columns.ids)
    .bind(&columns.agent_types)
    .bind(&columns.priorities)
    .bind(&columns.data)
    .bind(&columns.max_attempts)
    .bind(&columns.keys)
    .bind(&columns.created)
    .bind(traces)
    .bind(&columns.data_refs)
    .bind(tasks.iter().map(|t| t.not_before).collect::<Vec<_>>())
    .execute(pool)
    .await
    .map_err(StoreError::query("recording queued tasks"))?;
    Ok(())
}
