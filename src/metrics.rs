//! Every metric of the fleet, in one place: names, labels and help. Label values are
//! bounded (agent types, priorities, statuses, reasons): never task ids.
//!
//! The seed's names are kept (`http_requests_total`, `http_request_duration_seconds`,
//! `agent_tasks_total`, `agent_processing_duration_seconds`, `active_database_connections`,
//! `task_queue_size`); the rest follow Prometheus conventions.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests served, by method, route and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency, by method and route.
    pub http_duration: HistogramVec,
    /// Settled task deliveries, by agent type and outcome (completed, retry, dead,
    /// duplicate, rejected, abandoned).
    pub agent_tasks: IntCounterVec,
    /// Time an agent took to run one attempt, by agent type.
    pub agent_duration: HistogramVec,
    /// Publish to committed outcome, by agent type and priority.
    pub end_to_end: HistogramVec,
    /// Dead letters written, by agent type and reason.
    pub dead_letters: IntCounterVec,
    /// Late outcomes fenced off: an agent ran twice for one committed result.
    pub duplicate_executions: IntCounter,
    /// Batches whose commit failed and was retried.
    pub store_failures: IntCounter,
    /// Dead letters the broker refused for good (their messages were terminated anyway).
    pub dead_letters_refused: IntCounter,
    /// Records of the dead-letter stream that could not be read as dead letters (skipped).
    pub dead_letters_unreadable: IntCounter,
    /// Messages whose task or outcome the database refused for their values.
    pub unstorable: IntCounter,
    /// Seconds the oldest batch held through a transient fault has waited (0 when none).
    pub held_batch_age: Gauge,
    /// 1 while the worker counts as stalled (`/ready` answers 503), else 0.
    pub worker_stalled: IntGauge,
    /// Database connections in use.
    pub db_connections: IntGauge,
    /// Messages waiting per queue (`p0`..`p9`: pending per priority; `in_flight`:
    /// delivered, not yet acknowledged).
    pub queue_size: IntGaugeVec,
    /// Age of the oldest waiting task per priority, in seconds (0 when none waits).
    pub oldest_pending: IntGaugeVec,
    /// Result cache lookups, by result (hit, miss, error).
    pub cache: IntCounterVec,
    /// Milliseconds between a task move and its write to the legacy keys (last batch).
    pub mirror_lag_ms: IntGauge,
    /// Legacy-key moves dropped during a Redis outage (caught up later).
    pub mirror_dropped: IntCounter,
    /// Legacy tasks taken in from `agent_tasks`.
    pub legacy_intake: IntCounter,
    /// Tasks this process is running now.
    pub in_flight: IntGauge,
    /// Tasks waiting per agent type (all priorities): a dedicated pool's backlog.
    pub agent_backlog: IntGaugeVec,
    /// The host's CPU and memory use (percent of what this process may use) and load.
    pub host_cpu: Gauge,
    pub host_memory: Gauge,
    pub host_load1: Gauge,
    /// The seed's other readings: disk use of `/`, established TCP connections, processes.
    pub host_disk: Gauge,
    pub host_connections: IntGauge,
    pub host_processes: IntGauge,
    /// Workers that answered the last roll call.
    pub fleet_workers: IntGauge,
    /// Waiting tasks per live worker (-1 when none answers).
    pub backlog_per_worker: Gauge,
    /// 1 scale up, 0 hold, -1 scale down.
    pub scale_recommendation: IntGauge,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let metric = Gauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

/// 1 ms to 5 min.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0,
    ]
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Settled deliveries counted with `outcome` (`completed`, `retry`, `dead`, `duplicate`,
    /// `rejected`, `abandoned`, `cancelled`), over every agent type.
    pub fn settled(&self, outcome: &str) -> u64 {
        use prometheus::core::Collector;
        self.agent_tasks
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|metric| {
                metric
                    .get_label()
                    .iter()
                    .any(|label| label.name() == "status" && label.value() == outcome)
            })
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum()
    }

    /// The process-wide metrics.
    pub fn global() -> &'static Metrics {
        &GLOBAL
    }

    /// A set of metrics of its own, apart from the process-wide one (tests that must not
    /// see what other work in the process records).
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            http_requests: counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests",
                &["method", "endpoint", "status"],
            ),
            http_duration: histogram_vec(
                &r,
                "http_request_duration_seconds",
                "HTTP request latency",
                &["method", "endpoint"],
                latency_buckets(),
            ),
            agent_tasks: counter_vec(
                &r,
                "agent_tasks_total",
                "Settled task deliveries by outcome",
                &["agent_type", "status"],
            ),
            agent_duration: histogram_vec(
                &r,
                "agent_processing_duration_seconds",
                "Agent run time per attempt",
                &["agent_type"],
                latency_buckets(),
            ),
            end_to_end: histogram_vec(
                &r,
                "task_end_to_end_seconds",
                "Task creation to committed outcome",
                &["agent_type", "priority"],
                latency_buckets(),
            ),
            dead_letters: counter_vec(
                &r,
                "task_dead_letters_total",
                "Dead letters written",
                &["agent_type", "reason"],
            ),
            duplicate_executions: counter(
                &r,
                "task_duplicate_executions_total",
                "Late outcomes fenced off after another attempt committed",
            ),
            store_failures: counter(
                &r,
                "task_store_failures_total",
                "Outcome batches whose commit failed and was retried",
            ),
            dead_letters_refused: counter(
                &r,
                "task_dead_letters_refused_total",
                "Dead letters the broker refused for good; their messages were terminated",
            ),
            dead_letters_unreadable: counter(
                &r,
                "task_dead_letters_unreadable_total",
                "Dead-letter records skipped because they could not be read",
            ),
            unstorable: counter(
                &r,
                "task_unstorable_total",
                "Tasks or outcomes the database refused for their values",
            ),
            held_batch_age: float_gauge(
                &r,
                "worker_held_batch_age_seconds",
                "Age of the oldest batch held through a transient fault",
            ),
            worker_stalled: gauge(
                &r,
                "worker_stalled",
                "1 while the worker holds work or stands still past its stall time",
            ),
            db_connections: gauge(
                &r,
                "active_database_connections",
                "Database connections in use",
            ),
            queue_size: gauge_vec(
                &r,
                "task_queue_size",
                "Tasks waiting per priority (p0-p9) and in flight",
                &["queue_type"],
            ),
            oldest_pending: gauge_vec(
                &r,
                "task_backlog_oldest_age_seconds",
                "Age of the oldest waiting task per priority",
                &["priority"],
            ),
            cache: counter_vec(
                &r,
                "result_cache_requests_total",
                "Result cache lookups (hit, miss) and failed lookups or stores (error)",
                &["result"],
            ),
            mirror_lag_ms: gauge(
                &r,
                "legacy_mirror_lag_milliseconds",
                "Delay between a task move and its legacy-key write",
            ),
            mirror_dropped: counter(
                &r,
                "legacy_mirror_dropped_total",
                "Legacy-key moves dropped while Redis was away",
            ),
            legacy_intake: counter(
                &r,
                "legacy_intake_total",
                "Tasks taken in from legacy producers",
            ),
            in_flight: gauge(
                &r,
                "worker_tasks_in_flight",
                "Tasks this process is running",
            ),
            agent_backlog: gauge_vec(
                &r,
                "task_backlog_by_agent",
                "Tasks waiting per agent type, all priorities",
                &["agent_type"],
            ),
            host_cpu: float_gauge(&r, "host_cpu_percent", "CPU use of this host or pod"),
            host_memory: float_gauge(&r, "host_memory_percent", "Memory use of this host or pod"),
            host_load1: float_gauge(&r, "host_load_average_1m", "One-minute load average"),
            host_disk: float_gauge(
                &r,
                "host_disk_percent",
                "Used share of the filesystem holding /",
            ),
            host_connections: gauge(
                &r,
                "host_active_connections",
                "Established TCP connections of this host or pod",
            ),
            host_processes: gauge(
                &r,
                "host_active_processes",
                "Processes of this host or container",
            ),
            fleet_workers: gauge(&r, "fleet_workers", "Workers answering the roll call"),
            backlog_per_worker: float_gauge(
                &r,
                "task_backlog_per_worker",
                "Waiting tasks per live worker (-1: no worker answers)",
            ),
            scale_recommendation: gauge(
                &r,
                "scale_recommendation",
                "1 scale up, 0 hold, -1 scale down (thresholds in [scale])",
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Observes one duration in seconds.
    pub fn observe(histogram: &Histogram, seconds: f64) {
        histogram.observe(seconds.max(0.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_sums_an_outcome_over_agent_types() {
        let metrics = Metrics::new();
        let settled = |agent, outcome| metrics.agent_tasks.with_label_values(&[agent, outcome]);
        settled("echo", "completed").inc();
        settled("review", "completed").inc_by(2);
        settled("echo", "dead").inc();
        assert_eq!(metrics.settled("completed"), 3);
        assert_eq!(metrics.settled("dead"), 1);
        assert_eq!(metrics.settled("retry"), 0);
    }
}
