//! Runs one claimed task: its span (continuing the producer's trace), its agent with the
//! lease kept alive, a `processing` row for a first delivery still running after a moment,
//! and its settlement to the settler.

use std::{
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use async_nats::jetstream::{AckKind, message::Acker};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{Executor, Outcome, claim_check, delay, raised, settlement::Settlement, unique};
use crate::{
    broker::Broker,
    delivery::TaskDelivery,
    metrics::Metrics,
    mirror::{Mirror, MirrorEvent},
    store::{Claim, Store},
};

/// A first delivery still running after this long is written as `processing`.
const PROCESSING_AFTER: Duration = Duration::from_millis(500);

/// A decoded delivery waiting for its claim, then its run.
pub(super) struct Pending {
    pub(super) delivery: TaskDelivery,
    pub(super) acker: Acker,
    pub(super) slot: OwnedSemaphorePermit,
    /// A first delivery that may be a copy of a task already finished: looked up first.
    pub(super) look_up: bool,
}

/// What running a claimed task needs, built once per worker loop and shared by every task.
pub(super) struct TaskRunner {
    pub(super) executor: Executor,
    /// Reads and writes claim checks (large data and results).
    pub(super) broker: Broker,
    pub(super) store: Store,
    pub(super) mirror: Option<Mirror>,
    pub(super) settle_tx: mpsc::Sender<Settlement>,
    pub(super) abandon_rx: watch::Receiver<bool>,
    pub(super) heartbeat: Duration,
    pub(super) worker_id: String,
    pub(super) metrics: &'static Metrics,
}

impl TaskRunner {
    /// Runs one claimed task, keeping its lease alive, and sends its settlement.
    pub(super) async fn run(self: Arc<Self>, pending: Pending) {
        let Pending {
            delivery,
            acker,
            slot,
            ..
        } = pending;
        let started = Instant::now();
        let metrics = self.metrics;
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
        let outcome = if let Some(by) = self.executor.cancelled_by(&delivery.task.id) {
            Outcome::Cancelled { by }
        } else if delay::is_early(&delivery.task, &self.executor) {
            let (broker, executor) = (&self.broker, &self.executor);
            delay::hold_again(broker, executor, &delivery.task, delivery.attempt()).await
        } else {
            let agent_span = tracing::debug_span!(parent: &span, "agent.run", agent_type = %delivery.task.agent_type);
            let run = self
                .attempt(
                    &delivery.task,
                    delivery.attempt(),
                    delivery.checkpoint.clone(),
                )
                .instrument(agent_span);
            tokio::pin!(run);
            // Most agents answer at their first poll: no timers, no `processing` write.
            match futures::poll!(&mut run) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => self.keep_running(&delivery, &acker, run).await,
            }
        };
        // A failure while a cancel arrived ends cancelled: no retry, no dead letter. (A result
        // stands: the database decides between it and the cancel.)
        let outcome = match outcome {
            Outcome::Retry { .. } | Outcome::Dead { .. } => {
                match self.executor.cancelled_by(&delivery.task.id) {
                    Some(by) => Outcome::Cancelled { by },
                    None => outcome,
                }
            }
            outcome => outcome,
        };
        metrics.in_flight.dec();
        // A retry reads the last report as its checkpoint; any other end needs it no more.
        if !matches!(outcome, Outcome::Retry { .. } | Outcome::Abandoned) {
            self.executor.forget_progress(&delivery.task.id);
        }
        let agent_label = self.executor.registry().label(&delivery.task.agent_type);
        metrics
            .agent_duration
            .with_label_values(&[agent_label])
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(task_id = %delivery.task.id, agent = %delivery.task.agent_type,
            attempt = delivery.attempt(), outcome = outcome.label().as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64, "task ran");
        let task_id = delivery.task.id;
        let delivery = Arc::new(delivery);
        let mut settlement =
            Settlement::of(&outcome, delivery, acker, &self.worker_id, agent_label);
        settlement.span = span;
        settlement.slot = Some(slot);
        if self.settle_tx.send(settlement).await.is_err() {
            tracing::error!(%task_id, "settler stopped; the task will be redelivered");
        }
    }

    /// One attempt at `task`: not before it is due, only while it holds its idempotency key,
    /// its data read back and a large result put aside when they travel by claim check.
    async fn attempt(
        &self,
        task: &Arc<crate::task::TaskEnvelope>,
        attempt: u32,
        checkpoint: Option<serde_json::Value>,
    ) -> Outcome {
        let (broker, executor) = (&self.broker, &self.executor);
        if let Err(outcome) = delay::wait_until_due(broker, executor, task, attempt).await {
            return outcome;
        }
        if let Err(outcome) = unique::holds_its_key(&self.store, executor, task, attempt).await {
            return outcome;
        }
        let task = match claim_check::with_data(broker, executor, task, attempt).await {
            Ok(task) => task,
            Err(outcome) => return outcome,
        };
        let outcome = executor.execute_from(&task, attempt, checkpoint).await;
        claim_check::with_large_result_stored(broker, executor, &task, attempt, outcome).await
    }

    /// Waits for an agent that did not answer at once: the task is shown as `processing` in
    /// the mirror, its lease is renewed, a first delivery still running after a moment gets
    /// its `processing` row, and shutdown past the grace period abandons it.
    async fn keep_running(
        &self,
        delivery: &TaskDelivery,
        acker: &Acker,
        mut run: Pin<&mut impl Future<Output = Outcome>>,
    ) -> Outcome {
        if let Some(mirror) = &self.mirror {
            mirror.record(MirrorEvent::processing(
                &delivery.mirror_attempt(&self.worker_id),
            ));
        }
        let mut abandon = self.abandon_rx.clone();
        let mut beat = tokio::time::interval_at(
            tokio::time::Instant::now() + self.heartbeat,
            self.heartbeat.max(Duration::from_millis(100)),
        );
        // A first delivery has no row yet; one still running after a moment is shown as
        // `processing` (API, status, long tasks) with a claim of its own.
        let show = tokio::time::sleep(PROCESSING_AFTER);
        tokio::pin!(show);
        let mut shown = delivery.attempt() > 1;
        loop {
            tokio::select! {
                outcome = &mut run => return outcome,
                _ = beat.tick() => {
                    // Still working: renew the lease so no second worker gets the task.
                    let _ = acker.ack_with(AckKind::Progress).await;
                }
                _ = &mut show, if !shown => {
                    shown = true;
                    let claim = Claim {
                        task: &delivery.task,
                        attempt: delivery.attempt(),
                        trace_id: crate::telemetry::trace_id(&delivery.trace),
                    };
                    if let Err(error) = self.store.tasks().claim(&[claim], &self.worker_id).await {
                        tracing::debug!(%error, "cannot show a long task as processing");
                    }
                }
                _ = raised(&mut abandon) => return Outcome::Abandoned,
            }
        }
    }
}
