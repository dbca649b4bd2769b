//! Retention of task rows: one partition of `tasks` per UTC day of creation, created a few
//! days ahead of need and dropped whole once expired, so removing a day of history costs the
//! same at a thousand rows as at ten million and leaves no dead tuples behind.
//!
//! The rule is the same everywhere: a row that finished (`completed` or `dead`) more than
//! the retention period ago is removed; an unfinished row is never removed. When a day's
//! partition expires, the rows it still holds that the rule keeps (unfinished, or finished
//! recently after a long wait) move to `tasks_default` before the partition is dropped;
//! `tasks_default` itself (rows whose day had no partition) is trimmed row by row.
//!
//! Every change takes a transaction-level advisory lock per schema and looks again under it,
//! so workers running the same upkeep at once take turns instead of colliding; and a short
//! lock timeout, so the hot path never waits behind upkeep for long (a round that cannot get
//! its locks fails and is retried at the next one).

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::{Store, StoreError};

/// How many days ahead of today partitions exist, so a day never starts without one.
pub const DAYS_AHEAD: u64 = 3;

/// Rows trimmed from `tasks_default` per statement.
const DEFAULT_TRIM_CHUNK: i64 = 5_000;

/// Key of the advisory lock that serialises partition changes within one schema.
const LOCK_KEY: &str = "swarm tasks retention";

/// What one round of upkeep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    /// Days whose partition was created.
    pub created: Vec<NaiveDate>,
    /// Rows moved out of `tasks_default` into a new day's partition.
    pub adopted_rows: u64,
    /// Days whose partition was dropped.
    pub dropped: Vec<NaiveDate>,
    /// Rows of dropped partitions kept (unfinished, or finished within the period).
    pub kept_rows: u64,
    /// Finished rows deleted from `tasks_default`.
    pub trimmed_rows: u64,
    /// Idempotency keys forgotten: taken before the cutoff, holding nothing any more.
    pub forgotten_keys: u64,
}

/// The name of the partition holding tasks created on `day`.
pub fn partition_name(day: NaiveDate) -> String {
    format!("tasks_p{}", day.format("%Y%m%d"))
}

fn day_of_partition(name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix("tasks_p")?;
    if digits.len() != 8 {
        return None;
    }
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

/// The first instant of `day`, as a PostgreSQL literal.
fn day_start_literal(day: NaiveDate) -> String {
    format!("{} 00:00:00+00", day.format("%Y-%m-%d"))
}

concern_handle! {
    /// Day partitions: created ahead, dropped once their tasks are finished and old.
    pub struct Retention for Store, retention
}

impl Retention<'_> {
    /// One round of upkeep at `now`: partitions from today to [`DAYS_AHEAD`] days ahead
    /// exist, and — unless `keep` is `None` (keep forever) — what finished more than `keep`
    /// ago is removed.
    pub async fn upkeep_partitions(
        &self,
        now: DateTime<Utc>,
        keep: Option<chrono::Duration>,
    ) -> Result<PartitionReport, StoreError> {
        let mut report = PartitionReport::default();
        let today = now.date_naive();
        self.ensure_partitions(today, today + Days::new(DAYS_AHEAD), &mut report)
            .await?;
        if let Some(keep) = keep {
            self.drop_finished_before(now - keep, &mut report).await?;
        }
        Ok(report)
    }

    /// The days that have a partition, oldest first.
    pub async fn partition_days(&self) -> Result<Vec<NaiveDate>, StoreError> {
        let names: Vec<(String,)> = sqlx::query_as(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'tasks'::regclass",
        )
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("listing task partitions"))?;
        let mut days: Vec<NaiveDate> = names
            .iter()
            .filter_map(|(name,)| day_of_partition(name))
            .collect();
        days.sort();
        Ok(days)
    }

    /// Creates the partitions of `first ..= last` that are missing. Rows already waiting in
    /// `tasks_default` for one of those days move into it.
    pub async fn ensure_partitions(
        &self,
        first: NaiveDate,
        last: NaiveDate,
        report: &mut PartitionReport,
    ) -> Result<(), StoreError> {
        let existing = self.partition_days().await?;
        let mut day = first;
        while day <= last {
            if !existing.contains(&day) {
                self.create_partition(day, report).await?;
            }
            day = day + Days::new(1);
        }
        Ok(())
    }

    async fn create_partition(
        &self,
        day: NaiveDate,
        report: &mut PartitionReport,
    ) -> Result<(), StoreError> {
        let name = partition_name(day);
        let (from, to) = (
            day_start_literal(day),
            day_start_literal(day + Days::new(1)),
        );
        let doing = "creating a task partition";
        let mut tx = self.upkeep_transaction(doing).await?;
        if is_partition(&mut tx, &name, doing).await? {
            return Ok(());
        }
        // The name and bounds are generated from a date above, never from input.
        for statement in [
            format!(
                "CREATE TABLE IF NOT EXISTS {name}
                    (LIKE tasks INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            ),
            // Nothing may enter the default partition for this day between the move and
            // the attach (which checks that none is left there).
            "LOCK TABLE tasks_default IN ACCESS EXCLUSIVE MODE".to_string(),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query(doing))?;
        }
        let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH moved AS (DELETE FROM tasks_default
                             WHERE created_at >= '{from}' AND created_at < '{to}'
                            RETURNING *)
             INSERT INTO {name} SELECT * FROM moved"
        )))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(doing))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE tasks ATTACH PARTITION {name} FOR VALUES FROM ('{from}') TO ('{to}')"
        )))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(doing))?;
        tx.commit().await.map_err(StoreError::query(doing))?;
        report.created.push(day);
        report.adopted_rows += moved.rows_affected();
        Ok(())
    }

    /// Removes what finished before `cutoff`: partitions whose whole day lies before it are
    /// dropped (keeping their unfinished and recently finished rows in `tasks_default`), and
    /// finished rows of `tasks_default` are deleted in chunks.
    pub async fn drop_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        report: &mut PartitionReport,
    ) -> Result<(), StoreError> {
        for day in self.partition_days().await? {
            let end = (day + Days::new(1))
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc();
            if end > cutoff {
                break;
            }
            self.drop_partition(day, cutoff, report).await?;
        }
        loop {
            let trimmed = sqlx::query(
                "DELETE FROM tasks_default WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM tasks_default
                     WHERE status IN ('completed', 'dead', 'cancelled') AND completed_at < $1
                     LIMIT $2))",
            )
            .bind(cutoff)
            .bind(DEFAULT_TRIM_CHUNK)
            .execute(&self.primary)
            .await
            .map_err(StoreError::query("trimming finished tasks"))?
            .rows_affected();
            report.trimmed_rows += trimmed;
            if trimmed < DEFAULT_TRIM_CHUNK as u64 {
                break;
            }
        }
        // Idempotency keys taken before the cutoff that hold nothing any more: their task
        // finished or is gone, and any window has passed (so forgetting them changes nothing).
        report.forgotten_keys = sqlx::query(
            "DELETE FROM task_keys k
              WHERE k.claimed_at < $1 AND (k.held_until IS NULL OR k.held_until < $1)
                AND NOT EXISTS (SELECT 1 FROM tasks t
                                 WHERE t.id = k.task_id AND t.created_at = k.task_created_at
                                   AND t.status NOT IN ('completed', 'dead', 'cancelled'))",
        )
        .bind(cutoff)
        .execute(&self.primary)
        .await
        .map_err(StoreError::query("forgetting idempotency keys"))?
        .rows_affected();
        self.cancellations().forget_before(cutoff).await?;
        Ok(())
    }

    async fn drop_partition(
        &self,
        day: NaiveDate,
        cutoff: DateTime<Utc>,
        report: &mut PartitionReport,
    ) -> Result<(), StoreError> {
        let name = partition_name(day);
        let doing = "dropping an expired task partition";
        let mut tx = self.upkeep_transaction(doing).await?;
        if !is_partition(&mut tx, &name, doing).await? {
            return Ok(());
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE tasks DETACH PARTITION {name}"
        )))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(doing))?;
        // Its day has no partition any more: what is kept lands in `tasks_default`.
        let kept = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO tasks SELECT * FROM {name}
              WHERE status NOT IN ('completed', 'dead', 'cancelled') OR completed_at >= $1"
        )))
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(doing))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {name}")))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(doing))?;
        tx.commit().await.map_err(StoreError::query(doing))?;
        report.dropped.push(day);
        report.kept_rows += kept.rows_affected();
        Ok(())
    }

    /// A transaction with a short lock timeout holding the upkeep lock (waited for, as
    /// long as the timeout allows).
    async fn upkeep_transaction(
        &self,
        doing: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self
            .primary
            .begin()
            .await
            .map_err(StoreError::query(doing))?;
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(doing))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || $1, 0))")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(doing))?;
        Ok(tx)
    }
}

/// Whether `name` is a partition of `tasks` now (looked at under the upkeep lock, since
/// another process may have changed it since this one listed them).
async fn is_partition(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    name: &str,
    doing: &'static str,
) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                         WHERE i.inhparent = 'tasks'::regclass AND c.relname = $1)",
    )
    .bind(name)
    .fetch_one(&mut **tx)
    .await
    .map_err(StoreError::query(doing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_foreign_names_are_ignored() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        assert_eq!(partition_name(day), "tasks_p20261130");
        assert_eq!(day_of_partition(&partition_name(day)), Some(day));
        assert_eq!(day_of_partition("tasks_default"), None);
        assert_eq!(day_of_partition("tasks_p2026113"), None);
        assert_eq!(day_of_partition("tasks_p20261332"), None);
    }

    #[test]
    fn day_bounds_are_utc_midnights() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        assert_eq!(day_start_literal(day), "2026-12-31 00:00:00+00");
        assert_eq!(
            day_start_literal(day + Days::new(1)),
            "2027-01-01 00:00:00+00"
        );
    }
}
