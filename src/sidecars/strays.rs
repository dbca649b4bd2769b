//! Drains stray subjects (see `broker::strays`) to the dead-letter stream with reason
//! `bad_subject`, so a message published where no lane reads it ends visible and
//! replayable instead of waiting forever. General workers (those not limited to named
//! agent types) sweep now and then; strays are rare, so the sweep is cheap.

use std::time::Duration;

use async_nats::jetstream::AckKind;

use crate::delivery::{self, DeliveryInfo, Rejection};
use crate::{
    broker::{Broker, BrokerError, STRAY_BATCH},
    dlq::{DeadLetterStream, DeadReason},
    metrics::Metrics,
};

/// Sweeps every `every` until `shutdown`.
pub async fn run(
    broker: Broker,
    dead_letters: DeadLetterStream,
    worker_id: String,
    metrics: &'static Metrics,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        if let Err(error) = sweep(&broker, &dead_letters, &worker_id, metrics).await {
            tracing::warn!(%error, "cannot sweep stray subjects; trying again later");
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Dead-letters what waits on stray subjects now; returns how many messages.
///
/// Fails when the stream cannot be read or the dead-letter stream is away (the messages
/// then stay, to be swept again).
pub async fn sweep(
    broker: &Broker,
    dead_letters: &DeadLetterStream,
    worker_id: &str,
    metrics: &Metrics,
) -> Result<usize, SweepError> {
    let mut swept = 0;
    for subject in broker.strays().list().await? {
        loop {
            let messages = broker.strays().fetch(&subject).await?;
            let fetched = messages.len();
            if fetched == 0 {
                break;
            }
            let mut letters = Vec::with_capacity(fetched);
            for message in &messages {
                let info = DeliveryInfo::of(message);
                let rejection = Rejection {
                    reason: DeadReason::BadSubject,
                    error: format!(
                        "subject {subject:?} is not <prefix>.tasks.p<0-9>.<agent_type>: no lane \
                         reads it"
                    ),
                };
                // Cut to fit by the dead-letter stream itself.
                letters.push(delivery::rejected_letter(
                    broker.subjects(),
                    &info,
                    message,
                    rejection,
                    worker_id,
                    usize::MAX,
                ));
            }
            let refused = dead_letters.publish(&mut letters).await?;
            for (id, error) in refused {
                metrics.dead_letters_refused.inc();
                tracing::error!(letter_id = %id, %error, "the broker refuses a stray's dead letter");
            }
            for (message, letter) in messages.iter().zip(&letters) {
                tracing::warn!(%subject, letter_id = %letter.id, "dead-lettered a message on a stray subject");
                metrics
                    .dead_letters
                    .with_label_values(&["unknown", DeadReason::BadSubject.as_str()])
                    .inc();
                let _ = message.ack_with(AckKind::Term).await;
            }
            swept += fetched;
            if fetched < STRAY_BATCH {
                break;
            }
        }
    }
    Ok(swept)
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    DeadLetters(#[from] crate::dlq::DlqError),
}
