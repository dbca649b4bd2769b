//! One typed settings tree for every command: built-in defaults, then an optional TOML file,
//! then `SWARM_*` environment variables — all three read through one table of settings
//! ([`table::SETTINGS`]), which also renders `docs/configuration.md`. URLs may carry
//! credentials, so every URL is a [`SecretUrl`] and every token a [`Secret`]: neither prints.

pub mod agents;
mod layers;
mod pool_profile;
pub mod reference;
mod secret;
mod sections;
pub mod table;
mod validate;

pub use agents::{AgentKind, AgentSpec, HttpSpec, ProcessSpec};
pub use pool_profile::PoolProfile;
pub use secret::{Secret, SecretUrl};
pub use sections::{
    ApiSettings, Concurrency, DatabaseSettings, DelayMode, NatsSettings, RedisSettings,
    ScaleSettings, Settings, WorkerSettings,
};
pub use table::DEFAULT_TRACE_URL;

/// Errors while loading the settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("config file {path}: {key} is invalid: {reason}")]
    File {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("unknown setting {key} (the keys are listed in docs/configuration.md)")]
    UnknownKey { key: String },
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("config file {path}: {reason}")]
    Agents { path: String, reason: String },
}

impl ConfigError {
    /// This error as found in the file at `path`.
    fn in_file(self, path: &std::path::Path) -> Self {
        let shown = path.display().to_string();
        match self {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: shown,
                source,
            },
            ConfigError::File { key, reason, .. } => ConfigError::File {
                key,
                path: shown,
                reason,
            },
            ConfigError::Agents { reason, .. } => ConfigError::Agents {
                path: shown,
                reason,
            },
            ConfigError::UnknownKey { key } => ConfigError::UnknownKey {
                key: format!("{key} in {shown}"),
            },
            other => other,
        }
    }
}
