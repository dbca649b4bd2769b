//! PostgreSQL: the primary pool and read replicas (the seed's `DatabaseRouter`), the embedded
//! migrations and the task queries. Writes go through the primary pool; every statement
//! that touches many tasks is one round trip.

mod cancel;
mod grouped;
mod keys;
mod pool;
mod retention;
mod router;
mod rows;
mod search;
mod tasks;

pub use cancel::{CancelFilter, CancelReport};
pub use retention::{DAYS_AHEAD, PartitionReport, partition_name};
pub use router::ReadFrom;
pub use rows::{
    AgentSummary, Claim, Claimed, Origin, RowKey, Settled, SettledStatus, TaskRecord, TaskStatus,
};
pub use search::{MinuteCounts, TaskSearch, TaskSummary};

/// A database failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL {url}: {source}")]
    Url { url: String, source: sqlx::Error },
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error(
        "PostgreSQL at {url} has no database {name:?}: create it (`createdb {name}` as a \
         PostgreSQL superuser; `make services` creates the default `test`) or point \
         SWARM_DATABASE_URL at one that exists"
    )]
    NoDatabase { url: String, name: String },
    #[error("cannot migrate schema {schema}: {source}")]
    Migrate {
        schema: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database query failed while {doing}: {source}")]
    Query {
        doing: &'static str,
        source: sqlx::Error,
    },
}

impl crate::fault::Classify for StoreError {
    /// Permanent only when PostgreSQL refused a statement for the values it carried
    /// (SQLSTATE classes 22, 23, 54) or a value could not be encoded; the rest is transient.
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::{Fault, sqlstate_fault};
        match self {
            StoreError::Query { source, .. } => match source {
                sqlx::Error::Database(error) => error
                    .code()
                    .map_or(Fault::Transient, |code| sqlstate_fault(&code)),
                sqlx::Error::Encode(_) => Fault::Permanent,
                _ => Fault::Transient,
            },
            _ => Fault::Transient,
        }
    }
}

impl StoreError {
    pub(crate) fn query(doing: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Query { doing, source }
    }
}

/// The fleet's database: the primary pool for writes and read replicas, scoped to one
/// schema.
#[derive(Clone)]
pub struct Store {
    primary: sqlx::PgPool,
    replicas: std::sync::Arc<router::Replicas>,
    schema: String,
    /// Groups concurrent `record_queued` calls, started with the first.
    queued: std::sync::Arc<std::sync::OnceLock<grouped::QueuedGroups>>,
}
