//! Strict-priority pulling without polling.
//!
//! One durable pull consumer serves each lane (priority and agent type, see `lanes`). A
//! worker with free slots reads which of its lanes hold messages (one request: the stream's
//! per-subject counts), then asks them in order, highest priority first, with no-wait
//! fetches, so a backlog always drains from the top. When
//! every consumer is empty the worker subscribes to the task subjects with plain core NATS
//! (the *doorbell*): the next publish at any priority wakes it within a network round trip,
//! and it fetches again from just the priorities that rang, highest first. Redeliveries (a retry delay that
//! ran out, a lease that expired) are not publishes, so an idle worker also rescans on a slow
//! backstop timer.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::{FutureExt, StreamExt};

use super::{AgentFilter, Broker, BrokerError, Subjects};
use crate::task::MAX_PRIORITY;

/// Longest a no-wait fetch may take before the worker stops waiting for its answer. A
/// healthy server answers in well under a millisecond; NATS 2.9 can hold a no-wait request
/// for a long time when a consumer's pending count went stale (seen after the server was
/// killed), so a consumer that does not answer is skipped for this scan instead of stalling
/// it, and asked with a much shorter patience until it answers again.
const FETCH_TIMEOUT: Duration = Duration::from_millis(500);
const STUCK_FETCH_TIMEOUT: Duration = Duration::from_millis(25);

/// Longest the per-subject message counts may take before the scan gives up.
const COUNTS_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Pulls from the lanes a worker serves, highest priority first.
pub struct PriorityPuller {
    broker: Broker,
    stream: jetstream::stream::Stream,
    filter: AgentFilter,
    /// Lanes this worker has pulled from, by subject; created when first found waiting.
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    /// Rotates which lane of a priority is asked first, so one agent type's backlog does not
    /// starve another's at the same priority.
    turn: AtomicUsize,
}

struct Lane {
    consumer: PullConsumer,
    /// The last no-wait fetch went unanswered.
    stuck: AtomicBool,
}

impl PriorityPuller {
    /// Fails when the stream is missing.
    pub(super) async fn new(broker: Broker, filter: AgentFilter) -> Result<Self, BrokerError> {
        let stream = broker
            .jetstream()
            .get_stream(&broker.settings().stream)
            .await
            .map_err(|e| BrokerError::Stream {
                stream: broker.settings().stream.clone(),
                reason: e.to_string(),
            })?;
        broker.remove_priority_consumers(&stream).await;
        Ok(Self {
            broker,
            stream,
            filter,
            lanes: Mutex::default(),
            turn: AtomicUsize::new(0),
        })
    }

    pub fn filter(&self) -> &AgentFilter {
        &self.filter
    }

    /// The subjects this worker listens to: one per agent type for a dedicated pool, all
    /// task subjects otherwise.
    fn listened_subjects(&self) -> Vec<String> {
        let subjects = self.broker.subjects();
        match &self.filter {
            AgentFilter::Only(set) => set.iter().map(|a| subjects.any_priority(a)).collect(),
            _ => vec![subjects.all_tasks()],
        }
    }

    /// Lanes of `priorities` this worker serves that hold messages (waiting or in flight),
    /// highest priority first; one request to the stream whatever the number of lanes.
    async fn occupied_lanes(
        &self,
        priorities: Priorities,
    ) -> Result<Vec<(u8, String)>, BrokerError> {
        let subjects = self.broker.subjects();
        let filter = match self.listened_subjects().as_slice() {
            [one] => one.clone(),
            _ => subjects.all_tasks(),
        };
        let request_error = |reason: String| BrokerError::Fetch {
            consumer: format!("{} (subject counts)", self.broker.settings().stream),
            reason,
        };
        let read = async {
            let mut counts = self
                .stream
                .info_with_subjects(filter)
                .await
                .map_err(|e| request_error(e.to_string()))?;
            let mut occupied = Vec::new();
            while let Some(entry) = counts.next().await {
                let (subject, count) = entry.map_err(|e| request_error(e.to_string()))?;
                if let Some((priority, agent)) = subjects.parse_task(&subject)
                    && count > 0
                    && priorities.contains(priority)
                    && self.filter.admits(agent)
                {
                    occupied.push((priority, agent.to_string()));
                }
            }
            Ok::<_, BrokerError>(occupied)
        };
        let mut occupied = tokio::time::timeout(COUNTS_TIMEOUT, read)
            .await
            .map_err(|_| request_error("no answer from the stream".into()))??;
        occupied.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        // Within each priority, start at a different lane on every call.
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        for level in occupied.chunk_by_mut(|a, b| a.0 == b.0) {
            let len = level.len();
            level.rotate_left(turn % len);
        }
        Ok(occupied)
    }

    /// The lane of `(priority, agent_type)`, creating its consumer on first use.
    async fn lane(&self, priority: u8, agent_type: &str) -> Result<Arc<Lane>, BrokerError> {
        let subject = self.broker.subjects().task(priority, agent_type);
        if let Some(lane) = self.lanes.lock().expect("lanes lock").get(&subject) {
            return Ok(lane.clone());
        }
        let consumer = self
            .broker
            .ensure_lane(&self.stream, priority, agent_type)
            .await?;
        let lane = Arc::new(Lane {
            consumer,
            stuck: AtomicBool::new(false),
        });
        self.lanes
            .lock()
            .expect("lanes lock")
            .insert(subject, lane.clone());
        Ok(lane)
    }

    /// Takes up to `max` waiting messages without waiting for new ones from the lanes of
    /// `priorities`, highest first. Fewer than `max` means each of them was drained (or
    /// skipped because it did not answer).
    ///
    /// Fails only when nothing could be asked at all (the connection is down).
    pub async fn fetch_available(
        &self,
        max: usize,
        priorities: Priorities,
    ) -> Result<Vec<jetstream::Message>, BrokerError> {
        let mut taken = Vec::with_capacity(max);
        let mut last_error = None;
        let mut answered = false;
        for (priority, agent_type) in self.occupied_lanes(priorities).await? {
            let wanted = max - taken.len();
            if wanted == 0 {
                break;
            }
            let lane = match self.lane(priority, &agent_type).await {
                Ok(lane) => lane,
                Err(error) => {
                    tracing::warn!(%error, "cannot set up a lane");
                    last_error = Some(error);
                    continue;
                }
            };
            let patience = if lane.stuck.load(Ordering::Relaxed) {
                STUCK_FETCH_TIMEOUT
            } else {
                FETCH_TIMEOUT
            };
            match Self::fetch_one(&lane.consumer, wanted, patience, &mut taken).await {
                Ok(()) => {
                    answered = true;
                    if lane.stuck.swap(false, Ordering::Relaxed) {
                        tracing::info!(priority, agent_type, "consumer answers again");
                    }
                }
                Err(error) => {
                    if !lane.stuck.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "skipping a consumer that does not answer");
                    }
                    if error.to_string().contains("consumer not found") {
                        // Deleted behind our back: create it again next time.
                        let subject = self.broker.subjects().task(priority, &agent_type);
                        self.lanes.lock().expect("lanes lock").remove(&subject);
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

    /// One no-wait fetch of up to `wanted` messages from one lane's consumer.
    async fn fetch_one(
        consumer: &PullConsumer,
        wanted: usize,
        patience: Duration,
        taken: &mut Vec<jetstream::Message>,
    ) -> Result<(), BrokerError> {
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
        let client = self.broker.client();
        let mut subscribers = Vec::new();
        for subject in self.listened_subjects() {
            subscribers.push(
                client
                    .subscribe(subject)
                    .await
                    .map_err(|e| BrokerError::Request(e.to_string()))?,
            );
        }
        // The server must know the subscription before the caller's rescan, or a publish in
        // between would be missed by both.
        client
            .flush()
            .await
            .map_err(|e| BrokerError::Request(e.to_string()))?;
        Ok(Doorbell {
            subscriber: futures::stream::select_all(subscribers),
            subjects: self.broker.subjects().clone(),
        })
    }
}

/// A live subscription to the task subjects that signals new publishes.
pub struct Doorbell {
    subscriber: futures::stream::SelectAll<async_nats::Subscriber>,
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
