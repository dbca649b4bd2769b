//! The connection to NATS and the idempotent setup of the tasks stream and its consumers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};

use super::{BrokerError, Subjects};
use crate::config::{DelayMode, NatsSettings};

/// Largest task message the stream accepts (bytes). Bigger bodies are refused at publish.
pub const MAX_MESSAGE_BYTES: i32 = 1024 * 1024;

/// A NATS connection bound to one fleet's stream, subjects and consumer group.
#[derive(Clone)]
pub struct Broker {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    settings: NatsSettings,
    subjects: Subjects,
    /// Whether the tasks stream takes message schedules (NATS ≥ 2.12): delayed tasks may be
    /// held in it on `<prefix>.held.<id>`, and it republishes every stored message. Known
    /// once [`Broker::ensure_stream`] ran; until then the delay stream serves.
    schedules: Arc<AtomicBool>,
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
                BrokerError::Request(format!("no NATS server answered at {}", settings.url).into())
            })?
            .map_err(|source| BrokerError::Connect {
                url: settings.url.to_string(),
                source,
            })?;
        Ok(Self::with_client(client, settings))
    }

    /// A connection of its own to the same servers, knowing what this one learned of the
    /// stream: for a publisher whose traffic should not queue behind this connection's.
    ///
    /// Fails as [`Broker::connect`] does.
    pub async fn own_connection(&self) -> Result<Self, BrokerError> {
        let mut other = Self::connect(&self.settings).await?;
        other.schedules = self.schedules.clone();
        // `connect` may return before the server answered (it retries in the background),
        // and until then the server's limits read as zero: a dead letter sized against
        // them was refused as too large (found by a test under load). A round trip first.
        tokio::time::timeout(Duration::from_secs(10), other.client.flush())
            .await
            .map_err(|_| {
                let url = &self.settings.url;
                BrokerError::Request(format!("no NATS server answered at {url}").into())
            })?
            .map_err(|e| BrokerError::Request(e.into()))?;
        Ok(other)
    }

    /// Wraps an existing client (tests share one connection between several brokers).
    pub fn with_client(client: async_nats::Client, settings: &NatsSettings) -> Self {
        Self {
            jetstream: jetstream::new(client.clone()),
            subjects: Subjects::new(settings.subject_prefix.clone()),
            settings: settings.clone(),
            client,
            schedules: Arc::default(),
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
        // A request first: the server's version is known once the connection is made (a
        // client that retries its first connect returns before), and a stream that takes
        // schedules keeps them (the server refuses to turn them off).
        let already = match self.jetstream.get_stream(&self.settings.stream).await {
            Ok(stream) => stream.cached_info().config.allow_message_schedules,
            Err(_) => false,
        };
        let schedules = already || self.schedules_wanted()?;
        let mut config = jetstream::stream::Config {
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
        if schedules {
            // Delayed tasks are held on their own subjects until the server publishes them
            // to their task subject; the republish covers both, so a held task can be shown
            // `scheduled` and a task the server published rings the workers' doorbells.
            config.subjects.push(self.subjects.held_stream_subject());
            config.subjects.push(self.subjects.alarms_stream_subject());
            config.allow_message_schedules = true;
            config.republish = Some(jetstream::stream::Republish {
                source: self.subjects.everything(),
                destination: self.subjects.stored_tasks(),
                headers_only: false,
            });
        }
        super::stream_setup::ensure(&self.jetstream, config)
            .await
            .map_err(|source| BrokerError::Stream {
                stream: self.settings.stream.clone(),
                source,
            })?;
        self.schedules.store(schedules, Ordering::Relaxed);
        self.delays().ensure_delay_stream().await
    }

    /// Whether a new tasks stream should take message schedules: on servers that have them,
    /// unless delays are kept in the delay stream (a stream that takes schedules cannot
    /// refuse new messages, and cannot stop taking schedules). Asking for native delays on
    /// an older server is an error naming the version needed.
    fn schedules_wanted(&self) -> Result<bool, BrokerError> {
        let capable = self
            .server_version()
            .is_some_and(|version| version.at_least(2, 12));
        match self.settings.delays {
            DelayMode::Native if !capable => Err(BrokerError::Unsupported {
                feature: "native delayed tasks (SWARM_DELAYS=native)",
                needs: "2.12",
                server: self
                    .server_version()
                    .map_or_else(|| "unknown".into(), |v| v.to_string()),
            }),
            DelayMode::Native | DelayMode::Auto => Ok(capable),
            DelayMode::Stream => Ok(false),
        }
    }

    /// Reads whether the tasks stream takes message schedules, for a process that did not
    /// set the stream up itself (a worker sharing a connection).
    ///
    /// Fails when the stream cannot be read.
    pub async fn read_stream_features(&self) -> Result<(), BrokerError> {
        let stream = self
            .jetstream
            .get_stream(&self.settings.stream)
            .await
            .map_err(|e| BrokerError::Stream {
                stream: self.settings.stream.clone(),
                source: e.into(),
            })?;
        let config = &stream.cached_info().config;
        let held = self.subjects.held_stream_subject();
        let takes = config.allow_message_schedules && config.subjects.contains(&held);
        self.schedules.store(takes, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the tasks stream takes message schedules (see [`Broker::ensure_stream`]).
    pub fn stream_takes_schedules(&self) -> bool {
        self.schedules.load(Ordering::Relaxed)
    }

    /// Whether delayed tasks are held by the server's message schedules rather than the
    /// delay stream.
    pub fn delays_held_by_server(&self) -> bool {
        self.stream_takes_schedules() && self.settings.delays != DelayMode::Stream
    }

    /// Deletes the tasks stream and its consumers, and the claim-check bucket (tests,
    /// benchmarks and cleanup).
    pub async fn delete_stream(&self) -> Result<(), BrokerError> {
        // Absent unless a large payload or `swarmd migrate` made it.
        let _ = self
            .jetstream
            .delete_object_store(self.payloads().bucket())
            .await;
        let _ = self.jetstream.delete_stream(self.delays().stream()).await;
        self.jetstream
            .delete_stream(&self.settings.stream)
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::Stream {
                stream: self.settings.stream.clone(),
                source: e.into(),
            })
    }
}
