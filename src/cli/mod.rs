//! `swarmd` subcommands, one per file, and the dispatcher.

mod api;
mod bench;
mod cancel;
mod demo;
mod dlq;
mod migrate;
mod mirror;
mod prune;
mod publish;
mod schedule;
mod status;
mod worker;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Settings;
// Shared by the commands below (`super::connect_fleet` …).
use crate::fleet::connect::{connect_broker, connect_fleet, payload_max_age, shutdown_signal};
pub use crate::fleet::threads::runtime;

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
