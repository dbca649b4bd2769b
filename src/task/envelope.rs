//! The task envelope: the fields every producer sends, and the rules they must obey.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Priority when a producer gives none (the seed's default).
pub const DEFAULT_PRIORITY: u8 = 5;
/// Highest priority; priorities run 0..=9 and higher runs first.
pub const MAX_PRIORITY: u8 = 9;
/// Attempts when a producer gives none (the seed's default).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Upper bound on `max_attempts`, so a typo cannot make a task retry for days.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// One unit of work, as published to `<prefix>.tasks.p<priority>.<agent_type>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEnvelope {
    /// Task id; also the `Nats-Msg-Id` header, so re-publishing it is de-duplicated.
    pub id: Uuid,
    /// Name of the agent that runs the task (letters, digits, `_`, `-`).
    pub agent_type: String,
    /// The agent's input: any JSON value.
    pub data: serde_json::Value,
    /// 0..=9, higher first.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// When the producer created the task (UTC, RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Attempts before the task is given up.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Seconds one attempt may run; the worker's default applies when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// A producer's own key for the task, stored with the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Set on a replay of a dead letter: the id of the task it replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<Uuid>,
}

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

/// Why an envelope breaks the contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("agent_type {0:?} must be 1-64 letters, digits, '_' or '-'")]
    AgentType(String),
    #[error("priority {0} is outside 0..=9")]
    Priority(u8),
    #[error("max_attempts {0} is outside 1..=100")]
    MaxAttempts(u32),
    #[error("timeout {0} must be a positive number of seconds")]
    Timeout(f64),
    #[error("idempotency_key is longer than 256 bytes")]
    IdempotencyKey,
}

/// Whether `name` can be an agent type, and so a subject token.
pub fn valid_agent_type(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl TaskEnvelope {
    /// A new task with a fresh id, the default priority and attempts, created now.
    pub fn new(agent_type: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            agent_type: agent_type.into(),
            data,
            priority: DEFAULT_PRIORITY,
            created_at: Utc::now(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: None,
            idempotency_key: None,
            replay_of: None,
        }
    }

    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Checks the rules serde cannot: ranges and the agent type's spelling.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if !valid_agent_type(&self.agent_type) {
            return Err(EnvelopeError::AgentType(self.agent_type.clone()));
        }
        if self.priority > MAX_PRIORITY {
            return Err(EnvelopeError::Priority(self.priority));
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(EnvelopeError::MaxAttempts(self.max_attempts));
        }
        if let Some(timeout) = self.timeout
            && !(timeout > 0.0 && timeout.is_finite())
        {
            return Err(EnvelopeError::Timeout(timeout));
        }
        if self.idempotency_key.as_ref().is_some_and(|k| k.len() > 256) {
            return Err(EnvelopeError::IdempotencyKey);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let task = TaskEnvelope::new("echo", serde_json::json!({}));
        assert_eq!(task.priority, 5);
        assert_eq!(task.max_attempts, 3);
        assert_eq!(task.validate(), Ok(()));
    }

    #[test]
    fn out_of_range_fields_are_rejected() {
        let task = TaskEnvelope::new("echo", serde_json::json!({}));
        assert_eq!(
            task.clone().with_priority(10).validate(),
            Err(EnvelopeError::Priority(10))
        );
        assert_eq!(
            task.clone().with_max_attempts(0).validate(),
            Err(EnvelopeError::MaxAttempts(0))
        );
        let bad_agent = TaskEnvelope::new("a.b", serde_json::json!({}));
        assert!(matches!(
            bad_agent.validate(),
            Err(EnvelopeError::AgentType(_))
        ));
    }
}
