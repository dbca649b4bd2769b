//! `echo`: returns its input unchanged. The cheapest possible task, for benchmarks.

use async_trait::async_trait;
use serde_json::Value;

use crate::agent::{Agent, AgentContext, AgentError};

pub struct EchoAgent;

#[async_trait]
impl Agent for EchoAgent {
    fn name(&self) -> &'static str {
        "echo"
    }

    async fn run(&self, input: &Value, _context: &AgentContext) -> Result<Value, AgentError> {
        Ok(input.clone())
    }
}
