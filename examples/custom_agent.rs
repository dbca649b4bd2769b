//! A program of your own that runs the fleet's worker with an agent written in Rust beside
//! the built-in ones — everything `swarmd worker` does (migrations, the legacy side, metrics
//! and probes, graceful shutdown on ctrl-c / SIGTERM), with your code in the same process.
//!
//! ```sh
//! cargo run --example custom_agent        # then: swarmd publish --agent shout --data '{"text": "hi"}' --wait 30s
//! ```
//!
//! Settings come as for `swarmd`: `SWARM_*` variables and the file `SWARM_CONFIG` names.

use std::path::PathBuf;

use serde_json::{Value, json};
use swarm_director::{
    agent::{Agent, AgentContext, AgentError},
    config::Settings,
    fleet::{self, Fleet},
};

/// Upper-cases `text`, reporting progress as it goes.
struct Shout;

#[async_trait::async_trait]
impl Agent for Shout {
    fn name(&self) -> &'static str {
        "shout"
    }

    async fn run(&self, input: &Value, context: &AgentContext) -> Result<Value, AgentError> {
        // A permanent error: this input can never succeed, so the task is dead at once.
        let text = input["text"]
            .as_str()
            .ok_or_else(|| AgentError::invalid_input("text", "a string"))?;
        context.progress.report(0.5, json!({"read": text.len()}));
        Ok(json!({ "text": text.to_uppercase(), "attempt": context.attempt }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = std::env::var("SWARM_LOG").unwrap_or_else(|_| "info".into());
    let _telemetry = swarm_director::telemetry::init(&filter, false, None, None)?;
    let file = std::env::var_os("SWARM_CONFIG").map(PathBuf::from);
    let settings = Settings::load(file.as_deref())?;
    Fleet::from_settings(settings)?
        .agent(Shout)
        .run(fleet::shutdown_signal())
        .await?;
    Ok(())
}
