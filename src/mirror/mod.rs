//! The seed's Redis queue contract, kept alive beside JetStream and PostgreSQL.
//!
//! - [`legacy_json`]: the seed's task JSON, byte for byte.
//! - [`keys`]: the legacy key names and the fleet's bookkeeping keys.
//! - [`event`]: one task move (waiting, processing, completed, failed) and its JSON.
//! - [`writer`]: batched, pipelined writes that never hold up a worker, with catch-up;
//!   [`held`]: the moves it holds back while a newer one may replace them.
//! - [`feeder`]: shows newly published tasks as waiting.
//! - [`cancelled`]: shows cancelled tasks given up at once, however long they would wait.
//! - [`intake`]: takes in tasks that legacy producers `ZADD` to `agent_tasks`.
//! - [`rebuild`]: `mirror check` (drift against PostgreSQL) and `mirror rebuild`.
//! - [`retention`]: trims finished entries past the retention period.

pub mod cancelled;
mod event;
pub mod feeder;
mod held;
pub mod intake;
mod keys;
pub mod legacy_json;
pub mod rebuild;
pub mod retention;
mod scripts;
mod writer;

use std::time::Duration;

pub use event::{Attempt, MirrorEvent, Place, shown_by_ref};
pub use intake::Intake;
pub use keys::LegacyKeys;
pub use legacy_json::LegacyTask;
pub use writer::Mirror;

use crate::config::RedisSettings;

/// A legacy-contract operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot read the tasks stream: {0}")]
    Stream(String),
    #[error("cannot publish a legacy task: {0}")]
    Publish(String),
}

/// A Redis connection that reconnects by itself and gives up on a request quickly, so a
/// Redis outage slows nothing else down. It connects lazily: Redis may be down at start.
///
/// Fails only on a malformed URL.
pub fn connect(settings: &RedisSettings) -> Result<redis::aio::ConnectionManager, MirrorError> {
    let client = redis::Client::open(settings.url.expose())?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    Ok(redis::aio::ConnectionManager::new_lazy_with_config(
        client, config,
    )?)
}

/// Deletes every key starting with `prefix` (benchmarks and tests clean up with this), with
/// `SCAN` rather than `KEYS`, which blocks Redis and which the fleet's ACL user may not run.
///
/// Fails when Redis does not answer.
pub async fn delete_keys_with_prefix(
    redis: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
) -> Result<usize, MirrorError> {
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(redis)
                .await?;
            deleted += keys.len();
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
