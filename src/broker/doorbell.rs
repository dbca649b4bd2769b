//! The doorbell: while a worker's lanes are drained it subscribes to their subjects with
//! plain core NATS, so the next publish wakes it within a network round trip and tells it
//! which priority (and lane) to ask.

use futures::{FutureExt, StreamExt};

use super::{Priorities, Subjects, lanes::LaneKey};
use crate::task::AgentFilter;

/// A live subscription to the task subjects that signals new publishes.
pub struct Doorbell {
    pub(super) subscriber: futures::stream::SelectAll<async_nats::Subscriber>,
    pub(super) subjects: Subjects,
    pub(super) filter: AgentFilter,
}

/// What rang: the priorities to ask, and the lanes the puller should know of (hand it to
/// [`super::PriorityPuller::heard`]).
#[derive(Debug, Default)]
pub struct Rung {
    pub(super) priorities: Priorities,
    pub(super) lanes: Vec<LaneKey>,
}

impl Doorbell {
    /// Waits for a publish, then returns everything that rang so far. `None` when the
    /// connection closed the subscription.
    pub async fn ring(&mut self) -> Option<Rung> {
        let first = self.subscriber.next().await?;
        let mut rung = Rung::default();
        self.add(&mut rung, &first.subject);
        while let Some(Some(more)) = self.subscriber.next().now_or_never() {
            self.add(&mut rung, &more.subject);
        }
        Some(rung)
    }

    fn add(&self, rung: &mut Rung, subject: &str) {
        match LaneKey::of_subject(&self.subjects, &self.subjects.unstored(subject)) {
            Some(lane) if self.filter.admits(&lane.agent_type) => {
                rung.priorities = rung.priorities.with(lane.priority);
                if !rung.lanes.contains(&lane) {
                    rung.lanes.push(lane);
                }
            }
            Some(_) => {}
            // A subject we cannot parse still rang: look everywhere.
            None => rung.priorities = Priorities::ALL,
        }
    }
}
