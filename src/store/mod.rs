//! PostgreSQL: the primary pool and read replicas (the seed's `DatabaseRouter`), the embedded
//! migrations and the task queries. Writes go through the primary pool; every statement
//! that touches many tasks is one round trip.

mod cancel;
mod keys;
mod pool;
mod retention;
mod router;
mod search;
mod tasks;

pub use cancel::{CancelFilter, CancelReport};
pub use pool::{Store, StoreError};
pub use retention::{DAYS_AHEAD, PartitionReport, partition_name};
pub use router::ReadFrom;
pub use search::{MinuteCounts, TaskSearch, TaskSummary};
pub use tasks::{
    AgentSummary, Claim, Claimed, Origin, RowKey, Settled, SettledStatus, TaskRecord, TaskStatus,
};
