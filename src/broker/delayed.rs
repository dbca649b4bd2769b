//! Delayed tasks. On NATS ≥ 2.12 a task whose `not_before` lies ahead is held by the
//! server's own message schedules: published to `<prefix>.held.<id>` in the tasks stream
//! with `Nats-Schedule: @at <due>` and its task subject as `Nats-Schedule-Target`; the
//! server publishes it there when due (its Raft group keeps the wait) and removes the held
//! copy. On older servers (or with `SWARM_DELAYS=stream`) it is published to the delay stream
//! `<stream>_DELAYED` (subjects `<prefix>.delayed.p<N>.<agent_type>`, header
//! `Swarm-Not-Before`) instead of the tasks stream. Every worker runs a mover on one shared
//! consumer of it: a message not yet due is nak'd with the time left — the broker keeps the
//! wait, across worker and server restarts — and a due one is published to its task subject
//! and only then acknowledged. The tasks stream sees a task when it is due, so waiting
//! spends none of its attempts or deliveries. Works on every server version (2.9 included).

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, pull},
        stream::{DiscardPolicy, RetentionPolicy, StorageType},
    },
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;

use super::{Broker, BrokerError, headers};

/// A task due this close is moved at once rather than held again.
const DUE_SLACK: chrono::Duration = chrono::Duration::milliseconds(5);
/// Pause after a failure to move (the broker away), before the message is offered again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The `Swarm-Not-Before` value of `due`.
pub fn not_before_header(due: DateTime<Utc>) -> String {
    due.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Headers of the server's message schedules (ADR-51, NATS ≥ 2.12).
const SCHEDULE: &str = "Nats-Schedule";
const SCHEDULE_TARGET: &str = "Nats-Schedule-Target";

/// How many delayed tasks wait where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DelayedCounts {
    pub held_by_server: u64,
    pub in_delay_stream: u64,
}

impl DelayedCounts {
    pub fn total(&self) -> u64 {
        self.held_by_server + self.in_delay_stream
    }
}

concern_handle! {
    /// Delayed tasks: held by the server or in the delay stream until due.
    pub struct Delays for Broker, delays
}

impl Delays<'_> {
    /// Where `task`, due at `due`, waits — held by the server's message schedules on its own
    /// subject, or in the delay stream — with the headers that make it wait there added to
    /// `headers`.
    pub(super) fn hold(
        &self,
        task: &crate::task::TaskEnvelope,
        due: DateTime<Utc>,
        headers: &mut HeaderMap,
    ) -> String {
        headers.insert(headers::NOT_BEFORE, not_before_header(due).as_str());
        if !self.delays_held_by_server() {
            return self.subjects().delayed(task.priority, &task.agent_type);
        }
        let at = format!("@at {}", not_before_header(due));
        headers.insert(SCHEDULE, at.as_str());
        let target = self.subjects().task(task.priority, &task.agent_type);
        headers.insert(SCHEDULE_TARGET, target.as_str());
        self.subjects().held(&task.id)
    }

    /// The delay stream's name.
    pub fn stream(&self) -> String {
        format!("{}_DELAYED", self.settings().stream)
    }

    /// Creates the delay stream, or brings it to the fleet's settings.
    pub(super) async fn ensure_delay_stream(&self) -> Result<(), BrokerError> {
        let config = jetstream::stream::Config {
            name: self.stream(),
            subjects: vec![self.subjects().delayed_stream_subject()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            duplicate_window: Duration::from_secs(self.settings().duplicate_window_secs),
            max_message_size: super::connection::MAX_MESSAGE_BYTES,
            num_replicas: self.settings().replicas,
            description: Some("SwarmDirector tasks waiting for their not_before".into()),
            ..Default::default()
        };
        super::stream_setup::ensure(self.jetstream(), config)
            .await
            .map_err(|source| BrokerError::Stream {
                stream: self.stream(),
                source,
            })
    }

    /// Tasks waiting for their `not_before`: held by the server's schedules, and in the
    /// delay stream (each 0 where there is none).
    ///
    /// Fails when the tasks stream cannot be read.
    pub async fn counts(&self) -> Result<DelayedCounts, BrokerError> {
        let stream_error =
            |stream: String, source: super::NatsError| BrokerError::Stream { stream, source };
        let tasks = &self.settings().stream;
        let mut counts = DelayedCounts::default();
        if self.stream_takes_schedules() {
            let stream = self
                .jetstream()
                .get_stream(tasks)
                .await
                .map_err(|e| stream_error(tasks.clone(), e.into()))?;
            let mut held = stream
                .info_with_subjects(self.subjects().held_stream_subject())
                .await
                .map_err(|e| stream_error(tasks.clone(), e.into()))?;
            while let Some(entry) = held.next().await {
                let (_, count) = entry.map_err(|e| stream_error(tasks.clone(), e.into()))?;
                counts.held_by_server += count as u64;
            }
        }
        // Absent until a worker or `swarmd migrate` made it.
        if let Ok(mut stream) = self.jetstream().get_stream(self.stream()).await
            && let Ok(info) = stream.info().await
        {
            counts.in_delay_stream = info.state.messages;
        }
        Ok(counts)
    }

    /// Moves due tasks to the tasks stream until `stop` completes, holding the rest.
    pub async fn run_mover(
        &self,
        clock: &crate::clock::Clock,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                result = self.move_due_tasks(clock) => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "cannot move delayed tasks; trying again");
                    }
                    tokio::select! {
                        () = &mut stop => return,
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        }
    }

    /// Takes delayed messages as they become available (a held one comes back when due).
    async fn move_due_tasks(&self, clock: &crate::clock::Clock) -> Result<(), BrokerError> {
        let name = format!("{}-delays", self.settings().consumer_group);
        let consumer_error = |source: crate::broker::NatsError| BrokerError::Consumer {
            consumer: name.clone(),
            source,
        };
        let stream = self
            .jetstream()
            .get_stream(self.stream())
            .await
            .map_err(|e| consumer_error(e.into()))?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                description: Some("SwarmDirector workers moving due delayed tasks".into()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                // Holding a task is a nak: its deliveries must never run out.
                max_deliver: -1,
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await
            .map_err(|e| consumer_error(e.into()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| consumer_error(e.into()))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| consumer_error(e.into()))?;
            self.move_or_hold(message, clock.now()).await;
        }
        Ok(())
    }

    async fn move_or_hold(&self, message: jetstream::Message, now: DateTime<Utc>) {
        let due = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::NOT_BEFORE))
            .and_then(|v| DateTime::parse_from_rfc3339(v.as_str()).ok())
            .map(|due| due.with_timezone(&Utc));
        if let Some(due) = due
            && due - now > DUE_SLACK
        {
            let left = (due - now).to_std().unwrap_or_default();
            if let Err(error) = message.ack_with(AckKind::Nak(Some(left))).await {
                tracing::debug!(%error, "cannot hold a delayed task; it comes back after its lease");
            }
            return;
        }
        // `<prefix>.delayed.<p>.<agent>` → `<prefix>.tasks.<p>.<agent>`; the worker checks the
        // rest (a garbled subject or body becomes a dead letter there, as any task would).
        let target = self.subjects().task_subject_of_delayed(&message.subject);
        let headers = message.headers.clone().unwrap_or_default();
        let published = match self
            .jetstream()
            .publish_with_headers(target.clone(), headers, message.payload.clone())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let answer = match published {
            Ok(()) => AckKind::Ack,
            Err(error) => {
                tracing::warn!(%error, subject = %target, "cannot move a due task; trying again");
                AckKind::Nak(Some(RETRY_AFTER))
            }
        };
        if let Err(error) = message.ack_with(answer).await {
            // Moved but not acknowledged: offered again, and dropped by the tasks stream as
            // a copy within its duplicate window.
            tracing::debug!(%error, "cannot acknowledge a moved delayed task");
        }
    }
}

impl Delays<'_> {
    /// Holds `task`, delivered before its `not_before`, until due (a producer published it
    /// straight to its task subject, or clocks disagree). Its own message id: the tasks
    /// stream already holds the task's id, and would drop it as a copy.
    pub async fn defer(&self, task: &crate::task::TaskEnvelope) -> Result<(), BrokerError> {
        let due = task.not_before.unwrap_or_else(Utc::now);
        let body = crate::task::Codec::Json.encode(task)?;
        let mut headers = HeaderMap::new();
        let id = format!("{}.deferred.{}", task.id, Utc::now().timestamp_micros());
        headers.insert(headers::MSG_ID, id.as_str());
        headers.insert(
            headers::CONTENT_TYPE,
            crate::task::Codec::Json.content_type(),
        );
        let subject = self.hold(task, due, &mut headers);
        self.jetstream()
            .publish_with_headers(subject.clone(), headers, body)
            .await
            .map_err(|source| BrokerError::Publish {
                subject: subject.clone(),
                source,
            })?
            .await
            .map_err(|source| BrokerError::Publish { subject, source })?;
        Ok(())
    }
}
