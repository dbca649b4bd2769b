//! PostgreSQL: the pool, the embedded migrations and the task queries. Writes go through the
//! primary pool; every statement that touches many tasks is one round trip.

mod pool;
mod tasks;

pub use pool::{Store, StoreError};
pub use tasks::{AgentSummary, Claim, Claimed, Settled, SettledStatus, TaskRecord, TaskStatus};
