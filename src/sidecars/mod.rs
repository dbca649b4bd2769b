//! The jobs that run beside a worker's pull loop for as long as it runs, none of them on a
//! task's path. [`Sidecars::start`] starts them all and [`Sidecars::stop`] stops them all:
//!
//! - [`cancel_listener`]: the cancellation board, fed from NATS at once and PostgreSQL
//!   behind it (primed before the first pull);
//! - [`progress_writer`]: agents' progress reports written to their rows;
//! - [`scheduled_view`]: delayed tasks shown `scheduled` (row and legacy mirror);
//! - [`strays`]: messages on subjects no lane reads, dead-lettered (`bad_subject`);
//! - [`upkeep`]: task partitions created and expired, the legacy mirror trimmed;
//! - [`gauges`]: backlog, oldest waiting task, connection and stall gauges;
//! - [`liveness`]: whether the worker still makes progress (`/ready`), and the board of
//!   batches held through a fault;
//! - and, from their own rooms: the schedules' ticker, the delay mover, the roll-call
//!   answers and the legacy mirror's feeder, cancellation view and intake.

pub mod cancel_listener;
pub mod gauges;
pub mod liveness;
mod progress_writer;
mod scheduled_view;
pub mod strays;
pub mod upkeep;

pub use liveness::{HeldBatches, Liveness};
pub use upkeep::{Upkeep, UpkeepReport};

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinSet};

use crate::{
    agent::{CancelBoard, ProgressBoard},
    backoff::start_up,
    broker::{Broker, BrokerError},
    clock::Clock,
    dlq::{DeadLetterStream, DlqError},
    metrics::Metrics,
    mirror::{self, Intake, Mirror},
    scale::{ScaleMeter, WorkerPresence, answer_roll_calls},
    store::{Store, StoreError},
    task::AgentFilter,
};

/// How often the backlog and connection gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// How often a general worker looks for messages on subjects no lane reads.
const STRAY_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Why the sidecars could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    DeadLetters(#[from] DlqError),
}

/// What the sidecars work with: one worker's connections, boards and identity.
pub struct Crew {
    pub broker: Broker,
    pub store: Store,
    pub dead_letters: DeadLetterStream,
    pub mirror: Option<Mirror>,
    /// Legacy producers' tasks taken in every so often.
    pub intake: Option<(Intake, Duration)>,
    pub upkeep: Option<Upkeep>,
    pub progress: Arc<ProgressBoard>,
    pub cancels: Arc<CancelBoard>,
    pub liveness: Arc<Liveness>,
    pub meter: Arc<ScaleMeter>,
    pub metrics: &'static Metrics,
    /// What "now" is for schedules and delayed tasks.
    pub clock: Clock,
    pub worker_id: String,
    /// The agent types the worker takes: a general worker also sweeps stray subjects.
    pub agents: AgentFilter,
    /// What the worker answers a roll call with, read at each call.
    pub presence: Box<dyn Fn() -> WorkerPresence + Send + Sync>,
}

/// A worker's running sidecars.
pub struct Sidecars {
    jobs: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Sidecars {
    /// Starts every sidecar `crew` enables. Before it returns, the cancellation board holds
    /// what was cancelled so far (a task cancelled earlier never starts) and the dead-letter
    /// stream exists (the legacy intake dead-letters what cannot be a task at once).
    ///
    /// Fails when either cannot be set up within the start-up patience.
    pub async fn start(crew: Crew) -> Result<Self, SidecarError> {
        let Crew {
            broker,
            store,
            dead_letters,
            mirror,
            intake,
            upkeep,
            progress,
            cancels,
            liveness,
            meter,
            metrics,
            clock,
            worker_id,
            agents,
            presence,
        } = crew;
        let cancellations = start_up("cancellations", || {
            cancel_listener::start(&broker, &store, &cancels)
        })
        .await?;
        start_up("the dead-letter stream", || dead_letters.ensure()).await?;
        let (stop, stop_rx) = watch::channel(false);
        let stopped = || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mut jobs = JoinSet::new();
        if let Some(legacy) = &mirror {
            jobs.spawn({
                let (broker, mirror, stop) = (broker.clone(), legacy.clone(), stopped());
                async move {
                    if let Err(error) = mirror::feeder::run(broker, mirror, stop).await {
                        tracing::warn!(%error, "cannot mirror new tasks to the legacy keys");
                    }
                }
            });
            let (broker, store, stop) = (broker.clone(), store.clone(), stopped());
            let mirror = legacy.clone();
            jobs.spawn(async move {
                if let Err(error) = mirror::cancelled::run(broker, store, mirror, stop).await {
                    tracing::warn!(%error, "cannot show cancelled tasks in the legacy keys");
                }
            });
        }
        if let Some((intake, every)) = intake {
            jobs.spawn(intake.run(every, stopped()));
        }
        if let Some(upkeep) = upkeep {
            jobs.spawn(upkeep.run(upkeep::UPKEEP_INTERVAL, stopped()));
        }
        jobs.spawn(progress_writer::run(
            broker.clone(),
            store.clone(),
            progress,
            stopped(),
        ));
        // Schedules fire from whichever worker takes their row first.
        jobs.spawn(crate::schedule::run_ticker(
            store.clone(),
            broker.clone(),
            clock.clone(),
            stopped(),
        ));
        jobs.spawn(cancellations.run(store.clone(), cancels, stopped()));
        jobs.spawn({
            let (broker, store, mirror, stop) = (broker.clone(), store.clone(), mirror, stopped());
            async move {
                if let Err(error) = scheduled_view::run(broker, store, mirror, stop).await {
                    tracing::warn!(%error, "cannot show delayed tasks as scheduled");
                }
            }
        });
        // Delayed tasks move to the tasks stream when due, whichever worker is up.
        jobs.spawn({
            let (broker, stop) = (broker.clone(), stopped());
            async move { broker.delays().run_mover(&clock, stop).await }
        });
        jobs.spawn(gauges::watch_liveness(liveness, metrics, stopped()));
        jobs.spawn(gauges::run(
            broker.clone(),
            store.clone(),
            meter,
            metrics,
            GAUGE_INTERVAL,
            stopped(),
        ));
        jobs.spawn({
            let (broker, stop) = (broker.clone(), stopped());
            async move {
                if let Err(error) = answer_roll_calls(broker, presence, stop).await {
                    tracing::warn!(%error, "cannot answer roll calls");
                }
            }
        });
        if !matches!(agents, AgentFilter::Only(_)) {
            jobs.spawn(strays::run(
                broker,
                dead_letters,
                worker_id,
                metrics,
                STRAY_SWEEP_INTERVAL,
                stopped(),
            ));
        }
        Ok(Self { jobs, stop })
    }

    /// Tells every sidecar to stop and waits until they have.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.jobs.join_next().await.is_some() {}
    }
}
