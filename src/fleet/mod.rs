//! A whole worker process, as `swarmd worker` runs it and as a program of the user's embeds
//! it with agents of its own:
//!
//! ```no_run
//! # use swarm_director::{agent::builtin::EchoAgent, config::Settings, fleet::Fleet};
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! Fleet::from_settings(Settings::load(None)?)?
//!     .agent(EchoAgent) // any `impl Agent`: it replaces one of the same name
//!     .run(swarm_director::fleet::shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! It migrates (unless told not to), sets up the streams, runs the worker with everything
//! its settings enable — the legacy mirror and intake, the result cache, the pools of
//! `worker.agents` — serves metrics, `/ready` and `/scale` on `worker.metrics_addr`, and
//! drains on shutdown. With [`Fleet::processes`] above one it supervises that many copies
//! of the running program instead, each a worker ([`supervisor`]).
//!
//! - [`connect`]: the services, and ctrl-c / SIGTERM;
//! - [`supervisor`]: several worker processes on one host;
//! - [`threads`]: the async runtime, and the cores shared out between processes.

pub mod connect;
pub mod supervisor;
pub mod threads;

use std::time::Duration;

pub use connect::shutdown_signal;

use crate::{
    agent::{Agent, AgentRegistry},
    config::Settings,
    http,
    task::AgentFilter,
    worker,
};

/// How long the legacy mirror may take to write what it holds at the end.
const MIRROR_FLUSH: Duration = Duration::from_secs(5);

/// Why a fleet process could not run.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Agents(String),
    #[error(
        "the worker pool names agent types no agent serves: {unknown:?}; built-in and declared agents: {known:?}"
    )]
    UnknownAgents {
        unknown: Vec<String>,
        known: Vec<String>,
    },
    #[error(transparent)]
    Setup(#[from] anyhow::Error),
    #[error("setting up the legacy Redis side: {0}")]
    Legacy(#[from] crate::mirror::MirrorError),
    #[error("running the worker: {0}")]
    Worker(#[from] worker::WorkerError),
}

/// A worker process to run: its settings and agents.
pub struct Fleet {
    settings: Settings,
    registry: AgentRegistry,
    processes: usize,
    migrate: bool,
}

impl Fleet {
    /// The built-in agents and those `settings` declare (`[agents.<name>]`).
    ///
    /// Fails on a declared agent no agent can be made of.
    pub fn from_settings(settings: Settings) -> Result<Self, FleetError> {
        let registry = AgentRegistry::with_builtins()
            .with_declared(&settings.agents, settings.worker.max_result_bytes)
            .map_err(FleetError::Agents)?;
        Ok(Self {
            migrate: settings.database.migrate_on_start,
            settings,
            registry,
            processes: 1,
        })
    }

    /// Adds `agent`, replacing one of the same name (built-in or declared).
    pub fn agent(mut self, agent: impl Agent + 'static) -> Self {
        self.registry = self.registry.with(agent);
        self
    }

    /// The agents it runs.
    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// Runs `count` worker processes of this program under a supervisor (a process that a
    /// supervisor started runs as one worker whatever this says).
    pub fn processes(mut self, count: usize) -> Self {
        self.processes = count.max(1);
        self
    }

    /// Whether migrations are applied at start (default: `database.migrate_on_start`).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Runs until `shutdown` completes (or the supervisor that started this process is
    /// gone), then drains: in-flight tasks finish or are handed back, pending writes flush.
    ///
    /// Fails when the services cannot be reached at start, the pool names agents this
    /// process does not have, or the worker cannot run.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), FleetError> {
        let Fleet {
            settings,
            registry,
            processes,
            migrate,
        } = self;
        let agents = settings
            .worker
            .agent_filter()
            .map_err(|e| FleetError::Agents(e.to_string()))?;
        if let AgentFilter::Only(_) = &agents {
            let unknown: Vec<String> = agents
                .named()
                .filter(|a| registry.get(a).is_none())
                .map(String::from)
                .collect();
            if !unknown.is_empty() {
                let known = registry.names().map(String::from).collect();
                return Err(FleetError::UnknownAgents { unknown, known });
            }
        }
        if processes > 1 && !supervisor::is_supervised() {
            return Ok(supervisor::supervise(processes, &settings, shutdown).await?);
        }
        let (store, broker) = connect::connect_fleet(&settings, migrate).await?;
        let assembled = worker::assemble(&settings, broker.clone(), store.clone(), registry)?;
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
                meter: assembled.worker.scale_meter(),
                liveness: Some(assembled.worker.liveness()),
            };
            match http::serve(&metrics_addr, http::probes::worker_router(probes), stopped).await {
                Ok((bound, _)) => tracing::info!("metrics, /ready and /scale on http://{bound}"),
                // Another worker on this machine may hold the port: work on without it.
                Err(error) => tracing::warn!(%error, addr = %metrics_addr, "metrics endpoint off"),
            }
        }
        let ran = assembled
            .run(
                async {
                    tokio::select! {
                        _ = shutdown => {}
                        _ = supervisor::supervisor_gone() => {}
                    }
                },
                MIRROR_FLUSH,
            )
            .await;
        let _ = stop_tx.send(true);
        Ok(ran?)
    }
}
