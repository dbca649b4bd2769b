//! Fault tests with real processes: workers killed at random, the test's own NATS server
//! restarted, PostgreSQL cut off, a task that aborts its worker, and a grace period that
//! runs out. None of them touches the shared services.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use rand::Rng;
use serde_json::json;
use swarm_director::{
    dlq::DeadReason,
    task::{Codec, TaskEnvelope},
};
use tokio::process::Child;
use uuid::Uuid;

use crate::support::{TestEnv, eventually, nats_server::NatsServer, tcp_proxy::TcpProxy};

/// A `swarmd worker` process with a short lease, so orphaned tasks come back quickly.
fn spawn_worker(env: &TestEnv, extra: &[(&str, &str)]) -> Child {
    env.swarmd()
        .arg("worker")
        .env("SWARM_ACK_WAIT_SECS", "1")
        .env("SWARM_CONCURRENCY", "32")
        .env("SWARM_SHUTDOWN_GRACE_SECS", "2")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(worker_log())
        .spawn()
        .expect("start swarmd worker")
}

/// Where a worker process logs: a file under `SWARM_TEST_LOG_DIR` when set, else nowhere.
fn worker_log() -> Stdio {
    match std::env::var_os("SWARM_TEST_LOG_DIR") {
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(format!("worker-{}.log", Uuid::new_v4()));
            std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
        }
        None => Stdio::null(),
    }
}

async fn publish_all(env: &TestEnv, tasks: &[TaskEnvelope]) -> Vec<Uuid> {
    let results = env
        .broker
        .publish_many(tasks, Codec::MessagePack, 512, || {})
        .await;
    assert!(results.iter().all(Result::is_ok), "every task is accepted");
    tasks.iter().map(|t| t.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_lose_nothing() {
    let nats = NatsServer::start();
    let env = TestEnv::on_nats(Some(nats.url())).await;
    let tasks: Vec<_> = (0..5000)
        .map(|n| TaskEnvelope::new("sleep", json!({"ms": 2})).with_priority((n % 10) as u8))
        .collect();
    let ids = publish_all(&env, &tasks).await;

    let mut workers: Vec<Child> = (0..3).map(|_| spawn_worker(&env, &[])).collect();
    let mut kills = 0;
    let mut rng = rand::rng();
    while kills < 5 && (env.store.tasks().count_finished(&ids).await.unwrap() as usize) < ids.len()
    {
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..500))).await;
        let victim = kills % workers.len();
        workers[victim].start_kill().unwrap();
        workers[victim].wait().await.unwrap();
        kills += 1;
        workers[victim] = spawn_worker(&env, &[]);
    }
    let started = Instant::now();
    let rows = env.wait_finished(&ids, Duration::from_secs(90)).await;
    let redelivered = rows.iter().filter(|r| r.attempts > 1).count();
    println!(
        "{kills} SIGKILLs during 5,000 tasks: all completed, {redelivered} tasks delivered more \
         than once (an upper bound on duplicate agent runs; none committed twice), last \
         orphans finished {:.1} s after the last kill",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(rows.len(), ids.len(), "one row per task");
    assert!(rows.iter().all(|r| r.status == "completed"));
    let (rows_total,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks")
        .fetch_one(env.store.primary())
        .await
        .unwrap();
    assert_eq!(rows_total, 5000);
    env.assert_stream_drains("every message acknowledged").await;
    for mut worker in workers {
        let _ = worker.start_kill();
        let _ = worker.wait().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_run_loses_nothing() {
    let mut nats = NatsServer::start();
    let env = TestEnv::on_nats(Some(nats.url())).await;
    let tasks: Vec<_> = (0..5000)
        .map(|n| TaskEnvelope::new("sleep", json!({"ms": 2})).with_priority((n % 10) as u8))
        .collect();
    let ids = publish_all(&env, &tasks).await;
    let mut workers: Vec<Child> = (0..2).map(|_| spawn_worker(&env, &[])).collect();

    while (env.store.tasks().count_finished(&ids).await.unwrap() as usize) < ids.len() / 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = env.store.tasks().count_finished(&ids).await.unwrap();
    nats.restart();
    let restarted = Instant::now();
    let rows = env.wait_finished(&ids, Duration::from_secs(90)).await;
    let finished = restarted.elapsed();
    assert!(rows.iter().all(|r| r.status == "completed"));
    // NATS 2.9 may keep acknowledged work-queue messages after a SIGKILL (their deletion was
    // not yet on disk); the consumers are past them, so they are never delivered again.
    // Acks of the last commits may still be on their way.
    eventually(
        "nothing pending or unacknowledged",
        Duration::from_secs(10),
        || async { (env.consumer_backlog().await == (0, 0)).then_some(()) },
    )
    .await;
    println!(
        "NATS killed and restarted after {before} of 5,000 tasks: all 5,000 completed {:.2} s \
         after the restart; {} acknowledged messages resurrected in the stream by the kill",
        finished.as_secs_f64(),
        env.stream_messages().await
    );
    for worker in &mut workers {
        let _ = worker.start_kill();
        let _ = worker.wait().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_while_postgres_is_unreachable() {
    let env = TestEnv::new().await;
    let (proxy, store) = proxied_store(&env).await;
    let worker = swarm_director::worker::Worker::new(
        env.broker.clone(),
        store,
        swarm_director::agent::AgentRegistry::with_builtins(),
        env.settings.worker.clone(),
    );
    let worker = env.spawn(worker);

    proxy.cut();
    let tasks: Vec<_> = (0..200)
        .map(|n| TaskEnvelope::new("echo", json!(n)))
        .collect();
    let ids = publish_all(&env, &tasks).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.stream_messages().await,
        200,
        "nothing acknowledged without its row"
    );
    assert_eq!(env.store.tasks().count_finished(&ids).await.unwrap(), 0);

    proxy.restore();
    let restored = Instant::now();
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    println!(
        "PostgreSQL unreachable for 3 s: 0 acks meanwhile; all 200 done {:.2} s after it returned",
        restored.elapsed().as_secs_f64()
    );
    assert!(rows.iter().all(|r| r.status == "completed"));
    assert!(
        rows.iter().all(|r| r.attempts == 1),
        "the outage used up no deliveries (held batches keep their leases)"
    );
    let counts = worker.stop().await;
    assert_eq!(counts.completed(), 200);
    env.assert_stream_drains("every message acknowledged").await;
    env.cleanup().await;
}

/// A store whose connections pass through a proxy the test can cut.
async fn proxied_store(env: &TestEnv) -> (TcpProxy, swarm_director::store::Store) {
    let upstream = {
        let url = env.settings.database.url.expose();
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        format!("{}:{}", options.get_host(), options.get_port())
    };
    let proxy = TcpProxy::start(&upstream).await;
    let mut proxied = env.settings.database.clone();
    let url = env.settings.database.url.expose().replace(
        &format!("{upstream}/"),
        &format!("127.0.0.1:{}/", proxy.port()),
    );
    assert_ne!(
        url,
        env.settings.database.url.expose(),
        "URL routed through the proxy"
    );
    proxied.url = swarm_director::config::SecretUrl::new(url);
    proxied.acquire_timeout_secs = Some(1);
    let store = swarm_director::store::Store::connect(&proxied)
        .await
        .unwrap();
    (proxy, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holding_outcomes_through_an_outage_is_unready_and_still_stops_in_its_grace() {
    let env = TestEnv::new().await;
    let (proxy, store) = proxied_store(&env).await;
    let mut settings = env.settings.worker.clone();
    settings.stall_after_secs = 1.0;
    settings.shutdown_grace_secs = 2.0;
    settings.concurrency = swarm_director::config::Concurrency::Fixed(64);
    let worker = swarm_director::worker::Worker::new(
        env.broker.clone(),
        store,
        swarm_director::agent::AgentRegistry::with_builtins(),
        settings,
    );
    let liveness = worker.liveness();
    let running = env.spawn(worker);
    let tasks: Vec<_> = (0..20)
        .map(|_| TaskEnvelope::new("sleep", json!({"ms": 700})))
        .collect();
    let ids = publish_all(&env, &tasks).await;
    // Claimed while the database answers; their outcomes arrive while it does not.
    eventually("the tasks claimed", Duration::from_secs(10), || async {
        let claimed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'processing'")
                .fetch_one(env.store.primary())
                .await
                .unwrap();
        (claimed == 20).then_some(())
    })
    .await;
    proxy.cut();
    eventually(
        "a held batch to make the worker stalled",
        Duration::from_secs(10),
        || async { liveness.stall().map(|_| ()) },
    )
    .await;
    assert!(liveness.held().count() > 0);
    assert!(
        liveness.stall().unwrap().contains("held"),
        "{:?}",
        liveness.stall()
    );
    assert_eq!(env.store.tasks().count_finished(&ids).await.unwrap(), 0);

    let stopping = Instant::now();
    running.stop().await;
    let took = stopping.elapsed();
    println!(
        "stopped {:.2} s after SIGTERM while holding outcomes",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(5),
        "bounded by the 2 s grace, took {took:?}"
    );
    assert_eq!(liveness.held().count(), 0, "nothing held after stopping");

    // Everything it held was handed back: another worker finishes it.
    proxy.restore();
    let survivor = env.spawn(env.worker());
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    assert!(rows.iter().all(|r| r.status == "completed"));
    survivor.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_worker_ends_in_the_dead_letter_stream() {
    let env = TestEnv::new().await;
    let poison = TaskEnvelope::new("crash", json!({}))
        .with_priority(9)
        .with_max_attempts(1);
    env.broker.publish(&poison, Codec::Json).await.unwrap();
    let extra = [
        ("SWARM_ENABLE_CRASH_AGENT", "true"),
        ("SWARM_CRASH_ALLOWANCE", "1"),
        ("SWARM_CONCURRENCY", "1"),
    ];
    let mut workers: Vec<Child> = (0..2).map(|_| spawn_worker(&env, &extra)).collect();

    // Other work keeps flowing meanwhile; a supervisor restarts workers that died.
    let mut others = Vec::new();
    let mut crashes = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    let letters = loop {
        let task = TaskEnvelope::new("echo", json!(others.len())).with_priority(1);
        env.broker.publish(&task, Codec::Json).await.unwrap();
        others.push(task.id);
        for worker in &mut workers {
            if worker.try_wait().unwrap().is_some() {
                crashes += 1;
                *worker = spawn_worker(&env, &extra);
            }
        }
        let letters = env
            .dead_letters()
            .list(&Default::default())
            .await
            .unwrap_or_default();
        if !letters.is_empty() {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "the poison task was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rows = env.wait_finished(&others, Duration::from_secs(30)).await;
    assert!(
        rows.iter().all(|r| r.status == "completed"),
        "other tasks kept flowing"
    );
    assert_eq!(letters.len(), 1);
    let letter = &letters[0].letter;
    assert_eq!(letter.id, poison.id);
    assert_eq!(letter.reason, DeadReason::MaxDeliveries, "{letter:?}");
    assert_eq!(
        letter.source.delivered, 3,
        "max_attempts 1 + allowance 1, then given up"
    );
    assert!(
        crashes >= 2,
        "the poison task crashed a worker on each of its 2 runs"
    );
    let row = env.store.tasks().get(poison.id).await.unwrap().unwrap();
    assert_eq!(row.status, "dead");
    println!(
        "poison task: {crashes} worker crashes, dead-lettered on delivery 3; {} other tasks done meanwhile",
        others.len()
    );
    for worker in &mut workers {
        let _ = worker.start_kill();
        let _ = worker.wait().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_longer_than_its_lease_runs_exactly_once() {
    let env = TestEnv::new().await;
    let short_lease = |s: &mut swarm_director::config::Settings| s.nats.ack_wait_secs = 1.0;
    let first = env.spawn(env.worker_with(short_lease));
    let second = env.spawn(env.worker_with(short_lease));
    let long = TaskEnvelope::new("sleep", json!({"ms": 3000}));
    env.broker.publish(&long, Codec::Json).await.unwrap();
    let rows = env.wait_finished(&[long.id], Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (a, b) = (first.stop().await, second.stop().await);
    assert_eq!(rows[0].status, "completed");
    assert_eq!(rows[0].attempts, 1, "never handed to a second worker");
    assert_eq!(a.completed() + b.completed(), 1);
    assert_eq!(a.duplicates() + b.duplicates(), 0);
    assert_eq!(a.fenced() + b.fenced(), 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_outliving_the_grace_period_are_handed_back_at_once() {
    let env = TestEnv::new().await;
    let long = TaskEnvelope::new("sleep", json!({"ms": 4000}));
    env.broker.publish(&long, Codec::Json).await.unwrap();
    // A long lease: a quick pick-up afterwards can only come from the hand-back (nak).
    let mut process = env
        .swarmd()
        .arg("worker")
        .env("SWARM_ACK_WAIT_SECS", "30")
        .env("SWARM_SHUTDOWN_GRACE_SECS", "0.5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while env.store.tasks().get(long.id).await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = process.id().unwrap().to_string();
    let signalled = Instant::now();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let status = process.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "exit after the grace period"
    );

    let worker = env.spawn(env.worker_with(|s| s.nats.ack_wait_secs = 30.0));
    let rows = env.wait_finished(&[long.id], Duration::from_secs(15)).await;
    worker.stop().await;
    assert_eq!(rows[0].status, "completed");
    assert_eq!(rows[0].attempts, 2);
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "taken at once, not after the 30 s lease"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_commit_acks_nothing_and_its_batch_completes_later() {
    let env = TestEnv::new().await;
    let (proxy, store) = proxied_store(&env).await;
    let worker = env.spawn(swarm_director::worker::Worker::new(
        env.broker.clone(),
        store,
        swarm_director::agent::AgentRegistry::with_builtins(),
        env.settings.worker.clone(),
    ));
    let tasks: Vec<_> = (0..12)
        .map(|_| TaskEnvelope::new("sleep", json!({"ms": 800})))
        .collect();
    let ids = publish_all(&env, &tasks).await;
    // Every task claimed (its row says processing), then the database goes away while the
    // agents still run: their batch commit must fail.
    eventually("the tasks claimed", Duration::from_secs(10), || async {
        (env.store.tasks().by_ids(&ids).await.unwrap().len() == ids.len()).then_some(())
    })
    .await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        env.stream_messages().await,
        12,
        "no ack without a committed row"
    );
    let rows = env.store.tasks().by_ids(&ids).await.unwrap();
    assert!(
        rows.iter().all(|r| r.status == "processing"),
        "nothing committed meanwhile"
    );
    assert!(
        worker.counts.store_failures() >= 1,
        "the commit was tried and failed"
    );

    proxy.restore();
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    assert!(
        rows.iter()
            .all(|r| r.status == "completed" && r.attempts == 1)
    );
    let counts = worker.stop().await;
    assert_eq!(
        counts.completed(),
        12,
        "the held batch was committed, not re-run"
    );
    env.assert_stream_drains("acked once committed").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_behind_the_workers_back_is_made_again() {
    use futures::StreamExt;
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let first = TaskEnvelope::new("echo", json!({"n": 1}));
    env.broker.publish(&first, Codec::Json).await.unwrap();
    env.wait_finished(&[first.id], Duration::from_secs(10))
        .await;

    // An operator (or a cleanup job) deletes every consumer of the stream.
    let stream = env.stream().await;
    let names: Vec<String> = stream
        .consumer_names()
        .map(|name| name.unwrap())
        .collect()
        .await;
    assert!(!names.is_empty(), "the worker's lanes have consumers");
    for name in &names {
        stream.delete_consumer(name).await.unwrap();
    }

    // The worker notices on its next pulls, makes its lanes again and goes on.
    let tasks: Vec<TaskEnvelope> = (0..20)
        .map(|n| TaskEnvelope::new("echo", json!({"n": n})))
        .collect();
    let ids = publish_all(&env, &tasks).await;
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    assert!(rows.iter().all(|r| r.status == "completed"));
    worker.stop().await;
    env.assert_stream_drains("every message acknowledged").await;
    env.cleanup().await;
}
