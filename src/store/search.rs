//! Finding tasks for operators (the dashboard's task list, `GET /v1/tasks`): by status,
//! agent type, priority, creation time, and inside their data (JSON containment, served by
//! a GIN index) or their data, result and errors (text), newest first, a page at a time.
//! Also the per-minute outcome counts of the overview, read from the rows (the BRIN index on
//! `completed_at`), so they survive restarts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Store, StoreError};

/// What to look for; every part optional.
#[derive(Debug, Default, Clone)]
pub struct TaskSearch {
    pub statuses: Vec<String>,
    pub agent_type: Option<String>,
    pub priority: Option<i16>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Tasks whose data contains this JSON (`data @> value`).
    pub contains: Option<Value>,
    /// Tasks whose data, result or last error contains this text (any case).
    pub text: Option<String>,
    /// Only tasks listed after this one (the previous page's last).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// One task in a list.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TaskSummary {
    pub id: Uuid,
    pub agent_type: String,
    pub priority: i16,
    pub status: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub data: Value,
}

/// Outcomes of one minute.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MinuteCounts {
    pub minute: DateTime<Utc>,
    pub completed: i64,
    pub dead: i64,
    pub cancelled: i64,
}

/// The text a text search reads: data, result and last error (the expression the trigram
/// index is built on, so the search must use it as written).
const SEARCHED_TEXT: &str =
    "data::text || ' ' || coalesce(result::text, '') || ' ' || coalesce(last_error, '')";

concern_handle! {
    /// Searching and counting tasks for the dashboard and the API.
    pub struct Search for Store, search
}

impl Search<'_> {
    /// Makes the indexes that serve searches (`database.search_index`): a GIN over `data` for
    /// JSON containment and a trigram GIN over the searched text. Existing partitions are
    /// indexed now (a while on a large table); new ones inherit them.
    ///
    /// Fails when PostgreSQL refuses.
    pub async fn ensure_index(&self) -> Result<(), StoreError> {
        let doing = "creating the search indexes";
        sqlx::query(
            "CREATE INDEX IF NOT EXISTS tasks_data_search ON tasks USING gin (data jsonb_path_ops)",
        )
        .execute(&self.primary)
        .await
        .map_err(StoreError::query(doing))?;
        // Text search: trigrams of the searched text (PostgreSQL's pg_trgm, installed where
        // the database allows; its operator class named by the schema it lives in).
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            .execute(&self.primary)
            .await
            .map_err(StoreError::query(doing))?;
        let (schema,): (String,) = sqlx::query_as(
            "SELECT quote_ident(n.nspname) FROM pg_extension e
               JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'",
        )
        .fetch_one(&self.primary)
        .await
        .map_err(StoreError::query(doing))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE INDEX IF NOT EXISTS tasks_text_search ON tasks
               USING gin (({SEARCHED_TEXT}) {schema}.gin_trgm_ops)"
        )))
        .execute(&self.primary)
        .await
        .map_err(StoreError::query(doing))?;
        Ok(())
    }

    /// The tasks `search` finds, newest first (by id: see the module's note).
    ///
    /// Fails when PostgreSQL cannot be read.
    pub async fn tasks(&self, search: &TaskSearch) -> Result<Vec<TaskSummary>, StoreError> {
        let pattern = search.text.as_ref().map(|text| {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, agent_type, priority, status, attempts, created_at, completed_at,
                    last_error, data
               FROM tasks
              WHERE (cardinality($1::text[]) = 0 OR status = ANY($1))
                AND ($2::text IS NULL OR agent_type = $2)
                AND ($3::int2 IS NULL OR priority = $3)
                AND ($4::timestamptz IS NULL OR created_at >= $4)
                AND ($5::timestamptz IS NULL OR created_at < $5)
                AND ($6::jsonb IS NULL OR data @> $6)
                AND ($7::text IS NULL OR ({SEARCHED_TEXT}) ILIKE $7)
                AND ($8::uuid IS NULL OR id < $8)
              ORDER BY id DESC
              LIMIT $9"
        )))
        .bind(&search.statuses)
        .bind(search.agent_type.as_deref())
        .bind(search.priority)
        .bind(search.since)
        .bind(search.until)
        .bind(search.contains.as_ref())
        .bind(pattern)
        .bind(search.before)
        .bind(search.limit)
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("searching tasks"))
    }

    /// Outcomes per minute over the last `minutes`, oldest first (minutes without any are
    /// left out).
    ///
    /// Fails when PostgreSQL cannot be read.
    pub async fn outcomes_per_minute(&self, minutes: i32) -> Result<Vec<MinuteCounts>, StoreError> {
        sqlx::query_as(
            "SELECT date_trunc('minute', completed_at) AS minute,
                    count(*) FILTER (WHERE status = 'completed') AS completed,
                    count(*) FILTER (WHERE status = 'dead') AS dead,
                    count(*) FILTER (WHERE status = 'cancelled') AS cancelled
               FROM tasks
              WHERE completed_at >= date_trunc('minute', now()) - make_interval(mins => $1)
              GROUP BY 1 ORDER BY 1",
        )
        .bind(minutes)
        .fetch_all(&self.primary)
        .await
        .map_err(StoreError::query("counting outcomes per minute"))
    }
}
