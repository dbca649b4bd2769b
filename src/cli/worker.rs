//! `swarmd worker`: run one worker process until ctrl-c or SIGTERM.

use std::time::Duration;

use anyhow::Context;

use crate::{
    agent::{AgentRegistry, builtin::CrashAgent},
    config::{Concurrency, Settings},
    http,
    task::AgentFilter,
    worker,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tasks run at once, or `auto` to size from the cores and memory (overrides
    /// SWARM_CONCURRENCY / worker.concurrency).
    #[arg(long)]
    concurrency: Option<Concurrency>,
    /// Take only these agent types (comma-separated): a dedicated pool. Overrides
    /// SWARM_WORKER_AGENTS.
    #[arg(long, value_delimiter = ',', conflicts_with = "exclude_agents")]
    agents: Option<Vec<String>>,
    /// Take every agent type but these, left to dedicated pools. Overrides
    /// SWARM_WORKER_EXCLUDE_AGENTS.
    #[arg(long, value_delimiter = ',')]
    exclude_agents: Option<Vec<String>>,
    /// Do not apply migrations at start-up.
    #[arg(long)]
    no_migrate: bool,
    /// Do not keep the legacy Redis keys up to date.
    #[arg(long)]
    no_mirror: bool,
    /// Do not take in tasks that legacy producers add to `agent_tasks`.
    #[arg(long)]
    no_intake: bool,
    /// Do not use the Redis result cache.
    #[arg(long)]
    no_cache: bool,
    /// Run this many worker processes under one supervisor, or `auto`: one per core (at
    /// most one per GiB of memory). With one, this process is the worker.
    #[arg(long, env = "SWARM_WORKER_PROCESSES", default_value = "auto", value_parser = parse_processes)]
    processes: usize,
    /// Register the `crash` agent, which aborts this process: for fault drills only.
    #[arg(long, env = "SWARM_ENABLE_CRASH_AGENT")]
    enable_crash_agent: bool,
}

pub async fn run(mut settings: Settings, args: Args) -> anyhow::Result<()> {
    if let Some(concurrency) = args.concurrency {
        settings.worker.concurrency = concurrency;
    }
    if let Some(agents) = args.agents {
        (settings.worker.agents, settings.worker.exclude_agents) = (agents, Vec::new());
    }
    if let Some(excluded) = args.exclude_agents {
        (settings.worker.agents, settings.worker.exclude_agents) = (Vec::new(), excluded);
    }
    let agents = settings.worker.agent_filter()?;

    let mut registry = AgentRegistry::with_builtins()
        .with_declared(&settings.agents, settings.worker.max_result_bytes)
        .map_err(anyhow::Error::msg)?;
    if args.enable_crash_agent {
        tracing::warn!("the crash agent is enabled: a `crash` task aborts this process");
        registry = registry.with(CrashAgent);
    }
    if let AgentFilter::Only(_) = &agents {
        let unknown: Vec<&str> = agents
            .named()
            .filter(|a| registry.get(a).is_none())
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = registry.names().collect();
            anyhow::bail!(
                "--agents names unknown agent types {unknown:?}; built-in and declared agents: {known:?}"
            );
        }
    }
    if args.processes > 1 {
        return super::processes::supervise(args.processes, &settings).await;
    }
    let migrate = settings.database.migrate_on_start && !args.no_migrate;
    let (store, broker) = super::connect_fleet(&settings, migrate).await?;
    settings.redis.mirror &= !args.no_mirror;
    settings.redis.intake &= !args.no_intake;
    settings.redis.cache &= !args.no_cache;
    let fleet = worker::assemble(&settings, broker.clone(), store.clone(), registry)
        .context("setting up the legacy Redis side")?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let metrics_addr = settings.worker.metrics_addr.clone();
    if !metrics_addr.is_empty() {
        let stopped = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        let probes = http::probes::Probes {
            broker,
            store,
            // The mirror rides out Redis outages; a worker is ready without it.
            redis: None,
            meter: fleet.worker.scale_meter(),
            liveness: Some(fleet.worker.liveness()),
        };
        match http::serve(&metrics_addr, http::probes::worker_router(probes), stopped).await {
            Ok((bound, _)) => tracing::info!("metrics, /ready and /scale on http://{bound}"),
            // Another worker on this machine may hold the port: work on without it.
            Err(error) => tracing::warn!(%error, addr = %metrics_addr, "metrics endpoint off"),
        }
    }
    let ran = fleet
        .run(
            async {
                tokio::select! {
                    _ = super::shutdown_signal() => {}
                    _ = super::processes::supervisor_gone() => {}
                }
            },
            Duration::from_secs(5),
        )
        .await
        .context("running the worker");
    let _ = stop_tx.send(true);
    ran?;
    Ok(())
}

fn parse_processes(value: &str) -> Result<usize, String> {
    match value {
        "auto" => Ok(crate::scale::optimal_worker_processes(
            crate::scale::available_cores(),
            crate::scale::available_memory_bytes(),
        )),
        _ => match value.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "{value:?} is neither a positive number nor \"auto\""
            )),
        },
    }
}
