//! Publishing envelopes: the right subject, the de-duplication id, the content type, and a
//! publish acknowledgement before a task counts as accepted.

use async_nats::{HeaderMap, jetstream::context::PublishAckFuture};
use bytes::Bytes;

use super::{Broker, BrokerError};
use crate::task::{Codec, TaskEnvelope};

/// Header names of the wire contract.
pub mod headers {
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// `Swarm-Announce: outcome` asks the worker to announce the task's final outcome on
    /// `<prefix>.results.<id>` once committed (only asked-for outcomes are announced: nobody
    /// pays for announcements nobody waits for).
    pub const ANNOUNCE: &str = "Swarm-Announce";
    pub const ANNOUNCE_OUTCOME: &str = "outcome";
    /// When a delayed task is due (RFC 3339), on held and delay-stream messages.
    pub const NOT_BEFORE: &str = "Swarm-Not-Before";
    /// `Swarm-Shown: waiting` says the task is already shown waiting in the legacy keys
    /// (the legacy intake publishes its tasks so): the mirror's feeder skips it unread.
    pub const SHOWN: &str = "Swarm-Shown";
    pub const SHOWN_WAITING: &str = "waiting";
}

/// How tasks are published.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    pub codec: Codec,
    /// Ask for the outcome to be announced ([`headers::ANNOUNCE`]).
    pub announce: bool,
    /// The tasks are shown waiting in the legacy keys already ([`headers::SHOWN`]).
    pub shown_waiting: bool,
}

impl From<Codec> for PublishOptions {
    fn from(codec: Codec) -> Self {
        Self {
            codec,
            announce: false,
            shown_waiting: false,
        }
    }
}

/// What JetStream said about one accepted task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReceipt {
    /// Stream sequence of the stored message (of the first copy, for a duplicate).
    pub sequence: u64,
    /// True when the id was already published within the duplicate window: not stored again.
    pub duplicate: bool,
}

impl Broker {
    /// Publishes one task and waits for JetStream to store it.
    ///
    /// Fails on an invalid envelope, or when the stream does not acknowledge it.
    pub async fn publish(
        &self,
        task: &TaskEnvelope,
        options: impl Into<PublishOptions>,
    ) -> Result<PublishReceipt, BrokerError> {
        let subject = self.subjects().task(task.priority, &task.agent_type);
        let pending = self.send(task, options.into()).await?;
        confirm(pending, &subject).await
    }

    /// Publishes many tasks, keeping up to `window` unconfirmed at once, and calls `progress`
    /// after each confirmation. Returns one receipt or error per task, in input order.
    pub async fn publish_many(
        &self,
        tasks: &[TaskEnvelope],
        options: impl Into<PublishOptions>,
        window: usize,
        mut progress: impl FnMut(),
    ) -> Vec<Result<PublishReceipt, BrokerError>> {
        let options = options.into();
        let mut results = Vec::with_capacity(tasks.len());
        let mut in_flight = std::collections::VecDeque::with_capacity(window);
        for task in tasks {
            let subject = self.subjects().task(task.priority, &task.agent_type);
            in_flight.push_back((subject, self.send(task, options).await));
            if in_flight.len() >= window.max(1) {
                let (subject, sent) = in_flight.pop_front().expect("window is not empty");
                results.push(confirm_sent(sent, &subject).await);
                progress();
            }
        }
        for (subject, sent) in in_flight {
            results.push(confirm_sent(sent, &subject).await);
            progress();
        }
        results
    }

    /// Publishes raw bytes with the given headers (tests and tools that need malformed input).
    pub async fn publish_raw(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<PublishReceipt, BrokerError> {
        let pending = self
            .jetstream()
            .publish_with_headers(subject.clone(), headers, body)
            .await
            .map_err(|source| BrokerError::Publish {
                subject: subject.clone(),
                source,
            })?;
        confirm(pending, &subject).await
    }

    async fn send(
        &self,
        task: &TaskEnvelope,
        options: PublishOptions,
    ) -> Result<PublishAckFuture, BrokerError> {
        task.validate()?;
        let mut body = options.codec.encode(task)?;
        if body.len() > self.payloads().claim_check_bytes() && task.data_ref.is_none() {
            // Too large to travel: the data goes to the Object Store, a reference instead.
            let checked = self.check_in_data(task).await?;
            body = options.codec.encode(&checked)?;
        }
        let mut headers = HeaderMap::new();
        headers.insert(headers::MSG_ID, task.id.to_string().as_str());
        headers.insert(headers::CONTENT_TYPE, options.codec.content_type());
        if options.announce {
            headers.insert(headers::ANNOUNCE, headers::ANNOUNCE_OUTCOME);
        }
        if options.shown_waiting {
            headers.insert(headers::SHOWN, headers::SHOWN_WAITING);
        }
        // A task due later is held until due, not put on its lane.
        let subject = match task.not_before.filter(|due| *due > chrono::Utc::now()) {
            Some(due) => self.delays().hold(task, due, &mut headers),
            None => self.subjects().task(task.priority, &task.agent_type),
        };
        // The producer's span: the worker's spans for this task become its children.
        let span = tracing::debug_span!(
            "publish",
            otel.name = %format_args!("publish {}", subject),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation = "publish",
            messaging.destination.name = %subject,
            messaging.message.id = %task.id,
            task.id = %task.id,
            agent_type = %task.agent_type,
        );
        crate::telemetry::inject(&span, &mut headers);
        self.jetstream()
            .publish_with_headers(subject.clone(), headers, body)
            .await
            .map_err(|source| BrokerError::Publish { subject, source })
    }
}

impl Broker {
    /// `task` with its data put in the Object Store (`<id>.data`) and referenced.
    async fn check_in_data(&self, task: &TaskEnvelope) -> Result<TaskEnvelope, BrokerError> {
        let json = serde_json::to_vec(&task.data).expect("a JSON value serialises");
        let reference = self
            .payloads()
            .put(format!("{}.data", task.id), &json)
            .await
            .map_err(|e| BrokerError::Request(e.into()))?;
        Ok(TaskEnvelope {
            data: serde_json::Value::Null,
            data_ref: Some(reference),
            ..task.clone()
        })
    }
}

async fn confirm_sent(
    sent: Result<PublishAckFuture, BrokerError>,
    subject: &str,
) -> Result<PublishReceipt, BrokerError> {
    confirm(sent?, subject).await
}

async fn confirm(pending: PublishAckFuture, subject: &str) -> Result<PublishReceipt, BrokerError> {
    let ack = pending.await.map_err(|source| BrokerError::Publish {
        subject: subject.to_string(),
        source,
    })?;
    Ok(PublishReceipt {
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}
