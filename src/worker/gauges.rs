//! Refreshes the gauges a scaler watches: backlog and oldest waiting task per priority,
//! tasks in flight, database connections in use.

use std::time::Duration;

use chrono::Utc;

use crate::{broker::Broker, metrics::Metrics, store::Store, task::MAX_PRIORITY};

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
    let Ok(stream) = broker
        .jetstream()
        .get_stream(&broker.settings().stream)
        .await
    else {
        return;
    };
    let mut in_flight = 0;
    for priority in 0..=MAX_PRIORITY {
        let Ok(info) = stream.consumer_info(broker.consumer_name(priority)).await else {
            continue;
        };
        in_flight += info.num_ack_pending as i64;
        let label = PRIORITIES[usize::from(priority)];
        metrics
            .queue_size
            .with_label_values(&[label])
            .set(info.num_pending as i64);
        // The next message this consumer would deliver is its oldest waiting one.
        let age = if info.num_pending == 0 {
            0
        } else {
            stream
                .direct_get_next_for_subject(
                    broker.subjects().priority_filter(priority),
                    Some(info.delivered.stream_sequence + 1),
                )
                .await
                .map(|message| {
                    let published = message.time.unix_timestamp();
                    (Utc::now().timestamp() - published).max(0)
                })
                .unwrap_or(0)
        };
        metrics
            .oldest_pending
            .with_label_values(&[&priority.to_string()])
            .set(age);
    }
    metrics
        .queue_size
        .with_label_values(&["in_flight"])
        .set(in_flight);
}
