//! A test agent that fails permanently until its switch is turned on: a dependency fixed
//! after the fact, so dead letters it left can be replayed to success.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use serde_json::{Value, json};
use swarm_director::agent::{Agent, AgentContext, AgentError};

/// The `switch` agent; on when its flag is.
pub struct Switch(pub Arc<AtomicBool>);

#[async_trait]
impl Agent for Switch {
    fn name(&self) -> &'static str {
        "switch"
    }
    async fn run(&self, input: &Value, _: &AgentContext) -> Result<Value, AgentError> {
        if self.0.load(Ordering::SeqCst) {
            Ok(json!({ "done": input }))
        } else {
            Err(AgentError::permanent("switch is off"))
        }
    }
}
