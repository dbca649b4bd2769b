//! The one table of settings: TOML key, environment variable, kind, default and meaning of
//! every setting. The environment and file layers read through it, `Settings::default()` is
//! its defaults applied, `docs/configuration.md` is rendered from it (a test fails when the
//! checked-in page is stale) and the deploy checks take their variable names from it.
//!
//! Longer than most files on purpose: one entry per setting, and nothing else.

use std::str::FromStr;

use super::{Secret, SecretUrl, Settings};

/// What a setting holds, as the reference names it; secrets are never echoed in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Url,
    UrlList,
    Secret,
    SecretList,
    Bool,
    Integer,
    /// A positive count, or `auto` to size it from the machine.
    CountOrAuto,
    Number,
    Seconds,
    Millis,
    Bytes,
    List,
    Path,
    Choice(&'static [&'static str]),
    /// `name=number,…` in the environment; a TOML table in the file.
    Map,
}

impl Kind {
    pub fn name(self) -> String {
        match self {
            Kind::Text => "text".into(),
            Kind::Url => "URL".into(),
            Kind::UrlList => "URLs, comma separated".into(),
            Kind::Secret => "secret".into(),
            Kind::SecretList => "secrets, comma separated".into(),
            Kind::Bool => "true / false".into(),
            Kind::Integer => "integer".into(),
            Kind::CountOrAuto => "count or `auto`".into(),
            Kind::Number => "number".into(),
            Kind::Seconds => "seconds (or `30s`, `5m`, `2h`)".into(),
            Kind::Millis => "milliseconds (or `2s`)".into(),
            Kind::Bytes => "bytes".into(),
            Kind::List => "names, comma separated".into(),
            Kind::Path => "file path".into(),
            Kind::Choice(choices) => choices.join(" / "),
            Kind::Map => "name=number, comma separated".into(),
        }
    }

    pub fn is_secret(self) -> bool {
        matches!(self, Kind::Secret | Kind::SecretList)
    }
}

/// One setting.
pub struct Setting {
    /// Its place in the TOML file: `section.field`.
    pub key: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    pub kind: Kind,
    /// The default as it would be written in the environment; `None`: unset.
    pub default: Option<&'static str>,
    /// What the default amounts to, where the value alone does not say (`<host>-<pid>`).
    pub default_shown: Option<&'static str>,
    /// An empty value is a value (it turns something off) rather than "not set".
    pub empty_allowed: bool,
    pub doc: &'static str,
    /// Stores a value given as text into the settings.
    pub set: fn(&mut Settings, &str) -> Result<(), String>,
}

/// Variables read outside the settings tree, by the command line or the logger.
pub const PROCESS_VARIABLES: &[(&str, &str, &str)] = &[
    ("SWARM_CONFIG", "–", "TOML settings file (`--config`)"),
    (
        "SWARM_WORKER_PROCESSES",
        "`auto`",
        "worker processes one `swarmd worker` runs under a supervisor (`--processes`; `auto`: \
         one per core, at most one per GiB of memory; `1`: the command is the worker)",
    ),
    (
        "SWARM_SUPERVISOR_PID",
        "–",
        "set by the supervisor for the processes it starts, which drain and exit once it is \
         gone",
    ),
    (
        "SWARM_RUNTIME_THREADS",
        "one per core",
        "threads of a process's async runtime (`1`: one thread); unset, `swarmd worker \
         --processes N` and `swarmd bench` give each of their N workers cores / N",
    ),
    (
        "SWARM_LOG",
        "`info`",
        "log filter (`tracing` env-filter syntax)",
    ),
    ("SWARM_LOG_JSON", "off", "logs as JSON lines"),
    (
        "SWARM_ENABLE_CRASH_AGENT",
        "off",
        "registers the `crash` agent that aborts its worker (fault drills only)",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "–",
        "export traces over OTLP/HTTP to this base URL",
    ),
];

fn parse<T: FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// A setting kept in whole seconds: a bare number, or the fleet's duration grammar.
fn seconds<T: TryFrom<u64>>(value: &str) -> Result<T, String> {
    let secs = crate::duration::whole_seconds(value.trim()).map_err(|e| e.to_string())?;
    T::try_from(secs).map_err(|_| format!("{value:?} is too long"))
}

/// A setting kept in seconds that may have a fraction: a bare number, or the grammar.
fn fractional_seconds(value: &str) -> Result<f64, String> {
    crate::duration::parse(value.trim())
        .map(|d| d.as_secs_f64())
        .map_err(|e| e.to_string())
}

/// A setting kept in whole milliseconds: a bare number of them, or the duration grammar.
fn millis<T: TryFrom<u64>>(value: &str) -> Result<T, String> {
    let ms = crate::duration::whole_millis(value.trim()).map_err(|e| e.to_string())?;
    T::try_from(ms).map_err(|_| format!("{value:?} is too long"))
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect()
}

fn tokens(value: &str) -> Vec<Secret> {
    value.split(',').map(|t| Secret::new(t.trim())).collect()
}

fn ttl_map(value: &str) -> Result<std::collections::BTreeMap<String, u64>, String> {
    list(value)
        .into_iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, secs)) => Ok((name.trim().to_string(), seconds(secs)?)),
            None => Err(format!("expected name=seconds, got {pair:?}")),
        })
        .collect()
}

/// Every setting, in the order of the reference page.
pub const SETTINGS: &[Setting] = &[
    // ── NATS ──
    Setting {
        key: "nats.url",
        env: "SWARM_NATS_URL",
        kind: Kind::UrlList,
        default: Some("nats://127.0.0.1:4222"),
        default_shown: None,
        empty_allowed: false,
        doc: "server URL(s); `nats://user:pass@host:4222` and `tls://` accepted",
        set: |s, v| {
            s.nats.url = SecretUrl::new(v);
            Ok(())
        },
    },
    Setting {
        key: "nats.user",
        env: "SWARM_NATS_USER",
        kind: Kind::Text,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "user to connect as (with `nats.password`), instead of the URL's userinfo",
        set: |s, v| {
            s.nats.user = Some(v.into());
            Ok(())
        },
    },
    Setting {
        key: "nats.password",
        env: "SWARM_NATS_PASSWORD",
        kind: Kind::Secret,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "that user's password",
        set: |s, v| {
            s.nats.password = Some(Secret::new(v));
            Ok(())
        },
    },
    Setting {
        key: "nats.creds_file",
        env: "SWARM_NATS_CREDS",
        kind: Kind::Path,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "NATS credentials file (JWT + NKey)",
        set: |s, v| {
            s.nats.creds_file = Some(v.into());
            Ok(())
        },
    },
    Setting {
        key: "nats.token",
        env: "SWARM_NATS_TOKEN",
        kind: Kind::Secret,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "NATS token",
        set: |s, v| {
            s.nats.token = Some(Secret::new(v));
            Ok(())
        },
    },
    Setting {
        key: "nats.nkey_seed",
        env: "SWARM_NATS_NKEY_SEED",
        kind: Kind::Secret,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "NKey seed (`SU…`) that signs the server's challenge",
        set: |s, v| {
            s.nats.nkey_seed = Some(Secret::new(v));
            Ok(())
        },
    },
    Setting {
        key: "nats.inbox_prefix",
        env: "SWARM_NATS_INBOX_PREFIX",
        kind: Kind::Text,
        default: Some("_INBOX"),
        default_shown: None,
        empty_allowed: false,
        doc: "prefix of this process's reply subjects; `_INBOX.<user>` under the roles of \
              `deploy/nats/roles.conf`, so no one reads replies meant for another (see \
              [SECURITY.md](../SECURITY.md))",
        set: |s, v| {
            s.nats.inbox_prefix = v.into();
            Ok(())
        },
    },
    Setting {
        key: "nats.stream",
        env: "SWARM_STREAM",
        kind: Kind::Text,
        default: Some("SWARM_TASKS"),
        default_shown: None,
        empty_allowed: false,
        doc: "tasks stream name (letters, digits, `_`, `-`)",
        set: |s, v| {
            s.nats.stream = v.into();
            Ok(())
        },
    },
    Setting {
        key: "nats.subject_prefix",
        env: "SWARM_SUBJECT_PREFIX",
        kind: Kind::Text,
        default: Some("swarm"),
        default_shown: None,
        empty_allowed: false,
        doc: "first token(s) of every subject",
        set: |s, v| {
            s.nats.subject_prefix = v.into();
            Ok(())
        },
    },
    Setting {
        key: "nats.consumer_group",
        env: "SWARM_CONSUMER_GROUP",
        kind: Kind::Text,
        default: Some("workers"),
        default_shown: None,
        empty_allowed: false,
        doc: "lane consumers are named `<group>-p<N>-<agent type>`",
        set: |s, v| {
            s.nats.consumer_group = v.into();
            Ok(())
        },
    },
    Setting {
        key: "nats.replicas",
        env: "SWARM_NATS_REPLICAS",
        kind: Kind::Integer,
        default: Some("1"),
        default_shown: None,
        empty_allowed: false,
        doc: "copies of each task in a NATS cluster (3 for a three-node cluster)",
        set: |s, v| {
            s.nats.replicas = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "nats.ack_wait_secs",
        env: "SWARM_ACK_WAIT_SECS",
        kind: Kind::Seconds,
        default: Some("30"),
        default_shown: None,
        empty_allowed: false,
        doc: "lease of a delivered task: unacknowledged this long, it goes to another worker \
              (kept alive while it runs)",
        set: |s, v| {
            s.nats.ack_wait_secs = fractional_seconds(v)?;
            Ok(())
        },
    },
    Setting {
        key: "nats.duplicate_window_secs",
        env: "SWARM_DUPLICATE_WINDOW_SECS",
        kind: Kind::Seconds,
        default: Some("120"),
        default_shown: None,
        empty_allowed: false,
        doc: "a task id published again within this window is dropped by the server as a \
              duplicate",
        set: |s, v| {
            s.nats.duplicate_window_secs = seconds(v)?;
            Ok(())
        },
    },
    Setting {
        key: "nats.max_ack_pending",
        env: "SWARM_MAX_ACK_PENDING",
        kind: Kind::Integer,
        default: Some("20000"),
        default_shown: None,
        empty_allowed: false,
        doc: "most unacknowledged deliveries per lane consumer, across all workers",
        set: |s, v| {
            s.nats.max_ack_pending = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "nats.max_deliver",
        env: "SWARM_MAX_DELIVER",
        kind: Kind::Integer,
        default: Some("110"),
        default_shown: None,
        empty_allowed: false,
        doc: "the server stops delivering a message after this many deliveries: a last \
              resort behind the worker's own poison check (`SWARM_CRASH_ALLOWANCE`)",
        set: |s, v| {
            s.nats.max_deliver = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "nats.lane_expiry_secs",
        env: "SWARM_LANE_EXPIRY_SECS",
        kind: Kind::Seconds,
        default: Some("3600"),
        default_shown: None,
        empty_allowed: false,
        doc: "the server deletes a lane consumer idle this long (agent types that stopped \
              coming, garbage names); workers make it again when tasks return",
        set: |s, v| {
            s.nats.lane_expiry_secs = fractional_seconds(v)?;
            Ok(())
        },
    },
    Setting {
        key: "nats.max_lanes",
        env: "SWARM_MAX_LANES",
        kind: Kind::Integer,
        default: Some("1000"),
        default_shown: None,
        empty_allowed: false,
        doc: "lane consumers one worker creates at most (highest priorities first): \
              producers choose agent types; tasks of further lanes wait, nothing lost, until \
              idle lanes expire, and a warning says so",
        set: |s, v| {
            s.nats.max_lanes = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "nats.announce_outcomes",
        env: "SWARM_ANNOUNCE_OUTCOMES",
        kind: Kind::Bool,
        default: Some("true"),
        default_shown: None,
        empty_allowed: false,
        doc: "workers announce the final outcome of tasks published with `Swarm-Announce: \
              outcome` (the API's `?wait=`, `publish --wait`) on `<prefix>.results.<id>`; \
              off, waiters learn outcomes only at their deadline",
        set: |s, v| {
            s.nats.announce_outcomes = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "nats.claim_check_bytes",
        env: "SWARM_CLAIM_CHECK_BYTES",
        kind: Kind::Bytes,
        default: Some("262144"),
        default_shown: None,
        empty_allowed: false,
        doc: "task data and results whose JSON is larger travel by claim check: put in the \
              Object Store bucket `<stream>_PAYLOADS` (made by `swarmd migrate`, objects \
              kept `SWARM_RETENTION_DAYS`), a reference in the message and the row (see \
              [schemas/README.md](../schemas/README.md#large-data-claim-checks))",
        set: |s, v| {
            s.nats.claim_check_bytes = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "nats.delays",
        env: "SWARM_DELAYS",
        kind: Kind::Choice(&["auto", "stream", "native"]),
        default: Some("auto"),
        default_shown: None,
        empty_allowed: false,
        doc: "where delayed tasks wait: `auto` = the server's message schedules on NATS ≥ \
              2.12 (the tasks stream is made to take them: such a stream cannot refuse new \
              messages or stop taking schedules), the delay stream `<stream>_DELAYED` \
              before; `stream` = always the delay stream; `native` = the server's \
              schedules, refused at start on an older server with the version needed",
        set: |s, v| {
            s.nats.delays = parse(v)?;
            Ok(())
        },
    },
    // ── PostgreSQL ──
    Setting {
        key: "database.url",
        env: "SWARM_DATABASE_URL",
        kind: Kind::Url,
        default: Some("postgres://postgres@127.0.0.1:5432/test"),
        default_shown: None,
        empty_allowed: false,
        doc: "primary database; a loopback host without `sslmode` is reached without TLS \
              (TLS to loopback cost 37 % of the burn-down rate), any other host or an \
              explicit `sslmode` as written",
        set: |s, v| {
            s.database.url = SecretUrl::new(v);
            Ok(())
        },
    },
    Setting {
        key: "database.replica_urls",
        env: "SWARM_REPLICA_URLS",
        kind: Kind::UrlList,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "read replicas, chosen round-robin; reads fall back to the primary when none \
              answers",
        set: |s, v| {
            s.database.replica_urls = list(v).into_iter().map(SecretUrl::new).collect();
            Ok(())
        },
    },
    Setting {
        key: "database.schema",
        env: "SWARM_DATABASE_SCHEMA",
        kind: Kind::Text,
        default: Some("public"),
        default_shown: None,
        empty_allowed: false,
        doc: "schema of the fleet's tables (created if missing)",
        set: |s, v| {
            s.database.schema = v.into();
            Ok(())
        },
    },
    Setting {
        key: "database.profile",
        env: "SWARM_ENVIRONMENT",
        kind: Kind::Choice(&["development", "staging", "production"]),
        default: Some("development"),
        default_shown: None,
        empty_allowed: false,
        doc: "pool profile, as the seed's `DatabaseConfig`: development 5 + 10 overflow \
              connections, 20 s wait; staging 10 + 20, 30 s; production 20 + 40, 60 s, \
              recycled after 900 s; replicas get three quarters",
        set: |s, v| {
            s.database.profile = v.into();
            Ok(())
        },
    },
    Setting {
        key: "database.max_connections",
        env: "SWARM_DATABASE_MAX_CONNECTIONS",
        kind: Kind::Integer,
        default: None,
        default_shown: Some("from the profile"),
        empty_allowed: false,
        doc: "most connections per pool",
        set: |s, v| {
            s.database.max_connections = Some(parse(v)?);
            Ok(())
        },
    },
    Setting {
        key: "database.acquire_timeout_secs",
        env: "SWARM_DATABASE_ACQUIRE_TIMEOUT_SECS",
        kind: Kind::Seconds,
        default: None,
        default_shown: Some("from the profile"),
        empty_allowed: false,
        doc: "longest wait for a free connection",
        set: |s, v| {
            s.database.acquire_timeout_secs = Some(seconds(v)?);
            Ok(())
        },
    },
    Setting {
        key: "database.max_lifetime_secs",
        env: "SWARM_DATABASE_MAX_LIFETIME_SECS",
        kind: Kind::Seconds,
        default: None,
        default_shown: Some("from the profile"),
        empty_allowed: false,
        doc: "a connection is replaced after this long",
        set: |s, v| {
            s.database.max_lifetime_secs = Some(seconds(v)?);
            Ok(())
        },
    },
    Setting {
        key: "database.migrate_on_start",
        env: "SWARM_MIGRATE_ON_START",
        kind: Kind::Bool,
        default: Some("true"),
        default_shown: None,
        empty_allowed: false,
        doc: "`swarmd worker` applies the embedded migrations at start",
        set: |s, v| {
            s.database.migrate_on_start = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "database.retention_days",
        env: "SWARM_RETENTION_DAYS",
        kind: Kind::Integer,
        default: Some("7"),
        default_shown: None,
        empty_allowed: false,
        doc: "finished tasks (rows and the legacy `completed_tasks` / `failed_tasks` \
              entries) are removed this many days after they finished, a day's partition \
              at a time, by workers once an hour and by `swarmd prune`; `0` keeps \
              everything; unfinished tasks are never removed (see \
              [Retention](operations.md#retention))",
        set: |s, v| {
            s.database.retention_days = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "database.search_index",
        env: "SWARM_SEARCH_INDEX",
        kind: Kind::Bool,
        default: Some("false"),
        default_shown: None,
        empty_allowed: false,
        doc: "index task searches (`GET /v1/tasks?contains=` / `?q=`, the dashboard): a GIN \
              over `data` and a trigram GIN (it creates the `pg_trgm` extension: the \
              database user must be allowed to) over data, result and last error, made by \
              `swarmd migrate` and workers at start; costs every row write (17 % of the \
              burn-down rate here); to remove: `DROP INDEX tasks_data_search, \
              tasks_text_search`",
        set: |s, v| {
            s.database.search_index = parse(v)?;
            Ok(())
        },
    },
    // ── Redis ──
    Setting {
        key: "redis.url",
        env: "SWARM_REDIS_URL",
        kind: Kind::Url,
        default: Some("redis://127.0.0.1:6379"),
        default_shown: None,
        empty_allowed: false,
        doc: "legacy queue mirror, legacy intake and result cache; `rediss://` for TLS",
        set: |s, v| {
            s.redis.url = SecretUrl::new(v);
            Ok(())
        },
    },
    Setting {
        key: "redis.key_prefix",
        env: "SWARM_REDIS_PREFIX",
        kind: Kind::Text,
        default: None,
        default_shown: Some("none: the seed's bare names"),
        empty_allowed: false,
        doc: "prepended to every Redis key (`agent_tasks` becomes `<prefix>agent_tasks`)",
        set: |s, v| {
            s.redis.key_prefix = v.into();
            Ok(())
        },
    },
    Setting {
        key: "redis.mirror",
        env: "SWARM_MIRROR",
        kind: Kind::Bool,
        default: Some("true"),
        default_shown: None,
        empty_allowed: false,
        doc: "keep the legacy keys (`agent_tasks`, `processing_tasks`, …) up to date",
        set: |s, v| {
            s.redis.mirror = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "redis.intake",
        env: "SWARM_LEGACY_INTAKE",
        kind: Kind::Bool,
        default: Some("true"),
        default_shown: None,
        empty_allowed: false,
        doc: "take in tasks legacy producers `ZADD` to `agent_tasks`",
        set: |s, v| {
            s.redis.intake = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "redis.intake_interval_ms",
        env: "SWARM_LEGACY_INTAKE_INTERVAL_MS",
        kind: Kind::Millis,
        default: Some("100"),
        default_shown: None,
        empty_allowed: false,
        doc: "pause between looks for legacy tasks when the last look found none",
        set: |s, v| {
            s.redis.intake_interval_ms = millis(v)?;
            Ok(())
        },
    },
    Setting {
        key: "redis.legacy_consumers",
        env: "SWARM_LEGACY_CONSUMERS",
        kind: Kind::Bool,
        default: Some("false"),
        default_shown: None,
        empty_allowed: false,
        doc: "the seed's `dequeue_task` loop runs beside the fleet: `agent_tasks` then holds \
              only legacy producers' members not yet taken (the fleet's waiting tasks are \
              shown nowhere), so each task runs on one side only",
        set: |s, v| {
            s.redis.legacy_consumers = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "redis.cache",
        env: "SWARM_RESULT_CACHE",
        kind: Kind::Bool,
        default: Some("true"),
        default_shown: None,
        empty_allowed: false,
        doc: "cache the results of cacheable agents",
        set: |s, v| {
            s.redis.cache = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "redis.cache_url",
        env: "SWARM_CACHE_REDIS_URL",
        kind: Kind::UrlList,
        default: None,
        default_shown: Some("`redis.url`"),
        empty_allowed: false,
        doc: "the result cache on a Redis of its own: one URL, or a Redis Cluster's nodes \
              with `redis.cache_cluster`",
        set: |s, v| {
            s.redis.cache_url = Some(SecretUrl::new(v));
            Ok(())
        },
    },
    Setting {
        key: "redis.cache_cluster",
        env: "SWARM_CACHE_REDIS_CLUSTER",
        kind: Kind::Bool,
        default: Some("false"),
        default_shown: None,
        empty_allowed: false,
        doc: "the cache's server is a Redis Cluster (the seed's `DistributedCache`). Only \
              the cache may be: the legacy queue's scripts update several fixed keys at \
              once, which a cluster refuses across slots, and hash tags would rename the \
              keys legacy tools read",
        set: |s, v| {
            s.redis.cache_cluster = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "redis.cache_ttl_secs",
        env: "SWARM_CACHE_TTL_SECS",
        kind: Kind::Map,
        default: None,
        default_shown: Some("each agent's own"),
        empty_allowed: false,
        doc: "result-cache lifetime per agent type in seconds (`email=60,review=600`; in the \
              file a table), overriding the agent's own",
        set: |s, v| {
            s.redis.cache_ttl_secs = ttl_map(v)?;
            Ok(())
        },
    },
    // ── Worker ──
    Setting {
        key: "worker.concurrency",
        env: "SWARM_CONCURRENCY",
        kind: Kind::CountOrAuto,
        default: Some("auto"),
        default_shown: None,
        empty_allowed: false,
        doc: "tasks one worker process runs at once; `auto`: 128 per core, capped by memory \
              (4 MiB per task), 8–1024 (256 on a 2-core box). CPU-bound agents share two \
              permits per core whatever the slots",
        set: |s, v| {
            s.worker.concurrency = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.agents",
        env: "SWARM_WORKER_AGENTS",
        kind: Kind::List,
        default: None,
        default_shown: Some("all"),
        empty_allowed: false,
        doc: "a dedicated pool: only these agent types (`--agents`)",
        set: |s, v| {
            s.worker.agents = list(v);
            Ok(())
        },
    },
    Setting {
        key: "worker.exclude_agents",
        env: "SWARM_WORKER_EXCLUDE_AGENTS",
        kind: Kind::List,
        default: None,
        default_shown: Some("none"),
        empty_allowed: false,
        doc: "the general pool beside dedicated ones: all agent types but these \
              (`--exclude-agents`)",
        set: |s, v| {
            s.worker.exclude_agents = list(v);
            Ok(())
        },
    },
    Setting {
        key: "worker.fetch_batch",
        env: "SWARM_FETCH_BATCH",
        kind: Kind::Integer,
        default: Some("256"),
        default_shown: None,
        empty_allowed: false,
        doc: "most messages one pull takes (never more than the free slots); measured \
              2026-11-30: two workers burn down 22,100–24,300 tasks/s with 256, \
              19,500–21,300 with 64",
        set: |s, v| {
            s.worker.fetch_batch = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.commit_batch",
        env: "SWARM_COMMIT_BATCH",
        kind: Kind::Integer,
        default: Some("256"),
        default_shown: None,
        empty_allowed: false,
        doc: "most outcomes one database transaction stores",
        set: |s, v| {
            s.worker.commit_batch = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.commit_linger_ms",
        env: "SWARM_COMMIT_LINGER_MS",
        kind: Kind::Millis,
        default: Some("2"),
        default_shown: None,
        empty_allowed: false,
        doc: "an outcome may wait this long for others to share its commit",
        set: |s, v| {
            s.worker.commit_linger_ms = millis(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.commit_parallelism",
        env: "SWARM_COMMIT_PARALLELISM",
        kind: Kind::Integer,
        default: Some("2"),
        default_shown: None,
        empty_allowed: false,
        doc: "commit transactions that may run at once",
        set: |s, v| {
            s.worker.commit_parallelism = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.default_timeout_secs",
        env: "SWARM_DEFAULT_TIMEOUT_SECS",
        kind: Kind::Seconds,
        default: Some("300"),
        default_shown: None,
        empty_allowed: false,
        doc: "how long a task may run when its envelope sets no `timeout` (the seed's 300)",
        set: |s, v| {
            s.worker.default_timeout_secs = fractional_seconds(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.shutdown_grace_secs",
        env: "SWARM_SHUTDOWN_GRACE_SECS",
        kind: Kind::Seconds,
        default: Some("25"),
        default_shown: None,
        empty_allowed: false,
        doc: "in-flight work and pending commits may finish this long after SIGTERM",
        set: |s, v| {
            s.worker.shutdown_grace_secs = fractional_seconds(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.cancel_grace_secs",
        env: "SWARM_CANCEL_GRACE_SECS",
        kind: Kind::Seconds,
        default: Some("5"),
        default_shown: None,
        empty_allowed: false,
        doc: "a running agent told of its task's cancellation may take this long to stop; \
              then its attempt is abandoned (the task ends `cancelled` either way)",
        set: |s, v| {
            s.worker.cancel_grace_secs = fractional_seconds(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.id",
        env: "SWARM_WORKER_ID",
        kind: Kind::Text,
        default: None,
        default_shown: Some("`<host>-<pid>`"),
        empty_allowed: false,
        doc: "written with each result and attempt",
        set: |s, v| {
            s.worker.id = Some(v.into());
            Ok(())
        },
    },
    Setting {
        key: "worker.retry_base_ms",
        env: "SWARM_RETRY_BASE_MS",
        kind: Kind::Millis,
        default: Some("2000"),
        default_shown: None,
        empty_allowed: false,
        doc: "delay before the second attempt (the seed's 2 s)",
        set: |s, v| {
            s.worker.retry_base_ms = millis(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.retry_factor",
        env: "SWARM_RETRY_FACTOR",
        kind: Kind::Number,
        default: Some("2"),
        default_shown: None,
        empty_allowed: false,
        doc: "each further attempt waits this many times longer (2, 4, 8 s …)",
        set: |s, v| {
            s.worker.retry_factor = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.retry_max_ms",
        env: "SWARM_RETRY_MAX_MS",
        kind: Kind::Millis,
        default: Some("300000"),
        default_shown: None,
        empty_allowed: false,
        doc: "longest delay between attempts",
        set: |s, v| {
            s.worker.retry_max_ms = millis(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.retry_jitter",
        env: "SWARM_RETRY_JITTER",
        kind: Kind::Number,
        default: Some("0.2"),
        default_shown: None,
        empty_allowed: false,
        doc: "random spread of each delay, as a fraction (0.2 = ±20 %)",
        set: |s, v| {
            s.worker.retry_jitter = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.max_payload_bytes",
        env: "SWARM_MAX_PAYLOAD_BYTES",
        kind: Kind::Bytes,
        default: Some("1048576"),
        default_shown: None,
        empty_allowed: false,
        doc: "larger task bodies are dead-lettered",
        set: |s, v| {
            s.worker.max_payload_bytes = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.max_result_bytes",
        env: "SWARM_MAX_RESULT_BYTES",
        kind: Kind::Bytes,
        default: Some("67108864"),
        default_shown: None,
        empty_allowed: false,
        doc: "a larger agent result fails its task for good; results over \
              `SWARM_CLAIM_CHECK_BYTES` go to the Object Store, not the row",
        set: |s, v| {
            s.worker.max_result_bytes = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.crash_allowance",
        env: "SWARM_CRASH_ALLOWANCE",
        kind: Kind::Integer,
        default: Some("2"),
        default_shown: None,
        empty_allowed: false,
        doc: "deliveries that may end without an outcome (the worker crashed or hung) beyond \
              `max_attempts` before a task is dead-lettered as poison",
        set: |s, v| {
            s.worker.crash_allowance = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.metrics_addr",
        env: "SWARM_METRICS_ADDR",
        kind: Kind::Text,
        default: Some("0.0.0.0:9464"),
        default_shown: None,
        empty_allowed: true,
        doc: "where a worker serves `/metrics`, `/health`, `/ready`, `/scale`; empty turns \
              it off",
        set: |s, v| {
            s.worker.metrics_addr = v.into();
            Ok(())
        },
    },
    Setting {
        key: "worker.idle_rescan_ms",
        env: "SWARM_IDLE_RESCAN_MS",
        kind: Kind::Millis,
        default: Some("500"),
        default_shown: None,
        empty_allowed: false,
        doc: "an idle worker rescans its lanes this often for redeliveries (new publishes \
              wake it at once)",
        set: |s, v| {
            s.worker.idle_rescan_ms = millis(v)?;
            Ok(())
        },
    },
    Setting {
        key: "worker.stall_after_secs",
        env: "SWARM_STALL_AFTER_SECS",
        kind: Kind::Seconds,
        default: Some("120"),
        default_shown: None,
        empty_allowed: false,
        doc: "a batch held through a transient fault, or a pull loop still with free slots, \
              this long makes `/ready` answer 503 (so an orchestrator restarts the worker)",
        set: |s, v| {
            s.worker.stall_after_secs = fractional_seconds(v)?;
            Ok(())
        },
    },
    // ── HTTP API ──
    Setting {
        key: "api.addr",
        env: "SWARM_API_ADDR",
        kind: Kind::Text,
        default: Some("0.0.0.0:8080"),
        default_shown: None,
        empty_allowed: false,
        doc: "HTTP API listen address",
        set: |s, v| {
            s.api.addr = v.into();
            Ok(())
        },
    },
    Setting {
        key: "api.write_tokens",
        env: "SWARM_API_TOKEN",
        kind: Kind::SecretList,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "bearer tokens that may publish, replay and cancel (and read); several allow \
              rotation; without any token the API refuses to start",
        set: |s, v| {
            s.api.write_tokens = tokens(v);
            Ok(())
        },
    },
    Setting {
        key: "api.write_token_file",
        env: "SWARM_API_TOKEN_FILE",
        kind: Kind::Path,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "write tokens from a file, one per line (`#` comments and blank lines ignored), \
              as a mounted Kubernetes secret",
        set: |s, v| {
            s.api.write_token_file = Some(v.into());
            Ok(())
        },
    },
    Setting {
        key: "api.read_tokens",
        env: "SWARM_API_READ_TOKENS",
        kind: Kind::SecretList,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "bearer tokens that may only read (tasks, queues, dead letters, scale, metrics)",
        set: |s, v| {
            s.api.read_tokens = tokens(v);
            Ok(())
        },
    },
    Setting {
        key: "api.read_token_file",
        env: "SWARM_API_READ_TOKEN_FILE",
        kind: Kind::Path,
        default: None,
        default_shown: None,
        empty_allowed: false,
        doc: "read tokens from a file, one per line",
        set: |s, v| {
            s.api.read_token_file = Some(v.into());
            Ok(())
        },
    },
    Setting {
        key: "api.insecure_no_auth",
        env: "SWARM_API_INSECURE_NO_AUTH",
        kind: Kind::Bool,
        default: Some("false"),
        default_shown: None,
        empty_allowed: false,
        doc: "serve without authentication (local experiments only; said at start and in \
              `/health`; `swarmd api --insecure-no-auth`)",
        set: |s, v| {
            s.api.insecure_no_auth = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "api.request_timeout_secs",
        env: "SWARM_API_REQUEST_TIMEOUT_SECS",
        kind: Kind::Seconds,
        default: Some("30"),
        default_shown: None,
        empty_allowed: false,
        doc: "a request not answered within this long gets 503",
        set: |s, v| {
            s.api.request_timeout_secs = fractional_seconds(v)?;
            Ok(())
        },
    },
    Setting {
        key: "api.max_wait_secs",
        env: "SWARM_API_MAX_WAIT_SECS",
        kind: Kind::Seconds,
        default: Some("60"),
        default_shown: None,
        empty_allowed: false,
        doc: "longest `?wait=` honoured (longer ones are cut to it); such a request may take \
              this much longer than the request timeout",
        set: |s, v| {
            s.api.max_wait_secs = fractional_seconds(v)?;
            Ok(())
        },
    },
    Setting {
        key: "api.max_concurrent_requests",
        env: "SWARM_API_MAX_CONCURRENT_REQUESTS",
        kind: Kind::Integer,
        default: Some("512"),
        default_shown: None,
        empty_allowed: false,
        doc: "requests served at once; beyond, 503 at once (load shed)",
        set: |s, v| {
            s.api.max_concurrent_requests = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "api.rate_limit_per_sec",
        env: "SWARM_API_RATE_LIMIT",
        kind: Kind::Number,
        default: Some("200"),
        default_shown: None,
        empty_allowed: false,
        doc: "requests per second one token may make (bursts of twice as many); beyond, 429 \
              with `Retry-After`; `0` turns the limit off",
        set: |s, v| {
            s.api.rate_limit_per_sec = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "api.trace_url",
        env: "SWARM_UI_TRACE_URL",
        kind: Kind::Text,
        default: Some(DEFAULT_TRACE_URL),
        default_shown: None,
        empty_allowed: true,
        doc: "where the dashboard links a task's trace id (`{trace_id}` replaced; Jaeger's \
              page by default); empty shows the id unlinked",
        set: |s, v| {
            s.api.trace_url = v.into();
            Ok(())
        },
    },
    // ── Scale signals ──
    Setting {
        key: "scale.cpu_percent",
        env: "SWARM_SCALE_CPU_PERCENT",
        kind: Kind::Number,
        default: Some("70"),
        default_shown: None,
        empty_allowed: false,
        doc: "CPU use above which the scale signals say up; below half of it, down",
        set: |s, v| {
            s.scale.cpu_percent = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "scale.memory_percent",
        env: "SWARM_SCALE_MEMORY_PERCENT",
        kind: Kind::Number,
        default: Some("80"),
        default_shown: None,
        empty_allowed: false,
        doc: "memory use above which the scale signals say up; below half of it, down",
        set: |s, v| {
            s.scale.memory_percent = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "scale.backlog_per_worker",
        env: "SWARM_SCALE_BACKLOG_PER_WORKER",
        kind: Kind::Number,
        default: Some("1000"),
        default_shown: None,
        empty_allowed: false,
        doc: "waiting tasks per live worker above which to scale up; below half of it, down",
        set: |s, v| {
            s.scale.backlog_per_worker = parse(v)?;
            Ok(())
        },
    },
    Setting {
        key: "scale.oldest_pending_secs",
        env: "SWARM_SCALE_OLDEST_PENDING_SECS",
        kind: Kind::Seconds,
        default: Some("60"),
        default_shown: None,
        empty_allowed: false,
        doc: "age of the oldest waiting task above which to scale up",
        set: |s, v| {
            s.scale.oldest_pending_secs = fractional_seconds(v)?;
            Ok(())
        },
    },
];

/// The setting stored at a TOML key (`nats.url`).
pub fn by_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.key == key)
}

/// The default trace link (Jaeger's trace page), for code that builds `ApiSettings` by hand.
pub const DEFAULT_TRACE_URL: &str = "http://localhost:16686/trace/{trace_id}";
