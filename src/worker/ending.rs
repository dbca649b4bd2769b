//! How a task ends when it ends without a result, decided in one place: every path that
//! gives up on a delivery (the executor, the claim check, the delay and key checks, the
//! claim, the settler) names a typed [`Cause`], and [`decide`] alone turns it into the
//! outcome — retried, dead with which reason, or cancelled. "Why did this task end dead?"
//! is answered here.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Outcome, RetryPolicy};
use crate::{dlq::DeadReason, task::TaskEnvelope};

/// Longest wait an agent's `retry_after` may ask for: a day (a longer one is cut to it).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Where an attempt stands: its number, the task's allowance, and the retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub number: u32,
    pub of: u32,
    pub retry: &'a RetryPolicy,
}

impl<'a> Attempt<'a> {
    pub fn of_task(task: &TaskEnvelope, number: u32, retry: &'a RetryPolicy) -> Self {
        Self {
            number,
            of: task.max_attempts,
            retry,
        }
    }
}

/// Why a delivery ends without a result.
#[derive(Debug)]
pub enum Cause<'a> {
    /// This attempt failed and another may succeed: the agent's retryable error, a timeout,
    /// a panic, or a transient fault on the task's own path (its claim check, its key, its
    /// hold). `retry_after`: the failure said how long to wait.
    Failed {
        attempt: Attempt<'a>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// The agent says no attempt can succeed, or its result is one the fleet cannot keep.
    Permanent(String),
    /// No agent of the task's type runs here.
    UnknownAgent(&'a str),
    /// The task's `expires_at` passed before attempt `attempt` began.
    Expired { at: DateTime<Utc>, attempt: u32 },
    /// The claim-checked data or result is gone or unreadable for good.
    PayloadMissing(String),
    /// Delivered again and again without an outcome: it kills or hangs workers.
    CrashedTooOften {
        delivered: u32,
        without_outcome: usize,
    },
    /// The database refuses the task (its claim) or its outcome.
    Unstorable { what: Refused, refusal: String },
    /// Cancelled on request.
    Cancelled { by: String },
}

/// What the database refused.
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    Task,
    Outcome,
}

/// The outcome `cause` makes.
pub fn decide(cause: Cause<'_>) -> Outcome {
    let dead = |reason, error| Outcome::Dead { reason, error };
    match cause {
        Cause::Failed { attempt, error, .. } if attempt.number >= attempt.of => dead(
            DeadReason::AttemptsExhausted,
            format!("gave up after {} attempts: {error}", attempt.number),
        ),
        Cause::Failed {
            attempt,
            error,
            retry_after,
        } => Outcome::Retry {
            error,
            delay: retry_after
                .map(|after| after.min(MAX_RETRY_AFTER))
                .unwrap_or_else(|| attempt.retry.delay(attempt.number, rand::random())),
        },
        Cause::Permanent(error) => dead(
            DeadReason::PermanentError,
            format!("permanent error: {error}"),
        ),
        Cause::UnknownAgent(agent_type) => dead(
            DeadReason::UnknownAgent,
            format!("unknown agent type {agent_type:?}"),
        ),
        Cause::Expired { at, attempt } => dead(
            DeadReason::Expired,
            format!("expired at {at} before attempt {attempt} began"),
        ),
        Cause::PayloadMissing(error) => dead(DeadReason::PayloadMissing, error),
        Cause::CrashedTooOften {
            delivered,
            without_outcome,
        } => dead(
            DeadReason::MaxDeliveries,
            format!(
                "delivered {delivered} times, {without_outcome} of them without an outcome: the \
                 task crashes or hangs the worker"
            ),
        ),
        Cause::Unstorable { what, refusal } => dead(
            DeadReason::Unstorable,
            match what {
                Refused::Task => format!("the database refuses this task: {refusal}"),
                Refused::Outcome => {
                    format!("the database refuses this task's outcome: {refusal}")
                }
            },
        ),
        Cause::Cancelled { by } => Outcome::Cancelled { by },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(number: u32, of: u32, retry_after: Option<Duration>) -> Outcome {
        let policy = RetryPolicy::default();
        decide(Cause::Failed {
            attempt: Attempt {
                number,
                of,
                retry: &policy,
            },
            error: "boom".into(),
            retry_after,
        })
    }

    #[test]
    fn a_failed_attempt_is_retried_until_the_last_one() {
        assert!(matches!(failed(1, 3, None), Outcome::Retry { .. }));
        assert!(matches!(failed(2, 3, None), Outcome::Retry { .. }));
        assert_eq!(
            failed(3, 3, None),
            Outcome::Dead {
                reason: DeadReason::AttemptsExhausted,
                error: "gave up after 3 attempts: boom".into()
            }
        );
        // A redelivery past the allowance is the last attempt too.
        assert!(matches!(failed(4, 3, None), Outcome::Dead { .. }));
    }

    #[test]
    fn a_failure_that_says_when_waits_that_long_within_the_cap() {
        let Outcome::Retry { delay, .. } = failed(1, 3, Some(Duration::from_secs(2))) else {
            panic!("retried");
        };
        assert_eq!(delay, Duration::from_secs(2));
        let Outcome::Retry { delay, .. } = failed(1, 3, Some(Duration::from_secs(86_400))) else {
            panic!("retried");
        };
        assert_eq!(delay, MAX_RETRY_AFTER);
    }

    #[test]
    fn every_final_cause_has_its_reason() {
        let cases = [
            (Cause::Permanent("no".into()), DeadReason::PermanentError),
            (Cause::UnknownAgent("x"), DeadReason::UnknownAgent),
            (
                Cause::Expired {
                    at: Utc::now(),
                    attempt: 1,
                },
                DeadReason::Expired,
            ),
            (
                Cause::PayloadMissing("gone".into()),
                DeadReason::PayloadMissing,
            ),
            (
                Cause::CrashedTooOften {
                    delivered: 9,
                    without_outcome: 8,
                },
                DeadReason::MaxDeliveries,
            ),
            (
                Cause::Unstorable {
                    what: Refused::Outcome,
                    refusal: "22P05".into(),
                },
                DeadReason::Unstorable,
            ),
        ];
        for (cause, expected) in cases {
            let Outcome::Dead { reason, .. } = decide(cause) else {
                panic!("dead");
            };
            assert_eq!(reason, expected);
        }
        assert_eq!(
            decide(Cause::Cancelled { by: "ops".into() }),
            Outcome::Cancelled { by: "ops".into() }
        );
    }
}
