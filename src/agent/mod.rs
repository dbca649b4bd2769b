//! Agents do the work of a task. A user adds one by implementing [`Agent`] and registering
//! it in an [`AgentRegistry`]; the runtime decides what a failure means from its type:
//! [`AgentError::Retryable`] is tried again after a delay, [`AgentError::Permanent`] is not.

pub mod builtin;
mod cancel;
pub mod http;
pub mod process;
mod progress;
mod registry;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

pub use cancel::{CancelBoard, Cancellation, RunningGuard};
pub use progress::{Progress, ProgressBoard, WRITE_EVERY};
pub use registry::AgentRegistry;

/// What an agent knows about the task it runs.
#[derive(Debug, Clone)]
pub struct AgentContext {
    pub task_id: Uuid,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub max_attempts: u32,
    /// When the runtime stops waiting for this attempt.
    pub deadline: Instant,
    /// Where to report progress (`progress.report(fraction, detail)`).
    pub progress: Progress,
    /// The last progress an earlier attempt reported (`{"fraction", "detail", "at"}`), to
    /// resume from after a retry.
    pub checkpoint: Option<Value>,
    /// Whether the task was cancelled while it runs (`cancellation.cancelled().await`): an
    /// agent that stops then ends the task `cancelled` at once; one that does not is
    /// abandoned after the worker's grace period.
    pub cancellation: Cancellation,
}

/// Why an agent did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    /// A passing failure (a dependency down, a rate limit): try again later.
    #[error("{0}")]
    Retryable(String),
    /// The input can never succeed: do not try again.
    #[error("{0}")]
    Permanent(String),
    /// A passing failure whose source said when to come back (an upstream's 429 or 503
    /// `Retry-After`): the next attempt waits that long instead of the backoff delay.
    #[error("{message}")]
    RetryAfter { message: String, after: Duration },
}

impl AgentError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// A retryable error whose next attempt waits `after`.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        Self::RetryAfter {
            message: message.into(),
            after,
        }
    }

    /// A permanent error naming the input field that is missing or malformed.
    pub fn invalid_input(field: &str, expected: &str) -> Self {
        Self::Permanent(format!("invalid input: `{field}` must be {expected}"))
    }
}

/// A kind of work the fleet can do, selected by a task's `agent_type`.
#[async_trait]
pub trait Agent: Send + Sync {
    /// The `agent_type` this agent serves.
    fn name(&self) -> &'static str;

    /// Runs one task on `input` (the envelope's `data`) and returns its result.
    async fn run(&self, input: &Value, context: &AgentContext) -> Result<Value, AgentError>;

    /// How long a result may be reused for the same input; `None` (the default) when the
    /// agent must run every time (side effects, time-dependent output).
    fn cache_ttl(&self) -> Option<std::time::Duration> {
        None
    }

    /// How long one attempt may run when the task names no timeout; `None` (the default):
    /// the worker's `default_timeout_secs`.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// How many tasks it runs at once, when fewer than the worker's slots (a pool of
    /// processes or connections): the worker takes a permit before an attempt starts, so a
    /// task waiting for one does not spend its deadline. `None` (the default): no limit.
    fn capacity(&self) -> Option<std::sync::Arc<tokio::sync::Semaphore>> {
        None
    }

    /// True when `run` computes without awaiting (text processing, parsing): the runtime
    /// then runs it on the blocking pool, so its deadline can fire and the leases of other
    /// tasks keep being renewed while it works.
    fn cpu_bound(&self) -> bool {
        false
    }
}
