//! Cancellations told to every worker at once, on core NATS (`<prefix>.cancel`): each
//! notice lists ids and who cancelled them. A worker that misses one (away, reconnecting)
//! reads it from PostgreSQL's `cancellations` within seconds.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Broker, BrokerError};

/// Ids per notice: a bulk cancel of many tasks is told in several.
const IDS_PER_NOTICE: usize = 1000;

/// One cancellation notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelNotice {
    pub ids: Vec<Uuid>,
    pub by: String,
}

concern_handle! {
    /// Cancellation notices on core NATS.
    pub struct Cancellations for Broker, cancellations
}

impl Cancellations<'_> {
    /// Tells every worker that `ids` were cancelled by `by`.
    ///
    /// Fails when the notices cannot be sent.
    pub async fn announce(&self, ids: &[Uuid], by: &str) -> Result<(), BrokerError> {
        let subject = self.subjects().cancellations();
        for chunk in ids.chunks(IDS_PER_NOTICE) {
            let notice = CancelNotice {
                ids: chunk.to_vec(),
                by: by.to_string(),
            };
            let body = serde_json::to_vec(&notice).expect("a notice serialises");
            self.client()
                .publish(subject.clone(), body.into())
                .await
                .map_err(|e| BrokerError::Request(e.into()))?;
        }
        self.client()
            .flush()
            .await
            .map_err(|e| BrokerError::Request(e.into()))
    }

    /// Every cancellation notice from now on.
    ///
    /// Fails when the subscription cannot be made.
    pub async fn notices(&self) -> Result<async_nats::Subscriber, BrokerError> {
        let subscriber = self
            .client()
            .subscribe(self.subjects().cancellations())
            .await
            .map_err(|e| BrokerError::Request(e.into()))?;
        // Known to the server before the caller reads what was cancelled so far.
        self.client()
            .flush()
            .await
            .map_err(|e| BrokerError::Request(e.into()))?;
        Ok(subscriber)
    }
}
