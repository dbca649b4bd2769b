//! The worker loop: start the sidecars and set up the lanes, then take as many tasks as
//! there are free slots (`pull` decides when to look and where), claim and run them
//! (`dispatch`), and hand the outcomes to the settler. On shutdown it stops pulling, stops
//! the sidecars, lets in-flight tasks finish within the grace period (handing back those
//! that do not), and flushes pending commits.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};

use super::{
    Executor, RetryPolicy, WorkerError,
    alarm::RetryAlarms,
    dispatch::Dispatch,
    pull::Pull,
    raised,
    settler::{self, SettlerConfig, Sinks},
    task_runner::TaskRunner,
};
use crate::{
    agent::AgentRegistry,
    backoff::start_up,
    broker::Broker,
    cache::ResultCache,
    config::WorkerSettings,
    dlq::DeadLetterStream,
    metrics::Metrics,
    mirror::{Intake, Mirror},
    scale::{ScaleMeter, WorkerPresence},
    sidecars::{Crew, HeldBatches, Liveness, Sidecars, Upkeep},
    store::Store,
};

/// Longest a busy worker waits for a quarter of its fetch size in free slots before it
/// fetches what it has: bigger fetches measured 7 % more tasks/s, and a task finishing
/// alone is still followed by a fetch within this.
const REFILL_LINGER: Duration = Duration::from_millis(5);

/// One worker process's loop over the shared consumers. Holds no state another worker needs.
pub struct Worker {
    pub(super) broker: Broker,
    pub(super) store: Store,
    pub(super) dead_letters: DeadLetterStream,
    pub(super) executor: Executor,
    pub(super) settings: WorkerSettings,
    pub(super) worker_id: String,
    pub(super) mirror: Option<Mirror>,
    pub(super) intake: Option<(Intake, std::time::Duration)>,
    pub(super) upkeep: Option<Upkeep>,
    pub(super) meter: Arc<ScaleMeter>,
    pub(super) held: Arc<HeldBatches>,
    pub(super) liveness: Arc<Liveness>,
    /// Agents' progress reports, written to their rows by a sidecar.
    pub(super) progress: Arc<crate::agent::ProgressBoard>,
    /// What was cancelled, fed by a sidecar from NATS and PostgreSQL.
    pub(super) cancels: Arc<crate::agent::CancelBoard>,
    /// Where the worker records what it does: the process's metrics unless given others.
    pub(super) metrics: &'static Metrics,
}

impl Worker {
    pub fn new(
        broker: Broker,
        store: Store,
        registry: AgentRegistry,
        settings: WorkerSettings,
    ) -> Self {
        let executor = Executor::new(
            registry,
            RetryPolicy::from_settings(&settings),
            Duration::try_from_secs_f64(settings.default_timeout_secs)
                .unwrap_or(Duration::from_secs(300)),
        )
        .with_max_result_bytes(settings.max_result_bytes);
        let progress = Arc::new(crate::agent::ProgressBoard::default());
        let cancels = Arc::new(crate::agent::CancelBoard::default());
        let cancel_grace =
            Duration::try_from_secs_f64(settings.cancel_grace_secs).unwrap_or(Duration::ZERO);
        let executor = executor
            .with_progress(progress.clone())
            .with_cancellations(cancels.clone(), cancel_grace);
        let held = Arc::new(HeldBatches::default());
        let liveness = Arc::new(Liveness::new(
            held.clone(),
            Duration::try_from_secs_f64(settings.stall_after_secs)
                .unwrap_or(Duration::from_secs(120)),
        ));
        Self {
            held,
            liveness,
            progress,
            cancels,
            worker_id: settings.worker_id(),
            dead_letters: DeadLetterStream::of(&broker),
            broker,
            store,
            executor,
            settings,
            mirror: None,
            intake: None,
            upkeep: None,
            meter: Arc::default(),
            metrics: Metrics::global(),
        }
    }

    /// Reads "now" from `clock` for schedules, delayed and expiring tasks (a test's manual
    /// clock; the system's otherwise).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.executor = self.executor.with_clock(clock);
        self
    }

    /// Records into `metrics` instead of the process's own (a test that must see only
    /// what this worker did).
    pub fn with_metrics(mut self, metrics: &'static Metrics) -> Self {
        self.dead_letters = self.dead_letters.with_metrics(metrics);
        self.metrics = metrics;
        self
    }

    /// Keeps the legacy Redis keys up to date through `mirror`.
    pub fn with_mirror(mut self, mirror: Mirror) -> Self {
        self.mirror = Some(mirror);
        self
    }

    /// Looks cacheable agents' results up in `cache`.
    pub fn with_cache(mut self, cache: Arc<ResultCache>) -> Self {
        self.executor = self.executor.with_cache(cache);
        self
    }

    /// Takes in legacy producers' tasks every `every` while running.
    pub fn with_intake(mut self, intake: Intake, every: Duration) -> Self {
        self.intake = Some((intake, every));
        self
    }

    /// Runs `upkeep` (retention) at start and hourly while running.
    pub fn with_upkeep(mut self, upkeep: Upkeep) -> Self {
        self.upkeep = Some(upkeep);
        self
    }

    /// Reads the scale signals with `meter` (its thresholds) for the gauges.
    pub fn with_scale_meter(mut self, meter: Arc<ScaleMeter>) -> Self {
        self.meter = meter;
        self
    }

    pub fn scale_meter(&self) -> Arc<ScaleMeter> {
        self.meter.clone()
    }

    /// Whether this worker still makes progress, for its probes.
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// Where this worker records what it does (its totals by outcome among them).
    pub fn metrics(&self) -> &'static Metrics {
        self.metrics
    }

    pub fn id(&self) -> &str {
        &self.worker_id
    }

    /// Pulls and runs tasks until `shutdown` completes, then drains and returns.
    ///
    /// Fails only when the consumers cannot be set up; failures while running are logged and
    /// retried, since JetStream keeps every unacknowledged task.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let agents = self.settings.agent_filter()?;
        // Where delayed tasks wait decides what the doorbell and the scheduled view listen to.
        start_up("the tasks stream", || self.broker.read_stream_features()).await?;
        // "auto" is resolved here, where the worker runs: it is this machine that is sized.
        let concurrency = crate::scale::slots(self.settings.concurrency);
        let slots = Arc::new(Semaphore::new(concurrency));
        // Before the first pull: a task cancelled earlier never starts.
        let sidecars = Sidecars::start(self.crew(&agents, &slots, concurrency)).await?;
        let puller = start_up("the lanes", || self.broker.lanes().puller(agents.clone())).await?;
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let alarms = RetryAlarms::default();
        let (settle_tx, settler) = self.spawn_settler(abandon_rx.clone(), alarms.clone());
        // The shutdown signal as a flag every part of the loop can watch.
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let dispatch = self.dispatch(&settle_tx, abandon_rx, shutdown_rx.clone());
        tracing::info!(worker_id = %self.worker_id, concurrency, %agents, "worker started");

        let rescan = Duration::from_millis(self.settings.idle_rescan_ms);
        let source = Pull::new(puller, alarms, self.liveness.clone(), rescan);
        let mut running = JoinSet::new();
        {
            let pull = self.pull(source, &slots, &dispatch, &mut running, shutdown_rx);
            tokio::pin!(pull);
            tokio::pin!(shutdown);
            tokio::select! {
                _ = &mut pull => {}
                _ = &mut shutdown => {
                    let _ = shutdown_tx.send(true);
                    pull.await;
                }
            }
        }
        tracing::info!(in_flight = running.len(), "worker stopping: no more pulls");
        sidecars.stop().await;
        // Every sender gone once drained (the task runner's with the dispatcher): the
        // settler flushes.
        drop(dispatch);
        self.drain(running, settle_tx, settler, abandon_tx).await;
        let _ = self.broker.client().flush().await;
        tracing::info!("worker stopped");
        Ok(())
    }

    /// Waits for a free slot, then asks for as many tasks as there are free slots, and
    /// dispatches them; until `stop` is raised.
    async fn pull(
        &self,
        mut source: Pull,
        slots: &Arc<Semaphore>,
        dispatch: &Dispatch<'_>,
        running: &mut JoinSet<()>,
        mut stop: watch::Receiver<bool>,
    ) {
        // Every slot is free before the first pull.
        let concurrency = slots.available_permits();
        // The fewest free slots worth a fetch while tasks are in flight.
        let refill = (self.settings.fetch_batch.min(concurrency) / 4).max(1);
        loop {
            self.liveness.waiting_for_slots(true);
            tokio::select! {
                biased;
                _ = raised(&mut stop) => break,
                slot = slots.acquire() => drop(slot),
            }
            self.liveness.waiting_for_slots(false);
            if slots.available_permits() < refill {
                // Busy: let a few more slots come back (a settled batch frees many at once)
                // so the fetch, its lookup and its claim are worth their round trips.
                let more = slots.acquire_many(refill as u32);
                let _ = tokio::time::timeout(REFILL_LINGER, more).await;
            }
            while running.try_join_next().is_some() {}
            let wanted = slots
                .available_permits()
                .min(self.settings.fetch_batch)
                .max(1);
            let Some(messages) = source.next_batch(wanted, &mut stop).await else {
                break;
            };
            dispatch.run(messages, slots, running).await;
        }
    }

    /// One grace period for everything: running tasks, then the settler's last commits.
    /// Whatever still holds work when it is over (a task that will not finish, a batch held
    /// through an outage) is handed back, so the process always exits.
    async fn drain(
        &self,
        mut running: JoinSet<()>,
        settle_tx: tokio::sync::mpsc::Sender<super::settlement::Settlement>,
        settler: tokio::task::JoinHandle<()>,
        abandon_tx: watch::Sender<bool>,
    ) {
        let grace = Duration::try_from_secs_f64(self.settings.shutdown_grace_secs)
            .unwrap_or(Duration::from_secs(25));
        let deadline = tokio::time::Instant::now() + grace;
        let drained = tokio::time::timeout_at(deadline, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = running.len(),
                "grace period over: handing tasks back"
            );
            let _ = abandon_tx.send(true);
            while running.join_next().await.is_some() {}
        }
        drop(settle_tx);
        tokio::pin!(settler);
        if tokio::time::timeout_at(deadline, &mut settler)
            .await
            .is_err()
        {
            tracing::warn!("grace period over: handing unstored outcomes back");
            let _ = abandon_tx.send(true);
            let _ = settler.await;
        }
    }

    /// What the sidecars need of this worker.
    fn crew(
        &mut self,
        agents: &crate::task::AgentFilter,
        slots: &Arc<Semaphore>,
        concurrency: usize,
    ) -> Crew {
        let slots = slots.clone();
        let (worker_id, taken) = (self.worker_id.clone(), agents.to_string());
        let registry = self.executor.registry();
        let agent_kinds: std::collections::BTreeMap<String, String> = registry
            .names()
            .filter(|name| agents.admits(name))
            .map(|name| (name.to_string(), registry.kind(name).to_string()))
            .collect();
        let presence = move || WorkerPresence {
            worker_id: worker_id.clone(),
            pid: std::process::id(),
            agents: taken.clone(),
            concurrency,
            in_flight: concurrency.saturating_sub(slots.available_permits()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            agent_kinds: agent_kinds.clone(),
        };
        Crew {
            broker: self.broker.clone(),
            store: self.store.clone(),
            dead_letters: self.dead_letters.clone(),
            mirror: self.mirror.clone(),
            intake: self.intake.take(),
            upkeep: self.upkeep.take(),
            progress: self.progress.clone(),
            cancels: self.cancels.clone(),
            liveness: self.liveness.clone(),
            meter: self.meter.clone(),
            metrics: self.metrics,
            clock: self.executor.clock().clone(),
            worker_id: self.worker_id.clone(),
            agents: agents.clone(),
            presence: Box::new(presence),
        }
    }

    /// The settler, committing this worker's outcomes in batches.
    fn spawn_settler(
        &self,
        abandon: watch::Receiver<bool>,
        alarms: RetryAlarms,
    ) -> (
        tokio::sync::mpsc::Sender<super::settlement::Settlement>,
        tokio::task::JoinHandle<()>,
    ) {
        settler::spawn(
            Sinks {
                store: self.store.clone(),
                dead_letters: self.dead_letters.clone(),
                worker_id: self.worker_id.as_str().into(),
                metrics: self.metrics,
                abandon,
                alarms,
                mirror: self.mirror.clone(),
                held: self.held.clone(),
                progress: self.liveness.clone(),
                announcer: self
                    .broker
                    .settings()
                    .announce_outcomes
                    .then(|| self.broker.clone()),
                viewers: Some(self.broker.clone()),
            },
            SettlerConfig {
                batch: self.settings.commit_batch,
                linger: Duration::from_millis(self.settings.commit_linger_ms),
                parallelism: self.settings.commit_parallelism,
            },
        )
    }

    /// Turns fetched batches into claimed, running tasks.
    fn dispatch<'a>(
        &'a self,
        settle_tx: &'a tokio::sync::mpsc::Sender<super::settlement::Settlement>,
        abandon_rx: watch::Receiver<bool>,
        shutdown_rx: watch::Receiver<bool>,
    ) -> Dispatch<'a> {
        let runner = Arc::new(TaskRunner {
            executor: self.executor.clone(),
            broker: self.broker.clone(),
            store: self.store.clone(),
            mirror: self.mirror.clone(),
            settle_tx: settle_tx.clone(),
            abandon_rx,
            heartbeat: self.broker.settings().ack_wait() / 2,
            worker_id: self.worker_id.clone(),
            metrics: self.metrics,
        });
        Dispatch {
            settle_tx,
            runner,
            shutdown_rx,
            held: self.held.clone(),
            max_payload_bytes: self.settings.max_payload_bytes,
            crash_allowance: self.settings.crash_allowance,
            // Leave room for the record's other fields and headers.
            max_dead_letter_body: (self.broker.client().server_info().max_payload)
                .saturating_sub(16 * 1024),
            duplicate_window: Duration::from_secs(self.broker.settings().duplicate_window_secs),
        }
    }
}
