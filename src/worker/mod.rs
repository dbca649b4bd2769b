//! The worker: turns deliveries into outcomes and outcomes into commits and acks — the
//! per-delivery path. The jobs beside it (cancellations, progress, gauges, upkeep, strays)
//! are its [sidecars](crate::sidecars).
//!
//! - [`executor`]: runs one task's agent to an [`Outcome`] (no I/O besides the agent).
//! - [`ending`]: why a task ends without a result (a typed cause) and the one decision of
//!   how: retried, dead with which reason, or cancelled.
//! - [`outcome`]: what an outcome means for the database row and the broker, in one place.
//! - [`settlement`]: one delivery's settlement, made only from an outcome, a rejection or a
//!   hand-back.
//! - [`retry`]: the exponential, jittered delay between attempts.
//! - [`settler`]: commits outcomes in batches, then acknowledges each message.
//! - [`assembly`]: a worker with the mirror, intake and cache its settings enable.
//! - [`alarm`]: wakes an idle worker when a retry it scheduled is due.
//! - [`hold`]: holding a batch through a transient fault.
//! - [`dispatch`]: a fetched batch becomes claimed, running tasks.
//! - [`task_runner`]: one claimed task run, its lease kept alive, its settlement sent.
//! - [`first_delivery`]: whether a first delivery could repeat a finished task.
//! - [`pull`]: where the next batch comes from and when to look (doorbell, alarms, rescan).
//! - [`runner`]: the [`Worker`], its loop and graceful shutdown around them.

pub mod alarm;
pub mod assembly;
mod claim_check;
mod delay;
mod dispatch;
pub mod ending;
pub mod executor;
pub mod first_delivery;
pub mod hold;
pub mod outcome;
mod pull;
pub mod retry;
pub mod runner;
pub mod settlement;
pub mod settler;
mod task_runner;
mod unique;

pub use assembly::{Assembled, assemble};
pub use executor::{DEFAULT_MAX_RESULT_BYTES, Executor};
pub use outcome::Outcome;
pub use retry::RetryPolicy;
pub use runner::Worker;

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
    #[error(transparent)]
    Sidecars(#[from] crate::sidecars::SidecarError),
}

/// Completes once `signal` is raised (shutdown began, or the grace period is over).
async fn raised(signal: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}
