//! Which agent types a worker takes: all, a dedicated pool's few, or all but those.

use std::collections::BTreeSet;

/// Which agent types a worker takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AgentFilter {
    /// Every agent type, including ones no worker knows (those are dead-lettered).
    #[default]
    All,
    /// Only these (a dedicated pool).
    Only(BTreeSet<String>),
    /// Every agent type except these (the general pool beside dedicated ones).
    Except(BTreeSet<String>),
}

impl AgentFilter {
    /// From the `--agents` and `--exclude-agents` lists (comma-separated; empty means none).
    ///
    /// Fails when both are given, or a name cannot be a subject token.
    pub fn from_lists(only: &str, except: &str) -> Result<Self, String> {
        let parse = |list: &str| -> Result<BTreeSet<String>, String> {
            list.split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(|name| {
                    if name.contains(['.', '*', '>', ' ']) {
                        Err(format!("{name:?} is not an agent type name"))
                    } else {
                        Ok(name.to_string())
                    }
                })
                .collect()
        };
        let (only, except) = (parse(only)?, parse(except)?);
        match (only.is_empty(), except.is_empty()) {
            (true, true) => Ok(Self::All),
            (false, true) => Ok(Self::Only(only)),
            (true, false) => Ok(Self::Except(except)),
            (false, false) => Err("give either --agents or --exclude-agents, not both".into()),
        }
    }

    pub fn admits(&self, agent_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(agent_type),
            Self::Except(set) => !set.contains(agent_type),
        }
    }

    /// The agent types named by the filter (to check they are registered).
    pub fn named(&self) -> impl Iterator<Item = &str> {
        let set = match self {
            Self::All => None,
            Self::Only(set) | Self::Except(set) => Some(set),
        };
        set.into_iter().flatten().map(String::as_str)
    }
}

impl std::fmt::Display for AgentFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Self::All => f.write_str("all"),
            Self::Only(set) => write!(f, "only {}", join(set)),
            Self::Except(set) => write!(f, "all but {}", join(set)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_admit() {
        assert_eq!(AgentFilter::from_lists("", " "), Ok(AgentFilter::All));
        let only = AgentFilter::from_lists("email, quality", "").unwrap();
        assert!(only.admits("email") && only.admits("quality") && !only.admits("echo"));
        let except = AgentFilter::from_lists("", "email").unwrap();
        assert!(!except.admits("email") && except.admits("anything"));
        assert!(AgentFilter::from_lists("email", "quality").is_err());
        assert!(AgentFilter::from_lists("a.b", "").is_err());
        assert_eq!(only.to_string(), "only email,quality");
    }
}
