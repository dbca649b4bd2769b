//! One typed settings tree for every command: built-in defaults, then an optional TOML file,
//! then `SWARM_*` environment variables. URLs may carry credentials, so every URL is held in
//! a [`SecretUrl`] whose `Debug`/`Display` hide the password.

use std::{fmt, path::Path, time::Duration};

use serde::Deserialize;

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
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A connection URL that may hold a password; printing it never shows the password.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, credentials included: pass it to a client, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Every URL of a comma-separated list with its password and any secret-looking query
    /// parameter masked.
    fn redacted(&self) -> String {
        self.0
            .split(',')
            .map(redact_one_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Query parameters whose value is a secret (matched without regard to case).
const SECRET_PARAMETERS: [&str; 7] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "sslpassword",
    "auth",
];

/// `scheme://user:password@host/path?password=x` -> `scheme://user:***@host/path?password=***`.
fn redact_one_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.find("://").map(|i| i + 3) {
        Some(scheme_end) => {
            let rest = &base[scheme_end..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let userinfo = &rest[..at];
                    let masked = match userinfo.split_once(':') {
                        Some((user, _)) => format!("{user}:***"),
                        None => "***".to_string(),
                    };
                    format!("{}{masked}{}", &base[..scheme_end], &rest[at..])
                }
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(query) = query {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _))
                    if SECRET_PARAMETERS
                        .iter()
                        .any(|secret| key.eq_ignore_ascii_case(secret)) =>
                {
                    format!("{key}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Everything a `swarmd` process needs to know.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub nats: NatsSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub worker: WorkerSettings,
    pub api: ApiSettings,
    pub scale: ScaleSettings,
}

/// When the scale signals recommend more or fewer workers (the seed's `ResourceManager`
/// thresholds, plus the backlog).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleSettings {
    /// CPU use (percent) above which to scale up; below half of it, down. Default 70.
    /// Env: `SWARM_SCALE_CPU_PERCENT`.
    pub cpu_percent: f64,
    /// Memory use (percent) above which to scale up; below half of it, down. Default 80.
    /// Env: `SWARM_SCALE_MEMORY_PERCENT`.
    pub memory_percent: f64,
    /// Waiting tasks per live worker above which to scale up; below half of it, down.
    /// Default 1000. Env: `SWARM_SCALE_BACKLOG_PER_WORKER`.
    pub backlog_per_worker: f64,
    /// Age of the oldest waiting task (seconds) above which to scale up. Default 60.
    /// Env: `SWARM_SCALE_OLDEST_PENDING_SECS`.
    pub oldest_pending_secs: f64,
}

impl Default for ScaleSettings {
    fn default() -> Self {
        Self {
            cpu_percent: 70.0,
            memory_percent: 80.0,
            backlog_per_worker: 1000.0,
            oldest_pending_secs: 60.0,
        }
    }
}

/// A secret that is not a URL (a token): never printed, not even in part.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself: pass it to a client or a comparison, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The HTTP API (`swarmd api`). It refuses to start without a token unless
/// `insecure_no_auth` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Listen address. Default `0.0.0.0:8080`. Env: `SWARM_API_ADDR`.
    pub addr: String,
    /// Bearer tokens that may publish and replay (and read). Several allow rotation.
    /// Env: `SWARM_API_TOKEN` (comma separated).
    pub write_tokens: Vec<Secret>,
    /// Bearer tokens that may only read (tasks, queues, dead letters, scale, metrics).
    /// Env: `SWARM_API_READ_TOKENS` (comma separated).
    pub read_tokens: Vec<Secret>,
    /// A file of write tokens, one per line (`#` comments and blank lines ignored), as a
    /// mounted Kubernetes secret. Env: `SWARM_API_TOKEN_FILE`.
    pub write_token_file: Option<std::path::PathBuf>,
    /// A file of read tokens, one per line. Env: `SWARM_API_READ_TOKEN_FILE`.
    pub read_token_file: Option<std::path::PathBuf>,
    /// Serve without any authentication (local experiments only; said at start and in
    /// `/health`). Default false. Env: `SWARM_API_INSECURE_NO_AUTH`; flag
    /// `--insecure-no-auth`.
    pub insecure_no_auth: bool,
    /// A request not answered within this many seconds gets 503. Default 30.
    /// Env: `SWARM_API_REQUEST_TIMEOUT_SECS`.
    pub request_timeout_secs: f64,
    /// Longest `?wait=` a request may ask for (seconds); such a request may take this much
    /// longer than `request_timeout_secs`. Default 60. Env: `SWARM_API_MAX_WAIT_SECS`.
    pub max_wait_secs: f64,
    /// Requests served at once; beyond, 503 at once (load shed). Default 512.
    /// Env: `SWARM_API_MAX_CONCURRENT_REQUESTS`.
    pub max_concurrent_requests: usize,
    /// Requests per second one token may make (a burst of twice as many is allowed); beyond,
    /// 429 with `Retry-After`. `0` turns the limit off. Default 200.
    /// Env: `SWARM_API_RATE_LIMIT`.
    pub rate_limit_per_sec: f64,
    /// Where the dashboard links a task's trace id: `{trace_id}` is replaced. Default
    /// Jaeger's `http://localhost:16686/trace/{trace_id}`; empty shows the id unlinked.
    /// Env: `SWARM_UI_TRACE_URL`.
    pub trace_url: String,
}

/// Jaeger's trace page, where the dashboard links trace ids unless told otherwise.
pub const DEFAULT_TRACE_URL: &str = "http://localhost:16686/trace/{trace_id}";

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            addr: "0.0.0.0:8080".into(),
            write_tokens: Vec::new(),
            read_tokens: Vec::new(),
            write_token_file: None,
            read_token_file: None,
            insecure_no_auth: false,
            request_timeout_secs: 30.0,
            max_wait_secs: 60.0,
            max_concurrent_requests: 512,
            rate_limit_per_sec: 200.0,
            trace_url: DEFAULT_TRACE_URL.into(),
        }
    }
}

/// Tokens split from an environment variable: comma separated, spaces around ignored.
fn token_list(value: &str) -> Vec<Secret> {
    value.split(',').map(|t| Secret::new(t.trim())).collect()
}

/// NATS connection and JetStream layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// Server URL(s), comma separated; `nats://user:pass@host:4222` and `tls://` accepted.
    /// Default `nats://127.0.0.1:4222`. Env: `SWARM_NATS_URL`.
    pub url: SecretUrl,
    /// Optional NATS credentials file (JWT + nkey). Env: `SWARM_NATS_CREDS`.
    pub creds_file: Option<String>,
    /// Optional NATS token. Env: `SWARM_NATS_TOKEN`.
    pub token: Option<Secret>,
    /// User name to connect as (with `password`), instead of the URL's userinfo.
    /// Env: `SWARM_NATS_USER`.
    pub user: Option<String>,
    /// That user's password. Env: `SWARM_NATS_PASSWORD`.
    pub password: Option<Secret>,
    /// Optional NKey seed (`SU…`) to sign the server's challenge. Env: `SWARM_NATS_NKEY_SEED`.
    pub nkey_seed: Option<Secret>,
    /// Prefix of this process's reply subjects. The roles in `deploy/nats/roles.conf` give
    /// each user its own (`_INBOX.worker`, …) so no one can read replies meant for another
    /// — a worker's deliveries arrive on its inbox. Default `_INBOX`.
    /// Env: `SWARM_NATS_INBOX_PREFIX`.
    pub inbox_prefix: String,
    /// Tasks stream name. Default `SWARM_TASKS`. Env: `SWARM_STREAM`.
    pub stream: String,
    /// First token of every subject. Default `swarm`. Env: `SWARM_SUBJECT_PREFIX`.
    pub subject_prefix: String,
    /// Prefix of the durable consumer names (`<group>-p<N>`). Default `workers`.
    /// Env: `SWARM_CONSUMER_GROUP`.
    pub consumer_group: String,
    /// Seconds a delivered task may stay unacknowledged before JetStream hands it to another
    /// worker. Default 30. Env: `SWARM_ACK_WAIT_SECS`.
    pub ack_wait_secs: f64,
    /// Seconds within which a re-published task id is dropped as a duplicate. Default 120.
    pub duplicate_window_secs: u64,
    /// Most unacknowledged deliveries per lane consumer, across all workers. Default 20000.
    pub max_ack_pending: i64,
    /// The server deletes a lane's consumer after this many seconds without pulls (a lane
    /// with no tasks is not pulled), so lanes of agent types that stopped coming, or of
    /// garbage agent names, do not pile up; workers make it again when tasks return.
    /// Default 3600. Env: `SWARM_LANE_EXPIRY_SECS`.
    pub lane_expiry_secs: f64,
    /// Most lane consumers one worker creates: producers choose agent types, and each new
    /// name would otherwise cost up to ten consumers. Past it, tasks of further lanes wait
    /// (nothing is lost) until idle lanes expire, and a warning says so. Default 1000. Env:
    /// `SWARM_MAX_LANES`.
    pub max_lanes: usize,
    /// Stream replicas (1 on a single server, 3 in a cluster). Default 1.
    /// Env: `SWARM_NATS_REPLICAS`.
    pub replicas: usize,
    /// The server stops delivering a message after this many deliveries: a last resort
    /// behind the worker's own poison check (see `worker.crash_allowance`). Default 110.
    pub max_deliver: i64,
    /// Whether workers announce the final outcome of tasks published with
    /// `Swarm-Announce: outcome` on `<prefix>.results.<id>` once it is committed, for
    /// producers that wait (`POST /v1/tasks?wait=`, `swarmd publish --wait`). Default true.
    /// Env: `SWARM_ANNOUNCE_OUTCOMES`.
    pub announce_outcomes: bool,
    /// A task's data or an agent's result whose JSON text is larger than this many bytes
    /// travels by claim check: put in the Object Store bucket `<stream>_PAYLOADS`, a
    /// reference in the message and the row. Default 262144 (256 KiB).
    /// Env: `SWARM_CLAIM_CHECK_BYTES`.
    pub claim_check_bytes: usize,
    /// Where delayed tasks wait: `auto` (default) uses the server's own message schedules
    /// on NATS ≥ 2.12 and the fleet's delay stream on older servers; `stream` always the
    /// delay stream; `native` the server's schedules, refused with the version needed on a
    /// server older than 2.12. Env: `SWARM_DELAYS`.
    pub delays: DelayMode,
}

/// Where delayed tasks wait until due (`nats.delays`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("nats://127.0.0.1:4222"),
            creds_file: None,
            token: None,
            user: None,
            password: None,
            nkey_seed: None,
            inbox_prefix: "_INBOX".into(),
            stream: "SWARM_TASKS".into(),
            subject_prefix: "swarm".into(),
            consumer_group: "workers".into(),
            ack_wait_secs: 30.0,
            duplicate_window_secs: 120,
            max_ack_pending: 20_000,
            lane_expiry_secs: 3600.0,
            max_lanes: 1000,
            replicas: 1,
            max_deliver: 110,
            announce_outcomes: true,
            claim_check_bytes: 256 * 1024,
            delays: DelayMode::Auto,
        }
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

/// PostgreSQL settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Primary (write) database URL; `sslmode` and credentials accepted.
    /// Default `postgres://postgres@127.0.0.1:5432/test`. Env: `SWARM_DATABASE_URL`.
    pub url: SecretUrl,
    /// Read replicas (comma separated in the environment), chosen round-robin; reads fall
    /// back to the primary when none answers. Default none. Env: `SWARM_REPLICA_URLS`.
    pub replica_urls: Vec<SecretUrl>,
    /// Schema holding the fleet's tables (created if missing). Default `public`.
    /// Env: `SWARM_DATABASE_SCHEMA`.
    pub schema: String,
    /// Pool settings per environment, as the seed's `DatabaseConfig`: `development`
    /// (5 + 10 overflow, 20 s timeout), `staging` (10 + 20, 30 s), `production` (20 + 40,
    /// 60 s, recycled after 900 s). Default `development`. Env: `SWARM_ENVIRONMENT`.
    pub profile: String,
    /// Overrides the profile's most connections per pool. Env: `SWARM_DATABASE_MAX_CONNECTIONS`.
    pub max_connections: Option<u32>,
    /// Overrides the profile's seconds to wait for a free connection.
    pub acquire_timeout_secs: Option<u64>,
    /// Overrides the profile's seconds after which a connection is recycled.
    pub max_lifetime_secs: Option<u64>,
    /// Apply the embedded migrations when a worker starts. Default true.
    /// Env: `SWARM_MIGRATE_ON_START`.
    pub migrate_on_start: bool,
    /// Days a finished task (`completed` or `dead`) is kept, in PostgreSQL and in the legacy
    /// mirror's `completed_tasks` / `failed_tasks`; `0` keeps everything. Workers drop
    /// expired days of `tasks` whole (one partition per day) once an hour; `swarmd prune`
    /// does the same at once. Unfinished tasks are never removed. Default 7.
    /// Env: `SWARM_RETENTION_DAYS`.
    pub retention_days: u32,
    /// Index task searches (`GET /v1/tasks?contains=` and `?q=`, the dashboard): a GIN over
    /// `data` and a trigram GIN over data, result and last error, made by `swarmd migrate`
    /// and workers at start. Off by default: every task's row write then updates them, which
    /// cost 17 % of the burn-down rate here (docs/performance.md); without them a search
    /// reads the rows newest first.
    /// Env: `SWARM_SEARCH_INDEX`.
    pub search_index: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("postgres://postgres@127.0.0.1:5432/test"),
            replica_urls: Vec::new(),
            schema: "public".into(),
            profile: "development".into(),
            max_connections: None,
            acquire_timeout_secs: None,
            max_lifetime_secs: None,
            migrate_on_start: true,
            retention_days: 7,
            search_index: false,
        }
    }
}

impl DatabaseSettings {
    /// How long a finished task is kept; `None` keeps everything.
    pub fn retention(&self) -> Option<chrono::Duration> {
        (self.retention_days > 0).then(|| chrono::Duration::days(i64::from(self.retention_days)))
    }
}

/// Pool sizes per environment, after the seed's `DatabaseConfig.get_engine_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolProfile {
    /// Connections kept open (`pool_size`).
    pub pool_size: u32,
    /// More opened under load (`max_overflow`).
    pub max_overflow: u32,
    /// Seconds to wait for a connection (`pool_timeout`).
    pub timeout_secs: u64,
    /// Seconds before a connection is replaced (`pool_recycle`).
    pub recycle_secs: u64,
}

impl PoolProfile {
    pub fn named(name: &str) -> Option<Self> {
        let (pool_size, max_overflow, timeout_secs, recycle_secs) = match name {
            "development" => (5, 10, 20, 1800),
            "staging" => (10, 20, 30, 1800),
            "production" => (20, 40, 60, 900),
            _ => return None,
        };
        Some(Self {
            pool_size,
            max_overflow,
            timeout_secs,
            recycle_secs,
        })
    }
}

impl PoolProfile {
    /// A read replica's pool in profile `name`, after the seed's `DatabaseRouter`: three
    /// quarters of the primary's connections (production: 15 + 30 beside the primary's
    /// 20 + 40), the same wait, recycled every 30 minutes.
    pub fn replica_named(name: &str) -> Option<Self> {
        let primary = Self::named(name)?;
        Some(Self {
            pool_size: (primary.pool_size * 3 / 4).max(1),
            max_overflow: primary.max_overflow * 3 / 4,
            timeout_secs: primary.timeout_secs,
            recycle_secs: 1800,
        })
    }

    /// This profile with the configured overrides applied.
    fn overridden(mut self, settings: &DatabaseSettings) -> Self {
        if let Some(max) = settings.max_connections {
            self.pool_size = self.pool_size.min(max);
            self.max_overflow = max - self.pool_size;
        }
        if let Some(secs) = settings.acquire_timeout_secs {
            self.timeout_secs = secs;
        }
        if let Some(secs) = settings.max_lifetime_secs {
            self.recycle_secs = secs;
        }
        self
    }
}

impl DatabaseSettings {
    /// The effective pool settings of the primary: the profile's, with the overrides applied.
    pub fn pool(&self) -> PoolProfile {
        PoolProfile::named(&self.profile)
            .unwrap_or_else(|| PoolProfile::named("development").expect("known profile"))
            .overridden(self)
    }

    /// The effective pool settings of each read replica.
    pub fn replica_pool(&self) -> PoolProfile {
        PoolProfile::replica_named(&self.profile)
            .unwrap_or_else(|| PoolProfile::replica_named("development").expect("known profile"))
            .overridden(self)
    }
}

/// Redis settings (the legacy queue mirror, legacy intake and the result cache).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Default `redis://127.0.0.1:6379`; `rediss://` for TLS. Env: `SWARM_REDIS_URL`.
    pub url: SecretUrl,
    /// Prepended to every key (`agent_tasks` becomes `<prefix>agent_tasks`). Default empty:
    /// the seed's names. Env: `SWARM_REDIS_PREFIX`.
    pub key_prefix: String,
    /// Keep the legacy keys (`agent_tasks`, `processing_tasks`, ...) up to date. Default
    /// true. Env: `SWARM_MIRROR`.
    pub mirror: bool,
    /// Take in tasks that legacy producers `ZADD` to `agent_tasks`. Default true.
    /// Env: `SWARM_LEGACY_INTAKE`.
    pub intake: bool,
    /// Milliseconds between looks for legacy tasks. Default 100.
    pub intake_interval_ms: u64,
    /// Legacy consumers (the seed's `dequeue_task` loop) run beside the fleet: `agent_tasks`
    /// then holds only legacy producers' members not yet taken, so whatever either side pops
    /// runs once; the fleet's own waiting tasks are not shown there. Default false.
    /// Env: `SWARM_LEGACY_CONSUMERS`.
    pub legacy_consumers: bool,
    /// Cache the results of cacheable agents. Default true. Env: `SWARM_RESULT_CACHE`.
    pub cache: bool,
    /// Where the result cache lives, when not on `url`: one URL, or a Redis Cluster's nodes
    /// (comma separated) with `cache_cluster`. Env: `SWARM_CACHE_REDIS_URL`.
    pub cache_url: Option<SecretUrl>,
    /// The cache's server is a Redis Cluster (the seed's `DistributedCache`). Only the cache
    /// may be: the mirror's keys stay on `url`. Default false. Env: `SWARM_CACHE_REDIS_CLUSTER`.
    pub cache_cluster: bool,
    /// Result-cache lifetime per agent type, in seconds, overriding the agent's own.
    pub cache_ttl_secs: std::collections::BTreeMap<String, u64>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("redis://127.0.0.1:6379"),
            key_prefix: String::new(),
            mirror: true,
            intake: true,
            intake_interval_ms: 100,
            legacy_consumers: false,
            cache: true,
            cache_url: None,
            cache_cluster: false,
            cache_ttl_secs: Default::default(),
        }
    }
}

/// How a worker process pulls and commits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Tasks run at once by one worker process, or `"auto"` to size it from the machine's
    /// cores and memory (128 per core, at most one per 4 MiB, 8–1024). Default `auto`.
    /// Env: `SWARM_CONCURRENCY`.
    #[serde(deserialize_with = "concurrency_setting")]
    pub concurrency: usize,
    /// Agent types this worker takes, for a dedicated pool; empty takes all. Env:
    /// `SWARM_WORKER_AGENTS` (comma-separated).
    pub agents: Vec<String>,
    /// Agent types this worker leaves to dedicated pools. Env: `SWARM_WORKER_EXCLUDE_AGENTS`.
    pub exclude_agents: Vec<String>,
    /// Most messages fetched by one pull request (never more than the free slots). Default
    /// 256: measured 2026-11-30, two workers burn down 22,100–24,300 tasks/s with 256 and
    /// 19,500–21,300 with 64. Env: `SWARM_FETCH_BATCH`.
    pub fetch_batch: usize,
    /// Most outcomes committed in one database transaction. Default 256. Env:
    /// `SWARM_COMMIT_BATCH`.
    pub commit_batch: usize,
    /// Milliseconds an outcome may wait for others to share its commit. Default 2.
    pub commit_linger_ms: u64,
    /// Commit transactions that may run at once. Default 2.
    pub commit_parallelism: usize,
    /// Seconds a task may run when its envelope sets no `timeout`. Default 300 (the seed's).
    pub default_timeout_secs: f64,
    /// Seconds to let in-flight tasks finish after SIGTERM/ctrl-c. Default 25.
    pub shutdown_grace_secs: f64,
    /// Seconds a running agent told of its task's cancellation may take to stop before the
    /// attempt is abandoned (the task ends `cancelled` either way). Default 5.
    /// Env: `SWARM_CANCEL_GRACE_SECS`.
    pub cancel_grace_secs: f64,
    /// Worker id written with each result. Default `<hostname>-<pid>`. Env: `SWARM_WORKER_ID`.
    pub id: Option<String>,
    /// Delay before the second attempt, in milliseconds. Default 2000 (the seed's 2 s).
    /// Env: `SWARM_RETRY_BASE_MS`.
    pub retry_base_ms: u64,
    /// Each further attempt waits this many times longer. Default 2 (2, 4, 8 s).
    pub retry_factor: f64,
    /// Longest delay between attempts, in milliseconds. Default 300000.
    pub retry_max_ms: u64,
    /// Random spread of each delay, as a fraction (0.2 = +/-20 %). Default 0.2.
    pub retry_jitter: f64,
    /// Largest task body accepted, in bytes; bigger ones are dead-lettered. Default 1 MiB.
    /// Env: `SWARM_MAX_PAYLOAD_BYTES`.
    pub max_payload_bytes: usize,
    /// Deliveries that may end without an outcome (the worker crashed or hung) before a
    /// task is dead-lettered as poison: it is given up once delivered more than
    /// `max_attempts + crash_allowance` times. Default 2. Env: `SWARM_CRASH_ALLOWANCE`.
    pub crash_allowance: u32,
    /// Where the worker serves `/metrics` and `/health`; empty turns it off. Default
    /// `0.0.0.0:9464`. Env: `SWARM_METRICS_ADDR`.
    pub metrics_addr: String,
    /// Milliseconds between rescans of an idle worker, which find redeliveries (new publishes
    /// wake it at once). Default 500.
    pub idle_rescan_ms: u64,
    /// Seconds a batch may be held through a transient fault, or the pull loop stand still
    /// with free slots, before `/ready` reports the worker stalled (so an orchestrator
    /// restarts it). Default 120. Env: `SWARM_STALL_AFTER_SECS`.
    pub stall_after_secs: f64,
    /// Largest agent result stored, in bytes of JSON; a bigger one fails the task for good.
    /// Results over `nats.claim_check_bytes` go to the Object Store, not the row.
    /// Default 64 MiB. Env: `SWARM_MAX_RESULT_BYTES`.
    pub max_result_bytes: usize,
}

impl WorkerSettings {
    /// The agent types this worker takes.
    ///
    /// Fails when both lists are given or a name cannot be an agent type.
    pub fn agent_filter(&self) -> Result<crate::broker::AgentFilter, ConfigError> {
        crate::broker::AgentFilter::from_lists(
            &self.agents.join(","),
            &self.exclude_agents.join(","),
        )
        .map_err(|reason| ConfigError::Invalid {
            name: "worker.agents",
            reason,
        })
    }
}

/// A concurrency setting: a positive number, or "auto".
fn concurrency_setting<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Setting {
        Fixed(usize),
        Named(String),
    }
    match Setting::deserialize(d)? {
        Setting::Fixed(n) => Ok(n),
        Setting::Named(name) if name == "auto" => Ok(crate::scale::auto_concurrency()),
        Setting::Named(other) => Err(serde::de::Error::custom(format!(
            "concurrency must be a number or \"auto\", not {other:?}"
        ))),
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: crate::scale::auto_concurrency(),
            agents: Vec::new(),
            exclude_agents: Vec::new(),
            fetch_batch: 256,
            commit_batch: 256,
            commit_linger_ms: 2,
            commit_parallelism: 2,
            default_timeout_secs: 300.0,
            shutdown_grace_secs: 25.0,
            cancel_grace_secs: 5.0,
            id: None,
            retry_base_ms: 2000,
            retry_factor: 2.0,
            retry_max_ms: 300_000,
            retry_jitter: 0.2,
            idle_rescan_ms: 500,
            max_payload_bytes: 1024 * 1024,
            metrics_addr: "0.0.0.0:9464".into(),
            crash_allowance: 2,
            stall_after_secs: 120.0,
            max_result_bytes: crate::worker::DEFAULT_MAX_RESULT_BYTES,
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
}

impl Settings {
    /// Defaults, then `file` (TOML) if given, then the process environment.
    ///
    /// Fails when the file cannot be read or parsed, or an environment value is malformed.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut settings = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        settings.apply_env(|name| std::env::var(name).ok())?;
        settings.validate()?;
        Ok(settings)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// Overrides from `SWARM_*` variables, read through `lookup` so tests need no process env.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                reason: e.to_string(),
                value,
            })
        }
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        if let Some(v) = get("SWARM_NATS_URL") {
            self.nats.url = SecretUrl::new(v);
        }
        if let Some(v) = get("SWARM_NATS_CREDS") {
            self.nats.creds_file = Some(v);
        }
        if let Some(v) = get("SWARM_NATS_USER") {
            self.nats.user = Some(v);
        }
        if let Some(v) = get("SWARM_NATS_PASSWORD") {
            self.nats.password = Some(Secret::new(v));
        }
        if let Some(v) = get("SWARM_NATS_NKEY_SEED") {
            self.nats.nkey_seed = Some(Secret::new(v));
        }
        if let Some(v) = get("SWARM_NATS_INBOX_PREFIX") {
            self.nats.inbox_prefix = v;
        }
        if let Some(v) = get("SWARM_NATS_TOKEN") {
            self.nats.token = Some(Secret::new(v));
        }
        if let Some(v) = get("SWARM_STREAM") {
            self.nats.stream = v;
        }
        if let Some(v) = get("SWARM_SUBJECT_PREFIX") {
            self.nats.subject_prefix = v;
        }
        if let Some(v) = get("SWARM_CLAIM_CHECK_BYTES") {
            self.nats.claim_check_bytes = parsed("SWARM_CLAIM_CHECK_BYTES", v)?;
        }
        if let Some(v) = get("SWARM_DELAYS") {
            self.nats.delays = parsed("SWARM_DELAYS", v)?;
        }
        if let Some(v) = get("SWARM_ANNOUNCE_OUTCOMES") {
            self.nats.announce_outcomes = parsed("SWARM_ANNOUNCE_OUTCOMES", v)?;
        }
        if let Some(v) = get("SWARM_CONSUMER_GROUP") {
            self.nats.consumer_group = v;
        }
        if let Some(v) = get("SWARM_LANE_EXPIRY_SECS") {
            self.nats.lane_expiry_secs = parsed("SWARM_LANE_EXPIRY_SECS", v)?;
        }
        if let Some(v) = get("SWARM_MAX_LANES") {
            self.nats.max_lanes = parsed("SWARM_MAX_LANES", v)?;
        }
        if let Some(v) = get("SWARM_NATS_REPLICAS") {
            self.nats.replicas = parsed("SWARM_NATS_REPLICAS", v)?;
        }
        if let Some(v) = get("SWARM_ACK_WAIT_SECS") {
            self.nats.ack_wait_secs = parsed("SWARM_ACK_WAIT_SECS", v)?;
        }
        if let Some(v) = get("SWARM_DATABASE_URL") {
            self.database.url = SecretUrl::new(v);
        }
        if let Some(v) = get("SWARM_DATABASE_SCHEMA") {
            self.database.schema = v;
        }
        if let Some(v) = get("SWARM_DATABASE_MAX_CONNECTIONS") {
            self.database.max_connections = Some(parsed("SWARM_DATABASE_MAX_CONNECTIONS", v)?);
        }
        if let Some(v) = get("SWARM_REPLICA_URLS") {
            self.database.replica_urls = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(SecretUrl::new)
                .collect();
        }
        if let Some(v) = get("SWARM_ENVIRONMENT") {
            self.database.profile = v;
        }
        if let Some(v) = get("SWARM_MIGRATE_ON_START") {
            self.database.migrate_on_start = parsed("SWARM_MIGRATE_ON_START", v)?;
        }
        if let Some(v) = get("SWARM_SEARCH_INDEX") {
            self.database.search_index = parsed("SWARM_SEARCH_INDEX", v)?;
        }
        if let Some(v) = get("SWARM_RETENTION_DAYS") {
            self.database.retention_days = parsed("SWARM_RETENTION_DAYS", v)?;
        }
        if let Some(v) = get("SWARM_REDIS_URL") {
            self.redis.url = SecretUrl::new(v);
        }
        if let Some(v) = get("SWARM_REDIS_PREFIX") {
            self.redis.key_prefix = v;
        }
        if let Some(v) = get("SWARM_MIRROR") {
            self.redis.mirror = parsed("SWARM_MIRROR", v)?;
        }
        if let Some(v) = get("SWARM_LEGACY_INTAKE") {
            self.redis.intake = parsed("SWARM_LEGACY_INTAKE", v)?;
        }
        if let Some(v) = get("SWARM_LEGACY_CONSUMERS") {
            self.redis.legacy_consumers = parsed("SWARM_LEGACY_CONSUMERS", v)?;
        }
        if let Some(v) = get("SWARM_RESULT_CACHE") {
            self.redis.cache = parsed("SWARM_RESULT_CACHE", v)?;
        }
        if let Some(v) = get("SWARM_CACHE_REDIS_URL") {
            self.redis.cache_url = Some(SecretUrl::new(v));
        }
        if let Some(v) = get("SWARM_CACHE_REDIS_CLUSTER") {
            self.redis.cache_cluster = parsed("SWARM_CACHE_REDIS_CLUSTER", v)?;
        }
        if let Some(v) = get("SWARM_CONCURRENCY") {
            self.worker.concurrency = match v.as_str() {
                "auto" => crate::scale::auto_concurrency(),
                _ => parsed("SWARM_CONCURRENCY", v)?,
            };
        }
        let list = |v: String| v.split(',').map(|a| a.trim().to_string()).collect();
        if let Some(v) = get("SWARM_WORKER_AGENTS") {
            self.worker.agents = list(v);
        }
        if let Some(v) = get("SWARM_WORKER_EXCLUDE_AGENTS") {
            self.worker.exclude_agents = list(v);
        }
        if let Some(v) = get("SWARM_RETRY_BASE_MS") {
            self.worker.retry_base_ms = parsed("SWARM_RETRY_BASE_MS", v)?;
        }
        if let Some(v) = get("SWARM_MAX_PAYLOAD_BYTES") {
            self.worker.max_payload_bytes = parsed("SWARM_MAX_PAYLOAD_BYTES", v)?;
        }
        if let Some(v) = get("SWARM_CRASH_ALLOWANCE") {
            self.worker.crash_allowance = parsed("SWARM_CRASH_ALLOWANCE", v)?;
        }
        if let Some(v) = get("SWARM_FETCH_BATCH") {
            self.worker.fetch_batch = parsed("SWARM_FETCH_BATCH", v)?;
        }
        if let Some(v) = get("SWARM_COMMIT_BATCH") {
            self.worker.commit_batch = parsed("SWARM_COMMIT_BATCH", v)?;
        }
        if let Some(v) = get("SWARM_STALL_AFTER_SECS") {
            self.worker.stall_after_secs = parsed("SWARM_STALL_AFTER_SECS", v)?;
        }
        if let Some(v) = get("SWARM_MAX_RESULT_BYTES") {
            self.worker.max_result_bytes = parsed("SWARM_MAX_RESULT_BYTES", v)?;
        }
        if let Some(v) = get("SWARM_CANCEL_GRACE_SECS") {
            self.worker.cancel_grace_secs = parsed("SWARM_CANCEL_GRACE_SECS", v)?;
        }
        if let Some(v) = get("SWARM_SHUTDOWN_GRACE_SECS") {
            self.worker.shutdown_grace_secs = parsed("SWARM_SHUTDOWN_GRACE_SECS", v)?;
        }
        if let Some(v) = lookup("SWARM_METRICS_ADDR") {
            self.worker.metrics_addr = v;
        }
        if let Some(v) = get("SWARM_API_ADDR") {
            self.api.addr = v;
        }
        if let Some(v) = get("SWARM_API_TOKEN") {
            self.api.write_tokens = token_list(&v);
        }
        if let Some(v) = get("SWARM_API_READ_TOKENS") {
            self.api.read_tokens = token_list(&v);
        }
        if let Some(v) = get("SWARM_API_TOKEN_FILE") {
            self.api.write_token_file = Some(v.into());
        }
        if let Some(v) = get("SWARM_API_READ_TOKEN_FILE") {
            self.api.read_token_file = Some(v.into());
        }
        if let Some(v) = get("SWARM_API_INSECURE_NO_AUTH") {
            self.api.insecure_no_auth = parsed("SWARM_API_INSECURE_NO_AUTH", v)?;
        }
        if let Some(v) = get("SWARM_API_REQUEST_TIMEOUT_SECS") {
            self.api.request_timeout_secs = parsed("SWARM_API_REQUEST_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = lookup("SWARM_UI_TRACE_URL") {
            self.api.trace_url = v;
        }
        if let Some(v) = get("SWARM_API_MAX_WAIT_SECS") {
            self.api.max_wait_secs = parsed("SWARM_API_MAX_WAIT_SECS", v)?;
        }
        if let Some(v) = get("SWARM_API_MAX_CONCURRENT_REQUESTS") {
            self.api.max_concurrent_requests = parsed("SWARM_API_MAX_CONCURRENT_REQUESTS", v)?;
        }
        if let Some(v) = get("SWARM_API_RATE_LIMIT") {
            self.api.rate_limit_per_sec = parsed("SWARM_API_RATE_LIMIT", v)?;
        }
        if let Some(v) = get("SWARM_SCALE_CPU_PERCENT") {
            self.scale.cpu_percent = parsed("SWARM_SCALE_CPU_PERCENT", v)?;
        }
        if let Some(v) = get("SWARM_SCALE_MEMORY_PERCENT") {
            self.scale.memory_percent = parsed("SWARM_SCALE_MEMORY_PERCENT", v)?;
        }
        if let Some(v) = get("SWARM_SCALE_BACKLOG_PER_WORKER") {
            self.scale.backlog_per_worker = parsed("SWARM_SCALE_BACKLOG_PER_WORKER", v)?;
        }
        if let Some(v) = get("SWARM_SCALE_OLDEST_PENDING_SECS") {
            self.scale.oldest_pending_secs = parsed("SWARM_SCALE_OLDEST_PENDING_SECS", v)?;
        }
        if let Some(v) = get("SWARM_WORKER_ID") {
            self.worker.id = Some(v);
        }
        Ok(())
    }

    /// Rejects settings that would make the fleet misbehave rather than fail loudly.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, tokens) in [
            ("api.write_tokens", &self.api.write_tokens),
            ("api.read_tokens", &self.api.read_tokens),
        ] {
            if tokens.iter().any(|t| t.expose().trim().is_empty()) {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "an empty token would let anyone in: remove it".into(),
                });
            }
        }
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !token_ok(&self.nats.stream) {
            return Err(ConfigError::Invalid {
                name: "nats.stream",
                reason: format!("{:?} must be letters, digits, '_' or '-'", self.nats.stream),
            });
        }
        if !token_ok(&self.nats.consumer_group) {
            return Err(ConfigError::Invalid {
                name: "nats.consumer_group",
                reason: format!(
                    "{:?} must be letters, digits, '_' or '-'",
                    self.nats.consumer_group
                ),
            });
        }
        if self.nats.subject_prefix.is_empty()
            || self
                .nats
                .subject_prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            return Err(ConfigError::Invalid {
                name: "nats.subject_prefix",
                reason: format!(
                    "{:?} must be dot-separated subject tokens without wildcards",
                    self.nats.subject_prefix
                ),
            });
        }
        if !token_ok(&self.database.schema) {
            return Err(ConfigError::Invalid {
                name: "database.schema",
                reason: format!("{:?} must be letters, digits or '_'", self.database.schema),
            });
        }
        if PoolProfile::named(&self.database.profile).is_none() {
            return Err(ConfigError::Invalid {
                name: "database.profile",
                reason: format!(
                    "{:?} is not development, staging or production",
                    self.database.profile
                ),
            });
        }
        if self.worker.concurrency == 0 || self.worker.fetch_batch == 0 {
            return Err(ConfigError::Invalid {
                name: "worker.concurrency",
                reason: "concurrency and fetch_batch must be at least 1".into(),
            });
        }
        self.worker.agent_filter()?;
        let scale = &self.scale;
        if [scale.cpu_percent, scale.memory_percent]
            .iter()
            .any(|p| !(0.0..=100.0).contains(p))
            || !(scale.backlog_per_worker > 0.0 && scale.oldest_pending_secs >= 0.0)
        {
            return Err(ConfigError::Invalid {
                name: "scale",
                reason: "percentages must be 0-100, backlog_per_worker positive, \
                         oldest_pending_secs not negative"
                    .into(),
            });
        }
        if self.nats.lane_expiry_secs.is_nan() || self.nats.lane_expiry_secs < 1.0 {
            return Err(ConfigError::Invalid {
                name: "nats.lane_expiry_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.nats.ack_wait_secs.is_nan() || self.nats.ack_wait_secs <= 0.0 {
            return Err(ConfigError::Invalid {
                name: "nats.ack_wait_secs",
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_password() {
        let url = SecretUrl::new("postgres://app:s3cret@db:5432/x?sslmode=require");
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            SecretUrl::new("redis://127.0.0.1:6379").to_string(),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn every_url_of_a_list_and_secret_query_parameters_are_masked() {
        let url = SecretUrl::new(
            "nats://a:pw-one@n1:4222,nats://b:pw-two@n2:4222,nats://tok-three@n3:4222",
        );
        assert_eq!(
            url.to_string(),
            "nats://a:***@n1:4222,nats://b:***@n2:4222,nats://***@n3:4222"
        );
        let url = SecretUrl::new(
            "postgres://db/x?user=app&Password=pw-four&sslmode=verify-full&sslpassword=pw-five",
        );
        let shown = format!("{url} {url:?}");
        for secret in ["pw-four", "pw-five"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("user=app") && shown.contains("sslmode=verify-full"));
    }

    #[test]
    fn tokens_never_print() {
        let mut settings = Settings::default();
        settings
            .apply_env(|name| match name {
                "SWARM_API_TOKEN" => Some("tok-write-1, tok-write-2".into()),
                "SWARM_API_READ_TOKENS" => Some("tok-read".into()),
                "SWARM_NATS_TOKEN" => Some("tok-nats".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(settings.api.write_tokens.len(), 2);
        assert_eq!(settings.api.write_tokens[1].expose(), "tok-write-2");
        let shown = format!("{settings:?}");
        for secret in ["tok-write-1", "tok-write-2", "tok-read", "tok-nats"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn an_empty_api_token_is_refused() {
        let mut settings = Settings::default();
        settings
            .apply_env(|name| (name == "SWARM_API_TOKEN").then(|| "good, ".to_string()))
            .unwrap();
        assert!(matches!(
            settings.validate(),
            Err(ConfigError::Invalid {
                name: "api.write_tokens",
                ..
            })
        ));
    }

    #[test]
    fn environment_overrides_defaults() {
        let mut settings = Settings::default();
        settings
            .apply_env(|name| match name {
                "SWARM_STREAM" => Some("OTHER".into()),
                "SWARM_CONCURRENCY" => Some("7".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(settings.nats.stream, "OTHER");
        assert_eq!(settings.worker.concurrency, 7);
    }

    #[test]
    fn pools_and_automatic_concurrency_come_from_the_environment_or_the_file() {
        let mut settings = Settings::default();
        settings
            .apply_env(|name| match name {
                "SWARM_CONCURRENCY" => Some("auto".into()),
                "SWARM_WORKER_AGENTS" => Some("email, quality".into()),
                "SWARM_SCALE_CPU_PERCENT" => Some("60".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            settings.worker.concurrency,
            crate::scale::auto_concurrency()
        );
        assert_eq!(
            settings.worker.agent_filter().unwrap().to_string(),
            "only email,quality"
        );
        assert_eq!(settings.scale.cpu_percent, 60.0);
        settings.validate().unwrap();
        settings.worker.exclude_agents = vec!["echo".into()];
        assert!(settings.validate().is_err(), "both lists at once");

        let file: Settings = toml::from_str(
            "[worker]\nconcurrency = \"auto\"\nexclude_agents = [\"email\"]\n[scale]\nbacklog_per_worker = 50\n",
        )
        .unwrap();
        assert!(file.worker.concurrency >= 8);
        assert_eq!(file.scale.backlog_per_worker, 50.0);
        assert!(toml::from_str::<Settings>("[worker]\nconcurrency = \"lots\"\n").is_err());
    }

    #[test]
    fn malformed_environment_is_an_error() {
        let err = Settings::default()
            .apply_env(|name| (name == "SWARM_CONCURRENCY").then(|| "many".into()))
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Env {
                name: "SWARM_CONCURRENCY",
                ..
            }
        ));
    }

    #[test]
    fn profiles_follow_the_seed_and_overrides_win() {
        let mut database = DatabaseSettings::default();
        assert_eq!(database.pool().pool_size + database.pool().max_overflow, 15);
        database.profile = "production".into();
        assert_eq!(
            database.pool(),
            PoolProfile {
                pool_size: 20,
                max_overflow: 40,
                timeout_secs: 60,
                recycle_secs: 900
            }
        );
        // The seed's DatabaseRouter: replicas 15 + 30, recycled every 1800 s.
        assert_eq!(
            database.replica_pool(),
            PoolProfile {
                pool_size: 15,
                max_overflow: 30,
                timeout_secs: 60,
                recycle_secs: 1800
            }
        );
        database.max_connections = Some(8);
        database.acquire_timeout_secs = Some(3);
        for pool in [database.pool(), database.replica_pool()] {
            assert_eq!(
                (pool.pool_size + pool.max_overflow, pool.timeout_secs),
                (8, 3)
            );
        }
        let mut settings = Settings::default();
        settings.database.profile = "qa".into();
        assert!(settings.validate().is_err());
    }

    #[test]
    fn file_settings_parse() {
        let settings: Settings =
            toml::from_str("[nats]\nstream = \"S\"\n[worker]\nconcurrency = 3\n").unwrap();
        assert_eq!(settings.nats.stream, "S");
        assert_eq!(settings.worker.concurrency, 3);
        assert_eq!(settings.nats.subject_prefix, "swarm");
    }
}
