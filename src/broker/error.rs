//! Broker failures, one variant per operation so callers can tell setup from traffic.

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
    #[error("cannot set up stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("cannot set up consumer {consumer}: {reason}")]
    Consumer { consumer: String, reason: String },
    #[error("NATS server {version} lacks {feature}")]
    Unsupported { version: String, feature: String },
    #[error("cannot publish to {subject}: {reason}")]
    Publish { subject: String, reason: String },
    #[error("cannot encode task: {0}")]
    Encode(#[from] crate::task::EncodeError),
    #[error("invalid task: {0}")]
    Envelope(#[from] crate::task::EnvelopeError),
    #[error("cannot pull from {consumer}: {reason}")]
    Fetch { consumer: String, reason: String },
    #[error("NATS request failed: {0}")]
    Request(String),
}
