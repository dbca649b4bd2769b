//! Runs one task's agent under its deadline and classifies what happened. Pure of broker and
//! database I/O, so tests drive it directly.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt;

use super::{
    Outcome, RetryPolicy,
    ending::{Attempt, Cause, decide},
};
use crate::{
    agent::{
        AgentContext, AgentError, AgentRegistry, CancelBoard, Cancellation, Progress, ProgressBoard,
    },
    cache::ResultCache,
    clock::Clock,
    task::TaskEnvelope,
};

/// Runs agents and turns their results into [`Outcome`]s.
#[derive(Clone)]
pub struct Executor {
    registry: Arc<AgentRegistry>,
    retry: RetryPolicy,
    default_timeout: Duration,
    cache: Option<Arc<ResultCache>>,
    max_result_bytes: usize,
    /// Where agents' progress reports go, when the worker stores them.
    progress: Option<Arc<ProgressBoard>>,
    /// The worker's cancellations: what not to run, and how to tell a running agent.
    cancels: Option<Arc<CancelBoard>>,
    /// How long a cancelled agent may take to stop before its attempt is abandoned.
    cancel_grace: Duration,
    /// Permits of CPU-bound agents: two per core, however many slots the worker has, so
    /// hundreds of slots never mean hundreds of busy threads.
    cpu: Arc<tokio::sync::Semaphore>,
    /// What "now" is when deciding whether a task expired or is due.
    clock: Clock,
}

/// Largest result stored unless configured otherwise (`worker.max_result_bytes`); results
/// over the claim-check size go to the Object Store, not the row.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 64 * 1024 * 1024;

pub use super::ending::MAX_RETRY_AFTER;

/// How long a cancelled agent may take to stop unless configured otherwise.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

impl Executor {
    pub fn new(registry: AgentRegistry, retry: RetryPolicy, default_timeout: Duration) -> Self {
        Self {
            registry: Arc::new(registry),
            retry,
            default_timeout,
            cache: None,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            progress: None,
            cancels: None,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            clock: Clock::system(),
            cpu: Arc::new(tokio::sync::Semaphore::new(
                crate::scale::available_cores() * 2,
            )),
        }
    }

    /// Gives agents' progress reports to `board` (the worker writes them to their rows).
    pub fn with_progress(mut self, board: Arc<ProgressBoard>) -> Self {
        self.progress = Some(board);
        self
    }

    /// Stops tasks `board` names: none starts, a running one is told and, after `grace`,
    /// abandoned.
    pub fn with_cancellations(mut self, board: Arc<CancelBoard>, grace: Duration) -> Self {
        self.cancels = Some(board);
        self.cancel_grace = grace;
        self
    }

    /// Who cancelled `task_id`, when this worker knows it was.
    pub fn cancelled_by(&self, task_id: &uuid::Uuid) -> Option<String> {
        self.cancels.as_ref()?.cancelled_by(task_id)
    }

    /// Forgets the progress report of a task whose attempt ended without a retry to follow.
    pub fn forget_progress(&self, task_id: &uuid::Uuid) {
        if let Some(board) = &self.progress {
            board.forget(task_id);
        }
    }

    /// Reads "now" from `clock` when deciding whether a task expired or is due.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Fails results larger than `bytes` of JSON, permanently.
    pub fn with_max_result_bytes(mut self, bytes: usize) -> Self {
        self.max_result_bytes = bytes;
        self
    }

    /// Looks results of cacheable agents up in `cache` before running them.
    pub fn with_cache(mut self, cache: Arc<ResultCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// Runs delivery number `attempt` (1-based) of `task`.
    ///
    /// Unknown agents and permanent errors are dead at once; retryable errors and timeouts
    /// are retried after the policy's delay until `max_attempts` is spent.
    pub async fn execute(&self, task: &TaskEnvelope, attempt: u32) -> Outcome {
        self.execute_from(task, attempt, None).await
    }

    /// As [`Self::execute`], resuming from the progress an earlier attempt reported.
    pub async fn execute_from(
        &self,
        task: &TaskEnvelope,
        attempt: u32,
        checkpoint: Option<serde_json::Value>,
    ) -> Outcome {
        // A task cancelled before this attempt was stopped by the runner; one cancelled from
        // here on is signalled through its watch below.
        if let Some(expires_at) = task.expires_at
            && self.clock.now() >= expires_at
        {
            return decide(Cause::Expired {
                at: expires_at,
                attempt,
            });
        }
        let Some(agent) = self.registry.get(&task.agent_type) else {
            return decide(Cause::UnknownAgent(&task.agent_type));
        };
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.ttl_for(agent.as_ref()).map(|ttl| (cache, ttl)));
        if let Some((cache, _)) = cached
            && let Some(result) = cache.get(&task.agent_type, &task.data).await
        {
            return Outcome::Completed(result);
        }
        // Envelopes are validated on entry; a bound that slipped through still cannot panic.
        let timeout = task
            .timeout
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .or_else(|| agent.timeout())
            .unwrap_or(self.default_timeout);
        let (cancellation, _running) = match &self.cancels {
            Some(board) => {
                let (cancellation, guard) = board.watch(task.id);
                (cancellation, Some(guard))
            }
            None => (Cancellation::default(), None),
        };
        // An agent that runs a few tasks at a time (a pool of processes, of connections):
        // the attempt starts — and its deadline runs — once one of them is free.
        let _capacity = match agent.capacity() {
            Some(capacity) => tokio::select! {
                permit = capacity.acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return self.failed_attempt(task, attempt, "the agent is shutting down".into()),
                },
                by = cancellation.cancelled() => return decide(Cause::Cancelled { by }),
            },
            None => None,
        };
        let context = AgentContext {
            task_id: task.id,
            attempt,
            max_attempts: task.max_attempts,
            deadline: Instant::now() + timeout,
            progress: self
                .progress
                .clone()
                .map(|board| Progress::new(task.id, board))
                .unwrap_or_default(),
            checkpoint,
            cancellation: cancellation.clone(),
        };
        let run = async {
            if agent.cpu_bound() {
                // On the blocking pool: the deadline below can fire while it computes (or
                // while it waits for a permit).
                let permit = self
                    .cpu
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the CPU permits are never closed");
                let (agent, data, context) = (agent.clone(), task.data.clone(), context.clone());
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    handle.block_on(agent.run(&data, &context))
                })
                .await
                .map_err(|joined| match joined.try_into_panic() {
                    Ok(panic) => panic,
                    Err(_) => Box::new("the agent's blocking task was cancelled"),
                })
            } else {
                // A panicking agent is a failed attempt like any other, not a dead worker loop.
                std::panic::AssertUnwindSafe(agent.run(&task.data, &context))
                    .catch_unwind()
                    .await
            }
        };
        let guarded = tokio::time::timeout(timeout, run);
        tokio::pin!(guarded);
        let finished = tokio::select! {
            biased;
            finished = &mut guarded => finished,
            by = cancellation.cancelled() => {
                // Told: the agent may stop by itself within the grace period; either way the
                // task ends cancelled (an answer after the cancel is not its outcome).
                let _ = tokio::time::timeout(self.cancel_grace, &mut guarded).await;
                return decide(Cause::Cancelled { by });
            }
        };
        // An agent that stopped because it was told answers in the same instant: its answer
        // is not the task's outcome.
        if let Some(by) = cancellation.cancelled_by() {
            return decide(Cause::Cancelled { by });
        }
        let error = match finished {
            Ok(Err(panic)) => format!("agent panicked: {}", panic_message(&panic)),
            Ok(Ok(Ok(result))) => {
                if let Err(error) = self.check_result(&result) {
                    return decide(Cause::Permanent(error));
                }
                if let Some((cache, ttl)) = cached {
                    cache.put(&task.agent_type, &task.data, &result, ttl).await;
                }
                return Outcome::Completed(result);
            }
            Ok(Ok(Err(AgentError::Permanent(error)))) => return decide(Cause::Permanent(error)),
            Ok(Ok(Err(AgentError::Retryable(error)))) => error,
            Ok(Ok(Err(AgentError::RetryAfter { message, after }))) => {
                return self.failed_attempt_after(task, attempt, message, Some(after));
            }
            Err(_) => format!("timed out after {:.3} s", timeout.as_secs_f64()),
        };
        self.failed_attempt(task, attempt, error)
    }

    /// A failed attempt `attempt` of `task`: retried after the policy's delay, or dead when
    /// it was the last ([`decide`]).
    pub fn failed_attempt(&self, task: &TaskEnvelope, attempt: u32, error: String) -> Outcome {
        self.failed_attempt_after(task, attempt, error, None)
    }

    /// As [`Self::failed_attempt`], the next attempt waiting `after` when the failure said
    /// how long.
    fn failed_attempt_after(
        &self,
        task: &TaskEnvelope,
        attempt: u32,
        error: String,
        after: Option<Duration>,
    ) -> Outcome {
        decide(Cause::Failed {
            attempt: Attempt::of_task(task, attempt, &self.retry),
            error,
            retry_after: after,
        })
    }
}

impl Executor {
    /// A result must fit the size cap and hold no NUL (PostgreSQL cannot store one).
    fn check_result(&self, result: &serde_json::Value) -> Result<(), String> {
        let size = json_size(result);
        if size > self.max_result_bytes {
            return Err(format!(
                "the result is {size} bytes of JSON, over the {}-byte limit",
                self.max_result_bytes
            ));
        }
        crate::task::check_value(result).map_err(|e| format!("the result breaks a rule: {e}"))
    }
}

/// Bytes of `value` as compact JSON, counted without building the text.
pub(super) fn json_size(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dlq::DeadReason;

    fn executor() -> Executor {
        Executor::new(
            AgentRegistry::with_builtins(),
            RetryPolicy::default(),
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn outcomes_follow_error_classes() {
        let executor = executor();
        let echo = TaskEnvelope::new("echo", json!({"a": 1}));
        assert_eq!(
            executor.execute(&echo, 1).await,
            Outcome::Completed(json!({"a": 1}))
        );

        let flaky = TaskEnvelope::new("fail", json!({"succeed_on_attempt": 2}));
        assert!(matches!(
            executor.execute(&flaky, 1).await,
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            executor.execute(&flaky, 2).await,
            Outcome::Completed(_)
        ));

        let always = TaskEnvelope::new("fail", json!({}));
        assert!(matches!(
            executor.execute(&always, 3).await,
            Outcome::Dead { .. }
        ));

        let permanent = TaskEnvelope::new("fail", json!({"permanent": true}));
        assert!(matches!(
            executor.execute(&permanent, 1).await,
            Outcome::Dead { .. }
        ));

        let unknown = TaskEnvelope::new("nonesuch", json!({}));
        let Outcome::Dead { error, reason } = executor.execute(&unknown, 1).await else {
            panic!("unknown agent must be dead");
        };
        assert!(error.contains("unknown agent type"), "{error}");
        assert_eq!(reason, DeadReason::UnknownAgent);
    }

    struct Panicky;

    #[async_trait::async_trait]
    impl crate::agent::Agent for Panicky {
        fn name(&self) -> &'static str {
            "panicky"
        }
        async fn run(
            &self,
            _: &serde_json::Value,
            _: &AgentContext,
        ) -> Result<serde_json::Value, AgentError> {
            panic!("index out of bounds");
        }
    }

    #[tokio::test]
    async fn a_panicking_agent_is_a_retryable_failure() {
        let executor = Executor::new(
            AgentRegistry::new().with(Panicky),
            RetryPolicy::default(),
            Duration::from_secs(5),
        );
        let task = TaskEnvelope::new("panicky", json!({}));
        let Outcome::Retry { error, .. } = executor.execute(&task, 1).await else {
            panic!("a panic must be retried");
        };
        assert_eq!(error, "agent panicked: index out of bounds");
    }

    #[tokio::test]
    async fn a_slow_attempt_times_out_and_retries() {
        let mut slow = TaskEnvelope::new("sleep", json!({"ms": 2000}));
        slow.timeout = Some(0.05);
        let Outcome::Retry { error, .. } = executor().execute(&slow, 1).await else {
            panic!("timeout must be retried");
        };
        assert!(error.contains("timed out"), "{error}");
    }
}
