//! Refreshes the gauges a scaler watches: backlog and oldest waiting task per priority and
//! per agent type, tasks in flight, database connections in use, the host's CPU and memory,
//! live workers and the scale recommendation.

use std::time::Duration;

use crate::{
    broker::Broker,
    metrics::Metrics,
    scale::{ROLL_CALL_WAIT, ScaleMeter, roll_call},
    store::Store,
};

const PRIORITIES: [&str; 10] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"];

/// Updates the gauges every `every` until `shutdown`.
pub async fn run(
    broker: Broker,
    store: Store,
    meter: std::sync::Arc<ScaleMeter>,
    metrics: &'static Metrics,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        refresh(&broker, &store, &meter, metrics).await;
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Keeps the held-batch age and stall gauges current (every second) until `shutdown`.
pub async fn watch_liveness(
    liveness: std::sync::Arc<super::liveness::Liveness>,
    metrics: &'static Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut was_stalled = false;
    loop {
        metrics
            .held_batch_age
            .set(liveness.held().oldest_age().as_secs_f64());
        let stall = liveness.stall();
        metrics.worker_stalled.set(i64::from(stall.is_some()));
        match (&stall, was_stalled) {
            (Some(stall), false) => tracing::warn!(%stall, "worker stalled: /ready answers 503"),
            (None, true) => tracing::info!("worker makes progress again"),
            _ => {}
        }
        was_stalled = stall.is_some();
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One refresh into `metrics`; a failed read leaves the previous value.
pub async fn refresh(broker: &Broker, store: &Store, meter: &ScaleMeter, metrics: &Metrics) {
    let pool = store.primary();
    metrics
        .db_connections
        .set(i64::from(pool.size()) - pool.num_idle() as i64);
    let Ok(backlog) = broker.lanes().backlog().await else {
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
    // Agent types come from subjects producers chose: list only those waiting now, so a
    // burst of garbage names does not stay in the exposition.
    metrics.agent_backlog.reset();
    for lane in &backlog.lanes {
        metrics
            .agent_backlog
            .with_label_values(&[&lane.agent_type])
            .add(lane.pending as i64);
    }
    // Last: the roll call waits for answers.
    let Ok(workers) = roll_call(broker, ROLL_CALL_WAIT).await else {
        return;
    };
    let signals = meter.decide(&backlog, &workers);
    metrics.host_cpu.set(signals.host.cpu_percent);
    metrics.host_memory.set(signals.host.memory_percent);
    metrics.host_disk.set(signals.host.disk_percent);
    metrics
        .host_connections
        .set(signals.host.active_connections as i64);
    metrics
        .host_processes
        .set(signals.host.active_processes as i64);
    metrics.host_load1.set(signals.host.load_average[0]);
    metrics.fleet_workers.set(signals.workers as i64);
    metrics
        .backlog_per_worker
        .set(signals.backlog_per_worker.unwrap_or(-1.0));
    metrics.scale_recommendation.set(signals.recommendation());
}
