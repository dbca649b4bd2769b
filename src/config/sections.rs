//! The typed settings tree, one struct per section of the TOML file. What each field means,
//! its environment variable and its default are in [`super::table::SETTINGS`] — the one place
//! they are written; `Default` of every section is the table's defaults applied.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Serialize;

use super::{Secret, SecretUrl};

/// Declares a section struct with a `blank` constructor (every field at its type's zero), the
/// base the table's defaults are applied to, and a `Default` that is the table's defaults.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $accessor:ident {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $name {
            pub(super) fn blank() -> Self {
                Self { $( $field: Default::default(), )* }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Settings::default().$accessor
            }
        }
    };
}

/// Everything a `swarmd` process needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nats: NatsSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub worker: WorkerSettings,
    pub api: ApiSettings,
    pub scale: ScaleSettings,
    /// The users' own agents (`[agents.<name>]` in the settings file).
    pub agents: Vec<super::agents::AgentSpec>,
}

impl Settings {
    /// Every field at its type's zero: the table's defaults are applied to this.
    pub(super) fn blank() -> Self {
        Self {
            nats: NatsSettings::blank(),
            database: DatabaseSettings::blank(),
            redis: RedisSettings::blank(),
            worker: WorkerSettings::blank(),
            api: ApiSettings::blank(),
            scale: ScaleSettings::blank(),
            agents: Vec::new(),
        }
    }
}

section! {
    /// NATS connection and JetStream layout (`[nats]`).
    #[derive(Debug, Clone)]
    pub struct NatsSettings in nats {
        pub url: SecretUrl,
        pub creds_file: Option<String>,
        pub token: Option<Secret>,
        pub user: Option<String>,
        pub password: Option<Secret>,
        pub nkey_seed: Option<Secret>,
        pub inbox_prefix: String,
        pub stream: String,
        pub subject_prefix: String,
        pub consumer_group: String,
        pub ack_wait_secs: f64,
        pub duplicate_window_secs: u64,
        pub max_ack_pending: i64,
        pub lane_expiry_secs: f64,
        pub max_lanes: usize,
        pub replicas: usize,
        pub max_deliver: i64,
        pub announce_outcomes: bool,
        pub claim_check_bytes: usize,
        pub delays: DelayMode,
    }
}

impl NatsSettings {
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs_f64(self.ack_wait_secs)
    }

    pub fn lane_expiry(&self) -> Duration {
        Duration::from_secs_f64(self.lane_expiry_secs)
    }
}

/// Where delayed tasks wait until due (`nats.delays`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DelayMode {
    /// The server's message schedules where it has them (≥ 2.12), else the delay stream.
    #[default]
    Auto,
    /// The fleet's delay stream, held by its workers, on every server.
    Stream,
    /// The server's message schedules (`Nats-Schedule: @at …`, NATS ≥ 2.12).
    Native,
}

impl std::str::FromStr for DelayMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "stream" => Ok(Self::Stream),
            "native" => Ok(Self::Native),
            other => Err(format!("expected auto, stream or native, got {other:?}")),
        }
    }
}

section! {
    /// PostgreSQL (`[database]`).
    #[derive(Debug, Clone)]
    pub struct DatabaseSettings in database {
        pub url: SecretUrl,
        pub replica_urls: Vec<SecretUrl>,
        pub schema: String,
        pub profile: String,
        pub max_connections: Option<u32>,
        pub acquire_timeout_secs: Option<u64>,
        pub max_lifetime_secs: Option<u64>,
        pub migrate_on_start: bool,
        pub retention_days: u32,
        pub search_index: bool,
    }
}

impl DatabaseSettings {
    /// How long a finished task is kept; `None` keeps everything.
    pub fn retention(&self) -> Option<chrono::Duration> {
        (self.retention_days > 0).then(|| chrono::Duration::days(i64::from(self.retention_days)))
    }
}

section! {
    /// Redis: the legacy queue mirror, legacy intake and the result cache (`[redis]`).
    #[derive(Debug, Clone)]
    pub struct RedisSettings in redis {
        pub url: SecretUrl,
        pub key_prefix: String,
        pub mirror: bool,
        pub intake: bool,
        pub intake_interval_ms: u64,
        pub legacy_consumers: bool,
        pub cache: bool,
        pub cache_url: Option<SecretUrl>,
        pub cache_cluster: bool,
        pub cache_ttl_secs: BTreeMap<String, u64>,
    }
}

section! {
    /// How a worker process pulls, runs and commits (`[worker]`).
    #[derive(Debug, Clone)]
    pub struct WorkerSettings in worker {
        pub concurrency: Concurrency,
        pub agents: Vec<String>,
        pub exclude_agents: Vec<String>,
        pub fetch_batch: usize,
        pub commit_batch: usize,
        pub commit_linger_ms: u64,
        pub commit_parallelism: usize,
        pub default_timeout_secs: f64,
        pub shutdown_grace_secs: f64,
        pub cancel_grace_secs: f64,
        pub id: Option<String>,
        pub retry_base_ms: u64,
        pub retry_factor: f64,
        pub retry_max_ms: u64,
        pub retry_jitter: f64,
        pub max_payload_bytes: usize,
        pub crash_allowance: u32,
        pub metrics_addr: String,
        pub idle_rescan_ms: u64,
        pub stall_after_secs: f64,
        pub max_result_bytes: usize,
    }
}

/// Tasks one worker process runs at once: a number, or sized from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Sized from the machine's cores and memory where the worker starts (`scale::sizing`).
    #[default]
    Auto,
    Fixed(usize),
}

impl std::str::FromStr for Concurrency {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "auto" => Ok(Self::Auto),
            number => match number.parse() {
                Ok(0) | Err(_) => Err(format!(
                    "expected a positive number or \"auto\", got {number:?}"
                )),
                Ok(n) => Ok(Self::Fixed(n)),
            },
        }
    }
}

impl std::fmt::Display for Concurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl WorkerSettings {
    /// The configured worker id, or one made from the host name and process id.
    pub fn worker_id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The agent types this worker takes.
    ///
    /// Fails when both lists are given or a name cannot be an agent type.
    pub fn agent_filter(&self) -> Result<crate::task::AgentFilter, super::ConfigError> {
        crate::task::AgentFilter::from_lists(&self.agents.join(","), &self.exclude_agents.join(","))
            .map_err(|reason| super::ConfigError::Invalid {
                name: "worker.agents",
                reason,
            })
    }
}

section! {
    /// The HTTP API, `swarmd api` (`[api]`). It refuses to start without a token unless
    /// `insecure_no_auth` is set.
    #[derive(Debug, Clone)]
    pub struct ApiSettings in api {
        pub addr: String,
        pub write_tokens: Vec<Secret>,
        pub read_tokens: Vec<Secret>,
        pub write_token_file: Option<PathBuf>,
        pub read_token_file: Option<PathBuf>,
        pub insecure_no_auth: bool,
        pub request_timeout_secs: f64,
        pub max_wait_secs: f64,
        pub max_concurrent_requests: usize,
        pub rate_limit_per_sec: f64,
        pub trace_url: String,
    }
}

section! {
    /// When the scale signals recommend more or fewer workers (the seed's `ResourceManager`
    /// thresholds, plus the backlog) (`[scale]`).
    #[derive(Debug, Clone, Serialize, PartialEq)]
    pub struct ScaleSettings in scale {
        pub cpu_percent: f64,
        pub memory_percent: f64,
        pub backlog_per_worker: f64,
        pub oldest_pending_secs: f64,
    }
}
