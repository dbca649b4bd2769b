//! The worker loop: set up the lanes and the sidecars, then take as many tasks as there are
//! free slots (`pull` decides when to look and where), claim and run them (`dispatch`), and
//! hand the outcomes to the settler. On shutdown it stops pulling, lets in-flight tasks
//! finish within the grace period (handing back those that do not), and flushes pending
//! commits.
//!
//! Longer than most modules: most of it starts the worker's sidecars (upkeep, gauges, roll
//! calls, strays, delays, cancellations, the legacy side) and stops them in order.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};

use super::{
    Executor, RetryPolicy, Worker, WorkerError,
    alarm::RetryAlarms,
    dispatch::Dispatch,
    gauges,
    hold::HeldBatches,
    liveness::Liveness,
    pull::Pull,
    raised,
    settler::{self, SettlerConfig, Sinks, WorkerCounts},
    task_runner::TaskRunner,
    upkeep::{UPKEEP_INTERVAL, Upkeep},
};
use crate::{
    agent::AgentRegistry,
    backoff::Backoff,
    broker::Broker,
    cache::ResultCache,
    config::WorkerSettings,
    dlq::DeadLetterStream,
    metrics::Metrics,
    mirror::{self, Intake, Mirror},
    scale::{ScaleMeter, WorkerPresence, answer_roll_calls},
    store::Store,
};

/// Longest a busy worker waits for a quarter of its fetch size in free slots before it
/// fetches what it has: bigger fetches measured 7 % more tasks/s, and a task finishing
/// alone is still followed by a fetch within this.
const REFILL_LINGER: Duration = Duration::from_millis(5);

/// How often the backlog and connection gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// How often a general worker looks for messages on subjects no lane reads.
const STRAY_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// How long start-up keeps retrying a JetStream request that timed out: a cluster electing
/// leaders, or busy starting many workers at once, answers late rather than never.
const SET_UP_PATIENCE: Duration = Duration::from_secs(60);

/// Runs one start-up step, retrying failures with a growing pause for [`SET_UP_PATIENCE`].
async fn set_up<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut step: impl FnMut() -> F,
) -> Result<T, E> {
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(error) if started.elapsed() + backoff.peek() < SET_UP_PATIENCE => {
                let pause = backoff.next_pause();
                tracing::warn!(%error, "cannot set up {what} yet; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
            }
            Err(error) => return Err(error),
        }
    }
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
            counts: Arc::default(),
            mirror: None,
            intake: None,
            upkeep: None,
            meter: Arc::default(),
            metrics: Metrics::global(),
        }
    }

    /// Records into `metrics` instead of the process's own (a test that must see only
    /// what this worker did).
    pub fn with_metrics(mut self, metrics: &'static Metrics) -> Self {
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

    /// Totals of what this worker settled, readable while it runs.
    pub fn counts(&self) -> Arc<WorkerCounts> {
        self.counts.clone()
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
        set_up("the tasks stream", || self.broker.read_stream_features()).await?;
        // Known before the first pull: a task cancelled earlier never starts.
        let cancellations = set_up("cancellations", || {
            super::cancel_listener::start(&self.broker, &self.store, &self.cancels)
        })
        .await?;
        let puller = set_up("the lanes", || self.broker.priority_puller(agents.clone())).await?;
        // "auto" is resolved here, where the worker runs: it is this machine that is sized.
        let concurrency = crate::scale::slots(self.settings.concurrency);
        let slots = Arc::new(Semaphore::new(concurrency));
        let (stopping_tx, stopping_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        // Before any sidecar: the legacy intake dead-letters what cannot be a task at once,
        // and a claim it could not settle waits out its reclaim period (found by a test).
        set_up("the dead-letter stream", || self.dead_letters.ensure()).await?;
        let mut sidecars = JoinSet::new();
        if let Some(mirror) = self.mirror.clone() {
            let (broker, stop) = (self.broker.clone(), stopped(stopping_rx.clone()));
            sidecars.spawn(async move {
                if let Err(error) = mirror::feeder::run(broker, mirror, stop).await {
                    tracing::warn!(%error, "cannot mirror new tasks to the legacy keys");
                }
            });
        }
        if let Some(mirror) = self.mirror.clone() {
            let (broker, store) = (self.broker.clone(), self.store.clone());
            let stop = stopped(stopping_rx.clone());
            sidecars.spawn(async move {
                if let Err(error) = mirror::cancelled::run(broker, store, mirror, stop).await {
                    tracing::warn!(%error, "cannot show cancelled tasks in the legacy keys");
                }
            });
        }
        if let Some((intake, every)) = self.intake.take() {
            sidecars.spawn(intake.run(every, stopped(stopping_rx.clone())));
        }
        if let Some(upkeep) = self.upkeep.take() {
            sidecars.spawn(upkeep.run(UPKEEP_INTERVAL, stopped(stopping_rx.clone())));
        }
        sidecars.spawn(super::progress_writer::run(
            self.broker.clone(),
            self.store.clone(),
            self.progress.clone(),
            stopped(stopping_rx.clone()),
        ));
        // Schedules fire from whichever worker takes their row first.
        sidecars.spawn(crate::schedule::run_ticker(
            self.store.clone(),
            self.broker.clone(),
            stopped(stopping_rx.clone()),
        ));
        // Cancellations reach this worker by NATS at once and from PostgreSQL behind it.
        sidecars.spawn(cancellations.run(
            self.store.clone(),
            self.cancels.clone(),
            stopped(stopping_rx.clone()),
        ));
        // Delayed tasks read `scheduled` (row and mirror) while they wait.
        sidecars.spawn({
            let (broker, store) = (self.broker.clone(), self.store.clone());
            let (mirror, stop) = (self.mirror.clone(), stopped(stopping_rx.clone()));
            async move {
                if let Err(error) = super::scheduled_view::run(broker, store, mirror, stop).await {
                    tracing::warn!(%error, "cannot show delayed tasks as scheduled");
                }
            }
        });
        // Delayed tasks move to the tasks stream when due, whichever worker is up.
        sidecars.spawn({
            let (broker, stop) = (self.broker.clone(), stopped(stopping_rx.clone()));
            async move { broker.run_delay_mover(stop).await }
        });
        sidecars.spawn(gauges::watch_liveness(
            self.liveness.clone(),
            self.metrics,
            stopped(stopping_rx.clone()),
        ));
        sidecars.spawn(gauges::run(
            self.broker.clone(),
            self.store.clone(),
            self.meter.clone(),
            self.metrics,
            GAUGE_INTERVAL,
            stopped(stopping_rx.clone()),
        ));
        sidecars.spawn({
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
            let (broker, stop) = (self.broker.clone(), stopped(stopping_rx.clone()));
            async move {
                if let Err(error) = answer_roll_calls(broker, presence, stop).await {
                    tracing::warn!(%error, "cannot answer roll calls");
                }
            }
        });
        // After the dead-letter stream exists: the first sweep has somewhere to put strays.
        if !matches!(agents, crate::task::AgentFilter::Only(_)) {
            sidecars.spawn(super::strays::run(
                self.broker.clone(),
                self.dead_letters.clone(),
                self.worker_id.clone(),
                self.metrics,
                STRAY_SWEEP_INTERVAL,
                stopped(stopping_rx.clone()),
            ));
        }
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let alarms = RetryAlarms::default();
        let (settle_tx, settler) = settler::spawn(
            Sinks {
                store: self.store.clone(),
                dead_letters: self.dead_letters.clone(),
                worker_id: self.worker_id.as_str().into(),
                counts: self.counts.clone(),
                metrics: self.metrics,
                abandon: abandon_rx.clone(),
                alarms: alarms.clone(),
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
        );
        let mut running = JoinSet::new();
        // The shutdown signal as a flag every part of the loop can watch.
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let runner = Arc::new(TaskRunner {
            executor: self.executor.clone(),
            broker: self.broker.clone(),
            store: self.store.clone(),
            mirror: self.mirror.clone(),
            settle_tx: settle_tx.clone(),
            abandon_rx: abandon_rx.clone(),
            heartbeat: self.broker.settings().ack_wait() / 2,
            worker_id: self.worker_id.clone(),
            metrics: self.metrics,
        });
        let dispatch = Dispatch {
            worker: &self,
            settle_tx: &settle_tx,
            runner,
            shutdown_rx: shutdown_rx.clone(),
            // Leave room for the record's other fields and headers.
            max_dead_letter_body: (self.broker.client().server_info().max_payload)
                .saturating_sub(16 * 1024),
            duplicate_window: Duration::from_secs(self.broker.settings().duplicate_window_secs),
        };
        tracing::info!(
            worker_id = %self.worker_id,
            concurrency,
            %agents,
            "worker started"
        );

        let rescan = Duration::from_millis(self.settings.idle_rescan_ms);
        // The fewest free slots worth a fetch while tasks are in flight.
        let refill = (self.settings.fetch_batch.min(concurrency) / 4).max(1);
        let mut stop = shutdown_rx.clone();
        let mut source = Pull::new(puller, alarms, self.liveness.clone(), rescan);
        let pull = async {
            loop {
                // Wait for a free slot, then ask for as many tasks as there are free slots.
                self.liveness.waiting_for_slots(true);
                tokio::select! {
                    biased;
                    _ = raised(&mut stop) => break,
                    slot = slots.acquire() => drop(slot),
                }
                self.liveness.waiting_for_slots(false);
                if slots.available_permits() < refill {
                    // Busy: let a few more slots come back (a settled batch frees many at
                    // once) so the fetch, its lookup and its claim are worth their round trips.
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
                dispatch.run(messages, &slots, &mut running).await;
            }
        };
        {
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
        let _ = stopping_tx.send(true);
        while sidecars.join_next().await.is_some() {}
        // One grace period for everything: running tasks, then the settler's last commits.
        // Whatever still holds work when it is over (a task that will not finish, a batch
        // held through an outage) is handed back, so the process always exits.
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
        // Every sender gone (the task runner's with the dispatcher): the settler flushes.
        drop(dispatch);
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
        let _ = self.broker.client().flush().await;
        tracing::info!("worker stopped");
        Ok(())
    }
}
