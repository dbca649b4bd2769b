//! Feeds the worker's [`CancelBoard`]: notices on NATS tell it at once (a running agent is
//! signalled within a round trip); PostgreSQL's `cancellations` tells it what was cancelled
//! before it started, and every few seconds what a missed notice carried.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use crate::{
    agent::CancelBoard,
    broker::{Broker, CancelNotice},
    store::Store,
};

/// How often PostgreSQL is read for cancellations a notice did not bring.
const REFRESH: Duration = Duration::from_secs(5);
/// How far back cancellations are remembered: a task cancelled longer ago and still not
/// delivered is ended by its row (already `cancelled`) when it is claimed.
const REMEMBER: chrono::Duration = chrono::Duration::days(8);

/// Runs until `stop` completes.
pub async fn run(
    broker: Broker,
    store: Store,
    board: Arc<CancelBoard>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    // Subscribed before reading PostgreSQL: nothing falls between the two.
    let mut notices = loop {
        match broker.cancellation_notices().await {
            Ok(notices) => break notices,
            Err(error) => {
                tracing::warn!(%error, "cannot hear cancellations yet; retrying");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut read_up_to = Utc::now() - REMEMBER;
    let mut refresh = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            () = &mut stop => return,
            notice = notices.next() => match notice {
                Some(message) => match serde_json::from_slice::<CancelNotice>(&message.payload) {
                    Ok(notice) => {
                        let now = Utc::now();
                        for id in notice.ids {
                            board.cancel(id, &notice.by, now);
                        }
                    }
                    Err(error) => tracing::debug!(%error, "ignoring a malformed cancellation notice"),
                },
                None => return,
            },
            _ = refresh.tick() => {
                read_up_to = read_from_store(&store, &board, read_up_to).await;
                board.forget_before(Utc::now() - REMEMBER);
            }
        }
    }
}

/// Reads cancellations after `since` into `board`; returns where the next read starts.
async fn read_from_store(
    store: &Store,
    board: &CancelBoard,
    since: DateTime<Utc>,
) -> DateTime<Utc> {
    match store.cancellations_since(since).await {
        Ok(rows) => {
            let mut latest = since;
            for (id, by, at) in rows {
                board.cancel(id, &by, at);
                latest = latest.max(at);
            }
            // Rows committed a moment late with an earlier time are read again next round.
            latest - chrono::Duration::seconds(2)
        }
        Err(error) => {
            tracing::debug!(%error, "cannot read cancellations; trying again");
            since
        }
    }
}
