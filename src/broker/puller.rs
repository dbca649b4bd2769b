//! Strict-priority pulling without polling.
//!
//! One durable pull consumer serves each priority. A worker with free slots asks them in
//! order, highest first, with no-wait fetches, so a backlog always drains from the top. When
//! every consumer is empty the worker subscribes to the task subjects with plain core NATS
//! (the *doorbell*): the next publish at any priority wakes it within a network round trip,
//! and it fetches again from just the priorities that rang, highest first. Redeliveries (a retry delay that
//! ran out, a lease that expired) are not publishes, so an idle worker also rescans on a slow
//! backstop timer.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::{FutureExt, StreamExt};

use super::{BrokerError, Subjects};
use crate::task::MAX_PRIORITY;

/// Longest a no-wait fetch may take before the worker stops waiting for its answer. A
/// healthy server answers in well under a millisecond; NATS 2.9 can hold a no-wait request
/// for a long time when a consumer's pending count went stale (seen after the server was
/// killed), so a consumer that does not answer is skipped for this scan instead of stalling
/// it, and asked with a much shorter patience until it answers again.
const FETCH_TIMEOUT: Duration = Duration::from_millis(500);
const STUCK_FETCH_TIMEOUT: Duration = Duration::from_millis(25);

/// A set of priorities, bit `p` for priority `p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priorities(u16);

impl Priorities {
    pub const ALL: Priorities = Priorities((1 << (MAX_PRIORITY + 1)) - 1);
    pub const NONE: Priorities = Priorities(0);

    pub fn with(self, priority: u8) -> Self {
        Priorities(self.0 | 1 << priority.min(MAX_PRIORITY))
    }

    pub fn union(self, other: Priorities) -> Self {
        Priorities(self.0 | other.0)
    }

    pub fn contains(self, priority: u8) -> bool {
        self.0 & (1 << priority) != 0
    }

    /// Highest first.
    pub fn descending(self) -> impl Iterator<Item = u8> {
        (0..=MAX_PRIORITY).rev().filter(move |p| self.contains(*p))
    }
}

/// Pulls from the per-priority consumers, highest priority first.
pub struct PriorityPuller {
    client: async_nats::Client,
    subjects: Subjects,
    /// Indexed by priority.
    consumers: Vec<PullConsumer>,
    /// Consumers whose last no-wait fetch went unanswered, by priority.
    stuck: Vec<AtomicBool>,
}

impl PriorityPuller {
    pub(super) fn new(
        client: async_nats::Client,
        subjects: Subjects,
        consumers: Vec<PullConsumer>,
    ) -> Self {
        Self {
            client,
            subjects,
            stuck: consumers.iter().map(|_| AtomicBool::new(false)).collect(),
            consumers,
        }
    }

    /// Takes up to `max` waiting messages without waiting for new ones from the consumers of
    /// `priorities`, highest first. Fewer than `max` means each of them was drained (or
    /// skipped because it did not answer).
    ///
    /// Fails only when no consumer could be asked at all (the connection is down).
    pub async fn fetch_available(
        &self,
        max: usize,
        priorities: Priorities,
    ) -> Result<Vec<jetstream::Message>, BrokerError> {
        let mut taken = Vec::with_capacity(max);
        let mut last_error = None;
        let mut answered = false;
        for priority in priorities.descending() {
            let wanted = max - taken.len();
            if wanted == 0 {
                break;
            }
            let stuck = &self.stuck[priority as usize];
            let patience = if stuck.load(Ordering::Relaxed) {
                STUCK_FETCH_TIMEOUT
            } else {
                FETCH_TIMEOUT
            };
            match self.fetch_one(priority, wanted, patience, &mut taken).await {
                Ok(()) => {
                    answered = true;
                    if stuck.swap(false, Ordering::Relaxed) {
                        tracing::info!(priority, "consumer answers again");
                    }
                }
                Err(error) => {
                    if !stuck.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "skipping a consumer that does not answer");
                    }
                    last_error = Some(error);
                }
            }
        }
        match last_error {
            Some(error) if !answered && taken.is_empty() => Err(error),
            _ => Ok(taken),
        }
    }

    /// One no-wait fetch of up to `wanted` messages from the consumer of `priority`.
    async fn fetch_one(
        &self,
        priority: u8,
        wanted: usize,
        patience: Duration,
        taken: &mut Vec<jetstream::Message>,
    ) -> Result<(), BrokerError> {
        let consumer = &self.consumers[priority as usize];
        let fetch_error = |reason: String| BrokerError::Fetch {
            consumer: consumer.cached_info().name.clone(),
            reason,
        };
        let mut batch = consumer
            .fetch()
            .max_messages(wanted)
            .messages()
            .await
            .map_err(|e| fetch_error(e.to_string()))?;
        let drained = tokio::time::timeout(patience, async {
            while let Some(message) = batch.next().await {
                taken.push(message.map_err(|e| fetch_error(e.to_string()))?);
            }
            Ok(())
        })
        .await;
        match drained {
            Ok(result) => result,
            Err(_) => Err(fetch_error("no answer to the pull request".into())),
        }
    }

    /// Subscribes to the doorbell. Rescan after this returns: a publish that came before the
    /// subscription rang no bell.
    ///
    /// Fails when the subscription cannot be registered with the server.
    pub async fn doorbell(&self) -> Result<Doorbell, BrokerError> {
        let subscriber = self
            .client
            .subscribe(self.subjects.all_tasks())
            .await
            .map_err(|e| BrokerError::Request(e.to_string()))?;
        // The server must know the subscription before the caller's rescan, or a publish in
        // between would be missed by both.
        self.client
            .flush()
            .await
            .map_err(|e| BrokerError::Request(e.to_string()))?;
        Ok(Doorbell {
            subscriber,
            subjects: self.subjects.clone(),
        })
    }
}

/// A live subscription to the task subjects that signals new publishes.
pub struct Doorbell {
    subscriber: async_nats::Subscriber,
    subjects: Subjects,
}

impl Doorbell {
    /// Waits for a publish, then returns every priority that rang so far. `None` when the
    /// connection closed the subscription.
    pub async fn ring(&mut self) -> Option<Priorities> {
        let first = self.subscriber.next().await?;
        let mut rung = self.priorities_of(&first.subject);
        while let Some(Some(more)) = self.subscriber.next().now_or_never() {
            rung = rung.union(self.priorities_of(&more.subject));
        }
        Some(rung)
    }

    fn priorities_of(&self, subject: &str) -> Priorities {
        // A subject we cannot parse still rang: look everywhere.
        self.subjects
            .parse_task(subject)
            .map_or(Priorities::ALL, |(priority, _)| {
                Priorities::NONE.with(priority)
            })
    }
}
