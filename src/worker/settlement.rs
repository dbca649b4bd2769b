//! One delivery's settlement — what to store, what the legacy keys show, what the broker is
//! told — and every way to make one: from an [`Outcome`] (the only place that maps outcomes
//! to acks), or for a message that never became a task or is handed back unrun.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, message::Acker};
use tokio::sync::OwnedSemaphorePermit;

use super::{
    Outcome,
    ending::{self, Cause, Refused},
    outcome::{Label, Record},
};
use crate::{delivery::TaskDelivery, dlq::DeadLetter, mirror::MirrorEvent};

/// One delivery's settlement: what to store, then what to tell the broker.
pub struct Settlement {
    pub acker: Acker,
    pub record: Record,
    pub ack: AckKind,
    /// Counted as this once the broker was told.
    pub label: Label,
    /// The worker's in-flight slot, freed once the message's batch goes to commit.
    pub slot: Option<OwnedSemaphorePermit>,
    /// The legacy-key move to make once the record is stored.
    pub mirror: Option<MirrorEvent>,
    /// The agent type as a metric label: a name an agent here serves, else `unknown`
    /// (producers choose agent types; labels must not follow them).
    pub agent_label: &'static str,
    /// The task's `process` span: parent of the commit, mirror and ack spans.
    pub span: tracing::Span,
    /// The delivery, when it decoded: an outcome the database refuses becomes its dead
    /// letter.
    pub delivery: Option<Arc<TaskDelivery>>,
    /// Why the database refused this outcome's row, when it did.
    pub(super) unstorable: Option<String>,
    pub(super) letter_published: bool,
    pub(super) row_stored: bool,
}

impl Settlement {
    /// A settlement storing `record`, then telling the broker `ack`; counted as `label`.
    fn new(acker: Acker, record: Record, ack: AckKind, label: Label) -> Self {
        Self {
            acker,
            record,
            ack,
            label,
            slot: None,
            mirror: None,
            agent_label: "unknown",
            span: tracing::Span::none(),
            delivery: None,
            unstorable: None,
            letter_published: false,
            row_stored: false,
        }
    }

    /// How `outcome` of `delivery` settles.
    pub fn of(
        outcome: &Outcome,
        delivery: Arc<TaskDelivery>,
        acker: Acker,
        worker_id: &str,
        agent_label: &'static str,
    ) -> Self {
        let mut settlement =
            Settlement::new(acker, Record::Nothing, AckKind::Ack, Label::Completed);
        settlement.agent_label = agent_label;
        settlement.delivery = Some(delivery);
        settlement.decide(outcome, worker_id);
        settlement
    }

    /// Settles this delivery as `outcome` instead (the database refused its row, a cancel
    /// overtook it). A message that never became a task stores nothing more.
    pub fn decide(&mut self, outcome: &Outcome, worker_id: &str) {
        match self.delivery.clone() {
            Some(delivery) => {
                self.record = outcome.record(&delivery, worker_id);
                self.mirror = outcome.mirror_event(&delivery, worker_id);
            }
            None => self.record = Record::Nothing,
        }
        self.ack = outcome.ack_kind();
        self.label = outcome.label();
    }

    /// A task whose claim the database refuses: it has no row, so only its dead letter is
    /// stored, and its message is terminated.
    pub fn unclaimable(
        delivery: Arc<TaskDelivery>,
        acker: Acker,
        refusal: &dyn std::fmt::Display,
        worker_id: &str,
        agent_label: &'static str,
    ) -> Self {
        let outcome = ending::decide(Cause::Unstorable {
            what: Refused::Task,
            refusal: refusal.to_string(),
        });
        let mut settlement = Settlement::of(&outcome, delivery, acker, worker_id, agent_label);
        if let Record::Dead(_, letter) = std::mem::replace(&mut settlement.record, Record::Nothing)
        {
            settlement.record = Record::Rejected(letter);
        }
        settlement
    }

    /// A message that never became a task: its dead letter, then the message terminated.
    pub fn rejected(letter: DeadLetter, acker: Acker, agent_label: &'static str) -> Self {
        let record = Record::Rejected(Box::new(letter));
        let mut settlement = Settlement::new(acker, record, AckKind::Term, Label::Rejected);
        settlement.agent_label = agent_label;
        settlement
    }

    /// A message handed back unrun, to come again after `after` (at once when `None`).
    pub fn handed_back(acker: Acker, after: Option<Duration>) -> Self {
        Settlement::new(acker, Record::Nothing, AckKind::Nak(after), Label::Requeued)
    }
}
