//! Retention of the legacy mirror: the seed's `completed_tasks` and `failed_tasks` hashes
//! grow forever; the fleet removes entries that finished before the retention cutoff, by
//! the same rule as the task rows (the entry's own `completed_at` / `failed_at`), together
//! with their bookkeeping in `swarm:mirror:state`.
//!
//! Entries are only ever added to these two hashes (a task's final state never changes), so
//! an entry scanned as expired can be deleted without re-checking it. An entry without a
//! readable time is left alone: a legacy tool may write its own shapes there.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{LegacyKeys, MirrorError, legacy_json::parse_timestamp};

/// Hash fields read per `HSCAN` call.
const SCAN_COUNT: usize = 250;

/// What a trim removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrimReport {
    pub completed: u64,
    pub failed: u64,
}

/// The only fields a trim reads from an entry.
#[derive(Deserialize)]
struct FinishedAt {
    completed_at: Option<String>,
    failed_at: Option<String>,
}

/// Removes entries of `completed_tasks` and `failed_tasks` that finished before `cutoff`.
///
/// Fails when Redis does not answer; what was removed before stays removed.
pub async fn trim_finished(
    redis: &mut impl redis::aio::ConnectionLike,
    keys: &LegacyKeys,
    cutoff: DateTime<Utc>,
) -> Result<TrimReport, MirrorError> {
    Ok(TrimReport {
        completed: trim_hash(redis, &keys.completed_tasks, &keys.mirror_state, cutoff).await?,
        failed: trim_hash(redis, &keys.failed_tasks, &keys.mirror_state, cutoff).await?,
    })
}

async fn trim_hash(
    redis: &mut impl redis::aio::ConnectionLike,
    hash: &str,
    state: &str,
    cutoff: DateTime<Utc>,
) -> Result<u64, MirrorError> {
    let mut cursor = 0u64;
    let mut removed = 0u64;
    loop {
        let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(hash)
            .arg(cursor)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(redis)
            .await?;
        let expired: Vec<&str> = page
            .iter()
            .filter(|(_, entry)| finished_at(entry).is_some_and(|at| at < cutoff))
            .map(|(id, _)| id.as_str())
            .collect();
        if !expired.is_empty() {
            let mut pipe = redis::pipe();
            pipe.hdel(hash, &expired).ignore();
            pipe.hdel(state, &expired).ignore();
            pipe.query_async::<()>(redis).await?;
            removed += expired.len() as u64;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// When the entry's task finished, if it says so readably.
fn finished_at(entry: &str) -> Option<DateTime<Utc>> {
    let fields: FinishedAt = serde_json::from_str(entry).ok()?;
    fields
        .completed_at
        .or(fields.failed_at)
        .as_deref()
        .and_then(parse_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_finishes_at_its_completed_or_failed_time() {
        let completed = r#"{"id": "a", "completed_at": "2026-11-01T10:00:00.250000"}"#;
        let failed = r#"{"id": "b", "failed_at": "2026-11-02T10:00:00"}"#;
        assert_eq!(
            finished_at(completed).unwrap().to_rfc3339(),
            "2026-11-01T10:00:00.250+00:00"
        );
        assert_eq!(
            finished_at(failed).unwrap().to_rfc3339(),
            "2026-11-02T10:00:00+00:00"
        );
    }

    #[test]
    fn entries_without_a_readable_time_are_never_expired() {
        assert_eq!(finished_at(r#"{"id": "a"}"#), None);
        assert_eq!(finished_at(r#"{"completed_at": "yesterday"}"#), None);
        assert_eq!(finished_at("not json"), None);
    }
}
