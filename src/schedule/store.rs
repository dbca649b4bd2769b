//! Schedules in PostgreSQL: defined and changed by operators, taken when due by workers.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{CatchUp, Overlap, Schedule};
use crate::store::{Store, StoreError};

#[derive(sqlx::FromRow)]
struct Row {
    name: String,
    agent_type: String,
    data: Value,
    priority: i16,
    every_secs: Option<i32>,
    cron: Option<String>,
    time_zone: String,
    overlap: String,
    catch_up: String,
    paused: bool,
    next_fire: DateTime<Utc>,
    last_fire: Option<DateTime<Utc>>,
    last_task: Option<Uuid>,
}

impl From<Row> for Schedule {
    fn from(row: Row) -> Self {
        Self {
            name: row.name,
            agent_type: row.agent_type,
            data: row.data,
            priority: u8::try_from(row.priority.clamp(0, 9)).unwrap_or(5),
            every_secs: row
                .every_secs
                .map(|secs| u32::try_from(secs.max(1)).unwrap_or(1)),
            cron: row.cron,
            time_zone: row.time_zone,
            overlap: if row.overlap == "skip" {
                Overlap::Skip
            } else {
                Overlap::Allow
            },
            catch_up: match row.catch_up.as_str() {
                "none" => CatchUp::None,
                "all" => CatchUp::All,
                _ => CatchUp::One,
            },
            paused: row.paused,
            next_fire: row.next_fire,
            last_fire: row.last_fire,
            last_task: row.last_task,
        }
    }
}

fn overlap_text(overlap: Overlap) -> &'static str {
    match overlap {
        Overlap::Skip => "skip",
        Overlap::Allow => "allow",
    }
}

fn catch_up_text(catch_up: CatchUp) -> &'static str {
    match catch_up {
        CatchUp::None => "none",
        CatchUp::One => "one",
        CatchUp::All => "all",
    }
}

const COLUMNS: &str = "name, agent_type, data, priority, every_secs, cron, time_zone, overlap, \
                       catch_up, paused, next_fire, last_fire, last_task";

concern_handle! {
    /// Periodic schedules' rows.
    pub struct Schedules for Store, schedules
}

impl Schedules<'_> {
    /// Creates the schedule, or redefines the one of that name (its next fire recomputed).
    pub async fn put(&self, schedule: &Schedule) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO schedules (name, agent_type, data, priority, every_secs, overlap,
                                    catch_up, paused, next_fire, cron, time_zone)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (name) DO UPDATE
                SET agent_type = EXCLUDED.agent_type, data = EXCLUDED.data,
                    priority = EXCLUDED.priority, every_secs = EXCLUDED.every_secs,
                    cron = EXCLUDED.cron, time_zone = EXCLUDED.time_zone,
                    overlap = EXCLUDED.overlap, catch_up = EXCLUDED.catch_up,
                    next_fire = EXCLUDED.next_fire",
        )
        .bind(&schedule.name)
        .bind(&schedule.agent_type)
        .bind(&schedule.data)
        .bind(i16::from(schedule.priority))
        .bind(
            schedule
                .every_secs
                .map(|secs| i32::try_from(secs).unwrap_or(i32::MAX)),
        )
        .bind(overlap_text(schedule.overlap))
        .bind(catch_up_text(schedule.catch_up))
        .bind(schedule.paused)
        .bind(schedule.next_fire)
        .bind(&schedule.cron)
        .bind(&schedule.time_zone)
        .execute(self.primary())
        .await
        .map_err(StoreError::query("storing a schedule"))?;
        Ok(())
    }

    /// Every schedule, by name.
    pub async fn list(&self) -> Result<Vec<Schedule>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM schedules ORDER BY name"
        )))
        .fetch_all(self.primary())
        .await
        .map_err(StoreError::query("listing schedules"))?;
        Ok(rows.into_iter().map(Schedule::from).collect())
    }

    /// One schedule by name.
    pub async fn get(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM schedules WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.primary())
        .await
        .map_err(StoreError::query("reading a schedule"))?;
        Ok(row.map(Schedule::from))
    }

    /// Removes a schedule; false when there was none of that name.
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM schedules WHERE name = $1")
            .bind(name)
            .execute(self.primary())
            .await
            .map_err(StoreError::query("removing a schedule"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Pauses or resumes a schedule, moving its next fire when given (a resumed schedule
    /// starts at its next fire time: fires missed while paused were not wanted); false when
    /// there was none of that name.
    pub async fn pause(
        &self,
        name: &str,
        paused: bool,
        next_fire: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE schedules SET paused = $2, next_fire = COALESCE($3, next_fire)
              WHERE name = $1",
        )
        .bind(name)
        .bind(paused)
        .bind(next_fire)
        .execute(self.primary())
        .await
        .map_err(StoreError::query("pausing a schedule"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Schedules due at `now`, locked for this transaction; ones another worker holds are
    /// left to it.
    pub(super) async fn due(
        tx: &mut Transaction<'static, Postgres>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Schedule>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM schedules
              WHERE NOT paused AND next_fire <= $1
              ORDER BY next_fire LIMIT 32
              FOR UPDATE SKIP LOCKED"
        )))
        .bind(now)
        .fetch_all(&mut **tx)
        .await
        .map_err(StoreError::query("taking due schedules"))?;
        Ok(rows.into_iter().map(Schedule::from).collect())
    }

    /// Whether the task `id` has not finished (no row yet counts as not finished).
    pub(super) async fn still_running(
        tx: &mut Transaction<'static, Postgres>,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let finished: Option<bool> = sqlx::query_scalar(
            "SELECT status IN ('completed', 'dead', 'cancelled') FROM tasks WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::query("reading a fire's task"))?;
        Ok(finished != Some(true))
    }

    /// Records the fires made and the next fire time.
    pub(super) async fn advance(
        tx: &mut Transaction<'static, Postgres>,
        name: &str,
        next_fire: DateTime<Utc>,
        last: Option<(DateTime<Utc>, Uuid)>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE schedules SET next_fire = $2, last_fire = COALESCE($3, last_fire),
                    last_task = COALESCE($4, last_task)
              WHERE name = $1",
        )
        .bind(name)
        .bind(next_fire)
        .bind(last.map(|(at, _)| at))
        .bind(last.map(|(_, id)| id))
        .execute(&mut **tx)
        .await
        .map_err(StoreError::query("advancing a schedule"))?;
        Ok(())
    }

    /// A transaction on the primary (the ticker's).
    pub(super) async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.primary()
            .begin()
            .await
            .map_err(StoreError::query("starting a schedule transaction"))
    }
}
