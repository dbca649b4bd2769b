//! Which lanes hold messages: the stream's per-subject counts, read in the background one
//! request at a time (a JetStream API request answered by the stream leader: a few
//! milliseconds in a cluster, seconds during a leader election, so never on every pull),
//! plus the lanes the doorbell reports. The puller owns all of it; the background read only
//! hands its result back.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::{BrokerError, Subjects, lanes::LaneKey};
use crate::task::AgentFilter;

/// Longest the per-subject message counts may take.
pub(super) const COUNTS_TIMEOUT: Duration = Duration::from_secs(2);

/// How old the counts may get while a backlog keeps the worker busy: a lane that was empty
/// when they were read (a priority or agent type nobody published to yet) is found this much
/// later at most. Idle workers hear of new lanes from the doorbell at once.
const RECOUNT_INTERVAL: Duration = Duration::from_secs(1);

/// The lanes holding messages, as one read of the counts found them.
pub(super) type Counted = Result<BTreeSet<LaneKey>, BrokerError>;

/// Reads which lanes hold messages.
#[derive(Clone)]
pub(super) struct LaneCounter {
    pub(super) stream: jetstream::stream::Stream,
    pub(super) subjects: Subjects,
    /// The subject filter of the counts request.
    pub(super) filter_subject: String,
    pub(super) agents: AgentFilter,
}

impl LaneCounter {
    /// One read in the background, given up after [`COUNTS_TIMEOUT`].
    pub(super) fn spawn(&self) -> JoinHandle<Counted> {
        let counter = self.clone();
        tokio::spawn(async move {
            tokio::time::timeout(COUNTS_TIMEOUT, counter.count())
                .await
                .unwrap_or_else(|_| Err(counter.error("no answer from the stream".into())))
        })
    }

    /// One request to the stream, whatever the number of lanes: every lane this worker
    /// serves that holds messages (waiting or in flight).
    async fn count(&self) -> Counted {
        let mut counts = self
            .stream
            .info_with_subjects(&self.filter_subject)
            .await
            .map_err(|e| self.error(e.into()))?;
        let mut occupied = BTreeSet::new();
        while let Some(entry) = counts.next().await {
            let (subject, count) = entry.map_err(|e| self.error(e.into()))?;
            if let Some(lane) = LaneKey::of_subject(&self.subjects, &subject)
                && count > 0
                && self.agents.admits(&lane.agent_type)
            {
                occupied.insert(lane);
            }
        }
        Ok(occupied)
    }

    fn error(&self, source: super::NatsError) -> BrokerError {
        BrokerError::Fetch {
            consumer: "(subject counts)".into(),
            source,
        }
    }
}

/// The lanes a scan asks: found by reading the stream's per-subject counts, and added to at
/// once by the doorbell.
#[derive(Default)]
pub(super) struct ActiveLanes {
    pub(super) lanes: BTreeSet<LaneKey>,
    /// Lanes the doorbell added since the running count started.
    pub(super) rung: BTreeSet<LaneKey>,
    pub(super) read_at: Option<Instant>,
    /// A scan came back short: the next full scan reads the counts again.
    pub(super) stale: bool,
    /// Bumped whenever `lanes` changes.
    pub(super) version: u64,
}

impl ActiveLanes {
    /// Adds a lane the doorbell reported.
    pub(super) fn ring(&mut self, lane: LaneKey) {
        self.rung.insert(lane.clone());
        if self.lanes.insert(lane) {
            self.version += 1;
        }
    }

    /// Takes a finished read of the counts: the lanes it found, with those the doorbell
    /// reported while it was on its way.
    pub(super) fn counted(&mut self, mut lanes: BTreeSet<LaneKey>) {
        lanes.append(&mut self.rung);
        if self.lanes != lanes {
            self.lanes = lanes;
            self.version += 1;
        }
        self.read_at = Some(Instant::now());
        self.stale = false;
    }

    pub(super) fn due(&self) -> bool {
        self.stale
            || self
                .read_at
                .is_none_or(|at| at.elapsed() >= RECOUNT_INTERVAL)
    }
}
