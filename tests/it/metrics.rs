//! The worker's `/metrics`: the seed's metric names and ours, with values that follow what
//! the worker did, and the backlog gauges an autoscaler reads.

use std::time::Duration;

use serde_json::json;
use swarm_director::{
    metrics::Metrics,
    sidecars::gauges,
    task::{Codec, TaskEnvelope},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestEnv, nats_server::spare_port};

/// A plain HTTP/1.1 GET, so the test needs no HTTP client crate.
async fn get(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_exposes_what_it_did() {
    let env = TestEnv::new().await;
    let port = spare_port();
    let mut worker = env
        .swarmd()
        .arg("worker")
        .env("SWARM_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("SWARM_RETRY_BASE_MS", "100")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut tasks = publish_echoes_and_failures(&env, 5).await;
    let quality = TaskEnvelope::new("quality", json!({"text": "Clear words."}));
    env.broker.publish(&quality, Codec::Json).await.unwrap();
    env.wait_finished(&[quality.id], Duration::from_secs(20))
        .await;
    let again = TaskEnvelope::new("quality", json!({"text": "Clear words."}));
    env.broker.publish(&again, Codec::Json).await.unwrap();
    tasks.push(quality);
    tasks.push(again);
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    env.wait_finished(&ids, Duration::from_secs(20)).await;

    let mut metrics = String::new();
    for _ in 0..100 {
        // Acks (and their counters) follow the commit by a moment.
        metrics = get(port, "/metrics").await;
        if value(
            &metrics,
            r#"agent_tasks_total{agent_type="echo",status="completed"}"#,
        ) == Some(5.0)
            && value(
                &metrics,
                r#"agent_tasks_total{agent_type="quality",status="completed"}"#,
            ) == Some(2.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expect = |series: &str, wanted: f64| {
        assert_eq!(
            value(&metrics, series),
            Some(wanted),
            "{series} in\n{metrics}"
        );
    };
    expect(
        r#"agent_tasks_total{agent_type="echo",status="completed"}"#,
        5.0,
    );
    expect(r#"agent_tasks_total{agent_type="fail",status="dead"}"#, 1.0);
    expect(
        r#"agent_tasks_total{agent_type="fail",status="retry"}"#,
        1.0,
    );
    expect(
        r#"agent_tasks_total{agent_type="fail",status="completed"}"#,
        1.0,
    );
    expect(
        r#"task_dead_letters_total{agent_type="fail",reason="permanent_error"}"#,
        1.0,
    );
    expect(r#"result_cache_requests_total{result="hit"}"#, 1.0);
    expect(r#"result_cache_requests_total{result="miss"}"#, 1.0);
    expect(
        r#"agent_processing_duration_seconds_count{agent_type="echo"}"#,
        5.0,
    );
    expect(
        r#"task_end_to_end_seconds_count{agent_type="echo",priority="5"}"#,
        5.0,
    );
    for name in [
        "active_database_connections",
        "task_queue_size{queue_type=\"p5\"}",
        "task_backlog_oldest_age_seconds{priority=\"5\"}",
        "legacy_mirror_lag_milliseconds",
        "worker_tasks_in_flight",
    ] {
        assert!(
            value(&metrics, name).is_some(),
            "{name} missing from\n{metrics}"
        );
    }
    assert_prometheus_text(&metrics);
    let again = get(port, "/metrics").await;
    assert!(
        value(
            &again,
            r#"http_requests_total{endpoint="/metrics",method="GET",status="200"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{again}"
    );
    assert!(
        !again.contains(&tasks[0].id.to_string()),
        "no task ids in labels"
    );
    assert!(get(port, "/health").await.ends_with("ok\n"));
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_records_into_the_metrics_it_is_given_and_nowhere_else() {
    let env = TestEnv::new().await;
    // Its own set, so what other work in this process records cannot change the figures.
    let own: &'static Metrics = Box::leak(Box::new(Metrics::new()));
    let global_echo_before = completed(Metrics::global(), "echo");
    let worker = env.spawn(
        env.worker_with(|s| s.worker.retry_base_ms = 50)
            .with_metrics(own),
    );
    let tasks = publish_echoes_and_failures(&env, 4).await;
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    env.wait_finished(&ids, Duration::from_secs(20)).await;
    // Counted once the broker was told, a moment after the commit.
    crate::support::eventually("every outcome counted", Duration::from_secs(10), || async {
        (completed(own, "echo") == 4 && completed(own, "fail") == 1).then_some(())
    })
    .await;
    let tasks_of =
        |agent: &str, status: &str| own.agent_tasks.with_label_values(&[agent, status]).get();
    assert_eq!(tasks_of("fail", "dead"), 1);
    assert_eq!(tasks_of("fail", "retry"), 1);
    assert_eq!(
        own.dead_letters
            .with_label_values(&["fail", "permanent_error"])
            .get(),
        1
    );
    assert_eq!(
        own.agent_duration
            .with_label_values(&["echo"])
            .get_sample_count(),
        4
    );
    assert_eq!(
        completed(Metrics::global(), "echo"),
        global_echo_before,
        "nothing went to the process's metrics"
    );
    worker.stop().await;
    env.cleanup().await;
}

/// Publishes `echoes` echo tasks, one permanent failure and one task that succeeds on its
/// second attempt; returns them.
async fn publish_echoes_and_failures(env: &TestEnv, echoes: usize) -> Vec<TaskEnvelope> {
    let mut tasks: Vec<TaskEnvelope> = (0..echoes)
        .map(|n| TaskEnvelope::new("echo", json!(n)))
        .collect();
    tasks.push(TaskEnvelope::new("fail", json!({"permanent": true})));
    tasks.push(TaskEnvelope::new("fail", json!({"succeed_on_attempt": 2})));
    for task in &tasks {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    tasks
}

fn completed(metrics: &Metrics, agent: &str) -> u64 {
    metrics
        .agent_tasks
        .with_label_values(&[agent, "completed"])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_gauges_show_depth_and_age_per_priority() {
    let env = TestEnv::new().await;
    for _ in 0..7 {
        let task = TaskEnvelope::new("echo", json!(null)).with_priority(3);
        env.broker.publish(&task, Codec::Json).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Its own metrics: nothing else running in this process can move these gauges.
    let metrics = Metrics::new();
    gauges::refresh(&env.broker, &env.store, &Default::default(), &metrics).await;
    assert_eq!(metrics.queue_size.with_label_values(&["p3"]).get(), 7);
    assert_eq!(metrics.queue_size.with_label_values(&["p4"]).get(), 0);
    let age = metrics.oldest_pending.with_label_values(&["3"]).get();
    assert!(
        (1..=10).contains(&age),
        "oldest waiting task is about a second old: {age}"
    );
    assert_eq!(metrics.oldest_pending.with_label_values(&["4"]).get(), 0);
    env.cleanup().await;
}

/// Every line of the body is a comment or `name{labels} value` in the text format.
fn assert_prometheus_text(response: &str) {
    let body = response.split("\r\n\r\n").nth(1).expect("an HTTP body");
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line:?}"
            );
        }
    }
}
