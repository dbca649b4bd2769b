//! Broker failures, one variant per operation so callers can tell setup from traffic.

/// What the NATS client reported, kept whole (its kind and source chain) rather than as text.
pub type NatsError = Box<dyn std::error::Error + Send + Sync>;

/// A JetStream or NATS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot read NATS credentials file {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up stream {stream}: {source}")]
    Stream { stream: String, source: NatsError },
    #[error("cannot set up consumer {consumer}: {source}")]
    Consumer { consumer: String, source: NatsError },
    #[error("{feature} needs NATS server {needs} or later; the server is {server}")]
    Unsupported {
        feature: &'static str,
        needs: &'static str,
        server: String,
    },
    #[error("cannot publish to {subject}: {source}")]
    Publish {
        subject: String,
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("cannot encode task: {0}")]
    Encode(#[from] crate::task::EncodeError),
    #[error("invalid task: {0}")]
    Envelope(#[from] crate::task::EnvelopeError),
    #[error("cannot pull from {consumer}: {source}")]
    Fetch { consumer: String, source: NatsError },
    #[error("NATS request failed: {0}")]
    Request(#[source] NatsError),
}

impl crate::fault::Classify for BrokerError {
    /// An envelope that breaks the contract, or a message the broker will never take, is
    /// permanent; everything else (connection, timeouts, setup) is transient.
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::{Fault, publish_fault};
        match self {
            BrokerError::Envelope(_) | BrokerError::Encode(_) => Fault::Permanent,
            BrokerError::Publish { source, .. } => publish_fault(source),
            _ => Fault::Transient,
        }
    }
}
