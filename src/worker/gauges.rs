//! Refreshes the gauges a scaler watches: backlog and oldest waiting task per priority,
//! tasks in flight, database connections in use.

use std::time::Duration;

use crate::{broker::Broker, metrics::Metrics, store::Store};

const PRIORITIES: [&str; 10] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"];

/// Updates the gauges every `every` until `shutdown`.
pub async fn run(
    broker: Broker,
    store: Store,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        refresh(&broker, &store).await;
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One refresh; a failed read leaves the previous value.
pub async fn refresh(broker: &Broker, store: &Store) {
    let metrics = Metrics::global();
    let pool = store.primary();
    metrics
        .db_connections
        .set(i64::from(pool.size()) - pool.num_idle() as i64);
    let Ok(backlog) = broker.backlog().await else {
        return;
    };
    let mut in_flight = 0;
    for level in &backlog.priorities {
        in_flight += level.in_flight as i64;
        metrics
            .queue_size
            .with_label_values(&[PRIORITIES[usize::from(level.priority)]])
            .set(level.pending as i64);
        metrics
            .oldest_pending
            .with_label_values(&[&level.priority.to_string()])
            .set(level.oldest_pending_secs);
    }
    metrics
        .queue_size
        .with_label_values(&["in_flight"])
        .set(in_flight);
}
