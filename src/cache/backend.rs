//! Where cached results live: the fleet's Redis (a single node, shared with the mirror), or
//! a Redis Cluster of their own (the seed's `DistributedCache` on `RedisCluster`).
//!
//! Only the cache may live on a cluster: its keys stand alone (one `GET`/`SET` each), while
//! the legacy queue contract updates several fixed keys (`agent_tasks`, `processing_tasks`,
//! …) in one script, which a cluster refuses when they hash to different slots — and the
//! hash tags that would put them in one slot would rename the keys legacy tools read.

use std::time::Duration;

use redis::{
    AsyncCommands, RedisResult,
    aio::ConnectionManager,
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

use crate::{config::RedisSettings, mirror::MirrorError};

/// A cache server: one node, or a cluster connected on first use (it may be down at start).
pub enum CacheBackend {
    Single(ConnectionManager),
    Cluster(Box<Cluster>),
}

/// A cluster client and its connection, made on first use.
pub struct Cluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl Cluster {
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl CacheBackend {
    /// The backend `settings` name: `cache_url` (its comma-separated nodes a cluster when
    /// `cache_cluster`), else the fleet's Redis.
    ///
    /// Fails only on a malformed URL.
    pub fn connect(settings: &RedisSettings) -> Result<Self, MirrorError> {
        let url = settings.cache_url.as_ref().unwrap_or(&settings.url);
        if !settings.cache_cluster {
            let mut single = settings.clone();
            single.url = url.clone();
            return Ok(Self::Single(crate::mirror::connect(&single)?));
        }
        let nodes: Vec<&str> = url.expose().split(',').map(str::trim).collect();
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2))
            // A dead master's slots fail fast: the cache is worth a miss, not a wait.
            .retries(1)
            .build()?;
        Ok(Self::Cluster(Box::new(Cluster {
            client,
            connection: OnceCell::new(),
        })))
    }

    pub async fn get(&self, key: &str) -> RedisResult<Option<Vec<u8>>> {
        match self {
            Self::Single(redis) => redis.clone().get(key).await,
            Self::Cluster(cluster) => cluster.connection().await?.get(key).await,
        }
    }

    pub async fn set_ex(&self, key: &str, value: Vec<u8>, seconds: u64) -> RedisResult<()> {
        match self {
            Self::Single(redis) => redis.clone().set_ex(key, value, seconds).await,
            Self::Cluster(cluster) => {
                (cluster.connection().await?)
                    .set_ex(key, value, seconds)
                    .await
            }
        }
    }
}
