//! Strays: messages stored on a subject that matches the stream (`<prefix>.tasks.*.*`) but
//! names no lane — `p05`, `px`, an agent type that is not a valid name. No lane consumer
//! filters on them, so without this they would wait forever. Each stray subject gets a
//! short-lived consumer of its own, through which a worker drains it to the dead-letter
//! stream.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};
use futures::StreamExt;

use super::{Broker, BrokerError, lanes::name_hash};

/// A stray subject's consumer is deleted by the server once unused this long.
const STRAY_CONSUMER_EXPIRY: Duration = Duration::from_secs(120);
/// Most messages taken from one stray subject per fetch.
pub const STRAY_BATCH: usize = 64;

concern_handle! {
    /// Messages on task subjects no lane reads.
    pub struct Strays for Broker, strays
}

impl Strays<'_> {
    /// The stream's subjects that hold messages but name no lane.
    ///
    /// Fails when the stream cannot be read.
    pub async fn list(&self) -> Result<Vec<String>, BrokerError> {
        let error = |source: crate::broker::NatsError| BrokerError::Fetch {
            consumer: "(stray subjects)".into(),
            source,
        };
        let stream = self.tasks_stream().await?;
        let mut counts = stream
            .info_with_subjects(self.subjects().all_tasks())
            .await
            .map_err(|e| error(e.into()))?;
        let mut strays = Vec::new();
        while let Some(entry) = counts.next().await {
            let (subject, count) = entry.map_err(|e| error(e.into()))?;
            if count > 0 && self.subjects().parse_task(&subject).is_none() {
                strays.push(subject);
            }
        }
        Ok(strays)
    }

    /// Up to [`STRAY_BATCH`] messages waiting on stray `subject`, without waiting for more.
    ///
    /// Fails when the consumer cannot be made or the fetch fails.
    pub async fn fetch(&self, subject: &str) -> Result<Vec<jetstream::Message>, BrokerError> {
        let name = format!(
            "{}-stray-{:016x}",
            self.settings().consumer_group,
            name_hash(subject)
        );
        let consumer_error = |source: crate::broker::NatsError| BrokerError::Consumer {
            consumer: name.clone(),
            source,
        };
        let stream = self.tasks_stream().await?;
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("SwarmDirector stray subject {subject}")),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.settings().ack_wait(),
                filter_subject: subject.to_string(),
                inactive_threshold: STRAY_CONSUMER_EXPIRY,
                ..Default::default()
            })
            .await
            .map_err(|e| consumer_error(e.into()))?;
        let mut batch = consumer
            .fetch()
            .max_messages(STRAY_BATCH)
            .messages()
            .await
            .map_err(|e| consumer_error(e.into()))?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(&consumer_error)?);
        }
        Ok(messages)
    }

    async fn tasks_stream(&self) -> Result<jetstream::stream::Stream, BrokerError> {
        self.jetstream()
            .get_stream(&self.settings().stream)
            .await
            .map_err(|e| BrokerError::Stream {
                stream: self.settings().stream.clone(),
                source: e.into(),
            })
    }
}
