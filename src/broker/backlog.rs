//! What is waiting: per lane and per priority (pending, in flight, age of the oldest waiting
//! task) and per agent type. Read by `/v1/queues`, the backlog gauges and `swarmd status`.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;

use super::BrokerError;
use super::lanes::Lanes;
use crate::task::MAX_PRIORITY;

/// The backlog of one priority.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PriorityBacklog {
    pub priority: u8,
    /// Waiting for a first (or next) delivery.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub in_flight: u64,
    /// Age of the oldest waiting task, in seconds (0 when none waits).
    pub oldest_pending_secs: i64,
}

/// The backlog of one lane (priority and agent type).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LaneBacklog {
    pub priority: u8,
    pub agent_type: String,
    /// The lane's durable consumer; `None` until a worker that serves the lane saw it.
    pub consumer: Option<String>,
    pub pending: u64,
    pub in_flight: u64,
    /// Deliveries beyond the first (retries and expired leases).
    pub redelivered: u64,
    pub oldest_pending_secs: i64,
}

/// The whole backlog.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Backlog {
    /// Highest priority first, every priority listed.
    pub priorities: Vec<PriorityBacklog>,
    /// Messages stored per agent type (waiting or in flight).
    pub agent_types: BTreeMap<String, u64>,
    /// Lanes holding messages, highest priority first.
    pub lanes: Vec<LaneBacklog>,
}

impl Backlog {
    /// Tasks waiting for delivery, over all priorities.
    pub fn pending(&self) -> u64 {
        self.priorities.iter().map(|p| p.pending).sum()
    }

    /// Age of the oldest waiting task over all priorities, in seconds.
    pub fn oldest_pending_secs(&self) -> i64 {
        self.priorities
            .iter()
            .map(|p| p.oldest_pending_secs)
            .max()
            .unwrap_or(0)
    }
}

impl Lanes<'_> {
    /// Reads the backlog from the stream's per-subject counts and the lanes' consumers.
    ///
    /// Fails when the stream cannot be read. Tasks in a lane no worker has served yet count
    /// as pending.
    pub async fn backlog(self) -> Result<Backlog, BrokerError> {
        let stream_error = |source: super::NatsError| BrokerError::Stream {
            stream: self.settings().stream.clone(),
            source,
        };
        let stream = self
            .jetstream()
            .get_stream(&self.settings().stream)
            .await
            .map_err(|e| stream_error(e.into()))?;
        let mut stored = BTreeMap::new();
        let mut counts = stream
            .info_with_subjects(self.subjects().all_tasks())
            .await
            .map_err(|e| stream_error(e.into()))?;
        while let Some(entry) = counts.next().await {
            let (subject, count) = entry.map_err(|e| stream_error(e.into()))?;
            stored.insert(subject, count as u64);
        }
        let group_prefix = format!("{}-p", self.settings().consumer_group);
        let mut consumers = HashMap::new();
        let mut listed = stream.consumers();
        while let Some(info) = listed.next().await {
            let info = info.map_err(|e| stream_error(e.into()))?;
            if info.name.starts_with(&group_prefix) {
                consumers.insert(info.config.filter_subject.clone(), info);
            }
        }
        let age = |m: async_nats::jetstream::message::StreamMessage| {
            (Utc::now().timestamp() - m.time.unix_timestamp()).max(0)
        };

        let mut lanes = Vec::new();
        let mut agent_types = BTreeMap::new();
        for (subject, count) in &stored {
            let Some((priority, agent_type)) = self.subjects().parse_task(subject) else {
                continue;
            };
            *agent_types.entry(agent_type.to_string()).or_default() += count;
            let lane = match consumers.get(subject) {
                Some(info) => LaneBacklog {
                    priority,
                    agent_type: agent_type.to_string(),
                    consumer: Some(info.name.clone()),
                    pending: info.num_pending,
                    in_flight: info.num_ack_pending as u64,
                    redelivered: info.num_redelivered as u64,
                    // The next message the consumer would deliver is its oldest waiting one.
                    oldest_pending_secs: if info.num_pending == 0 {
                        0
                    } else {
                        stream
                            .direct_get_next_for_subject(
                                subject.as_str(),
                                Some(info.delivered.stream_sequence + 1),
                            )
                            .await
                            .map_or(0, age)
                    },
                },
                None => LaneBacklog {
                    priority,
                    agent_type: agent_type.to_string(),
                    consumer: None,
                    pending: *count,
                    in_flight: 0,
                    redelivered: 0,
                    oldest_pending_secs: stream
                        .direct_get_next_for_subject(subject.as_str(), None)
                        .await
                        .map_or(0, age),
                },
            };
            lanes.push(lane);
        }
        lanes.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.agent_type.cmp(&b.agent_type))
        });
        let priorities = (0..=MAX_PRIORITY)
            .rev()
            .map(|priority| {
                let of_priority = lanes.iter().filter(|lane| lane.priority == priority);
                of_priority.fold(
                    PriorityBacklog {
                        priority,
                        pending: 0,
                        in_flight: 0,
                        oldest_pending_secs: 0,
                    },
                    |mut total, lane| {
                        total.pending += lane.pending;
                        total.in_flight += lane.in_flight;
                        total.oldest_pending_secs =
                            total.oldest_pending_secs.max(lane.oldest_pending_secs);
                        total
                    },
                )
            })
            .collect();
        Ok(Backlog {
            priorities,
            agent_types,
            lanes,
        })
    }
}
