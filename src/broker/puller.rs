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
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use tokio::sync::watch;

use super::{
    Broker, BrokerError, Doorbell,
    lane_counts::{ActiveLanes, COUNTS_TIMEOUT, LaneCounter},
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

/// Pulls from the lanes a worker serves, highest priority first.
pub struct PriorityPuller {
    broker: Broker,
    stream: jetstream::stream::Stream,
    filter: AgentFilter,
    /// Lanes this worker has pulled from; created when first found waiting.
    lanes: Arc<Mutex<HashMap<LaneKey, Arc<Lane>>>>,
    /// Lanes whose consumer is being created, and a counter bumped when one is ready.
    creating: Arc<Mutex<HashSet<LaneKey>>>,
    lanes_made: Arc<watch::Sender<u64>>,
    /// Lanes believed to hold messages, shared with the doorbell.
    active: Arc<Mutex<ActiveLanes>>,
    /// The `ActiveLanes::version` whose lanes were last given consumers ahead of need.
    prepared: AtomicU64,
    counter: LaneCounter,
    /// Set once the lane cap refused a lane (so the warning is logged once per episode).
    over_cap: AtomicBool,
    /// Rotates which lane of a priority is asked first, so one agent type's backlog does not
    /// starve another's at the same priority.
    turn: AtomicUsize,
}

impl Broker {
    /// A puller over the lanes `filter` admits; their consumers are created as tasks show
    /// up in them.
    ///
    /// Fails when the stream is missing.
    pub async fn priority_puller(
        &self,
        filter: AgentFilter,
    ) -> Result<PriorityPuller, BrokerError> {
        PriorityPuller::new(self.clone(), filter).await
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
        broker.remove_priority_consumers(&stream).await;
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
            running: Arc::default(),
            forget_after: broker.settings().lane_expiry() / 2,
        };
        Ok(Self {
            broker,
            stream,
            counter,
            filter,
            lanes: Arc::default(),
            creating: Arc::default(),
            lanes_made: Arc::new(watch::Sender::new(0)),
            active: Arc::default(),
            prepared: AtomicU64::new(u64::MAX),
            turn: AtomicUsize::new(0),
            over_cap: AtomicBool::new(false),
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

    /// The lanes of `priorities` to ask, highest priority first, each priority's lanes
    /// starting at a different one on every call. A full scan has the counts read again when
    /// they are old or the last scan came back short, without waiting long for them: during a
    /// stream leader election the request goes unanswered for seconds, and the lanes known
    /// so far still serve. Fails only when the counts were never read.
    async fn lanes_to_ask(&self, priorities: Priorities) -> Result<Vec<LaneKey>, BrokerError> {
        let (due, stale, never_read) = {
            let active = self.active.lock().expect("lanes lock");
            (active.due(), active.stale, active.read_at.is_none())
        };
        if priorities == Priorities::ALL && due {
            let patience = if never_read {
                COUNTS_TIMEOUT
            } else if stale {
                RECOUNT_PATIENCE
            } else {
                Duration::ZERO
            };
            if let Some(recount) = self.counter.start(self.active.clone(), self.lanes.clone())
                && !patience.is_zero()
            {
                match tokio::time::timeout(patience, recount).await {
                    Ok(Ok(Err(error))) if never_read => return Err(error),
                    _ => {}
                }
            }
        }
        let (mut lanes, changed): (Vec<LaneKey>, Option<Vec<LaneKey>>) = {
            let active = self.active.lock().expect("lanes lock");
            let asked = active
                .lanes
                .iter()
                .filter(|lane| priorities.contains(lane.priority))
                .cloned()
                .collect();
            let changed = (self.prepared.swap(active.version, Ordering::Relaxed) != active.version)
                .then(|| active.lanes.iter().cloned().collect());
            (asked, changed)
        };
        // Every lane with messages gets its consumer ahead of need (once per change of the
        // set), so a scan that reaches a lower priority finds it ready.
        // Highest priority first, so a lane cap leaves the lowest ones waiting.
        for lane in changed.iter().flatten().rev() {
            self.start_creating(lane, false);
        }
        lanes.sort_by(|a, b| {
            (b.priority.cmp(&a.priority)).then_with(|| a.agent_type.cmp(&b.agent_type))
        });
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        for level in lanes.chunk_by_mut(|a, b| a.priority == b.priority) {
            let len = level.len();
            level.rotate_left(turn % len);
        }
        Ok(lanes)
    }

    /// The lane of `key`. Its consumer is created (or its settings
    /// updated) on first use in the background, waited for only briefly: creating a consumer
    /// goes through the cluster's metadata leader, which can take seconds to answer after a
    /// node died, and the other lanes must not wait for that. `None` while it is being made.
    async fn lane(&self, key: &LaneKey) -> Option<Arc<Lane>> {
        let mut changed = self.lanes_made.subscribe();
        if let Some(lane) = self.lanes.lock().expect("lanes lock").get(key) {
            return Some(lane.clone());
        }
        self.start_creating(key, false);
        if !self.creating.lock().expect("lanes lock").contains(key) {
            // Refused by the lane cap (or made meanwhile: found on the next scan).
            return None;
        }
        let made = tokio::time::timeout(CREATE_PATIENCE, async {
            loop {
                if let Some(lane) = self.lanes.lock().expect("lanes lock").get(key) {
                    return Some(lane.clone());
                }
                changed.changed().await.ok()?;
            }
        });
        made.await.ok().flatten()
    }

    /// Creates the consumer of a lane in the background, unless it exists (or `again`: even
    /// then, when the server may have dropped it) or is on its way.
    fn start_creating(&self, key: &LaneKey, again: bool) {
        let known = self.lanes.lock().expect("lanes lock").len();
        let underway = self.creating.lock().expect("lanes lock").len();
        let max_lanes = self.broker.settings().max_lanes;
        if !again && known + underway >= max_lanes {
            if !self.over_cap.swap(true, Ordering::Relaxed) {
                tracing::warn!(max_lanes, lane = %key,
                    "lane cap reached: tasks of further lanes wait until idle lanes expire");
            }
            return;
        }
        self.over_cap.store(false, Ordering::Relaxed);
        if (!again && self.lanes.lock().expect("lanes lock").contains_key(key))
            || !self
                .creating
                .lock()
                .expect("lanes lock")
                .insert(key.clone())
        {
            return;
        }
        let (broker, stream) = (self.broker.clone(), self.stream.clone());
        let (lanes, creating, made) = (
            self.lanes.clone(),
            self.creating.clone(),
            self.lanes_made.clone(),
        );
        let key = key.clone();
        tokio::spawn(async move {
            let created = broker
                .ensure_lane(&stream, key.priority, &key.agent_type)
                .await;
            match created {
                Ok(consumer) => {
                    let lane = Arc::new(Lane {
                        consumer,
                        stuck: AtomicBool::new(false),
                        seen: Mutex::new(Instant::now()),
                    });
                    lanes.lock().expect("lanes lock").insert(key.clone(), lane);
                    made.send_modify(|n| *n += 1);
                }
                Err(error) => tracing::warn!(%error, "cannot set up a lane; trying again"),
            }
            creating.lock().expect("lanes lock").remove(&key);
        });
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
        for key in self.lanes_to_ask(priorities).await? {
            let wanted = max - taken.len();
            if wanted == 0 {
                break;
            }
            let Some(lane) = self.lane(&key).await else {
                continue;
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
                        tracing::info!(lane = %key, "consumer answers again");
                    }
                }
                Err(error) => {
                    if !lane.stuck.swap(true, Ordering::Relaxed) {
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
            self.active.lock().expect("lanes lock").stale = true;
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
            active: self.active.clone(),
        })
    }
}
