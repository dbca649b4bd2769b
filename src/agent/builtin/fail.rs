//! `fail`: fails on purpose, to exercise retries and dead letters.
//!
//! Input: `{"succeed_on_attempt": N}` fails with a retryable error before attempt N and
//! succeeds on it; without it every attempt fails. `{"permanent": true}` fails permanently.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::agent::{Agent, AgentContext, AgentError};

pub struct FailAgent;

#[async_trait]
impl Agent for FailAgent {
    fn name(&self) -> &'static str {
        "fail"
    }

    async fn run(&self, input: &Value, context: &AgentContext) -> Result<Value, AgentError> {
        if input.get("permanent").and_then(Value::as_bool) == Some(true) {
            return Err(AgentError::permanent(
                "fail agent: permanent failure requested",
            ));
        }
        match input.get("succeed_on_attempt").and_then(Value::as_u64) {
            Some(n) if u64::from(context.attempt) >= n => {
                Ok(json!({ "succeeded_on_attempt": context.attempt }))
            }
            _ => Err(AgentError::retryable(format!(
                "fail agent: attempt {} failed on purpose",
                context.attempt
            ))),
        }
    }
}
