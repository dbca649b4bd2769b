//! Claim checks: values too large for a message or a row (a task's data, an agent's result)
//! are put in the fleet's JetStream Object Store bucket, `<tasks stream>_PAYLOADS`, and a
//! [`PayloadRef`] travels instead. Objects expire with the retention period of the rows
//! that point at them (the bucket's `max_age`).

use std::time::Duration;

use async_nats::jetstream::{
    ErrorCode,
    context::{GetStreamError, GetStreamErrorKind},
    object_store::{self, GetErrorKind, ObjectStore},
    stream::StorageType,
};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

use super::{Broker, NatsError};
use crate::{
    fault::{Classify, Fault},
    task::PayloadRef,
};

/// A claim-check failure.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The object is not there (expired with its retention, deleted, never put): no retry
    /// can bring it back.
    #[error("payload {bucket}/{name} is missing (expired or never stored)")]
    Missing { bucket: String, name: String },
    /// The stored text is not the JSON value it should be.
    #[error("payload {bucket}/{name} is not a JSON value: {reason}")]
    Unreadable {
        bucket: String,
        name: String,
        reason: String,
    },
    /// The bucket was never created.
    #[error("claim-check bucket {0} does not exist: run `swarmd migrate` (admin role)")]
    NoBucket(String),
    /// The broker could not be asked (down, timed out, refused for now).
    #[error("cannot reach the payload store: {0}")]
    Unavailable(#[source] NatsError),
}

/// Most bytes reserved up front for an object, whatever its reference claims.
const SIZE_HINT_CAP: usize = 16 * 1024 * 1024;

impl Classify for PayloadError {
    fn fault(&self) -> Fault {
        match self {
            PayloadError::Missing { .. } | PayloadError::Unreadable { .. } => Fault::Permanent,
            // Transient for the task: it waits for the operator's `swarmd migrate`.
            PayloadError::NoBucket(_) | PayloadError::Unavailable(_) => Fault::Transient,
        }
    }
}

concern_handle! {
    /// Claim checks: large values in the Object Store.
    pub struct Payloads for Broker, payloads
}

impl Payloads<'_> {
    /// The Object Store bucket of this fleet's claim checks.
    pub fn bucket(&self) -> String {
        format!("{}_PAYLOADS", self.settings().stream)
    }

    /// Values whose JSON text is larger than this travel by claim check.
    pub fn claim_check_bytes(&self) -> usize {
        self.settings().claim_check_bytes
    }

    /// Creates the claim-check bucket when missing, its objects kept `max_age` (`None`:
    /// forever).
    ///
    /// Fails when JetStream refuses (a role without stream management: `swarmd migrate`
    /// under the admin role creates it).
    pub async fn ensure(&self, max_age: Option<Duration>) -> Result<(), PayloadError> {
        let bucket = self.bucket();
        if self.jetstream().get_object_store(&bucket).await.is_ok() {
            return Ok(());
        }
        self.jetstream()
            .create_object_store(object_store::Config {
                bucket,
                description: Some("SwarmDirector claim checks: large task data and results".into()),
                max_age: max_age.unwrap_or_default(),
                storage: StorageType::File,
                num_replicas: self.settings().replicas,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| PayloadError::Unavailable(e.into()))
    }

    async fn payloads(&self, bucket: &str) -> Result<ObjectStore, PayloadError> {
        self.jetstream()
            .get_object_store(bucket)
            .await
            .map_err(|e| {
                // The bucket's stream is missing: decided by the server's error code.
                let missing = std::error::Error::source(&e)
                    .and_then(|source| source.downcast_ref::<GetStreamError>())
                    .is_some_and(|source| {
                        matches!(source.kind(), GetStreamErrorKind::JetStream(error)
                            if error.error_code() == ErrorCode::STREAM_NOT_FOUND)
                    });
                if missing {
                    PayloadError::NoBucket(bucket.to_string())
                } else {
                    PayloadError::Unavailable(e.into())
                }
            })
    }

    /// Puts `json` (a value's JSON text) under `name`, replacing an earlier object of that
    /// name (a retried attempt writes the same name).
    pub async fn put(&self, name: String, json: &[u8]) -> Result<PayloadRef, PayloadError> {
        let bucket = self.bucket();
        let store = self.payloads(&bucket).await?;
        let mut reader = json;
        store.put(name.as_str(), &mut reader).await.map_err(|e| {
            PayloadError::Unavailable(format!("putting {bucket}/{name}: {e}").into())
        })?;
        Ok(PayloadRef {
            bucket,
            name,
            size: json.len() as u64,
        })
    }

    /// The value a claim check points at. Only this fleet's bucket is read: a reference
    /// elsewhere (a producer's mistake, or a probe of other buckets) is missing.
    pub async fn get(&self, reference: &PayloadRef) -> Result<Value, PayloadError> {
        let missing = || PayloadError::Missing {
            bucket: reference.bucket.clone(),
            name: reference.name.clone(),
        };
        if reference.bucket != self.bucket() {
            return Err(missing());
        }
        let store = self.payloads(&reference.bucket).await?;
        let mut object = store
            .get(&reference.name)
            .await
            .map_err(|e| match e.kind() {
                GetErrorKind::NotFound | GetErrorKind::InvalidName => missing(),
                _ => PayloadError::Unavailable(e.into()),
            })?;
        // The size is the producer's word: a hint, bounded, never trusted for memory.
        let hint = usize::try_from(reference.size)
            .unwrap_or(0)
            .min(SIZE_HINT_CAP);
        let mut json = Vec::with_capacity(hint);
        object
            .read_to_end(&mut json)
            .await
            .map_err(|e| PayloadError::Unavailable(e.into()))?;
        serde_json::from_slice(&json).map_err(|e| PayloadError::Unreadable {
            bucket: reference.bucket.clone(),
            name: reference.name.clone(),
            reason: e.to_string(),
        })
    }
}
