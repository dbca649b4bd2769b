//! `swarmd` subcommands, one per file, and the dispatcher.

mod api;
mod bench;
mod cancel;
mod demo;
mod dlq;
mod migrate;
mod mirror;
mod processes;
mod prune;
mod publish;
mod schedule;
mod status;
mod worker;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Settings;

/// SwarmDirector: a distributed task fleet over NATS JetStream, PostgreSQL and Redis.
///
/// Every command reads its settings from built-in defaults, then the optional config file,
/// then SWARM_* environment variables (SWARM_NATS_URL, SWARM_DATABASE_URL, SWARM_REDIS_URL,
/// SWARM_STREAM, SWARM_SUBJECT_PREFIX, ...). See docs/configuration.md for the full list.
#[derive(Debug, Parser)]
#[command(name = "swarmd", version, propagate_version = true)]
pub struct Cli {
    /// TOML settings file (sections [nats], [database], [redis], [worker], [api], [scale]).
    #[arg(long, short = 'c', global = true, env = "SWARM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `warn`, `info` or `info,swarm_director=debug` (tracing's env-filter
    /// syntax); at `info` each NATS connection says one line, at `warn` nothing but trouble.
    #[arg(long, global = true, env = "SWARM_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "SWARM_LOG_JSON")]
    pub log_json: bool,
    /// Export traces over OTLP/HTTP to this base URL (e.g. http://localhost:4318).
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker: pull tasks highest priority first, run agents, commit results.
    Worker(worker::Args),
    /// Serve the HTTP API: publish tasks, read their status.
    Api(api::Args),
    /// Publish one task, or many from a JSON-lines file.
    Publish(publish::Args),
    /// Show pending tasks per priority, consumers and recent results.
    Status(status::Args),
    /// Start a small fleet, publish a mix of tasks and print a summary.
    Demo(demo::Args),
    /// Measure enqueue rate, burn-down rate, latency, CPU and memory of a worker fleet.
    Bench(bench::Args),
    /// Cancel tasks: by id, or every unfinished one of an agent type.
    Cancel(cancel::Args),
    /// Inspect, replay and purge dead letters.
    Dlq(dlq::Args),
    /// Apply the database migrations and exit.
    Migrate,
    /// Check the legacy Redis keys against PostgreSQL, or rebuild them.
    Mirror(mirror::Args),
    /// Remove finished tasks older than the retention period (workers do it hourly).
    Prune(prune::Args),
    /// Periodic tasks: add, list, remove, pause, resume, trigger.
    Schedule(schedule::Args),
}

/// Sets up logs and traces from the command line; call once, before `run`, inside the
/// runtime. Keep the returned guard alive: dropping it flushes the spans.
pub fn init_telemetry(cli: &Cli) -> anyhow::Result<crate::telemetry::Telemetry> {
    // The demo's summary is its output: its workers' logs go to a file it names.
    let log_file = match &cli.command {
        Command::Demo(args) => {
            let path = args.log_file();
            Some(
                std::fs::File::create(&path)
                    .with_context(|| format!("creating the log file {}", path.display()))?,
            )
        }
        _ => None,
    };
    crate::telemetry::init(
        &cli.log,
        cli.log_json,
        cli.otlp_endpoint.as_deref(),
        log_file,
    )
    .context("setting up tracing")
}

/// The async runtime a command runs on: one thread per core, unless
/// `SWARM_RUNTIME_THREADS` says how many (`1`: everything on one thread). Several worker
/// processes started together on one host (`swarmd worker --processes N`, `swarmd bench`)
/// share the cores out: each gets cores / N, and one thread per process measured 24 % more
/// tasks/s than two per process on two cores (docs/performance.md) — fewer hand-offs of a
/// message between threads.
///
/// Fails when the variable is not a number or the runtime cannot start.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads = runtime_threads(std::env::var(RUNTIME_THREADS).ok())?;
    let mut builder = match threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n @ 2..) = threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

/// The thread count `SWARM_RUNTIME_THREADS` asks for; `None` when unset or empty.
fn runtime_threads(value: Option<String>) -> std::io::Result<Option<usize>> {
    match value {
        Some(text) if !text.trim().is_empty() => text.trim().parse().map(Some).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{RUNTIME_THREADS}={text:?} is not a number of threads"),
            )
        }),
        _ => Ok(None),
    }
}

/// Names the async runtime's thread count of a `swarmd` process.
pub const RUNTIME_THREADS: &str = "SWARM_RUNTIME_THREADS";

/// The runtime threads each of `processes` worker processes on this host gets: what
/// `SWARM_RUNTIME_THREADS` says when it is set, else an equal share of the cores.
pub fn threads_per_process(processes: usize) -> usize {
    runtime_threads(std::env::var(RUNTIME_THREADS).ok())
        .ok()
        .flatten()
        .unwrap_or_else(|| share_of_cores(crate::scale::available_cores(), processes))
}

/// `cores` shared out between `processes`, at least one thread each.
fn share_of_cores(cores: usize, processes: usize) -> usize {
    (cores / processes.max(1)).max(1)
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    match cli.command {
        Command::Worker(args) => worker::run(settings, args).await,
        Command::Publish(args) => publish::run(settings, args).await,
        Command::Api(args) => api::run(settings, args).await,
        Command::Status(args) => status::run(settings, args).await,
        Command::Demo(args) => demo::run(settings, args).await,
        Command::Bench(args) => bench::run(settings, args).await,
        Command::Cancel(args) => cancel::run(settings, args).await,
        Command::Dlq(args) => dlq::run(settings, args).await,
        Command::Migrate => migrate::run(settings).await,
        Command::Mirror(args) => mirror::run(settings, args).await,
        Command::Prune(args) => prune::run(settings, args).await,
        Command::Schedule(args) => schedule::run(settings, args).await,
    }
}

/// The primary database (migrated when `migrate`) and the broker with its tasks stream.
async fn connect_fleet(
    settings: &Settings,
    migrate: bool,
) -> anyhow::Result<(crate::store::Store, crate::broker::Broker)> {
    let store = crate::store::Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    if migrate {
        store.migrate().await.context("applying migrations")?;
        if settings.database.search_index {
            store
                .ensure_search_index()
                .await
                .context("creating the search index")?;
        }
    }
    Ok((store, connect_broker(settings).await?))
}

/// How long claim-check objects are kept: as long as the rows pointing at them.
fn payload_max_age(settings: &Settings) -> Option<std::time::Duration> {
    settings
        .database
        .retention()
        .and_then(|age| age.to_std().ok())
}

/// The broker, with the tasks stream created or brought to the settings.
async fn connect_broker(settings: &Settings) -> anyhow::Result<crate::broker::Broker> {
    let broker = crate::broker::Broker::connect(&settings.nats)
        .await
        .context("connecting to NATS")?;
    broker
        .ensure_stream()
        .await
        .context("setting up the tasks stream")?;
    if let Err(error) = broker.ensure_payloads(payload_max_age(settings)).await {
        // Only large payloads need it; a role that may not create it (a publisher, a
        // worker) finds it made by `swarmd migrate`, or fails such a task clearly.
        tracing::debug!(%error, "cannot set up the claim-check bucket");
    }
    Ok(broker)
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received: shutting down"),
        _ = terminate => tracing::info!("SIGTERM received: shutting down"),
    }
}

/// `error`'s chain of causes, each said once: library errors name their source in their
/// own message, so a cause already said is not repeated.
pub fn error_report(error: &anyhow::Error) -> String {
    let mut report = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if report.contains(&text) {
            continue;
        }
        if !report.is_empty() {
            report.push_str(": ");
        }
        report.push_str(&text);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_threads_are_read_and_shared_out_between_processes() {
        assert_eq!(runtime_threads(None).unwrap(), None);
        assert_eq!(runtime_threads(Some(" ".into())).unwrap(), None);
        assert_eq!(runtime_threads(Some("1".into())).unwrap(), Some(1));
        let refused = runtime_threads(Some("many".into())).unwrap_err();
        assert!(
            refused.to_string().contains("SWARM_RUNTIME_THREADS"),
            "{refused}"
        );
        assert_eq!(share_of_cores(2, 1), 2);
        assert_eq!(share_of_cores(2, 2), 1);
        assert_eq!(share_of_cores(8, 3), 2);
        assert_eq!(share_of_cores(2, 8), 1, "never fewer than one");
        assert_eq!(share_of_cores(4, 0), 4);
    }

    #[test]
    fn the_config_flag_names_every_section_of_the_settings_file() {
        use clap::CommandFactory as _;
        let command = Cli::command();
        let help = command
            .get_arguments()
            .find(|arg| arg.get_id() == "config")
            .and_then(|arg| arg.get_help())
            .expect("--config has help")
            .to_string();
        for setting in crate::config::table::SETTINGS {
            let section = setting.key.split('.').next().unwrap();
            assert!(help.contains(&format!("[{section}]")), "{section}: {help}");
        }
    }

    #[test]
    fn an_error_report_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect: {0}")]
        struct Outer(#[source] std::io::Error);
        let inner = std::io::Error::other("no such database");
        let error = anyhow::Error::new(Outer(inner)).context("connecting to PostgreSQL");
        assert_eq!(
            error_report(&error),
            "connecting to PostgreSQL: cannot connect: no such database"
        );
    }
}
