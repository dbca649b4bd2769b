//! `sleep`: waits `ms` milliseconds (`{"ms": 5}`), then returns `{"slept_ms": ms}`.
//! Stands in for slow I/O-bound work in tests of leases, timeouts and shutdown.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::agent::{Agent, AgentContext, AgentError};

pub struct SleepAgent;

#[async_trait]
impl Agent for SleepAgent {
    fn name(&self) -> &'static str {
        "sleep"
    }

    async fn run(&self, input: &Value, _context: &AgentContext) -> Result<Value, AgentError> {
        let ms = input
            .get("ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| AgentError::invalid_input("ms", "a whole number of milliseconds"))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(json!({ "slept_ms": ms }))
    }
}
