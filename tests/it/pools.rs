//! Worker pools: lanes per (priority, agent type), so a worker takes only the agent types it
//! serves, lanes of one priority take turns, and the consumers of earlier versions give way.

use std::{process::Stdio, time::Duration};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use serde_json::json;
use swarm_director::{
    task::AgentFilter,
    task::{Codec, TaskEnvelope},
};
use uuid::Uuid;

use crate::support::{TestEnv, eventually};

async fn publish(env: &TestEnv, agent: &str, data: serde_json::Value, priority: u8) -> Uuid {
    let task = TaskEnvelope::new(agent, data).with_priority(priority);
    env.broker.publish(&task, Codec::Json).await.unwrap();
    task.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quality_pool_never_takes_an_email_task() {
    let env = TestEnv::new().await;
    let mut quality = Vec::new();
    let mut email = Vec::new();
    for i in 0..20u8 {
        let priority = i % 10;
        quality.push(publish(&env, "quality", json!({"text": "Fine words."}), priority).await);
        email.push(
            publish(
                &env,
                "email",
                json!({"to": "a@example.com", "subject": "Hi", "template": "Dear {{n}}", "variables": {"n": i}}),
                priority,
            )
            .await,
        );
    }
    let mut pool = env
        .swarmd()
        .args([
            "worker",
            "--agents",
            "quality",
            "--no-mirror",
            "--no-intake",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("swarmd starts");
    let done = env.wait_finished(&quality, Duration::from_secs(30)).await;
    assert!(done.iter().all(|r| r.status == "completed"));
    // Long enough for a worker that took email tasks to have claimed some.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for id in &email {
        assert!(
            env.store.reads().task(*id).await.unwrap().0.is_none(),
            "the quality pool claimed email task {id}"
        );
    }
    let backlog = env.broker.lanes().backlog().await.unwrap();
    let waiting: Vec<_> = backlog.lanes.iter().filter(|l| l.pending > 0).collect();
    assert_eq!(waiting.len(), 10, "{waiting:?}");
    assert!(
        waiting
            .iter()
            .all(|l| l.agent_type == "email" && l.consumer.is_none())
    );
    assert_eq!(backlog.pending(), 20);

    // The general pool beside it leaves quality alone and takes the email tasks.
    let general = env.spawn(env.worker_with(|s| s.worker.exclude_agents = vec!["quality".into()]));
    let done = env.wait_finished(&email, Duration::from_secs(30)).await;
    assert!(done.iter().all(|r| r.status == "completed"));
    let counts = general.stop().await;
    assert_eq!(
        counts.completed(),
        20,
        "the general pool ran only the email tasks"
    );
    let _ = pool.start_kill();
    let _ = pool.wait().await;
    env.assert_stream_drains("both pools finished").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_pool_agent_is_refused_at_start() {
    let env = TestEnv::new().await;
    let output = env
        .swarmd()
        .args(["worker", "--agents", "quality,translate"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("translate"), "{stderr}");
    let both = env
        .swarmd()
        .args(["worker", "--agents", "quality", "--exclude-agents", "email"])
        .output()
        .await
        .unwrap();
    assert!(!both.status.success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_of_one_priority_take_turns() {
    let env = TestEnv::new().await;
    let echoes: Vec<_> = (0..2000)
        .map(|i| TaskEnvelope::new("echo", json!(i)).with_priority(5))
        .collect();
    let receipts = env
        .broker
        .publish_many(&echoes, Codec::Json, 256, || {})
        .await;
    assert!(receipts.iter().all(Result::is_ok));
    let mut quality = Vec::new();
    for _ in 0..5 {
        quality.push(publish(&env, "quality", json!({"text": "Short."}), 5).await);
    }
    let worker = env.spawn(env.worker_with(|s| {
        s.worker.concurrency = swarm_director::config::Concurrency::Fixed(16);
        s.worker.fetch_batch = 16;
    }));
    let quality_done = env.wait_finished(&quality, Duration::from_secs(30)).await;
    let ids: Vec<Uuid> = echoes.iter().map(|t| t.id).collect();
    let echo_done = env.wait_finished(&ids, Duration::from_secs(60)).await;
    worker.stop().await;
    let last_quality = quality_done
        .iter()
        .filter_map(|r| r.completed_at)
        .max()
        .unwrap();
    let after = echo_done
        .iter()
        .filter(|r| r.completed_at.is_some_and(|at| at > last_quality))
        .count();
    // Asked in a fixed order, `echo` would drain first and quality come last.
    assert!(
        after > 1000,
        "quality waited behind the echo backlog: only {after} echoes finished after it"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_the_per_priority_layout_give_way_to_lanes() {
    let env = TestEnv::new().await;
    let stream = env.stream().await;
    let legacy = format!("{}-p4", env.settings.nats.consumer_group);
    stream
        .create_consumer(pull::Config {
            durable_name: Some(legacy.clone()),
            filter_subject: env.broker.subjects().priority_filter(4),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let id = publish(&env, "echo", json!("old layout"), 4).await;
    let puller = env.broker.lanes().puller(AgentFilter::All).await.unwrap();
    assert!(stream.consumer_info(&legacy).await.is_err(), "removed");
    drop(puller);
    let worker = env.spawn(env.worker());
    let done = env.wait_finished(&[id], Duration::from_secs(20)).await;
    assert_eq!(done[0].status, "completed");
    worker.stop().await;
    let lane = stream
        .consumer_info(env.broker.lanes().name(4, "echo"))
        .await
        .expect("the lane took over");
    assert_eq!(lane.num_pending + lane.num_ack_pending as u64, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_of_agent_types_that_stop_coming_expire_and_come_back() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker_with(|s| s.nats.lane_expiry_secs = 2.0));
    publish(&env, "no-such-agent", json!("garbage"), 3).await;
    env.wait_dead_letters(1, Duration::from_secs(10)).await;
    let stream = env.stream().await;
    let lane = env.broker.lanes().name(3, "no-such-agent");
    assert!(
        stream.consumer_info(&lane).await.is_ok(),
        "the lane served it"
    );
    eventually(
        "the idle lane's consumer to expire",
        Duration::from_secs(15),
        || async { stream.consumer_info(&lane).await.is_err().then_some(()) },
    )
    .await;
    // The same agent type again: the worker makes the lane anew.
    publish(&env, "no-such-agent", json!("more garbage"), 3).await;
    env.wait_dead_letters(2, Duration::from_secs(10)).await;
    worker.stop().await;
    env.assert_stream_drains("both dead-lettered").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_creates_no_more_lanes_than_its_cap_and_loses_nothing() {
    let env = TestEnv::new().await;
    let ids: Vec<Uuid> = vec![
        publish(&env, "echo", json!(1), 9).await,
        publish(&env, "echo", json!(2), 8).await,
        publish(&env, "echo", json!(3), 7).await,
    ];
    let capped = env.spawn(env.worker_with(|s| s.nats.max_lanes = 2));
    env.wait_finished(&ids[..2], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    capped.stop().await;
    assert_eq!(
        env.store.tasks().count_finished(&ids[2..]).await.unwrap(),
        0,
        "the third lane was not made"
    );
    let mut names = Vec::new();
    let mut listed = env.stream().await.consumer_names();
    while let Some(name) = futures::StreamExt::next(&mut listed).await {
        names.push(name.unwrap());
    }
    assert_eq!(names.len(), 2, "{names:?}");
    let uncapped = env.spawn(env.worker());
    env.wait_finished(&ids, Duration::from_secs(10)).await;
    uncapped.stop().await;
    env.cleanup().await;
}
