//! The worker: turns deliveries into outcomes and outcomes into commits and acks.
//!
//! - [`delivery`]: a JetStream message becomes a task or a rejection.
//! - [`executor`]: runs one task's agent to an [`Outcome`] (no I/O besides the agent).
//! - [`outcome`]: what an outcome means for the database row and the broker, in one place.
//! - [`settlement`]: one delivery's settlement, made only from an outcome, a rejection or a
//!   hand-back.
//! - [`retry`]: the exponential, jittered delay between attempts.
//! - [`strays`]: dead-letters messages on subjects no lane reads (`bad_subject`).
//! - [`settler`]: commits outcomes in batches, then acknowledges each message.
//! - [`assembly`]: a worker with the mirror, intake and cache its settings enable.
//! - [`gauges`]: backlog, oldest waiting task and connection gauges.
//! - [`alarm`]: wakes an idle worker when a retry it scheduled is due.
//! - [`hold`]: holding a batch through a transient fault, and the board of held batches.
//! - [`liveness`]: whether the worker still makes progress (`/ready`, stall gauges).
//! - [`dispatch`]: a fetched batch becomes claimed, running tasks.
//! - [`task_runner`]: one claimed task run, its lease kept alive, its settlement sent.
//! - [`first_delivery`]: whether a first delivery could repeat a finished task.
//! - [`upkeep`]: task partitions created and expired, the legacy mirror trimmed.
//! - [`pull`]: where the next batch comes from and when to look (doorbell, alarms, rescan).
//! - [`runner`]: the worker loop and graceful shutdown around them.

pub mod alarm;
pub mod assembly;
mod cancel_listener;
mod claim_check;
mod delay;
pub mod delivery;
mod dispatch;
pub mod executor;
pub mod first_delivery;
pub mod gauges;
pub mod hold;
pub mod liveness;
pub mod outcome;
mod progress_writer;
mod pull;
pub mod retry;
pub mod runner;
mod scheduled_view;
pub mod settlement;
pub mod settler;
pub mod strays;
mod task_runner;
mod unique;
pub mod upkeep;

pub use assembly::{Assembled, assemble};
pub use executor::{DEFAULT_MAX_RESULT_BYTES, Executor};
pub use outcome::Outcome;
pub use retry::RetryPolicy;
pub use settler::WorkerCounts;
pub use upkeep::{Upkeep, UpkeepReport};

use std::sync::Arc;

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    DeadLetters(#[from] crate::dlq::DlqError),
    #[error(transparent)]
    Legacy(#[from] crate::mirror::MirrorError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// One worker process's loop over the shared consumers. Holds no state another worker needs.
pub struct Worker {
    broker: crate::broker::Broker,
    store: crate::store::Store,
    dead_letters: crate::dlq::DeadLetterStream,
    executor: Executor,
    settings: crate::config::WorkerSettings,
    worker_id: String,
    counts: Arc<WorkerCounts>,
    mirror: Option<crate::mirror::Mirror>,
    intake: Option<(crate::mirror::Intake, std::time::Duration)>,
    upkeep: Option<Upkeep>,
    meter: Arc<crate::scale::ScaleMeter>,
    held: Arc<hold::HeldBatches>,
    liveness: Arc<liveness::Liveness>,
    /// Agents' progress reports, written to their rows by a sidecar.
    progress: Arc<crate::agent::ProgressBoard>,
    /// What was cancelled, fed by a sidecar from NATS and PostgreSQL.
    cancels: Arc<crate::agent::CancelBoard>,
    /// Where the worker records what it does: the process's metrics unless given others.
    metrics: &'static crate::metrics::Metrics,
}

/// Completes once `signal` is raised (shutdown began, or the grace period is over).
async fn raised(signal: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}
