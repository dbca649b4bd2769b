//! The result cache (the seed's "caching strategies"): a cacheable agent's result is kept
//! in Redis under `agent_result:<agent_type>:<sha256 of the canonical input>` for its TTL,
//! as MessagePack (never pickle), and a hit skips the agent. Any cache failure is a miss:
//! the agent runs. The cache lives on the fleet's Redis or on a Redis Cluster of its own
//! ([`CacheBackend`]).

mod backend;

pub use backend::CacheBackend;

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{agent::Agent, config::RedisSettings, metrics::Metrics, mirror::MirrorError};

/// Longest a cache lookup or store may take before it counts as a miss.
const PATIENCE: Duration = Duration::from_millis(250);

/// A Redis-backed cache of agent results.
pub struct ResultCache {
    redis: CacheBackend,
    key_prefix: String,
    ttl_overrides: BTreeMap<String, u64>,
    /// Where hits, misses and failures are counted (`result_cache_requests_total`).
    metrics: &'static Metrics,
}

impl ResultCache {
    /// The cache `settings` describe (`cache_url`, `cache_cluster`, `key_prefix`,
    /// `cache_ttl_secs`). Fails only on a malformed URL: the server may be down at start.
    pub fn connect(settings: &RedisSettings) -> Result<Self, MirrorError> {
        Ok(Self::new(
            CacheBackend::connect(settings)?,
            &settings.key_prefix,
            settings.cache_ttl_secs.clone(),
        ))
    }

    pub fn new(
        redis: CacheBackend,
        key_prefix: &str,
        ttl_overrides: BTreeMap<String, u64>,
    ) -> Self {
        Self {
            redis,
            key_prefix: key_prefix.to_string(),
            ttl_overrides,
            metrics: Metrics::global(),
        }
    }

    /// Counts into `metrics` instead of the process's own.
    pub fn with_metrics(mut self, metrics: &'static Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Requests that ended `outcome`: lookups `hit` or `miss`, lookups and stores `error`.
    pub fn lookups(&self, outcome: &str) -> u64 {
        self.metrics.cache.with_label_values(&[outcome]).get()
    }

    /// How long `agent`'s results are kept, if they are cached at all (a configured 0
    /// turns caching off for that agent).
    pub fn ttl_for(&self, agent: &dyn Agent) -> Option<Duration> {
        match self.ttl_overrides.get(agent.name()) {
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(*secs)),
            None => agent.cache_ttl(),
        }
    }

    /// The cache key of `input` for `agent_type`.
    pub fn key(&self, agent_type: &str, input: &Value) -> String {
        let canonical = serde_json::to_vec(&canonical(input)).expect("JSON values serialise");
        let digest = Sha256::digest(&canonical);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}agent_result:{agent_type}:{hex}", self.key_prefix)
    }

    /// The cached result, or `None` on a miss or any failure.
    pub async fn get(&self, agent_type: &str, input: &Value) -> Option<Value> {
        let key = self.key(agent_type, input);
        let found: Option<Vec<u8>> =
            match tokio::time::timeout(PATIENCE, self.redis.get(&key)).await {
                Ok(Ok(found)) => found,
                _ => {
                    self.metrics.cache.with_label_values(&["error"]).inc();
                    None
                }
            };
        match found.and_then(|bytes| rmp_serde::from_slice(&bytes).ok()) {
            Some(value) => {
                self.metrics.cache.with_label_values(&["hit"]).inc();
                Some(value)
            }
            None => {
                self.metrics.cache.with_label_values(&["miss"]).inc();
                None
            }
        }
    }

    /// Stores `result` for `ttl`; failures are counted and otherwise ignored.
    pub async fn put(&self, agent_type: &str, input: &Value, result: &Value, ttl: Duration) {
        let Ok(bytes) = rmp_serde::to_vec(result) else {
            return;
        };
        let key = self.key(agent_type, input);
        let stored = tokio::time::timeout(
            PATIENCE,
            self.redis.set_ex(&key, bytes, ttl.as_secs().max(1)),
        )
        .await;
        if !matches!(stored, Ok(Ok(()))) {
            self.metrics.cache.with_label_values(&["error"]).inc();
        }
    }
}

/// `value` with every object's keys sorted, so equal inputs hash equally.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a = serde_json::to_vec(&canonical(&json!({"b": 1, "a": {"y": 2, "x": 3}}))).unwrap();
        let b = serde_json::to_vec(&canonical(&json!({"a": {"x": 3, "y": 2}, "b": 1}))).unwrap();
        assert_eq!(a, b);
    }
}
