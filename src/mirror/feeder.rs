//! Shows newly published tasks in `agent_tasks`. Producers publish straight to JetStream,
//! so the fleet listens to what the tasks stream republishes once it stored a task (a core
//! NATS queue group: one worker process mirrors each) and queues a "waiting" move for each.
//! A publish the stream refused (limits, a subject it does not take) is never shown, nor
//! again one marked `Swarm-Shown: waiting` (the legacy intake's, whose member is there).

use chrono::Utc;
use futures::StreamExt;

use super::{Mirror, MirrorEvent};
use crate::{
    broker::{Broker, BrokerError, headers},
    task::{Codec, WAIT_OUT_UP_TO},
};

/// Header of a republished message: the subject it was stored under.
const STORED_SUBJECT: &str = "Nats-Subject";

/// Mirrors publishes until the subscription ends or `shutdown` completes.
///
/// Fails when the subscription cannot be made.
pub async fn run(
    broker: Broker,
    mirror: Mirror,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BrokerError> {
    let group = format!("{}-mirror", broker.settings().consumer_group);
    let subscription = broker
        .client()
        .queue_subscribe(broker.subjects().stored_tasks(), group)
        .await
        .map_err(|e| BrokerError::Request(e.into()))?;
    let mut published = std::pin::pin!(subscription.take_until(shutdown));
    while let Some(message) = published.next().await {
        let header = |name| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        // The legacy intake showed it waiting when it claimed it.
        if header(headers::SHOWN).as_deref() == Some(headers::SHOWN_WAITING) {
            continue;
        }
        let content_type = header(headers::CONTENT_TYPE);
        // Bad messages are the dead-letter path's business, not the mirror's.
        let Ok(codec) = Codec::for_message(content_type.as_deref(), &message.payload) else {
            continue;
        };
        // Only what a lane will take: a task that breaks the contract, or sits on a subject
        // no lane reads, is never waiting in the legacy view.
        let Ok(task) = codec.decode(&message.payload) else {
            continue;
        };
        // The republished copy names the subject it was stored under in a header.
        let stored_as = header(STORED_SUBJECT).unwrap_or_default();
        let lane = broker.subjects().parse_task(&stored_as);
        if task.validate().is_ok() && lane == Some((task.priority, task.agent_type.as_str())) {
            // One published straight to its lane before it is due goes back to wait (see
            // `worker::delay`): scheduled, not waiting, so no legacy consumer takes it early.
            let event = match task.not_before {
                Some(due) if due - Utc::now() > WAIT_OUT_UP_TO => {
                    MirrorEvent::scheduled(&task, due)
                }
                _ => MirrorEvent::published(&task),
            };
            mirror.record(event);
        }
    }
    Ok(())
}
