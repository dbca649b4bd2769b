//! Agents by name: the one place where built-in agents are registered.

use std::{collections::BTreeMap, sync::Arc};

use super::{Agent, builtin, http::HttpAgent, process::ProcessAgent};
use crate::config::{AgentKind, AgentSpec};

/// The agents a worker can run, keyed by `agent_type`.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<&'static str, Arc<dyn Agent>>,
    /// The kinds of declared agents; the others are built into the binary.
    kinds: BTreeMap<String, &'static str>,
}

impl AgentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every built-in agent: `email`, `quality`, `review`, `echo`, `sleep`, `fail`.
    pub fn with_builtins() -> Self {
        Self::new()
            .with(builtin::EmailAgent)
            .with(builtin::QualityAgent)
            .with(builtin::ReviewAgent)
            .with(builtin::EchoAgent)
            .with(builtin::SleepAgent)
            .with(builtin::FailAgent)
    }

    /// Adds `agent`, replacing one of the same name.
    pub fn with(mut self, agent: impl Agent + 'static) -> Self {
        self.kinds.remove(agent.name());
        self.agents.insert(agent.name(), Arc::new(agent));
        self
    }

    /// Adds the agents the settings declare (`[agents.<name>]`), each replacing a built-in
    /// of its name (said once in the log); `max_result_bytes` caps their results.
    ///
    /// Fails on a declaration the settings check lets through but no agent can be made of
    /// (an HTTP agent's URL).
    pub fn with_declared(
        mut self,
        declared: &[AgentSpec],
        max_result_bytes: usize,
    ) -> Result<Self, String> {
        for spec in declared {
            let (agent, target): (Arc<dyn Agent>, String) = match &spec.kind {
                AgentKind::Process(process) => {
                    let agent = ProcessAgent::new(
                        &spec.name,
                        process.clone(),
                        spec.timeout,
                        max_result_bytes,
                    );
                    let command = agent.command();
                    (Arc::new(agent), command)
                }
                AgentKind::Http(http) => {
                    let agent = HttpAgent::new(&spec.name, http, spec.timeout, max_result_bytes)
                        .map_err(|why| format!("agent {}: {why}", spec.name))?;
                    let url = agent.url();
                    (Arc::new(agent), url)
                }
            };
            if self.agents.contains_key(spec.name.as_str()) {
                tracing::info!(
                    agent = %spec.name,
                    kind = spec.kind.as_str(),
                    %target,
                    "the declared agent replaces the built-in of its name"
                );
            }
            self.agents.insert(agent.name(), agent);
            self.kinds.insert(spec.name.clone(), spec.kind.as_str());
        }
        Ok(self)
    }

    /// How the worker reaches `agent_type`'s agent: `built-in`, or the declared kind
    /// (`process`, `http`).
    pub fn kind(&self, agent_type: &str) -> &'static str {
        self.kinds.get(agent_type).copied().unwrap_or("built-in")
    }

    /// The agent for `agent_type`. Unknown names get `None`, never a fallback agent.
    pub fn get(&self, agent_type: &str) -> Option<&Arc<dyn Agent>> {
        self.agents.get(agent_type)
    }

    /// `agent_type` as a metric label: its registered name, or `unknown` for a name no agent
    /// here serves (producers choose agent types, so labels must not follow them).
    pub fn label(&self, agent_type: &str) -> &'static str {
        self.agents
            .get_key_value(agent_type)
            .map_or("unknown", |(name, _)| name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.agents.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_agent_has_no_fallback() {
        let registry = AgentRegistry::with_builtins();
        assert!(registry.get("email").is_some());
        assert!(registry.get("nonesuch").is_none());
        assert_eq!(registry.names().count(), 6);
    }
}
