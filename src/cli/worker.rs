//! `swarmd worker`: run one worker process until ctrl-c or SIGTERM.

use crate::{
    agent::builtin::CrashAgent,
    config::{Concurrency, Settings},
    fleet::{self, Fleet},
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
    settings.redis.mirror &= !args.no_mirror;
    settings.redis.intake &= !args.no_intake;
    settings.redis.cache &= !args.no_cache;
    let migrate = settings.database.migrate_on_start && !args.no_migrate;
    let mut fleet = Fleet::from_settings(settings)?
        .processes(args.processes)
        .migrate(migrate);
    if args.enable_crash_agent {
        tracing::warn!("the crash agent is enabled: a `crash` task aborts this process");
        fleet = fleet.agent(CrashAgent);
    }
    fleet.run(fleet::shutdown_signal()).await?;
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
