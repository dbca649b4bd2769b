//! One fetched batch becomes running tasks: decode each message (bad ones become dead
//! letters), claim the batch in one statement (holding it while the database is away), skip
//! duplicates and poison, and hand the rest to the [`TaskRunner`], which runs each under its
//! own span with its lease kept alive.

use std::{
    collections::{HashMap, HashSet},
    ops::Range,
    sync::Arc,
    time::Duration,
};

use async_nats::jetstream::{self, message::Acker};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
    task::JoinSet,
};

use uuid::Uuid;

use super::{
    Outcome,
    ending::{Cause, decide},
    first_delivery::FirstDelivery,
    hold::Hold,
    settlement::Settlement,
    task_runner::{Pending, TaskRunner},
};
use crate::{
    delivery::{self, DeliveryInfo, TaskDelivery},
    fault::{RangeWrite, isolate},
    sidecars::HeldBatches,
    store::{Claim, Claimed, RowKey, StoreError},
};

/// Turns one fetched batch into running tasks and settlements.
pub(super) struct Dispatch<'a> {
    pub(super) settle_tx: &'a mpsc::Sender<Settlement>,
    /// Runs each claimed task (shared by all of them).
    pub(super) runner: Arc<TaskRunner>,
    /// True once shutdown began: stop waiting for the database, hand tasks back.
    pub(super) shutdown_rx: watch::Receiver<bool>,
    /// Batches held through a fault, for the probes.
    pub(super) held: Arc<HeldBatches>,
    /// Largest message the worker takes as a task.
    pub(super) max_payload_bytes: usize,
    /// Deliveries beyond `max_attempts` a task may have before it is dead (crashes).
    pub(super) crash_allowance: u32,
    /// Largest raw body kept in a dead letter: what fits in one NATS message.
    pub(super) max_dead_letter_body: usize,
    /// The stream's duplicate window: first deliveries stored within it of their task's
    /// creation need no lookup.
    pub(super) duplicate_window: Duration,
}

impl Dispatch<'_> {
    pub(super) async fn run(
        &self,
        messages: Vec<jetstream::Message>,
        slots: &Arc<Semaphore>,
        running: &mut JoinSet<()>,
    ) {
        let worker = &*self.runner;
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
                self.max_payload_bytes,
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
                    let label = worker.executor.registry().label(&letter.agent_type);
                    self.send(Settlement::rejected(letter, acker, label), slot)
                        .await;
                }
                Ok(task) if !seen.insert(task.id) => {
                    // The same task twice in one batch (re-published after the duplicate
                    // window): run one copy; the other comes back later as a duplicate.
                    let (_, acker) = message.split();
                    let later = Some(Duration::from_secs(1));
                    self.send(Settlement::handed_back(acker, later), slot).await;
                }
                Ok(task) => {
                    let look_up = info.delivered == 1
                        && FirstDelivery {
                            stored_at: info.stored_at,
                            created_at: task.created_at,
                            deduplicated_by_id: carries_task_id(&message, &task.id),
                        }
                        .may_repeat_an_earlier_copy(self.duplicate_window);
                    pending.push(Pending {
                        delivery: TaskDelivery {
                            task: Arc::new(task),
                            trace: crate::telemetry::extract(message.headers.as_ref()),
                            announce: crate::delivery::asks_for_announcement(&message),
                            checkpoint: None,
                            info,
                            previous_errors: Vec::new(),
                            started_at: chrono::Utc::now(),
                        },
                        acker: message.split().1,
                        slot,
                        look_up,
                    })
                }
            }
        }
        if pending.is_empty() {
            return;
        }
        let Some(mut runnable) = self.claim(&mut pending).await else {
            return;
        };
        for mut p in pending {
            let Some(claimed) = runnable.remove(&p.delivery.task.id) else {
                if worker.executor.cancelled_by(&p.delivery.task.id).is_some() {
                    // Finished because it was cancelled: the runner ends this delivery as
                    // cancelled (legacy keys, counts) without starting the agent.
                    running.spawn(self.runner.clone().run(p));
                    continue;
                }
                self.settle(Outcome::Duplicate, p).await;
                continue;
            };
            p.delivery.previous_errors = claimed.previous_errors;
            p.delivery.started_at = claimed.started_at;
            p.delivery.checkpoint = claimed.checkpoint;
            let limit = p.delivery.task.max_attempts + self.crash_allowance;
            if p.delivery.attempt() > limit {
                // Delivered again and again without an outcome: it kills or hangs workers.
                let outcome = decide(Cause::CrashedTooOften {
                    delivered: p.delivery.attempt(),
                    without_outcome: p.delivery.attempt() as usize
                        - 1
                        - p.delivery.previous_errors.len(),
                });
                self.settle(outcome, p).await;
                continue;
            }
            running.spawn(self.runner.clone().run(p));
        }
    }

    /// Decides which tasks of the batch may run, holding the batch (leases renewed) while
    /// the database is away. First deliveries write nothing yet — their outcome is their
    /// row's first write; those that could be a copy of a finished task (re-published after
    /// the de-duplication window, see [`FirstDelivery`]) are looked up first, so it is not
    /// run again, and the rest need no database at all. Redeliveries are claimed as
    /// `processing` (a row, the errors of earlier attempts); a batch of them is split around
    /// a task the database refuses for its values, which becomes a dead letter
    /// (`unstorable`) and leaves `pending`. `None` when shutdown began while holding (the
    /// batch was handed back).
    async fn claim(&self, pending: &mut Vec<Pending>) -> Option<HashMap<Uuid, Claimed>> {
        let worker = &*self.runner;
        let mut hold = Hold::new(self.held.clone());
        let mut stop = self.shutdown_rx.clone();
        let mut runnable = HashMap::with_capacity(pending.len());
        let started_at = chrono::Utc::now();
        for p in pending
            .iter()
            .filter(|p| p.delivery.attempt() == 1 && !p.look_up)
        {
            let claimed = Claimed {
                previous_errors: Vec::new(),
                started_at,
                checkpoint: None,
            };
            runnable.insert(p.delivery.task.id, claimed);
        }
        let first: Vec<RowKey> = pending
            .iter()
            .filter(|p| p.delivery.attempt() == 1 && p.look_up)
            .map(|p| RowKey::of(&p.delivery.task))
            .collect();
        let finished = loop {
            match worker.store.tasks().finished_among(&first).await {
                Ok(finished) => break finished,
                Err(error) => {
                    tracing::error!(%error, "cannot look tasks up; holding the batch");
                    if !self.hold_or_hand_back(&mut hold, pending, &mut stop).await {
                        return None;
                    }
                }
            }
        };
        hold.recovered();
        for id in first
            .into_iter()
            .map(|key| key.id)
            .filter(|id| !finished.contains(id))
        {
            let claimed = Claimed {
                previous_errors: Vec::new(),
                started_at,
                checkpoint: None,
            };
            runnable.insert(id, claimed);
        }
        let redelivered: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].delivery.attempt() > 1)
            .collect();
        let mut write = ClaimWrite {
            dispatch: self,
            pending,
            redelivered: &redelivered,
            hold: &mut hold,
            stop: &mut stop,
        };
        let found = isolate(&mut write, redelivered.len()).await?;
        runnable.extend(found.done.into_iter().flat_map(|(_, claimed)| claimed));
        let mut refused: Vec<(usize, StoreError)> = found
            .refused
            .into_iter()
            .map(|(i, error)| (redelivered[i], error))
            .collect();
        // Highest index first, so the indices left to remove stay valid.
        refused.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, error) in refused {
            let p = pending.remove(i);
            self.dead_letter_unstorable(p, &error).await;
        }
        Some(runnable)
    }

    /// Waits out a transient fault with the batch's leases renewed; at shutdown hands the
    /// whole batch back instead and returns false.
    async fn hold_or_hand_back(
        &self,
        hold: &mut Hold,
        pending: &mut Vec<Pending>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let ackers: Vec<&Acker> = pending.iter().map(|p| &p.acker).collect();
        if hold.wait(ackers, stop).await {
            return true;
        }
        for p in pending.drain(..) {
            self.send(Settlement::handed_back(p.acker, None), p.slot)
                .await;
        }
        false
    }

    /// A task the database will not store: its dead letter, its message terminated.
    async fn dead_letter_unstorable(&self, p: Pending, error: &StoreError) {
        let worker = &*self.runner;
        tracing::error!(task_id = %p.delivery.task.id, %error,
            "the database refuses this task; dead-lettering it");
        worker.metrics.unstorable.inc();
        let label = worker
            .executor
            .registry()
            .label(&p.delivery.task.agent_type);
        let delivery = Arc::new(p.delivery);
        let settlement =
            Settlement::unclaimable(delivery, p.acker, error, &worker.worker_id, label);
        self.send(settlement, p.slot).await;
    }

    /// Settles a decoded delivery that will not run with `outcome`.
    async fn settle(&self, outcome: Outcome, p: Pending) {
        let worker = &*self.runner;
        let label = worker
            .executor
            .registry()
            .label(&p.delivery.task.agent_type);
        let delivery = Arc::new(p.delivery);
        let settlement = Settlement::of(&outcome, delivery, p.acker, &worker.worker_id, label);
        self.send(settlement, p.slot).await;
    }

    /// Hands `settlement` to the settler, with the slot it frees.
    async fn send(&self, mut settlement: Settlement, slot: OwnedSemaphorePermit) {
        settlement.slot = Some(slot);
        if self.settle_tx.send(settlement).await.is_err() {
            tracing::error!("settler stopped; the message will be redelivered");
        }
    }
}

/// True when the message's `Nats-Msg-Id` is the task id (the stream de-duplicated it).
fn carries_task_id(message: &jetstream::Message, id: &Uuid) -> bool {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(crate::broker::headers::MSG_ID))
        .and_then(|value| value.as_str().parse::<Uuid>().ok())
        .is_some_and(|value| value == *id)
}

/// A batch's redeliveries claimed through [`isolate`], held through the database's outages
/// (or handed back at shutdown).
struct ClaimWrite<'a, 'd> {
    dispatch: &'a Dispatch<'d>,
    pending: &'a mut Vec<Pending>,
    /// Where each redelivery is in `pending`.
    redelivered: &'a [usize],
    hold: &'a mut Hold,
    stop: &'a mut watch::Receiver<bool>,
}

impl RangeWrite for ClaimWrite<'_, '_> {
    type Done = HashMap<Uuid, Claimed>;
    type Error = StoreError;

    async fn try_range(&mut self, range: Range<usize>) -> Result<Self::Done, StoreError> {
        let pending = &*self.pending;
        let claims: Vec<Claim> = self.redelivered[range]
            .iter()
            .map(|&i| Claim {
                task: &pending[i].delivery.task,
                attempt: pending[i].delivery.attempt(),
                trace_id: crate::telemetry::trace_id(&pending[i].delivery.trace),
            })
            .collect();
        let worker = &*self.dispatch.runner;
        let claimed = worker
            .store
            .tasks()
            .claim(&claims, &worker.worker_id)
            .await?;
        self.hold.recovered();
        Ok(claimed)
    }

    async fn wait(&mut self, error: StoreError) -> bool {
        tracing::error!(%error, "claim failed; holding the batch");
        self.dispatch
            .hold_or_hand_back(self.hold, self.pending, self.stop)
            .await
    }
}
