//! Agents in any language: long-lived child processes of the worker speaking the line
//! protocol of `schemas/agent-protocol.md` ([`protocol`]) on stdin and stdout.
//!
//! Each process runs one task at a time; an agent keeps up to `processes` of them per worker
//! process, started when first needed and reused. The worker holds one of the agent's
//! `processes` permits ([`Agent::capacity`]) while a task runs, so a task waiting for a free
//! process does not spend its deadline. The guarantees of built-in agents hold:
//! - a process that dies mid-task costs that attempt (retryable, with its exit status and
//!   last stderr lines) and is replaced, after a growing pause if it keeps dying;
//! - an attempt the worker stops waiting for (its deadline, a cancel not obeyed in time)
//!   drops the process, which kills it: a hung process never holds a slot;
//! - a cancel is passed on as a `cancel` line;
//! - a line that breaks the protocol (not JSON, not an object, no id, another task's id,
//!   longer than the result limit) is a permanent error naming what was wrong, and the
//!   process is replaced;
//! - `progress` lines reach the task's progress like a built-in's reports.

mod child;
pub mod protocol;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use serde_json::Value;

use self::{
    child::{AgentProcess, Line},
    protocol::{AgentMessage, CancelMessage, TaskMessage},
};
use super::{Agent, AgentContext, AgentError};
use crate::{backoff::Backoff, config::ProcessSpec};

/// Pause before starting a process again after one died or would not start; it doubles up
/// to [`LONGEST_RESTART_PAUSE`] while they keep failing.
const FIRST_RESTART_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_RESTART_PAUSE: Duration = Duration::from_secs(10);

/// An agent served by child processes.
pub struct ProcessAgent {
    name: &'static str,
    spec: ProcessSpec,
    timeout: Option<Duration>,
    /// Longest line a process may write: the result limit and room for the envelope.
    max_line: usize,
    idle: Mutex<Vec<AgentProcess>>,
    /// One permit per process: the worker holds one while `run` runs.
    slots: Arc<tokio::sync::Semaphore>,
    restarts: Mutex<Restarts>,
}

/// When the next process may start, after failures.
struct Restarts {
    backoff: Backoff,
    not_before: Option<Instant>,
}

/// How one exchange with a process ended.
enum Exchange {
    /// The process answered by the protocol: it may take the next task.
    Answered(Result<Value, AgentError>),
    /// The process died or broke the protocol: it is dropped (killed).
    Broken(AgentError),
}

impl ProcessAgent {
    /// The agent `name` (the `agent_type` it serves), run by `spec`; `max_result_bytes` caps
    /// a line of its output.
    pub fn new(
        name: &str,
        spec: ProcessSpec,
        timeout: Option<Duration>,
        max_result_bytes: usize,
    ) -> Self {
        Self {
            // Agents live as long as the worker process: a declared name is leaked once.
            name: Box::leak(name.to_string().into_boxed_str()),
            slots: Arc::new(tokio::sync::Semaphore::new(spec.processes)),
            spec,
            timeout,
            max_line: max_result_bytes.saturating_add(64 * 1024),
            idle: Mutex::new(Vec::new()),
            restarts: Mutex::new(Restarts {
                backoff: Backoff::new(FIRST_RESTART_PAUSE, LONGEST_RESTART_PAUSE),
                not_before: None,
            }),
        }
    }

    /// The command, as the logs and the roll call show it.
    pub fn command(&self) -> String {
        self.spec.command.join(" ")
    }

    /// An idle process, or a new one once the restart pause allows.
    async fn process(&self) -> Result<AgentProcess, AgentError> {
        while let Some(mut process) = self.idle.lock().expect("idle lock").pop() {
            // One that died while idle would cost the next task its attempt.
            if !process.has_exited() {
                return Ok(process);
            }
            tracing::warn!(agent = self.name, "an idle agent process had exited");
        }
        let wait = self
            .restarts
            .lock()
            .expect("restarts lock")
            .not_before
            .map(|at| at.saturating_duration_since(Instant::now()));
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        AgentProcess::start(self.name, &self.spec, self.max_line)
            .await
            .map_err(|why| {
                self.failed();
                tracing::warn!(agent = self.name, command = %self.command(), "agent process would not start: {why}");
                AgentError::retryable(format!("agent process `{}` would not start: {why}", self.command()))
            })
    }

    /// A process died or would not start: the next one waits a growing pause.
    fn failed(&self) {
        let mut restarts = self.restarts.lock().expect("restarts lock");
        let pause = restarts.backoff.next_pause();
        restarts.not_before = Some(Instant::now() + pause);
    }

    /// Runs one task on `process`.
    async fn exchange(
        &self,
        process: &mut AgentProcess,
        input: &Value,
        context: &AgentContext,
    ) -> Exchange {
        *process.current.lock().expect("current task lock") = Some(context.task_id);
        let task = TaskMessage::of_attempt(self.name, input, context);
        if process.send(&task).await.is_err() {
            return Exchange::Broken(self.died(process).await);
        }
        let mut told_to_stop = false;
        loop {
            let line = tokio::select! {
                line = process.read_line() => line,
                _ = context.cancellation.cancelled(), if !told_to_stop => {
                    told_to_stop = true;
                    // A process that no longer reads is dropped when the grace runs out.
                    let _ = process.send(&CancelMessage::new(context.task_id)).await;
                    continue;
                }
            };
            let line = match line {
                Ok(Line::Text(line)) => line,
                Ok(Line::TooLong) => {
                    return self.broke(format!("a line over {} bytes", self.max_line));
                }
                Ok(Line::Closed) | Err(_) => return Exchange::Broken(self.died(process).await),
            };
            let message = match protocol::parse(&line) {
                Ok(message) => message,
                Err(why) => return self.broke(why),
            };
            if let Some(id) = message.task_id()
                && id != context.task_id
            {
                return self.broke(format!(
                    "a line about task {id} while it runs task {}",
                    context.task_id
                ));
            }
            match message {
                AgentMessage::Progress {
                    fraction, detail, ..
                } => context.progress.report(fraction, detail),
                AgentMessage::Result { result, .. } => return Exchange::Answered(Ok(result)),
                AgentMessage::Error {
                    message,
                    retryable,
                    retry_after,
                    ..
                } => {
                    let error = match (retryable, retry_after) {
                        (false, _) => AgentError::Permanent(message),
                        (true, Some(seconds)) => AgentError::retry_after(
                            message,
                            Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX),
                        ),
                        (true, None) => AgentError::Retryable(message),
                    };
                    return Exchange::Answered(Err(error));
                }
                AgentMessage::Ready { .. } => return self.broke("a second `ready` line".into()),
            }
        }
    }

    /// The attempt's error when its process died under it.
    async fn died(&self, process: &mut AgentProcess) -> AgentError {
        self.failed();
        let report = process.exit_report().await;
        tracing::warn!(agent = self.name, "agent process died mid-task: {report}");
        AgentError::retryable(format!("agent process {report}"))
    }

    /// The attempt's error when its process wrote something the protocol does not allow.
    fn broke(&self, what: String) -> Exchange {
        tracing::warn!(
            agent = self.name,
            "agent process broke the protocol: {what}"
        );
        Exchange::Broken(AgentError::permanent(format!(
            "agent process broke the protocol: it wrote {what}"
        )))
    }
}

#[async_trait]
impl Agent for ProcessAgent {
    fn name(&self) -> &'static str {
        self.name
    }

    /// The caller holds a permit of [`Agent::capacity`]: at most `processes` run at once.
    async fn run(&self, input: &Value, context: &AgentContext) -> Result<Value, AgentError> {
        // Dropped with this future when the worker stops waiting: the process is killed.
        let mut process = self.process().await?;
        match self.exchange(&mut process, input, context).await {
            Exchange::Answered(answer) => {
                // `current` keeps the task: its last stderr lines may still be on their way.
                self.idle.lock().expect("idle lock").push(process);
                self.restarts.lock().expect("restarts lock").backoff.reset();
                answer
            }
            Exchange::Broken(error) => Err(error),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn capacity(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        Some(self.slots.clone())
    }
}
