//! Writes agents' progress reports to their rows a few times a second, in one statement per
//! round; a report whose task has no row yet (a first delivery writes its row at the end or
//! after half a second) waits for the next round.

use std::{sync::Arc, time::Instant};

use crate::{
    agent::{ProgressBoard, WRITE_EVERY},
    store::Store,
};

/// Runs until `stop` completes, writing what is on `board`.
pub async fn run(
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
        match store.record_progress(&reports).await {
            Ok(applied) => {
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
