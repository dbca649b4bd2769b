//! The doorbell: while a worker's lanes are drained it subscribes to their subjects with
//! plain core NATS, so the next publish wakes it within a network round trip and tells it
//! which priority (and lane) to ask.

use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};

use super::{Priorities, Subjects, lane_counts::ActiveLanes, lanes::LaneKey};
use crate::task::AgentFilter;

/// A live subscription to the task subjects that signals new publishes.
pub struct Doorbell {
    pub(super) subscriber: futures::stream::SelectAll<async_nats::Subscriber>,
    pub(super) subjects: Subjects,
    pub(super) filter: AgentFilter,
    /// The puller's lanes: a ring adds the lane it came from.
    pub(super) active: Arc<Mutex<ActiveLanes>>,
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
        match LaneKey::of_subject(&self.subjects, &self.subjects.unstored(subject)) {
            Some(lane) if self.filter.admits(&lane.agent_type) => {
                let priority = lane.priority;
                self.active.lock().expect("lanes lock").ring(lane);
                Priorities::NONE.with(priority)
            }
            Some(_) => Priorities::NONE,
            // A subject we cannot parse still rang: look everywhere.
            None => Priorities::ALL,
        }
    }
}
