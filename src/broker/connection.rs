//! The connection to NATS and the idempotent setup of the tasks stream and its consumers.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};

use super::{AgentFilter, BrokerError, PriorityPuller, Subjects};
use crate::config::NatsSettings;

/// Largest task message the stream accepts (bytes). Bigger bodies are refused at publish.
pub const MAX_MESSAGE_BYTES: i32 = 1024 * 1024;

/// A NATS connection bound to one fleet's stream, subjects and consumer group.
#[derive(Clone)]
pub struct Broker {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    settings: NatsSettings,
    subjects: Subjects,
}

impl Broker {
    /// Connects to the configured server(s).
    ///
    /// Fails when no server answers or the credentials file cannot be read.
    pub async fn connect(settings: &NatsSettings) -> Result<Self, BrokerError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("swarmd")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5));
        if let Some(token) = &settings.token {
            options = options.token(token.expose().to_string());
        }
        if let Some(path) = &settings.creds_file {
            options = options.credentials_file(path).await.map_err(|source| {
                BrokerError::Credentials {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        let urls: Vec<&str> = settings.url.expose().split(',').map(str::trim).collect();
        let client = tokio::time::timeout(Duration::from_secs(10), options.connect(urls))
            .await
            .map_err(|_| {
                BrokerError::Request(format!("no NATS server answered at {}", settings.url))
            })?
            .map_err(|source| BrokerError::Connect {
                url: settings.url.to_string(),
                source,
            })?;
        Ok(Self::with_client(client, settings))
    }

    /// Wraps an existing client (tests share one connection between several brokers).
    pub fn with_client(client: async_nats::Client, settings: &NatsSettings) -> Self {
        Self {
            jetstream: jetstream::new(client.clone()),
            subjects: Subjects::new(settings.subject_prefix.clone()),
            settings: settings.clone(),
            client,
        }
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    /// Creates the tasks stream, or updates it to the configured settings.
    ///
    /// Fails when JetStream is unavailable or refuses the configuration.
    pub async fn ensure_stream(&self) -> Result<(), BrokerError> {
        let config = jetstream::stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![self.subjects.stream_subject()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            duplicate_window: Duration::from_secs(self.settings.duplicate_window_secs),
            max_message_size: MAX_MESSAGE_BYTES,
            num_replicas: self.settings.replicas,
            // Lets `swarmd status` and the backlog gauges read the oldest waiting task.
            allow_direct: true,
            // Every stored task again on core NATS: the legacy mirror shows a task waiting
            // only once the stream took it.
            republish: Some(jetstream::stream::Republish {
                source: self.subjects.all_tasks(),
                destination: self.subjects.stored_tasks(),
                headers_only: false,
            }),
            description: Some("SwarmDirector tasks, keyed by priority and agent type".into()),
            ..Default::default()
        };
        let stream_error = |reason: String| BrokerError::Stream {
            stream: self.settings.stream.clone(),
            reason,
        };
        match self.jetstream.get_stream(&self.settings.stream).await {
            Ok(_) => {
                self.jetstream
                    .update_stream(&config)
                    .await
                    .map_err(|e| stream_error(e.to_string()))?;
            }
            Err(_) => {
                if let Err(create) = self.jetstream.create_stream(config.clone()).await {
                    // Another process may have created it meanwhile.
                    self.jetstream
                        .get_stream(&self.settings.stream)
                        .await
                        .map_err(|_| stream_error(create.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// A puller over the lanes `filter` admits; their consumers are created as tasks show
    /// up in them.
    ///
    /// Fails when the stream is missing.
    pub async fn priority_puller(
        &self,
        filter: AgentFilter,
    ) -> Result<PriorityPuller, BrokerError> {
        PriorityPuller::new(self.clone(), filter).await
    }

    /// Deletes the tasks stream and its consumers (tests, benchmarks and cleanup).
    pub async fn delete_stream(&self) -> Result<(), BrokerError> {
        self.jetstream
            .delete_stream(&self.settings.stream)
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::Stream {
                stream: self.settings.stream.clone(),
                reason: e.to_string(),
            })
    }
}
