//! The pull loop: take as many tasks as there are free slots, highest priority first, claim
//! them in one statement, run each, and hand the outcomes to the settler. Idle, it sleeps on
//! the doorbell. On shutdown it stops pulling, lets in-flight tasks finish within the grace
//! period (handing back those that do not), and flushes pending commits.

use std::{
    collections::HashSet,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, AckKind, message::Acker};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
    task::JoinSet,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    Executor, Outcome, RetryPolicy,
    alarm::RetryAlarms,
    delivery::{self, DeliveryInfo, TaskDelivery},
    gauges,
    outcome::Record,
    raised,
    settler::{self, Settlement, SettlerConfig, Sinks, TaskMeta, WorkerCounts},
};
use crate::{
    agent::AgentRegistry,
    broker::{Broker, BrokerError, Doorbell, Priorities},
    cache::ResultCache,
    config::WorkerSettings,
    dlq::{DeadLetterStream, DeadReason, DlqError},
    metrics::Metrics,
    mirror::{self, Intake, Mirror, MirrorEvent},
    store::{Claim, Store, StoreError},
};

/// A bell whose scan found nothing is followed up after 1 and 4 ms.
const BELL_FOLLOW_UP: Duration = Duration::from_millis(1);
const BELL_FOLLOW_UPS: u32 = 2;

/// How often the backlog and connection gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// First and longest pause between claims while the database is away.
const CLAIM_RETRY_FIRST: Duration = Duration::from_millis(100);
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(5);

/// Pause after a failed pull before trying again.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    DeadLetters(#[from] DlqError),
    #[error(transparent)]
    Legacy(#[from] crate::mirror::MirrorError),
}

/// One worker process's loop over the shared consumers. Holds no state another worker needs.
pub struct Worker {
    broker: Broker,
    store: Store,
    dead_letters: DeadLetterStream,
    executor: Executor,
    settings: WorkerSettings,
    worker_id: String,
    counts: Arc<WorkerCounts>,
    mirror: Option<Mirror>,
    intake: Option<(Intake, Duration)>,
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
            Duration::from_secs_f64(settings.default_timeout_secs),
        );
        Self {
            worker_id: settings.worker_id(),
            dead_letters: DeadLetterStream::of(&broker),
            broker,
            store,
            executor,
            settings,
            counts: Arc::default(),
            mirror: None,
            intake: None,
        }
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
        let puller = self.broker.priority_puller().await?;
        let (stopping_tx, stopping_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let mut sidecars = JoinSet::new();
        if let Some(mirror) = self.mirror.clone() {
            let (broker, stop) = (self.broker.clone(), stopped(stopping_rx.clone()));
            sidecars.spawn(async move {
                if let Err(error) = mirror::feeder::run(broker, mirror, stop).await {
                    tracing::warn!(%error, "cannot mirror new tasks to the legacy keys");
                }
            });
        }
        if let Some((intake, every)) = self.intake.take() {
            sidecars.spawn(intake.run(every, stopped(stopping_rx.clone())));
        }
        sidecars.spawn(gauges::run(
            self.broker.clone(),
            self.store.clone(),
            GAUGE_INTERVAL,
            stopped(stopping_rx.clone()),
        ));
        self.dead_letters.ensure().await?;
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let alarms = RetryAlarms::default();
        let (settle_tx, settler) = settler::spawn(
            Sinks {
                store: self.store.clone(),
                dead_letters: self.dead_letters.clone(),
                worker_id: self.worker_id.as_str().into(),
                counts: self.counts.clone(),
                abandon: abandon_rx.clone(),
                alarms: alarms.clone(),
                mirror: self.mirror.clone(),
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
        let dispatch = Dispatch {
            worker: &self,
            settle_tx: &settle_tx,
            abandon_rx: &abandon_rx,
            shutdown_rx: shutdown_rx.clone(),
            heartbeat: self.broker.settings().ack_wait() / 2,
            // Leave room for the record's other fields and headers.
            max_dead_letter_body: (self.broker.client().server_info().max_payload)
                .saturating_sub(16 * 1024),
        };
        tracing::info!(worker_id = %self.worker_id, concurrency = self.settings.concurrency, "worker started");

        let rescan = Duration::from_millis(self.settings.idle_rescan_ms);
        let mut stop = shutdown_rx.clone();
        let pull = async {
            let mut scan = Priorities::ALL;
            // Empty scans in a row after a bell: the doorbell can ring before JetStream has
            // stored the message, so a bell that finds nothing is followed up shortly.
            let mut bell_misses = 0u32;
            // Subscribed while the consumers are drained; dropped while a backlog keeps us busy,
            // so a busy worker does not receive a copy of every publish.
            let mut doorbell: Option<Doorbell> = None;
            loop {
                // Wait for a free slot, then ask for as many tasks as there are free slots.
                tokio::select! {
                    biased;
                    _ = raised(&mut stop) => break,
                    slot = slots.acquire() => drop(slot),
                }
                while running.try_join_next().is_some() {}
                let wanted = slots
                    .available_permits()
                    .min(self.settings.fetch_batch)
                    .max(1);
                let messages = match puller.fetch_available(wanted, scan).await {
                    Ok(messages) => messages,
                    Err(error) => {
                        tracing::warn!(%error, "pull failed; retrying");
                        tokio::time::sleep(ERROR_BACKOFF).await;
                        continue;
                    }
                };
                let rung = scan;
                scan = Priorities::ALL;
                if messages.is_empty() && rung != Priorities::ALL && bell_misses < BELL_FOLLOW_UPS {
                    // Look again soon, or at once when another bell rings meanwhile.
                    bell_misses += 1;
                    scan = rung;
                    let follow_up = tokio::time::sleep(BELL_FOLLOW_UP * 4u32.pow(bell_misses - 1));
                    match doorbell.as_mut() {
                        Some(bell) => tokio::select! {
                            more = bell.ring() => scan = more.map_or(rung, |more| rung.union(more)),
                            _ = follow_up => {}
                        },
                        None => follow_up.await,
                    }
                    continue;
                }
                bell_misses = 0;
                let drained = messages.len() < wanted;
                if !messages.is_empty() {
                    dispatch.run(messages, &slots, &mut running).await;
                }
                if !drained {
                    doorbell = None;
                    continue;
                }
                let Some(bell) = doorbell.as_mut() else {
                    // Subscribe, then scan once more: a publish just before the subscription
                    // rang no bell.
                    match puller.doorbell().await {
                        Ok(bell) => doorbell = Some(bell),
                        Err(error) => {
                            tracing::warn!(%error, "cannot subscribe to the doorbell");
                            tokio::time::sleep(ERROR_BACKOFF).await;
                        }
                    }
                    continue;
                };
                tokio::select! {
                    biased;
                    _ = raised(&mut stop) => break,
                    rung = bell.ring() => match rung {
                        Some(rung) => scan = rung,
                        None => doorbell = None,
                    },
                    _ = alarms.wait(rescan) => {}
                }
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
        let grace = Duration::from_secs_f64(self.settings.shutdown_grace_secs);
        let drained = tokio::time::timeout(grace, async {
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
        // Every sender gone (the dispatcher's borrow ended above): the settler flushes.
        drop(settle_tx);
        let _ = settler.await;
        let _ = self.broker.client().flush().await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Turns one fetched batch into running tasks and settlements.
struct Dispatch<'a> {
    worker: &'a Worker,
    settle_tx: &'a mpsc::Sender<Settlement>,
    abandon_rx: &'a watch::Receiver<bool>,
    /// True once shutdown began: stop waiting for the database, hand tasks back.
    shutdown_rx: watch::Receiver<bool>,
    heartbeat: Duration,
    /// Largest raw body kept in a dead letter: what fits in one NATS message.
    max_dead_letter_body: usize,
}

/// A decoded delivery waiting for its claim.
struct Pending {
    delivery: TaskDelivery,
    acker: Acker,
    slot: OwnedSemaphorePermit,
}

impl Dispatch<'_> {
    async fn run(
        &self,
        messages: Vec<jetstream::Message>,
        slots: &Arc<Semaphore>,
        running: &mut JoinSet<()>,
    ) {
        let worker = self.worker;
        let subjects = worker.broker.subjects();
        let mut pending: Vec<Pending> = Vec::with_capacity(messages.len());
        let mut seen = HashSet::with_capacity(messages.len());
        for message in messages {
            // The loop only fetches as many messages as there are free slots.
            let slot = slots
                .clone()
                .try_acquire_owned()
                .expect("fetched no more messages than free slots");
            let info = DeliveryInfo::of(&message);
            let decoded = delivery::decode(
                subjects,
                &info.subject,
                delivery::content_type(&message),
                &message.payload,
                worker.settings.max_payload_bytes,
            );
            match decoded {
                Err(rejection) => {
                    tracing::warn!(subject = %info.subject, seq = info.stream_sequence,
                        reason = %rejection.reason, error = %rejection.error, "dead-lettering a bad message");
                    let letter = delivery::rejected_letter(
                        subjects,
                        &info,
                        &message,
                        rejection,
                        &worker.worker_id,
                        self.max_dead_letter_body,
                    );
                    let (_, acker) = message.split();
                    let record = Record::Rejected(Box::new(letter));
                    self.settle(acker, record, AckKind::Term, "rejected", slot)
                        .await;
                }
                Ok(task) if !seen.insert(task.id) => {
                    // The same task twice in one batch (re-published after the duplicate
                    // window): run one copy; the other comes back later as a duplicate.
                    let (_, acker) = message.split();
                    let later = AckKind::Nak(Some(Duration::from_secs(1)));
                    self.settle(acker, Record::Nothing, later, "requeued", slot)
                        .await;
                }
                Ok(task) => pending.push(Pending {
                    delivery: TaskDelivery {
                        task,
                        trace: crate::telemetry::extract(message.headers.as_ref()),
                        info,
                        previous_errors: Vec::new(),
                        started_at: chrono::Utc::now(),
                    },
                    acker: message.split().1,
                    slot,
                }),
            }
        }
        if pending.is_empty() {
            return;
        }
        // The database may be away: hold the batch (renewing its leases, so deliveries are
        // not used up) and retry, rather than hand it back to come round again and again.
        let mut pause = CLAIM_RETRY_FIRST;
        let mut stop = self.shutdown_rx.clone();
        let mut runnable = loop {
            let claims: Vec<Claim> = pending
                .iter()
                .map(|p| Claim {
                    task: &p.delivery.task,
                    attempt: p.delivery.attempt(),
                    trace_id: crate::telemetry::trace_id(&p.delivery.trace),
                })
                .collect();
            match worker.store.claim(&claims, &worker.worker_id).await {
                Ok(runnable) => break runnable,
                Err(error) => {
                    tracing::error!(%error, retry_in_ms = pause.as_millis() as u64,
                        "claim failed; holding the batch");
                }
            }
            for p in &pending {
                let _ = p.acker.ack_with(AckKind::Progress).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = raised(&mut stop) => {
                    for p in pending {
                        self.settle(p.acker, Record::Nothing, AckKind::Nak(None), "requeued", p.slot)
                            .await;
                    }
                    return;
                }
            }
            pause = (pause * 2).min(CLAIM_RETRY_MAX);
        };
        for mut p in pending {
            let Some(claimed) = runnable.remove(&p.delivery.task.id) else {
                let outcome = Outcome::Duplicate;
                self.settle(
                    p.acker,
                    Record::Nothing,
                    outcome.ack_kind(),
                    outcome.label(),
                    p.slot,
                )
                .await;
                continue;
            };
            p.delivery.previous_errors = claimed.previous_errors;
            p.delivery.started_at = claimed.started_at;
            if let Some(mirror) = &worker.mirror {
                mirror.record(MirrorEvent::processing(
                    &p.delivery,
                    &worker.worker_id,
                    claimed.started_at,
                ));
            }
            let limit = p.delivery.task.max_attempts + worker.settings.crash_allowance;
            if p.delivery.attempt() > limit {
                // Delivered again and again without an outcome: it kills or hangs workers.
                let outcome = Outcome::Dead {
                    reason: DeadReason::MaxDeliveries,
                    error: format!(
                        "delivered {} times, {} of them without an outcome: the task crashes \
                         or hangs the worker",
                        p.delivery.attempt(),
                        p.delivery.attempt() as usize - 1 - p.delivery.previous_errors.len()
                    ),
                };
                let record = outcome.record(&p.delivery, &worker.worker_id);
                let event = outcome.mirror_event(&p.delivery, &worker.worker_id);
                let settlement = Settlement {
                    acker: p.acker,
                    record,
                    ack: outcome.ack_kind(),
                    label: outcome.label(),
                    slot: Some(p.slot),
                    mirror: event,
                    meta: Some(TaskMeta::of(&p.delivery.task)),
                    span: tracing::Span::none(),
                };
                if self.settle_tx.send(settlement).await.is_err() {
                    tracing::error!("settler stopped; the message will be redelivered");
                }
                continue;
            }
            running.spawn(run_one(
                worker.executor.clone(),
                p,
                self.settle_tx.clone(),
                self.abandon_rx.clone(),
                self.heartbeat,
                worker.worker_id.clone(),
            ));
        }
    }

    async fn settle(
        &self,
        acker: Acker,
        record: Record,
        ack: AckKind,
        label: &'static str,
        slot: OwnedSemaphorePermit,
    ) {
        let settlement = Settlement {
            acker,
            record,
            ack,
            label,
            slot: Some(slot),
            mirror: None,
            meta: None,
            span: tracing::Span::none(),
        };
        if self.settle_tx.send(settlement).await.is_err() {
            tracing::error!("settler stopped; the message will be redelivered");
        }
    }
}

/// Runs one claimed task, keeping its lease alive, and sends its settlement.
async fn run_one(
    executor: Executor,
    pending: Pending,
    settle_tx: mpsc::Sender<Settlement>,
    mut abandon: watch::Receiver<bool>,
    heartbeat: Duration,
    worker_id: String,
) {
    let Pending {
        delivery,
        acker,
        slot,
    } = pending;
    let started = Instant::now();
    let metrics = Metrics::global();
    metrics.in_flight.inc();
    // Continues the producer's trace (OpenTelemetry messaging conventions).
    let trace_id = crate::telemetry::trace_id(&delivery.trace);
    let span = tracing::info_span!(
        "process",
        otel.name = %format_args!("process {}", delivery.task.agent_type),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation = "process",
        messaging.destination.name = %delivery.info.subject,
        messaging.message.id = %delivery.task.id,
        task.id = %delivery.task.id,
        agent_type = %delivery.task.agent_type,
        attempt = delivery.attempt(),
        trace_id = trace_id.as_deref().unwrap_or(""),
    );
    let _ = span.set_parent(delivery.trace.clone());
    let outcome = {
        let agent_span = tracing::debug_span!(parent: &span, "agent.run", agent_type = %delivery.task.agent_type);
        let run = executor
            .execute(&delivery.task, delivery.attempt())
            .instrument(agent_span);
        tokio::pin!(run);
        let mut beat = tokio::time::interval_at(
            tokio::time::Instant::now() + heartbeat,
            heartbeat.max(Duration::from_millis(100)),
        );
        loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = beat.tick() => {
                    // Still working: renew the lease so no second worker gets the task.
                    let _ = acker.ack_with(AckKind::Progress).await;
                }
                _ = raised(&mut abandon) => break Outcome::Abandoned,
            }
        }
    };
    metrics.in_flight.dec();
    metrics
        .agent_duration
        .with_label_values(&[delivery.task.agent_type.as_str()])
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(task_id = %delivery.task.id, agent = %delivery.task.agent_type,
        attempt = delivery.attempt(), outcome = outcome.label(),
        elapsed_ms = started.elapsed().as_millis() as u64, "task ran");
    let settlement = Settlement {
        record: outcome.record(&delivery, &worker_id),
        mirror: outcome.mirror_event(&delivery, &worker_id),
        meta: Some(TaskMeta::of(&delivery.task)),
        span,
        acker,
        ack: outcome.ack_kind(),
        label: outcome.label(),
        slot: Some(slot),
    };
    if settle_tx.send(settlement).await.is_err() {
        tracing::error!(task_id = %delivery.task.id, "settler stopped; the task will be redelivered");
    }
}
