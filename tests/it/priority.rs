//! Strict priority order with a backlog, and fast pick-up by an idle worker.

use std::time::Duration;

use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};

use crate::support::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_highest_priority_first() {
    let env = TestEnv::new().await;
    // Published lowest first, so arrival order is the opposite of priority order; two agent
    // types per priority, so the order holds across lanes, not only within one.
    let mut tasks = Vec::new();
    for priority in 0..=9u8 {
        for n in 0..4 {
            let task = if n % 2 == 0 {
                TaskEnvelope::new("echo", json!({"p": priority, "n": n}))
            } else {
                TaskEnvelope::new("sleep", json!({"ms": 1}))
            };
            tasks.push(task.with_priority(priority));
        }
    }
    for task in &tasks {
        env.broker.publish(task, Codec::MessagePack).await.unwrap();
    }
    let worker = env.spawn(env.worker_with(|s| {
        s.worker.concurrency = swarm_director::config::Concurrency::Fixed(1);
        s.worker.fetch_batch = 1;
    }));
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let mut rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    worker.stop().await;
    rows.sort_by_key(|r| r.started_at);
    let order: Vec<i16> = rows.iter().map(|r| r.priority).collect();
    let mut expected = order.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, expected, "tasks ran out of priority order");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_take_the_top_of_the_backlog() {
    let env = TestEnv::new().await;
    let mut tasks = Vec::new();
    for priority in [1u8, 4, 8] {
        for _ in 0..10 {
            tasks.push(TaskEnvelope::new("echo", json!(null)).with_priority(priority));
        }
    }
    for task in &tasks {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    // Ten slots: the first batch must be exactly the ten priority-8 tasks.
    let worker = env.spawn(env.worker_with(|s| {
        s.worker.concurrency = swarm_director::config::Concurrency::Fixed(10);
        s.worker.fetch_batch = 10;
    }));
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let mut rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    worker.stop().await;
    // One claim stamps its whole batch with one time; within it, higher priority first.
    rows.sort_by_key(|r| (r.started_at, -r.priority));
    let first_ten: Vec<i16> = rows[..10].iter().map(|r| r.priority).collect();
    assert_eq!(first_ten, vec![8; 10]);
    let last_ten: Vec<i16> = rows[20..].iter().map(|r| r.priority).collect();
    assert_eq!(last_ten, vec![1; 10]);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_picks_up_new_work_at_once() {
    let env = TestEnv::new().await;
    // A slow backstop rescan, so only the doorbell can explain a fast pick-up.
    let worker = env.spawn(env.worker_with(|s| s.worker.idle_rescan_ms = 10_000));
    worker.ready().await;
    let mut latencies = Vec::new();
    for priority in [0u8, 9, 3, 0, 6, 1, 8, 0, 5, 2] {
        let task = TaskEnvelope::new("echo", json!(null)).with_priority(priority);
        env.broker.publish(&task, Codec::Json).await.unwrap();
        let rows = env.wait_finished(&[task.id], Duration::from_secs(5)).await;
        let picked_up = rows[0].started_at.unwrap() - task.created_at;
        latencies.push(picked_up.num_microseconds().unwrap() as f64 / 1000.0);
        // Let the worker go idle again.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    latencies.sort_by(f64::total_cmp);
    println!(
        "idle pick-up latency (publish -> claim): p50 {:.2} ms, max {:.2} ms",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(
        latencies[latencies.len() - 1] < 1000.0,
        "idle pick-up too slow: {latencies:?}"
    );
    env.cleanup().await;
}
