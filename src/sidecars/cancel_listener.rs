//! Feeds the worker's [`CancelBoard`]: notices on NATS tell it at once (a running agent is
//! signalled within a round trip); PostgreSQL's `cancellations` tells it what was cancelled
//! before it started, and every few seconds what a missed notice carried.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use super::SidecarError;
use crate::{
    agent::CancelBoard,
    broker::{Broker, CancelNotice},
    store::Store,
};

/// How often PostgreSQL is read for cancellations a notice did not bring.
const REFRESH: Duration = Duration::from_secs(5);
/// How far back cancellations are remembered (beyond the default retention). A task
/// cancelled longer ago and delivered only now may run: its row, already `cancelled`,
/// fences its result off and the delivery ends cancelled.
const REMEMBER: chrono::Duration = chrono::Duration::days(8);

/// A worker's cancellation feed, subscribed and primed: nothing cancelled before it was
/// made can slip past the worker's first pull.
pub struct Listening {
    notices: async_nats::Subscriber,
    read_up_to: DateTime<Utc>,
}

/// Subscribes to the notices, then reads what PostgreSQL lists (in that order: nothing
/// falls between the two) into `board`.
///
/// Fails when either cannot be done.
pub async fn start(
    broker: &Broker,
    store: &Store,
    board: &CancelBoard,
) -> Result<Listening, SidecarError> {
    let notices = broker.cancellations().notices().await?;
    let since = Utc::now() - REMEMBER;
    let rows = store.cancellations().since(since).await?;
    Ok(Listening {
        notices,
        read_up_to: take(board, rows, since),
    })
}

impl Listening {
    /// Keeps `board` fed until `stop` completes.
    pub async fn run(
        mut self,
        store: Store,
        board: Arc<CancelBoard>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.tick().await;
        loop {
            tokio::select! {
                () = &mut stop => return,
                notice = self.notices.next() => match notice {
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
                    match store.cancellations().since(self.read_up_to).await {
                        Ok(rows) => self.read_up_to = take(&board, rows, self.read_up_to),
                        Err(error) => tracing::debug!(%error, "cannot read cancellations; trying again"),
                    }
                    board.forget_before(Utc::now() - REMEMBER);
                }
            }
        }
    }
}

/// Puts `rows` on `board`; returns where the next read starts.
fn take(
    board: &CancelBoard,
    rows: Vec<(uuid::Uuid, String, DateTime<Utc>)>,
    since: DateTime<Utc>,
) -> DateTime<Utc> {
    let mut latest = since;
    for (id, by, at) in rows {
        board.cancel(id, &by, at);
        latest = latest.max(at);
    }
    // Rows committed a moment late with an earlier time are read again next round.
    latest - chrono::Duration::seconds(2)
}
