//! Which lanes hold messages: the stream's per-subject counts, read in the background one
//! request at a time (a JetStream API request answered by the stream leader: a few
//! milliseconds in a cluster, seconds during a leader election, so never on every pull),
//! plus the lanes the doorbell reports.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream;
use futures::StreamExt;

use super::{
    BrokerError, Subjects,
    lanes::{Lane, LaneKey},
};
use crate::task::AgentFilter;

/// Longest the per-subject message counts may take.
pub(super) const COUNTS_TIMEOUT: Duration = Duration::from_secs(2);

/// How old the counts may get while a backlog keeps the worker busy: a lane that was empty
/// when they were read (a priority or agent type nobody published to yet) is found this much
/// later at most. Idle workers hear of new lanes from the doorbell at once.
const RECOUNT_INTERVAL: Duration = Duration::from_secs(1);

/// Reads which lanes hold messages in the background, one read at a time.
#[derive(Clone)]
pub(super) struct LaneCounter {
    pub(super) stream: jetstream::stream::Stream,
    pub(super) subjects: Subjects,
    /// The subject filter of the counts request.
    pub(super) filter_subject: String,
    pub(super) agents: AgentFilter,
    pub(super) running: Arc<AtomicBool>,
    /// Half the lane consumers' expiry.
    pub(super) forget_after: Duration,
}

impl LaneCounter {
    /// Starts a read unless one is running; its handle resolves when `active` is updated.
    pub(super) fn start(
        &self,
        active: Arc<Mutex<ActiveLanes>>,
        known: Arc<Mutex<HashMap<LaneKey, Arc<Lane>>>>,
    ) -> Option<tokio::task::JoinHandle<Result<(), BrokerError>>> {
        if self.running.swap(true, Ordering::AcqRel) {
            return None;
        }
        let counter = self.clone();
        active.lock().expect("lanes lock").rung.clear();
        Some(tokio::spawn(async move {
            let counted = tokio::time::timeout(COUNTS_TIMEOUT, counter.count()).await;
            counter.running.store(false, Ordering::Release);
            let counted =
                counted.unwrap_or_else(|_| Err(counter.error("no answer from the stream".into())));
            let mut active = active.lock().expect("lanes lock");
            match counted {
                Ok(mut lanes) => {
                    counter.forget_idle(&lanes, &known);
                    // Lanes the doorbell reported while the counts were on their way.
                    lanes.append(&mut active.rung);
                    if active.lanes != lanes {
                        active.lanes = lanes;
                        active.version += 1;
                    }
                    active.read_at = Some(Instant::now());
                    active.stale = false;
                    Ok(())
                }
                Err(error) => {
                    tracing::warn!(%error, "asking the lanes known so far");
                    Err(error)
                }
            }
        }))
    }

    /// One request to the stream, whatever the number of lanes: (priority, agent type) of
    /// every lane this worker serves that holds messages (waiting or in flight).
    async fn count(&self) -> Result<BTreeSet<LaneKey>, BrokerError> {
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

    /// Marks the lanes holding messages as seen, and drops the handles of lanes that held
    /// none for half the consumers' expiry: the server may delete those consumers, and a
    /// lane without a handle is made again when tasks return.
    fn forget_idle(
        &self,
        occupied: &BTreeSet<LaneKey>,
        known: &Mutex<HashMap<LaneKey, Arc<Lane>>>,
    ) {
        known.lock().expect("lanes lock").retain(|key, lane| {
            let mut seen = lane.seen.lock().expect("lane lock");
            if occupied.contains(key) {
                *seen = Instant::now();
            }
            seen.elapsed() < self.forget_after
        });
    }

    fn error(&self, source: super::NatsError) -> BrokerError {
        BrokerError::Fetch {
            consumer: "(subject counts)".into(),
            source,
        }
    }
}

/// The lanes a scan asks: found by reading the stream's per-subject counts (a JetStream API
/// request, answered by the stream leader: a few milliseconds in a cluster, so not on every
/// pull), and added to at once by the doorbell.
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

    pub(super) fn due(&self) -> bool {
        self.stale
            || self
                .read_at
                .is_none_or(|at| at.elapsed() >= RECOUNT_INTERVAL)
    }
}
