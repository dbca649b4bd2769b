//! Shows delayed tasks as `scheduled` while they wait, whoever published them: a
//! `scheduled` row (read by `GET /v1/tasks/{id}`, kept until a worker takes the task) and,
//! with the mirror on, an entry in the legacy `scheduled_tasks` set scored by the due time.
//! It listens, as one core NATS queue group across the fleet, to the tasks held by the
//! server's schedules (their stored copies: only what the stream took) and to publishes to
//! the delay stream (which cannot republish on NATS 2.9: a publish the stream refused could
//! be shown, which the row's next writer corrects).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use crate::{
    broker::{Broker, BrokerError, headers},
    mirror::{Mirror, MirrorEvent},
    store::Store,
    task::{Codec, TaskEnvelope},
};

/// Sightings gathered into one statement.
const BATCH: usize = 256;
/// How long a sighting waits for others to share its statement.
const LINGER: Duration = Duration::from_millis(20);

/// Records sightings until the subscriptions end or `stop` completes.
///
/// Fails when a subscription cannot be made.
pub async fn run(
    broker: Broker,
    store: Store,
    mirror: Option<Mirror>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), BrokerError> {
    let group = format!("{}-scheduled", broker.settings().consumer_group);
    let subjects = broker.subjects();
    let mut listened = vec![subjects.delayed_stream_subject()];
    if broker.stream_takes_schedules() {
        listened.push(subjects.stored_copy_of(&subjects.held_stream_subject()));
    }
    let mut subscriptions = Vec::new();
    for subject in listened {
        subscriptions.push(
            broker
                .client()
                .queue_subscribe(subject, group.clone())
                .await
                .map_err(|e| BrokerError::Request(e.into()))?,
        );
    }
    let mut sightings = futures::stream::select_all(subscriptions);
    tokio::pin!(stop);
    loop {
        let first = tokio::select! {
            () = &mut stop => return Ok(()),
            message = sightings.next() => match message {
                Some(message) => message,
                None => return Ok(()),
            },
        };
        let mut batch: Vec<(TaskEnvelope, DateTime<Utc>)> = sighted(&first).into_iter().collect();
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < BATCH {
            tokio::select! {
                () = &mut linger => break,
                message = sightings.next() => match message {
                    Some(message) => batch.extend(sighted(&message)),
                    None => break,
                },
            }
        }
        record(&store, mirror.as_ref(), batch).await;
    }
}

/// The delayed task a message carries and when it is due; `None` for anything else (a bad
/// message is the dead-letter path's business when it reaches a lane).
fn sighted(message: &async_nats::Message) -> Option<(TaskEnvelope, DateTime<Utc>)> {
    let content_type = message
        .headers
        .as_ref()
        .and_then(|h| h.get(headers::CONTENT_TYPE))
        .map(|v| v.as_str().to_string());
    let codec = Codec::for_message(content_type.as_deref(), &message.payload).ok()?;
    let task = codec.decode(&message.payload).ok()?;
    task.validate().ok()?;
    let due = message
        .headers
        .as_ref()
        .and_then(|h| h.get(headers::NOT_BEFORE))
        .and_then(|v| DateTime::parse_from_rfc3339(v.as_str()).ok())
        .map(|due| due.with_timezone(&Utc))
        .or(task.not_before)?;
    Some((task, due))
}

async fn record(store: &Store, mirror: Option<&Mirror>, batch: Vec<(TaskEnvelope, DateTime<Utc>)>) {
    if batch.is_empty() {
        return;
    }
    if let Some(mirror) = mirror {
        for (task, due) in &batch {
            mirror.record(MirrorEvent::scheduled(task, *due));
        }
    }
    // The due time the message carries wins over the envelope's (a deferred task's).
    let tasks: Vec<TaskEnvelope> = batch
        .into_iter()
        .map(|(task, due)| TaskEnvelope {
            not_before: Some(due),
            ..task
        })
        .collect();
    // Rows already there (the API's, or a task already taken) are left alone.
    if let Err(error) = store.tasks().record_queued(&tasks, None).await {
        tracing::debug!(%error, count = tasks.len(), "cannot record scheduled tasks");
    }
}
