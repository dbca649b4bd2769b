//! Agents by name: the one place where built-in agents are registered.

use std::{collections::BTreeMap, sync::Arc};

use super::{Agent, builtin};

/// The agents a worker can run, keyed by `agent_type`.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<&'static str, Arc<dyn Agent>>,
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
        self.agents.insert(agent.name(), Arc::new(agent));
        self
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
