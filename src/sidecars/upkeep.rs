//! Upkeep the fleet does for itself, so nothing it keeps grows without bound: the task
//! table's day partitions are created ahead and expired ones dropped, and the legacy
//! mirror's finished entries are trimmed by the same retention period. Every worker runs a
//! round at start and then hourly (PostgreSQL's advisory lock and a Redis lease keep them
//! from doing the same work at once); `swarmd prune` runs one round on demand.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{
    mirror::{LegacyKeys, MirrorError, retention::TrimReport},
    store::{PartitionReport, Store, StoreError},
};

/// How often a worker runs a round.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// How long one process's claim on trimming the legacy mirror lasts: about one round per
/// interval across the fleet, however many workers there are.
const LEGACY_LEASE: Duration = Duration::from_secs(3000);

#[derive(Debug, thiserror::Error)]
pub enum UpkeepError {
    #[error("task partition upkeep: {0}")]
    Store(#[from] StoreError),
    #[error("trimming the legacy mirror: {0}")]
    Legacy(#[from] MirrorError),
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpkeepReport {
    pub partitions: PartitionReport,
    /// `None` when the mirror is off, retention keeps everything, or another worker holds
    /// the trimming lease.
    pub legacy: Option<TrimReport>,
}

/// The legacy mirror's keys, and the connection to trim them.
#[derive(Clone)]
pub struct LegacyMirror {
    pub redis: redis::aio::ConnectionManager,
    pub keys: LegacyKeys,
}

/// One fleet's upkeep.
#[derive(Clone)]
pub struct Upkeep {
    store: Store,
    keep: Option<chrono::Duration>,
    legacy: Option<LegacyMirror>,
}

impl Upkeep {
    /// Keeps finished tasks for `keep` (`None`: forever).
    pub fn new(store: Store, keep: Option<chrono::Duration>) -> Self {
        Self {
            store,
            keep,
            legacy: None,
        }
    }

    /// Trims the legacy mirror too.
    pub fn with_legacy(mut self, legacy: LegacyMirror) -> Self {
        self.legacy = Some(legacy);
        self
    }

    /// One round at `now`. With `leased`, the legacy mirror is trimmed only by the process
    /// that takes the fleet's lease (workers); without, it is trimmed regardless (an
    /// operator's `swarmd prune`).
    ///
    /// Fails when PostgreSQL or Redis does not answer; what was done before stays done.
    pub async fn round(
        &self,
        now: DateTime<Utc>,
        leased: bool,
    ) -> Result<UpkeepReport, UpkeepError> {
        let partitions = self
            .store
            .retention()
            .upkeep_partitions(now, self.keep)
            .await?;
        let mut legacy = None;
        if let (Some(keep), Some(mirror)) = (self.keep, &self.legacy) {
            let mut redis = mirror.redis.clone();
            if !leased || take_lease(&mut redis, &mirror.keys).await? {
                legacy = Some(
                    crate::mirror::retention::trim_finished(&mut redis, &mirror.keys, now - keep)
                        .await?,
                );
            }
        }
        Ok(UpkeepReport { partitions, legacy })
    }

    /// Runs a round now and every `every` until `shutdown`.
    pub async fn run(self, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.round(Utc::now(), true).await {
                Ok(report) => tracing::debug!(?report, "upkeep round done"),
                Err(error) => tracing::warn!(%error, "upkeep round failed; trying again later"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// True when this process may trim the legacy mirror now.
async fn take_lease(
    redis: &mut redis::aio::ConnectionManager,
    keys: &LegacyKeys,
) -> Result<bool, MirrorError> {
    let taken: Option<String> = redis::cmd("SET")
        .arg(&keys.upkeep_lease)
        .arg(std::process::id())
        .arg("NX")
        .arg("PX")
        .arg(LEGACY_LEASE.as_millis() as u64)
        .query_async(redis)
        .await?;
    Ok(taken.is_some())
}
