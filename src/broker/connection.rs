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
        if let Some(seed) = &settings.nkey_seed {
            options = options.nkey(seed.expose().to_string());
        }
        if settings.inbox_prefix != "_INBOX" {
            options = options.custom_inbox_prefix(settings.inbox_prefix.clone());
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
        // The client takes credentials from its options only, never from a URL's userinfo:
        // `nats://user:pass@host` (or `nats://token@host`) is turned into them here, unless
        // the user and password are set on their own.
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            options = options.user_and_password(user.clone(), password.expose().to_string());
        } else if let Some(server) = urls
            .iter()
            .filter_map(|url| url.parse::<async_nats::ServerAddr>().ok())
            .find(|server| server.username().is_some())
        {
            let user = server.username().unwrap_or_default().to_string();
            options = match server.password() {
                Some(password) => options.user_and_password(user, password.to_string()),
                None => options.token(user),
            };
        }
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

    /// Creates the tasks stream, or updates it to the configured settings when it differs.
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
        super::stream_setup::ensure(&self.jetstream, config)
            .await
            .map_err(|reason| BrokerError::Stream {
                stream: self.settings.stream.clone(),
                reason,
            })?;
        self.ensure_delay_stream().await
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

    /// Deletes the tasks stream and its consumers, and the claim-check bucket (tests,
    /// benchmarks and cleanup).
    pub async fn delete_stream(&self) -> Result<(), BrokerError> {
        // Absent unless a large payload or `swarmd migrate` made it.
        let _ = self
            .jetstream
            .delete_object_store(self.payload_bucket())
            .await;
        let _ = self.jetstream.delete_stream(self.delay_stream()).await;
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
