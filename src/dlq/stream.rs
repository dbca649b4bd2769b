//! The dead-letter stream: its setup, publishing records, and reading, deleting and purging
//! them for `swarmd dlq`. Its name and subjects follow the tasks stream's, so several fleets
//! share one server.
//!
//! Longer than most modules: paged reading with filters and cursors is most of it, and it
//! shares the stream's setup and subjects with writing.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{DeliverPolicy, pull::OrderedConfig},
        stream::{DiscardPolicy, RetentionPolicy, StorageType},
    },
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use uuid::Uuid;

use super::{DeadLetter, DeadReason};
use crate::broker::{Broker, NatsError, Subjects, headers};

/// How long dead letters are kept.
const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// A reader that hears nothing for this long has seen every record.
const READ_IDLE: Duration = Duration::from_secs(2);

/// A dead-letter stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot set up dead-letter stream {stream}: {source}")]
    Setup { stream: String, source: NatsError },
    #[error("cannot publish dead letter {id}: {source}")]
    Publish {
        id: Uuid,
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("dead letter {id} does not fit in one {max_bytes}-byte broker message even when cut")]
    TooLarge { id: Uuid, max_bytes: usize },
    #[error("cannot read dead-letter stream {stream}: {source}")]
    Read { stream: String, source: NatsError },
    #[error("dead letter #{sequence} is not a valid record: {reason}")]
    Corrupt { sequence: u64, reason: String },
}

impl crate::fault::Classify for DlqError {
    /// A record the broker will never take is permanent; setup, reading and transport
    /// failures are transient.
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::{Fault, publish_fault};
        match self {
            DlqError::Publish { source, .. } => publish_fault(source),
            DlqError::TooLarge { .. } | DlqError::Corrupt { .. } => Fault::Permanent,
            DlqError::Setup { .. } | DlqError::Read { .. } => Fault::Transient,
        }
    }
}

/// Most records one page reads, matching or not: a page of a rare filter ends early (with a
/// cursor to go on) rather than read the whole stream in one request.
pub const PAGE_SCAN_LIMIT: u64 = 5_000;

/// One page of dead letters, newest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub letters: Vec<StoredDeadLetter>,
    /// Pass as `before` for the next (older) page; `None` when the oldest record was read.
    pub next_before: Option<u64>,
    /// Records stored in the scope of the filter's agent type (all agent types without one).
    pub total: u64,
    /// Records on this page that could not be read as dead letters (skipped, counted).
    pub unreadable: u64,
}

/// A dead letter with its place in the stream.
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    pub sequence: u64,
    pub letter: DeadLetter,
}

/// Which dead letters to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub agent_type: Option<String>,
    pub reason: Option<DeadReason>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    /// The one agent type the filter reads: `Ok(None)` for every one (none given, or empty
    /// as in a form left blank); `Err(())` when no letter can have it — every letter's agent
    /// type is a valid name (`unknown` for a raw message), and as a subject token an invalid
    /// one (`*`, `a.b`) would be a wildcard or several tokens.
    fn agent_scope(&self) -> Result<Option<&str>, ()> {
        match self.agent_type.as_deref() {
            None | Some("") => Ok(None),
            Some(agent) if crate::task::valid_agent_type(agent) => Ok(Some(agent)),
            Some(_) => Err(()),
        }
    }

    fn matches(&self, letter: &DeadLetter) -> bool {
        self.reason.is_none_or(|r| r == letter.reason)
            && self.since.is_none_or(|t| letter.dead_at >= t)
            && self.until.is_none_or(|t| letter.dead_at <= t)
    }
}

/// The dead-letter stream of one fleet.
#[derive(Clone)]
pub struct DeadLetterStream {
    jetstream: jetstream::Context,
    /// Tells the server's `max_payload`, which records must fit.
    client: async_nats::Client,
    name: String,
    subjects: Subjects,
    replicas: usize,
    /// Where unreadable records are counted.
    metrics: &'static crate::metrics::Metrics,
}

impl DeadLetterStream {
    /// The dead-letter stream beside `broker`'s tasks stream: a name ending in `_TASKS`
    /// loses it (`SWARM_TASKS` → `SWARM_DLQ`), any other name `N` → `N_DLQ`.
    pub fn of(broker: &Broker) -> Self {
        let tasks = &broker.settings().stream;
        let name = match tasks.strip_suffix("_TASKS") {
            Some(base) => format!("{base}_DLQ"),
            None => format!("{tasks}_DLQ"),
        };
        Self {
            jetstream: broker.jetstream().clone(),
            client: broker.client().clone(),
            name,
            subjects: broker.subjects().clone(),
            replicas: broker.settings().replicas,
            metrics: crate::metrics::Metrics::global(),
        }
    }

    /// Counts into `metrics` instead of the process's own.
    pub fn with_metrics(mut self, metrics: &'static crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the stream, or updates it to our settings.
    ///
    /// Fails when JetStream refuses the configuration.
    pub async fn ensure(&self) -> Result<(), DlqError> {
        let config = jetstream::stream::Config {
            name: self.name.clone(),
            subjects: vec![self.subjects.all_dead_letters()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            max_age: RETENTION,
            duplicate_window: Duration::from_secs(120),
            num_replicas: self.replicas,
            // Pages of `GET /v1/dlq` read records by sequence, newest first.
            allow_direct: true,
            description: Some("SwarmDirector dead letters".into()),
            ..Default::default()
        };
        crate::broker::ensure_stream_config(&self.jetstream, config)
            .await
            .map_err(|source| DlqError::Setup {
                stream: self.name.clone(),
                source,
            })
    }

    /// Publishes `letters`, each cut to fit the server's `max_payload` (see
    /// [`DeadLetter::encode_within`]), and waits until the stream stored every one it takes.
    /// Returns the letters refused for good (with why): the broker will never take them, so
    /// their originals must not wait for them.
    ///
    /// Fails on the first transient failure (a timeout, no connection); the caller must not
    /// acknowledge the originals then, and may publish again (records are de-duplicated).
    pub async fn publish(
        &self,
        letters: &mut [DeadLetter],
    ) -> Result<Vec<(Uuid, DlqError)>, DlqError> {
        use crate::fault::{Classify, Fault};
        let max_bytes = self
            .client
            .server_info()
            .max_payload
            .saturating_sub(super::record::HEADER_ROOM);
        let mut refused = Vec::new();
        let mut pending = Vec::with_capacity(letters.len());
        for letter in letters.iter_mut() {
            let Some(body) = letter.encode_within(max_bytes) else {
                refused.push((
                    letter.id,
                    DlqError::TooLarge {
                        id: letter.id,
                        max_bytes,
                    },
                ));
                continue;
            };
            let mut headers = HeaderMap::new();
            headers.insert(headers::MSG_ID, letter.message_id().as_str());
            headers.insert(headers::CONTENT_TYPE, "application/json");
            let sent = self
                .jetstream
                .publish_with_headers(
                    self.subjects.dead_letter(&letter.agent_type),
                    headers,
                    body.into(),
                )
                .await;
            match sent {
                Ok(ack) => pending.push((letter.id, ack)),
                Err(source) => {
                    let error = DlqError::Publish {
                        id: letter.id,
                        source,
                    };
                    match error.fault() {
                        Fault::Permanent => refused.push((letter.id, error)),
                        Fault::Transient => return Err(error),
                    }
                }
            }
        }
        for (id, ack) in pending {
            if let Err(source) = ack.await {
                let error = DlqError::Publish { id, source };
                match error.fault() {
                    Fault::Permanent => refused.push((id, error)),
                    Fault::Transient => return Err(error),
                }
            }
        }
        Ok(refused)
    }

    /// Reads the dead letters that match `filter`, oldest first; records that are not dead
    /// letters are skipped (logged and counted).
    ///
    /// Fails when the stream cannot be read.
    pub async fn list(&self, filter: &Filter) -> Result<Vec<StoredDeadLetter>, DlqError> {
        let mut found = Vec::new();
        self.each(filter, |stored| found.push(stored)).await?;
        Ok(found)
    }

    /// Streams the dead letters that match `filter` to `visit`, oldest first, holding one
    /// at a time; records that are not dead letters are skipped (logged and counted).
    async fn each(
        &self,
        filter: &Filter,
        mut visit: impl FnMut(StoredDeadLetter),
    ) -> Result<(), DlqError> {
        let read_error = |e: NatsError| self.read_error(e);
        let stream = self.stream().await?;
        if stream.cached_info().state.messages == 0 {
            return Ok(());
        }
        let filter_subject = match filter.agent_scope() {
            Ok(Some(agent)) => self.subjects.dead_letter(agent),
            Ok(None) => self.subjects.all_dead_letters(),
            Err(()) => return Ok(()),
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| read_error(e.into()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| read_error(e.into()))?;
        while let Ok(Some(message)) = tokio::time::timeout(READ_IDLE, messages.next()).await {
            let message = message.map_err(|e| read_error(e.into()))?;
            let info = message.info().map_err(&read_error)?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            match serde_json::from_slice::<DeadLetter>(&message.payload) {
                Ok(letter) if filter.matches(&letter) => {
                    visit(StoredDeadLetter { sequence, letter })
                }
                Ok(_) => {}
                // One bad record must not hide all the others.
                Err(error) => {
                    self.metrics.dead_letters_unreadable.inc();
                    tracing::warn!(sequence, %error, "skipping a record that is not a dead letter");
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Up to `limit` dead letters matching `filter`, newest first, from the records stored
    /// before sequence `before` (all, when `None`). Reads at most [`PAGE_SCAN_LIMIT`]
    /// records, one by one by sequence; a record that is not a dead letter is skipped and
    /// counted, never failing the page.
    ///
    /// Fails when the stream cannot be read.
    pub async fn page(
        &self,
        filter: &Filter,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page, DlqError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let read_error = |e: NatsError| self.read_error(e);
        let mut stream = self.stream().await?;
        let state = stream
            .info()
            .await
            .map_err(|e| read_error(e.into()))?
            .state
            .clone();
        let Ok(scope) = filter.agent_scope() else {
            return Ok(Page::default());
        };
        let scope = scope.map(|agent| self.subjects.dead_letter(agent));
        let total = match &scope {
            None => state.messages,
            Some(subject) => {
                let mut counts = stream
                    .info_with_subjects(subject)
                    .await
                    .map_err(|e| read_error(e.into()))?;
                let mut total = 0;
                while let Some(entry) = counts.next().await {
                    total += entry.map_err(|e| read_error(e.into()))?.1 as u64;
                }
                total
            }
        };
        let mut page = Page {
            total,
            ..Page::default()
        };
        if state.messages == 0 {
            return Ok(page);
        }
        let mut sequence = before
            .map_or(state.last_sequence, |b| b.saturating_sub(1))
            .min(state.last_sequence);
        let mut scanned = 0;
        while sequence >= state.first_sequence.max(1)
            && page.letters.len() < limit
            && scanned < PAGE_SCAN_LIMIT
        {
            let at = sequence;
            sequence -= 1;
            scanned += 1;
            let message = match stream.direct_get(at).await {
                Ok(message) => message,
                Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => continue,
                Err(error) => return Err(read_error(error.into())),
            };
            if scope
                .as_ref()
                .is_some_and(|s| message.subject.as_str() != s)
            {
                continue;
            }
            match serde_json::from_slice::<DeadLetter>(&message.payload) {
                Ok(letter) if filter.matches(&letter) => page.letters.push(StoredDeadLetter {
                    sequence: at,
                    letter,
                }),
                Ok(_) => {}
                Err(error) => {
                    page.unreadable += 1;
                    self.metrics.dead_letters_unreadable.inc();
                    tracing::warn!(sequence = at, %error, "skipping a record that is not a dead letter");
                }
            }
        }
        if sequence >= state.first_sequence.max(1) {
            page.next_before = Some(sequence + 1);
        }
        Ok(page)
    }

    /// The newest dead letter of task (or record) `id`.
    pub async fn find(&self, id: Uuid) -> Result<Option<StoredDeadLetter>, DlqError> {
        let mut newest = None;
        self.each(&Filter::default(), |stored| {
            if stored.letter.id == id {
                newest = Some(stored);
            }
        })
        .await?;
        Ok(newest)
    }

    /// Removes one record (after a successful replay).
    pub async fn delete(&self, sequence: u64) -> Result<(), DlqError> {
        self.stream()
            .await?
            .delete_message(sequence)
            .await
            .map(|_| ())
            .map_err(|e| self.read_error(e.into()))
    }

    /// Removes every record, or those of one agent type; returns how many.
    pub async fn purge(&self, agent_type: Option<&str>) -> Result<u64, DlqError> {
        let read_error = |e: NatsError| self.read_error(e);
        let stream = self.stream().await?;
        let response = match agent_type {
            Some(agent) => {
                stream
                    .purge()
                    .filter(self.subjects.dead_letter(agent))
                    .await
            }
            None => stream.purge().await,
        }
        .map_err(|e| read_error(e.into()))?;
        Ok(response.purged)
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream, DlqError> {
        self.jetstream
            .get_stream(&self.name)
            .await
            .map_err(|e| self.read_error(e.into()))
    }

    fn read_error(&self, source: NatsError) -> DlqError {
        DlqError::Read {
            stream: self.name.clone(),
            source,
        }
    }

    /// Deletes the stream (tests and benchmarks).
    pub async fn delete_stream(&self) -> Result<(), DlqError> {
        self.jetstream
            .delete_stream(&self.name)
            .await
            .map(|_| ())
            .map_err(|e| DlqError::Setup {
                stream: self.name.clone(),
                source: e.into(),
            })
    }
}
