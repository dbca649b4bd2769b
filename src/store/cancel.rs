//! Cancellation in the database: a cancelled task's row turns `cancelled` at once (final: a
//! worker's later outcome is fenced off, so a cancel racing completion ends in exactly one
//! final state), and every id a cancel named is listed in `cancellations`, which workers
//! read so that a task without a row yet (a NATS producer's) never runs either.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};

/// What one cancel did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CancelReport {
    /// Rows that turned `cancelled` now (or already were).
    pub cancelled: Vec<Uuid>,
    /// Ids without a row yet: a worker that receives the task ends it `cancelled`.
    pub requested: Vec<Uuid>,
    /// Rows that had finished otherwise first, with their status.
    pub finished: Vec<(Uuid, String)>,
}

impl CancelReport {
    /// Every id a worker must not run (cancelled or requested).
    pub fn to_stop(&self) -> Vec<Uuid> {
        self.cancelled
            .iter()
            .chain(&self.requested)
            .copied()
            .collect()
    }
}

/// Which rows a cancel by filter takes: unfinished ones, optionally of one agent type and of
/// some statuses only.
#[derive(Debug, Default, Clone)]
pub struct CancelFilter {
    pub agent_type: Option<String>,
    /// Unfinished statuses to take (`queued`, `scheduled`, `processing`, `failed`); all when
    /// empty.
    pub statuses: Vec<String>,
}

concern_handle! {
    /// Cancellation requests and the tasks they end.
    pub struct Cancellations for Store, cancellations
}

impl Cancellations<'_> {
    /// Cancels `ids` on behalf of `by`.
    ///
    /// Fails when PostgreSQL cannot be written.
    pub async fn cancel(&self, ids: &[Uuid], by: &str) -> Result<CancelReport, StoreError> {
        let doing = "cancelling tasks";
        let mut tx = self
            .primary
            .begin()
            .await
            .map_err(StoreError::query(doing))?;
        sqlx::query(
            "UPDATE tasks SET status = 'cancelled', cancelled_by = $2, last_error = 'cancelled',
                              errors = errors || jsonb_build_array(jsonb_build_object(
                                  'attempt', attempts + 1, 'error', 'cancelled', 'at', now())),
                              completed_at = now(), updated_at = now()
              WHERE id = ANY($1) AND status NOT IN ('completed', 'dead', 'cancelled')",
        )
        .bind(ids)
        .bind(by)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(doing))?;
        let known: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, status FROM tasks WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query(doing))?;
        let mut report = CancelReport::default();
        for &id in ids {
            match known.iter().find(|(known, _)| *known == id) {
                None => report.requested.push(id),
                Some((_, status)) if status == "cancelled" => report.cancelled.push(id),
                Some((_, status)) => report.finished.push((id, status.clone())),
            }
        }
        record_cancellations(&mut tx, &report.to_stop(), by).await?;
        tx.commit().await.map_err(StoreError::query(doing))?;
        Ok(report)
    }

    /// Cancels every unfinished row `filter` takes, on behalf of `by`; returns their ids.
    ///
    /// Fails when PostgreSQL cannot be written.
    pub async fn cancel_matching(
        &self,
        filter: &CancelFilter,
        by: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let doing = "cancelling matching tasks";
        let mut tx = self
            .primary
            .begin()
            .await
            .map_err(StoreError::query(doing))?;
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "UPDATE tasks SET status = 'cancelled', cancelled_by = $3, last_error = 'cancelled',
                              errors = errors || jsonb_build_array(jsonb_build_object(
                                  'attempt', attempts + 1, 'error', 'cancelled', 'at', now())),
                              completed_at = now(), updated_at = now()
              WHERE status NOT IN ('completed', 'dead', 'cancelled')
                AND ($1::text IS NULL OR agent_type = $1)
                AND (cardinality($2::text[]) = 0 OR status = ANY($2))
              RETURNING id",
        )
        .bind(filter.agent_type.as_deref())
        .bind(&filter.statuses)
        .bind(by)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::query(doing))?;
        let ids: Vec<Uuid> = rows.into_iter().map(|(id,)| id).collect();
        record_cancellations(&mut tx, &ids, by).await?;
        tx.commit().await.map_err(StoreError::query(doing))?;
        Ok(ids)
    }

    /// Of `ids`, those whose row is `cancelled`, with who cancelled them: a worker whose
    /// outcome was fenced off by a cancel ends its delivery as cancelled.
    ///
    /// Fails when PostgreSQL cannot be read.
    pub async fn cancelled_among(
        &self,
        ids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, String>, StoreError> {
        let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT id, cancelled_by FROM tasks WHERE id = ANY($1) AND status = 'cancelled'",
        )
        .bind(ids)
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("reading cancelled tasks"))?;
        Ok(rows
            .into_iter()
            .map(|(id, by)| (id, by.unwrap_or_default()))
            .collect())
    }

    /// Cancellations made after `since` (oldest first): what a worker must not run.
    ///
    /// Fails when PostgreSQL cannot be read.
    pub async fn since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, String, DateTime<Utc>)>, StoreError> {
        sqlx::query_as(
            "SELECT id, cancelled_by, cancelled_at FROM cancellations
              WHERE cancelled_at > $1 ORDER BY cancelled_at",
        )
        .bind(since)
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("reading cancellations"))
    }

    /// Forgets cancellations made before `cutoff` (the retention period).
    ///
    /// Fails when PostgreSQL cannot be written.
    pub async fn forget_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM cancellations WHERE cancelled_at < $1")
            .bind(cutoff)
            .execute(&self.primary)
            .await
            .map(|done| done.rows_affected())
            .map_err(StoreError::query("forgetting cancellations"))
    }
}

async fn record_cancellations(
    tx: &mut sqlx::PgConnection,
    ids: &[Uuid],
    by: &str,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO cancellations (id, cancelled_by)
         SELECT id, $2 FROM UNNEST($1::uuid[]) AS c(id)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(ids)
    .bind(by)
    .execute(tx)
    .await
    .map_err(StoreError::query("recording cancellations"))?;
    Ok(())
}
