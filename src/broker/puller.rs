//! Strict-priority pulling without polling.
//!
//! One durable pull consumer serves each lane (priority and agent type, see `lanes`). A
//! worker knows which of its lanes hold messages (`lane_counts`, and the `doorbell` while it
//! is idle); with free slots it asks them in order, highest priority first and the lanes of
//! one priority in turn, with no-wait fetches, so a backlog always drains from the top.
//! Redeliveries (a retry delay that ran out, a lease that expired) are not publishes, so an
//! idle worker also rescans on a slow backstop timer.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use tokio::{sync::mpsc, task::JoinHandle};

use super::lanes::Lanes;
use super::{
    Broker, BrokerError, Doorbell,
    doorbell::Rung,
    lane_counts::{ActiveLanes, COUNTS_TIMEOUT, Counted, LaneCounter},
    lanes::{Lane, LaneKey, Priorities},
};
use crate::task::AgentFilter;

/// Longest a no-wait fetch may take before the worker stops waiting for its answer. A
/// healthy server answers in well under a millisecond; NATS 2.9 can hold a no-wait request
/// for a long time when a consumer's pending count went stale (seen after the server was
/// killed), so a consumer that does not answer is skipped for this scan instead of stalling
/// it, and asked with a much shorter patience until it answers again.
const FETCH_TIMEOUT: Duration = Duration::from_millis(500);
const STUCK_FETCH_TIMEOUT: Duration = Duration::from_millis(25);

/// How long a scan waits for a new lane's consumer before asking the other lanes.
const CREATE_PATIENCE: Duration = Duration::from_millis(250);

/// How long a scan that follows a short one waits for fresh counts before asking the lanes
/// it knows (a healthy stream answers in a few milliseconds).
const RECOUNT_PATIENCE: Duration = Duration::from_millis(250);

/// A lane's consumer as its background creation ended.
type Made = (LaneKey, Result<PullConsumer, BrokerError>);

/// Pulls from the lanes a worker serves, highest priority first. It owns everything it
/// knows about them; the background work it starts (reading the counts, creating a lane's
/// consumer) hands its result back rather than sharing state.
pub struct PriorityPuller {
    broker: Broker,
    stream: jetstream::stream::Stream,
    filter: AgentFilter,
    /// Lanes this worker has pulled from; created when first found waiting.
    lanes: HashMap<LaneKey, Lane>,
    /// Lanes whose consumer is being made in the background; each result comes back on
    /// `made_rx`.
    creating: HashSet<LaneKey>,
    made_tx: mpsc::UnboundedSender<Made>,
    made_rx: mpsc::UnboundedReceiver<Made>,
    /// Lanes believed to hold messages.
    active: ActiveLanes,
    counter: LaneCounter,
    /// The read of the counts under way, if any.
    counting: Option<JoinHandle<Counted>>,
    /// Half the lane consumers' expiry: a lane without messages for this long is forgotten.
    forget_after: Duration,
    /// The `ActiveLanes::version` whose lanes were last given consumers ahead of need.
    prepared: u64,
    /// Set once the lane cap refused a lane (so the warning is logged once per episode).
    over_cap: bool,
    /// Rotates which lane of a priority is asked first, so one agent type's backlog does not
    /// starve another's at the same priority.
    turn: usize,
}

impl Lanes<'_> {
    /// A puller over the lanes `filter` admits; their consumers are created as tasks show
    /// up in them.
    ///
    /// Fails when the stream is missing.
    pub async fn puller(self, filter: AgentFilter) -> Result<PriorityPuller, BrokerError> {
        PriorityPuller::new(self.0.clone(), filter).await
    }
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
                source: e.into(),
            })?;
        broker.lanes().remove_priority_consumers(&stream).await;
        let counter = LaneCounter {
            stream: stream.clone(),
            subjects: broker.subjects().clone(),
            filter_subject: match &filter {
                AgentFilter::Only(set) if set.len() == 1 => broker
                    .subjects()
                    .any_priority(set.first().expect("one agent")),
                _ => broker.subjects().all_tasks(),
            },
            agents: filter.clone(),
        };
        let (made_tx, made_rx) = mpsc::unbounded_channel();
        Ok(Self {
            forget_after: broker.settings().lane_expiry() / 2,
            broker,
            stream,
            counter,
            filter,
            lanes: HashMap::new(),
            creating: HashSet::new(),
            made_tx,
            made_rx,
            active: ActiveLanes::default(),
            counting: None,
            prepared: u64::MAX,
            turn: 0,
            over_cap: false,
        })
    }

    /// The subjects this worker listens to: one per agent type for a dedicated pool, all
    /// task subjects otherwise. On a stream that takes schedules, their stored copies: a task
    /// the server published when due never passes the task subject on core NATS.
    fn listened_subjects(&self) -> Vec<String> {
        let subjects = self.broker.subjects();
        let listened: Vec<String> = match &self.filter {
            AgentFilter::Only(set) => set.iter().map(|a| subjects.any_priority(a)).collect(),
            _ => vec![subjects.all_tasks()],
        };
        if !self.broker.stream_takes_schedules() {
            return listened;
        }
        listened
            .iter()
            .map(|subject| subjects.stored_copy_of(subject))
            .collect()
    }

    /// Takes what the doorbell heard: its lanes are known to hold messages from now on.
    /// Returns the priorities to ask.
    pub fn heard(&mut self, rung: Rung) -> Priorities {
        for lane in rung.lanes {
            self.active.ring(lane);
        }
        rung.priorities
    }

    /// The lanes of `priorities` to ask, highest priority first, each priority's lanes
    /// starting at a different one on every call. A full scan has the counts read again when
    /// they are old or the last scan came back short, without waiting long for them: during a
    /// stream leader election the request goes unanswered for seconds, and the lanes known
    /// so far still serve. Fails only when the counts were never read.
    async fn lanes_to_ask(&mut self, priorities: Priorities) -> Result<Vec<LaneKey>, BrokerError> {
        if self.counting.as_ref().is_some_and(JoinHandle::is_finished) {
            let finished = self.counting.take().expect("a finished read");
            let _ = self.take_counts(finished.await);
        }
        if priorities == Priorities::ALL && self.active.due() {
            let never_read = self.active.read_at.is_none();
            let patience = if never_read {
                COUNTS_TIMEOUT
            } else if self.active.stale {
                RECOUNT_PATIENCE
            } else {
                Duration::ZERO
            };
            let started = self.counting.is_none();
            if started {
                self.active.rung.clear();
                self.counting = Some(self.counter.spawn());
            }
            if started && !patience.is_zero() {
                let reading = self.counting.as_mut().expect("just started");
                if let Ok(joined) = tokio::time::timeout(patience, reading).await {
                    self.counting = None;
                    match self.take_counts(joined) {
                        Err(error) if never_read => return Err(error),
                        _ => {}
                    }
                }
            }
        }
        // Highest priority first: lanes order by priority, then agent type.
        let mut lanes: Vec<LaneKey> = self
            .active
            .lanes
            .iter()
            .rev()
            .filter(|lane| priorities.contains(lane.priority))
            .cloned()
            .collect();
        // Every lane with messages gets its consumer ahead of need (once per change of the
        // set), so a scan that reaches a lower priority finds it ready.
        // Highest priority first, so a lane cap leaves the lowest ones waiting.
        if std::mem::replace(&mut self.prepared, self.active.version) != self.active.version {
            let occupied: Vec<LaneKey> = self.active.lanes.iter().rev().cloned().collect();
            for lane in &occupied {
                self.start_creating(lane, false);
            }
        }
        self.turn = self.turn.wrapping_add(1);
        for level in lanes.chunk_by_mut(|a, b| a.priority == b.priority) {
            let len = level.len();
            level.rotate_left(self.turn % len);
        }
        Ok(lanes)
    }

    /// Takes a read of the counts: the lanes that hold messages are marked seen, those that
    /// held none for half the consumers' expiry are forgotten (the server may delete their
    /// consumers; a lane without a handle is made again when tasks return).
    fn take_counts(
        &mut self,
        joined: Result<Counted, tokio::task::JoinError>,
    ) -> Result<(), BrokerError> {
        let counted = joined.unwrap_or_else(|error| {
            Err(BrokerError::Fetch {
                consumer: "(subject counts)".into(),
                source: error.into(),
            })
        });
        match counted {
            Ok(occupied) => {
                let now = Instant::now();
                let forget_after = self.forget_after;
                self.lanes.retain(|key, lane| {
                    if occupied.contains(key) {
                        lane.seen = now;
                    }
                    lane.seen.elapsed() < forget_after
                });
                self.active.counted(occupied);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "asking the lanes known so far");
                Err(error)
            }
        }
    }

    /// The consumer of lane `key`. It is created (or its settings updated) on first use in
    /// the background, waited for only briefly: creating a consumer goes through the
    /// cluster's metadata leader, which can take seconds to answer after a node died, and
    /// the other lanes must not wait for that. `None` while it is being made.
    async fn lane(&mut self, key: &LaneKey) -> Option<Arc<PullConsumer>> {
        while let Ok(made) = self.made_rx.try_recv() {
            self.add_made(made);
        }
        if let Some(lane) = self.lanes.get(key) {
            return Some(lane.consumer.clone());
        }
        self.start_creating(key, false);
        let deadline = tokio::time::Instant::now() + CREATE_PATIENCE;
        // Refused by the lane cap, or its creation failed: asked again on a later scan.
        while self.creating.contains(key) {
            let made = tokio::time::timeout_at(deadline, self.made_rx.recv()).await;
            self.add_made(made.ok()??);
        }
        self.lanes.get(key).map(|lane| lane.consumer.clone())
    }

    fn add_made(&mut self, (key, made): Made) {
        self.creating.remove(&key);
        match made {
            Ok(consumer) => {
                let lane = Lane {
                    consumer: Arc::new(consumer),
                    stuck: false,
                    seen: Instant::now(),
                };
                self.lanes.insert(key, lane);
            }
            Err(error) => tracing::warn!(%error, "cannot set up a lane; trying again"),
        }
    }

    /// Creates the consumer of a lane in the background, unless it exists (or `again`: even
    /// then, when the server may have dropped it) or is on its way.
    fn start_creating(&mut self, key: &LaneKey, again: bool) {
        let max_lanes = self.broker.settings().max_lanes;
        if !again && self.lanes.len() + self.creating.len() >= max_lanes {
            if !std::mem::replace(&mut self.over_cap, true) {
                tracing::warn!(max_lanes, lane = %key,
                    "lane cap reached: tasks of further lanes wait until idle lanes expire");
            }
            return;
        }
        self.over_cap = false;
        if (!again && self.lanes.contains_key(key)) || !self.creating.insert(key.clone()) {
            return;
        }
        let (broker, stream) = (self.broker.clone(), self.stream.clone());
        let (key, made) = (key.clone(), self.made_tx.clone());
        tokio::spawn(async move {
            let created = broker
                .lanes()
                .ensure_lane(&stream, key.priority, &key.agent_type)
                .await;
            // The puller may be gone (the worker stopped): nobody needs the lane then.
            let _ = made.send((key, created));
        });
    }

    /// Takes up to `max` waiting messages without waiting for new ones from the lanes of
    /// `priorities`, highest first. Fewer than `max` means each of them was drained (or
    /// skipped because it did not answer).
    ///
    /// Fails only when nothing could be asked at all (the connection is down).
    pub async fn fetch_available(
        &mut self,
        max: usize,
        priorities: Priorities,
    ) -> Result<Vec<jetstream::Message>, BrokerError> {
        let mut taken = Vec::with_capacity(max);
        let mut last_error = None;
        let mut answered = false;
        for key in self.lanes_to_ask(priorities).await? {
            let wanted = max - taken.len();
            if wanted == 0 {
                break;
            }
            let Some(consumer) = self.lane(&key).await else {
                continue;
            };
            let stuck = self.lanes.get(&key).is_some_and(|lane| lane.stuck);
            let patience = if stuck {
                STUCK_FETCH_TIMEOUT
            } else {
                FETCH_TIMEOUT
            };
            let fetched = Self::fetch_one(&consumer, wanted, patience, &mut taken).await;
            let lane = self.lanes.get_mut(&key);
            match fetched {
                Ok(()) => {
                    answered = true;
                    if lane.is_some_and(|lane| std::mem::replace(&mut lane.stuck, false)) {
                        tracing::info!(lane = %key, "consumer answers again");
                    }
                }
                Err(error) => {
                    if lane.is_some_and(|lane| !std::mem::replace(&mut lane.stuck, true)) {
                        tracing::warn!(%error, "skipping a consumer that does not answer");
                        // A consumer that expired while idle, or was deleted behind our back,
                        // does not answer either (the pull times out; tested): make it again
                        // (a no-op for one whose leader is only moving).
                        self.start_creating(&key, true);
                    }
                    last_error = Some(error);
                }
            }
        }
        if taken.len() < max {
            self.active.stale = true;
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
        let fetch_error = |source: crate::broker::NatsError| BrokerError::Fetch {
            consumer: consumer.cached_info().name.clone(),
            source,
        };
        let mut batch = consumer
            .fetch()
            .max_messages(wanted)
            .messages()
            .await
            .map_err(|e| fetch_error(e.into()))?;
        let drained = tokio::time::timeout(patience, async {
            while let Some(message) = batch.next().await {
                taken.push(message.map_err(&fetch_error)?);
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
                    .map_err(|e| BrokerError::Request(e.into()))?,
            );
        }
        // The server must know the subscription before the caller's rescan, or a publish in
        // between would be missed by both.
        client
            .flush()
            .await
            .map_err(|e| BrokerError::Request(e.into()))?;
        Ok(Doorbell {
            subscriber: futures::stream::select_all(subscribers),
            subjects: self.broker.subjects().clone(),
            filter: self.filter.clone(),
        })
    }
}
