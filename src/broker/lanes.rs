//! Lanes: one durable pull consumer per (priority, agent type).
//!
//! A work-queue stream refuses consumers whose filters overlap, and NATS 2.9 gives a consumer
//! one filter, so "priority 5, every agent type but `email`" cannot be one consumer. Each
//! subject `<prefix>.tasks.p<N>.<agent>` therefore gets its own consumer, shared by every
//! worker that serves that agent type. A worker pool is then just the set of lanes it pulls
//! from, and lanes for agent types nobody registered (garbage input) are still created by the
//! general workers, which dead-letter what they find there.

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};

use futures::StreamExt;

use std::{sync::Arc, time::Instant};

use super::{Broker, BrokerError, Subjects};
use crate::task::MAX_PRIORITY;

/// A set of priorities, bit `p` for priority `p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
}

/// Names a lane: one priority of one agent type (subject `<prefix>.tasks.p<N>.<agent>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaneKey {
    pub priority: u8,
    pub agent_type: String,
}

impl LaneKey {
    pub fn new(priority: u8, agent_type: impl Into<String>) -> Self {
        Self {
            priority,
            agent_type: agent_type.into(),
        }
    }

    /// The lane of a task subject; `None` for any other subject.
    pub fn of_subject(subjects: &Subjects, subject: &str) -> Option<Self> {
        let (priority, agent_type) = subjects.parse_task(subject)?;
        Some(Self::new(priority, agent_type))
    }
}

impl std::fmt::Display for LaneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}.{}", self.priority, self.agent_type)
    }
}

/// A lane as a worker pulls it: its consumer and what the worker knows about it.
pub(super) struct Lane {
    pub(super) consumer: Arc<PullConsumer>,
    /// The last no-wait fetch went unanswered.
    pub(super) stuck: bool,
    /// When the counts last showed messages in the lane.
    pub(super) seen: Instant,
}

/// Durable name of the consumer of one lane. Agent types are subject tokens, which may hold
/// characters a consumer name may not (it becomes a directory name): those are replaced and a
/// hash of the original keeps names apart.
pub fn lane_name(group: &str, priority: u8, agent_type: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if agent_type.chars().all(safe) && agent_type.len() <= 64 {
        return format!("{group}-p{priority}-{agent_type}");
    }
    let cleaned: String = agent_type
        .chars()
        .take(32)
        .map(|c| if safe(c) { c } else { '_' })
        .collect();
    let hash = name_hash(agent_type);
    format!("{group}-p{priority}-{cleaned}-{hash:016x}")
}

/// A stable 64-bit hash (FNV-1a) that keeps consumer names of odd subjects apart.
pub(super) fn name_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

concern_handle! {
    /// The lanes: one consumer per priority (and pool), pulled highest first, and their backlog.
    pub struct Lanes for Broker, lanes
}

impl Lanes<'_> {
    /// Durable name of the consumer of one lane.
    pub fn name(&self, priority: u8, agent_type: &str) -> String {
        lane_name(&self.settings().consumer_group, priority, agent_type)
    }

    /// Creates (or updates) the consumer of one lane.
    ///
    /// Fails when the stream is missing or the server drops the subject filter.
    pub(super) async fn ensure_lane(
        &self,
        stream: &jetstream::stream::Stream,
        priority: u8,
        agent_type: &str,
    ) -> Result<PullConsumer, BrokerError> {
        let name = self.name(priority, agent_type);
        let filter = self.subjects().task(priority, agent_type);
        let settings = self.settings();
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!(
                "SwarmDirector workers, priority {priority}, agent type {agent_type}"
            )),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: settings.ack_wait(),
            filter_subject: filter.clone(),
            max_ack_pending: settings.max_ack_pending,
            max_deliver: settings.max_deliver,
            max_waiting: 4096,
            inactive_threshold: settings.lane_expiry(),
            ..Default::default()
        };
        let consumer_error = |source: crate::broker::NatsError| BrokerError::Consumer {
            consumer: name.clone(),
            source,
        };
        // Creating an existing durable updates its editable settings (ack wait, limits).
        let consumer: PullConsumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| consumer_error(e.into()))?;
        let info = consumer.cached_info();
        if info.config.filter_subject != filter {
            return Err(consumer_error(crate::broker::NatsError::from(format!(
                "server kept filter {:?} instead of {filter:?}",
                info.config.filter_subject
            ))));
        }
        Ok(consumer)
    }

    /// Removes the one-consumer-per-priority layout of earlier versions, whose wildcard
    /// filters overlap every lane. Their unacknowledged tasks stay in the stream and are
    /// delivered again by the lanes.
    pub(super) async fn remove_priority_consumers(&self, stream: &jetstream::stream::Stream) {
        // One listing instead of a lookup per priority: this runs at every worker start.
        let group = &self.settings().consumer_group;
        let mut obsolete = Vec::new();
        let mut listed = stream.consumers();
        while let Some(Ok(info)) = listed.next().await {
            let per_priority = (0..=crate::task::MAX_PRIORITY).any(|p| {
                info.name == format!("{group}-p{p}")
                    && info.config.filter_subject == self.subjects().priority_filter(p)
            });
            if per_priority {
                obsolete.push(info.name);
            }
        }
        for name in obsolete {
            if stream.delete_consumer(&name).await.is_ok() {
                tracing::info!(consumer = %name, "removed a per-priority consumer of an earlier version");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_names_are_safe_and_distinct() {
        assert_eq!(lane_name("workers", 5, "email"), "workers-p5-email");
        let odd = lane_name("workers", 5, "a/b");
        assert!(odd.starts_with("workers-p5-a_b-"), "{odd}");
        assert_ne!(odd, lane_name("workers", 5, "a\\b"));
    }
}
