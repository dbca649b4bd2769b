//! `crash`: aborts the whole worker process, like a segfault in native code would. For fault
//! drills and tests of the poison-message backstop only: `swarmd worker` registers it when
//! started with `--enable-crash-agent`, never by default.

use async_trait::async_trait;
use serde_json::Value;

use crate::agent::{Agent, AgentContext, AgentError};

pub struct CrashAgent;

#[async_trait]
impl Agent for CrashAgent {
    fn name(&self) -> &'static str {
        "crash"
    }

    async fn run(&self, _input: &Value, context: &AgentContext) -> Result<Value, AgentError> {
        tracing::error!(task_id = %context.task_id, "crash agent: aborting the process on purpose");
        std::process::abort();
    }
}
