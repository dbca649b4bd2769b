//! One fetched batch becomes running tasks: decode each message (bad ones become dead
//! letters), claim the batch in one statement (holding it while the database is away), skip
//! duplicates and poison, and run the rest, each under its own span with its lease kept
//! alive, handing every outcome to the settler.

use std::{
    collections::HashSet,
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
    Executor, Outcome, Worker,
    delivery::{self, DeliveryInfo, TaskDelivery},
    outcome::Record,
    raised,
    settler::{Settlement, TaskMeta},
};
use crate::{dlq::DeadReason, metrics::Metrics, mirror::MirrorEvent, store::Claim};

/// First and longest pause between claims while the database is away.
const CLAIM_RETRY_FIRST: Duration = Duration::from_millis(100);
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(5);

/// Turns one fetched batch into running tasks and settlements.
pub(super) struct Dispatch<'a> {
    pub(super) worker: &'a Worker,
    pub(super) settle_tx: &'a mpsc::Sender<Settlement>,
    pub(super) abandon_rx: &'a watch::Receiver<bool>,
    /// True once shutdown began: stop waiting for the database, hand tasks back.
    pub(super) shutdown_rx: watch::Receiver<bool>,
    pub(super) heartbeat: Duration,
    /// Largest raw body kept in a dead letter: what fits in one NATS message.
    pub(super) max_dead_letter_body: usize,
}

/// A decoded delivery waiting for its claim.
struct Pending {
    delivery: TaskDelivery,
    acker: Acker,
    slot: OwnedSemaphorePermit,
}

impl Dispatch<'_> {
    pub(super) async fn run(
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
