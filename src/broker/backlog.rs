//! What is waiting: per priority (pending, in flight, age of the oldest waiting task) and
//! per agent type. Read by `/v1/queues`, the backlog gauges and `swarmd status`.

use std::collections::BTreeMap;

use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;

use super::{Broker, BrokerError};
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

/// The whole backlog.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Backlog {
    /// Highest priority first.
    pub priorities: Vec<PriorityBacklog>,
    /// Messages stored per agent type (waiting or in flight).
    pub agent_types: BTreeMap<String, u64>,
}

impl Broker {
    /// Reads the backlog from the consumers and the stream.
    ///
    /// Fails when the stream cannot be read; a consumer not created yet counts as empty.
    pub async fn backlog(&self) -> Result<Backlog, BrokerError> {
        let stream_error = |e: &dyn std::fmt::Display| BrokerError::Stream {
            stream: self.settings().stream.clone(),
            reason: e.to_string(),
        };
        let stream = self
            .jetstream()
            .get_stream(&self.settings().stream)
            .await
            .map_err(|e| stream_error(&e))?;
        let mut priorities = Vec::new();
        for priority in (0..=MAX_PRIORITY).rev() {
            let Ok(info) = stream.consumer_info(self.consumer_name(priority)).await else {
                priorities.push(PriorityBacklog {
                    priority,
                    pending: 0,
                    in_flight: 0,
                    oldest_pending_secs: 0,
                });
                continue;
            };
            // The next message this consumer would deliver is its oldest waiting one.
            let oldest_pending_secs = if info.num_pending == 0 {
                0
            } else {
                stream
                    .direct_get_next_for_subject(
                        self.subjects().priority_filter(priority),
                        Some(info.delivered.stream_sequence + 1),
                    )
                    .await
                    .map(|m| (Utc::now().timestamp() - m.time.unix_timestamp()).max(0))
                    .unwrap_or(0)
            };
            priorities.push(PriorityBacklog {
                priority,
                pending: info.num_pending,
                in_flight: info.num_ack_pending as u64,
                oldest_pending_secs,
            });
        }
        let mut agent_types = BTreeMap::new();
        let mut subjects = stream
            .info_with_subjects(self.subjects().all_tasks())
            .await
            .map_err(|e| stream_error(&e))?;
        while let Some(entry) = subjects.next().await {
            let (subject, count) = entry.map_err(|e| stream_error(&e))?;
            if let Some((_, agent)) = self.subjects().parse_task(&subject) {
                *agent_types.entry(agent.to_string()).or_default() += count as u64;
            }
        }
        Ok(Backlog {
            priorities,
            agent_types,
        })
    }
}
