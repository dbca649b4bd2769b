//! Unique tasks: taking each task's `idempotency_key` in one statement per batch. A key is
//! held by one task at a time — until that task finishes, or for `unique_for_secs` — so a
//! task published while another holds its key is not run: the holder's id stands for it.
//! Taking is atomic in PostgreSQL, so two producers racing with one key get one holder.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::task::TaskEnvelope;

/// A key unused this long by a holder that never got a row (its publish never landed) is
/// free again: a safety net, far beyond any backlog's wait.
const ORPHANED_AFTER: &str = "1 day";

concern_handle! {
    /// Idempotency keys: which task holds each.
    pub struct Keys for Store, keys
}

impl Keys<'_> {
    /// Takes the keys of `tasks` (those with an `idempotency_key`) for them, and returns,
    /// per task id, the task that holds its key now: itself, or the earlier task that still
    /// holds it. Taking again a key a task already holds (a retry, a redelivery) keeps it.
    pub async fn take(&self, tasks: &[&TaskEnvelope]) -> Result<HashMap<Uuid, Uuid>, StoreError> {
        // One claim per key: the first task of the batch with it; the rest share its answer.
        let mut first_with: HashMap<&str, Uuid> = HashMap::new();
        let (mut keys, mut ids, mut created, mut until) = (vec![], vec![], vec![], vec![]);
        for task in tasks {
            let Some(key) = task.idempotency_key.as_deref() else {
                continue;
            };
            if first_with.contains_key(key) {
                continue;
            }
            first_with.insert(key, task.id);
            keys.push(key);
            ids.push(task.id);
            created.push(task.created_at);
            until.push(held_until(task));
        }
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let statement = format!(
            "WITH wanted AS (
                 SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::timestamptz[], $4::timestamptz[])
                          AS w(key, task_id, created_at, held_until)),
             taken AS (
                 INSERT INTO task_keys AS k (idempotency_key, task_id, task_created_at, held_until)
                 SELECT key, task_id, created_at, held_until FROM wanted
                 ON CONFLICT (idempotency_key) DO UPDATE
                    SET task_id = EXCLUDED.task_id, task_created_at = EXCLUDED.task_created_at,
                        held_until = EXCLUDED.held_until, claimed_at = now()
                  WHERE k.task_id = EXCLUDED.task_id
                     OR (k.held_until IS NOT NULL AND k.held_until <= now())
                     OR (k.held_until IS NULL AND EXISTS (
                            SELECT 1 FROM tasks t
                             WHERE t.id = k.task_id AND t.created_at = k.task_created_at
                               AND t.status IN ('completed', 'dead', 'cancelled')))
                     OR (k.held_until IS NULL AND k.claimed_at < now() - interval '{ORPHANED_AFTER}'
                         AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = k.task_id))
                 RETURNING idempotency_key, task_id)
             SELECT w.key, COALESCE(t.task_id, k.task_id)
               FROM wanted w
               LEFT JOIN taken t ON t.idempotency_key = w.key
               LEFT JOIN task_keys k ON k.idempotency_key = w.key"
        );
        let holders: Vec<(String, Option<Uuid>)> = sqlx::query_as(sqlx::AssertSqlSafe(statement))
            .bind(&keys)
            .bind(&ids)
            .bind(&created)
            .bind(&until)
            .fetch_all(&self.primary)
            .await
            .map_err(StoreError::query("taking idempotency keys"))?;
        let mut holders: HashMap<String, Uuid> = holders
            .into_iter()
            .filter_map(|(key, holder)| Some((key, holder?)))
            .collect();
        // A key another transaction took while this statement waited for it: its holder
        // committed after this statement's snapshot, so only a new statement sees it.
        let unseen: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|key| !holders.contains_key(*key))
            .collect();
        if !unseen.is_empty() {
            let late: Vec<(String, Uuid)> = sqlx::query_as(
                "SELECT idempotency_key, task_id FROM task_keys WHERE idempotency_key = ANY($1)",
            )
            .bind(&unseen)
            .fetch_all(&self.primary)
            .await
            .map_err(StoreError::query("reading idempotency keys"))?;
            holders.extend(late);
        }
        Ok(tasks
            .iter()
            .filter_map(|task| {
                let key = task.idempotency_key.as_deref()?;
                Some((task.id, *holders.get(key)?))
            })
            .collect())
    }

    /// Gives back the keys `ids` hold (their publish failed: nothing will run them).
    pub async fn release(&self, ids: &[Uuid]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query("DELETE FROM task_keys WHERE task_id = ANY($1)")
            .bind(ids)
            .execute(&self.primary)
            .await
            .map_err(StoreError::query("releasing idempotency keys"))?;
        Ok(done.rows_affected())
    }
}

/// Until when a `ttl` key is held: `unique_for_secs` after the task's creation (bounded by
/// the envelope's rules); `None` for a key held until the task finishes.
fn held_until(task: &TaskEnvelope) -> Option<DateTime<Utc>> {
    let secs = i64::from(task.unique_for_secs?);
    Some(task.created_at + chrono::Duration::try_seconds(secs)?)
}
