//! Replaying a dead letter: the same work as a new task with a fresh attempt budget, linked
//! to the original by `replay_of`, and the record removed once the new task is stored.

use chrono::Utc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use super::{DeadLetterStream, DlqError, StoredDeadLetter};
use crate::{
    broker::{Broker, BrokerError},
    task::{Codec, TaskEnvelope},
};

/// Why a dead letter could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("dead letter {0} never decoded into a task ({1}); there is nothing to replay")]
    NoEnvelope(Uuid, String),
    #[error(
        "dead letter {0} keeps only the start of the task's data (cut to fit the broker); it cannot be replayed"
    )]
    Truncated(Uuid),
    #[error("cannot publish the replay of {id}: {source}")]
    Publish { id: Uuid, source: BrokerError },
    #[error("replayed {id} as {new_id}, but could not remove the dead letter: {source}")]
    Remove {
        id: Uuid,
        new_id: Uuid,
        source: DlqError,
    },
}

/// The task a replay publishes: the original's work and settings under a new id.
pub fn replay_envelope(original: &TaskEnvelope) -> TaskEnvelope {
    TaskEnvelope {
        id: Uuid::now_v7(),
        created_at: Utc::now(),
        replay_of: Some(original.id),
        ..original.clone()
    }
}

/// The id of the replay of the dead letter stored at `sequence` for task `original`: the
/// same for every replay of that record, so a client that retries a replay (a timeout, a
/// double click) publishes the same task again — dropped by the broker's de-duplication,
/// or acknowledged without running once its result is committed.
pub fn replay_id(original: Uuid, sequence: u64) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"swarmd replay")
        .chain_update(original.as_bytes())
        .chain_update(sequence.to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Publishes the replay of `stored`, then deletes the dead letter; returns the new task id.
///
/// Fails when the record holds no envelope (the message never decoded), or when the publish
/// or the delete fails; a failed publish leaves the dead letter in place.
pub async fn replay(
    broker: &Broker,
    dead_letters: &DeadLetterStream,
    stored: &StoredDeadLetter,
) -> Result<Uuid, ReplayError> {
    let letter = &stored.letter;
    let original = letter
        .envelope
        .as_ref()
        .ok_or_else(|| ReplayError::NoEnvelope(letter.id, letter.reason.to_string()))?;
    if !letter.envelope_is_whole() {
        return Err(ReplayError::Truncated(letter.id));
    }
    let task = TaskEnvelope {
        id: replay_id(letter.id, stored.sequence),
        ..replay_envelope(original)
    };
    // The replay continues the dead task's trace.
    let span = tracing::info_span!("replay", task.id = %letter.id, replay.id = %task.id);
    if let Some(traceparent) = &letter.traceparent {
        let _ = span.set_parent(crate::telemetry::from_traceparent(traceparent));
    }
    broker
        .publish(&task, Codec::MessagePack)
        .instrument(span)
        .await
        .map_err(|source| ReplayError::Publish {
            id: letter.id,
            source,
        })?;
    dead_letters
        .delete(stored.sequence)
        .await
        .map_err(|source| ReplayError::Remove {
            id: letter.id,
            new_id: task.id,
            source,
        })?;
    Ok(task.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_id_is_stable_per_record() {
        let task = Uuid::new_v4();
        assert_eq!(replay_id(task, 7), replay_id(task, 7));
        assert_ne!(replay_id(task, 7), replay_id(task, 8));
        assert_ne!(replay_id(task, 7), replay_id(Uuid::new_v4(), 7));
        assert_ne!(replay_id(task, 7), task);
        assert_eq!(replay_id(task, 7).get_version_num(), 8);
    }
}
