//! Writes agents' progress reports to their rows a few times a second, in one statement per
//! round; a report whose task has no row yet (a first delivery writes its row at the end or
//! after half a second) waits for the next round. What was written is told to live viewers.

use std::{sync::Arc, time::Instant};

use crate::{
    agent::{ProgressBoard, WRITE_EVERY},
    broker::Broker,
    store::Store,
};

/// Runs until `stop` completes, writing what is on `board`.
pub async fn run(
    broker: Broker,
    store: Store,
    board: Arc<ProgressBoard>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(WRITE_EVERY) => {}
        }
        let taken_at = Instant::now();
        let reports = board.take();
        if reports.is_empty() {
            continue;
        }
        match store.tasks().record_progress(&reports).await {
            Ok(applied) => {
                tell_viewers(&broker, &reports, &applied).await;
                let waiting = reports
                    .into_iter()
                    .filter(|(id, _)| !applied.contains(id))
                    .collect();
                board.put_back(waiting, taken_at);
            }
            Err(error) => {
                tracing::debug!(%error, "cannot record progress; trying again");
                board.put_back(reports, taken_at);
            }
        }
    }
}

/// One `progress` event per round written: `{"reports": [[id, report], ...]}` for the
/// dashboard's live views.
async fn tell_viewers(
    broker: &Broker,
    reports: &[(uuid::Uuid, serde_json::Value)],
    applied: &std::collections::HashSet<uuid::Uuid>,
) {
    let written: Vec<_> = reports
        .iter()
        .filter(|(id, _)| applied.contains(id))
        .map(|(id, report)| serde_json::json!([id, report]))
        .collect();
    if written.is_empty() {
        return;
    }
    let body = serde_json::to_vec(&serde_json::json!({ "reports": written }))
        .expect("a progress event serialises");
    let subject = broker.subjects().worker_event("progress");
    if let Err(error) = broker.client().publish(subject, body.into()).await {
        tracing::debug!(%error, "cannot tell viewers of progress");
    }
}
