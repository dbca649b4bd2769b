//! Putting a worker together from the settings: the broker, the store, and — when Redis
//! is enabled — the legacy mirror, the legacy intake and the result cache.

use std::{sync::Arc, time::Duration};

use super::{Worker, WorkerError};
use crate::{
    agent::AgentRegistry,
    broker::Broker,
    cache::{CacheBackend, ResultCache},
    config::Settings,
    mirror::{self, Intake, LegacyKeys, Mirror, MirrorError},
    scale::ScaleMeter,
    sidecars::upkeep::{LegacyMirror, Upkeep},
    store::Store,
};

/// A worker and the background writer of its legacy mirror.
pub struct Assembled {
    pub worker: Worker,
    pub mirror: Option<Mirror>,
    pub mirror_writer: Option<tokio::task::JoinHandle<()>>,
}

impl Assembled {
    /// Runs the worker until `shutdown`, then lets the mirror write what it holds (for at
    /// most `flush` when Redis is away; `swarmd mirror rebuild` repairs what is left).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        flush: Duration,
    ) -> Result<(), WorkerError> {
        let result = self.worker.run(shutdown).await;
        drop(self.mirror);
        if let Some(writer) = self.mirror_writer
            && tokio::time::timeout(flush, writer).await.is_err()
        {
            tracing::warn!("legacy mirror not flushed (Redis away?): run `swarmd mirror rebuild`");
        }
        result
    }
}

/// Builds a worker with everything the settings enable.
///
/// Fails only on a malformed Redis URL; Redis itself may be down (it is connected lazily).
pub fn assemble(
    settings: &Settings,
    broker: Broker,
    store: Store,
    registry: AgentRegistry,
) -> Result<Assembled, MirrorError> {
    let mut worker = Worker::new(
        broker.clone(),
        store.clone(),
        registry,
        settings.worker.clone(),
    )
    .with_scale_meter(Arc::new(
        // An invalid filter is refused when the settings load (and again when the worker
        // starts), so the fallback is never a reading about the wrong pool.
        ScaleMeter::new(settings.scale.clone())
            .for_pool(settings.worker.agent_filter().unwrap_or_default()),
    ));
    let upkeep = Upkeep::new(store.clone(), settings.database.retention());
    let redis_settings = &settings.redis;
    if !(redis_settings.mirror || redis_settings.intake || redis_settings.cache) {
        return Ok(Assembled {
            worker: worker.with_upkeep(upkeep),
            mirror: None,
            mirror_writer: None,
        });
    }
    let redis = mirror::connect(redis_settings)?;
    let keys = LegacyKeys::of(redis_settings);
    let (mut mirror, mut mirror_writer) = (None, None);
    if redis_settings.mirror {
        worker = worker.with_upkeep(upkeep.with_legacy(LegacyMirror {
            redis: redis.clone(),
            keys: keys.clone(),
        }));
        let (handle, writer) = Mirror::spawn(redis.clone(), keys.clone(), store, worker.metrics());
        worker = worker.with_mirror(handle.clone());
        mirror = Some(handle);
        mirror_writer = Some(writer);
    } else {
        worker = worker.with_upkeep(upkeep);
    }
    if redis_settings.intake {
        // A connection of its own: its scans and claims do not wait behind the mirror's
        // pipelined scripts.
        let intake = Intake::new(
            mirror::connect(redis_settings)?,
            keys,
            broker,
            worker.id().to_string(),
        )
        .with_metrics(worker.metrics());
        worker = worker.with_intake(
            intake,
            Duration::from_millis(redis_settings.intake_interval_ms),
        );
    }
    if redis_settings.cache {
        let cache = match (&redis_settings.cache_url, redis_settings.cache_cluster) {
            // The fleet's own Redis: share its connection.
            (None, false) => ResultCache::new(
                CacheBackend::Single(redis),
                &redis_settings.key_prefix,
                redis_settings.cache_ttl_secs.clone(),
            ),
            _ => ResultCache::connect(redis_settings)?,
        };
        worker = worker.with_cache(Arc::new(cache));
    }
    Ok(Assembled {
        worker,
        mirror,
        mirror_writer,
    })
}
