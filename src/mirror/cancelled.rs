//! Shows cancelled tasks given up at once. A task waiting in the stream (delayed, or behind
//! a backlog) reaches a worker only later, and until then the legacy keys would show it
//! scheduled or waiting while its row says `cancelled`. The fleet listens to the
//! cancellation notices (a core NATS queue group: one worker process mirrors each), reads
//! the rows they name and moves the cancelled ones to `failed_tasks`, as the seed shows a
//! task given up. A notice nobody heard is made good by the writer's catch-up and by the
//! task's own delivery, which ends it cancelled.

use futures::StreamExt;

use super::{Mirror, MirrorEvent};
use crate::{
    broker::{Broker, BrokerError, CancelNotice},
    store::Store,
};

/// Mirrors cancellations until the subscription ends or `shutdown` completes.
///
/// Fails when the subscription cannot be made.
pub async fn run(
    broker: Broker,
    store: Store,
    mirror: Mirror,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BrokerError> {
    let group = format!("{}-mirror-cancel", broker.settings().consumer_group);
    let notices = broker
        .client()
        .queue_subscribe(broker.subjects().cancellations(), group)
        .await
        .map_err(|e| BrokerError::Request(e.into()))?;
    let mut notices = std::pin::pin!(notices.take_until(shutdown));
    while let Some(message) = notices.next().await {
        let Ok(notice) = serde_json::from_slice::<CancelNotice>(&message.payload) else {
            continue;
        };
        match store.tasks().by_ids(&notice.ids).await {
            Ok(rows) => rows
                .iter()
                .filter(|row| row.status == "cancelled")
                .filter_map(MirrorEvent::from_row)
                .for_each(|event| mirror.record(event)),
            Err(error) => {
                tracing::debug!(%error, "cannot read cancelled rows; the catch-up shows them")
            }
        }
    }
    Ok(())
}
