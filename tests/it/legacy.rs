//! The seed's Redis queue contract, driven with plain Redis commands exactly as the seed's
//! Python `DistributedTaskQueue` issues them, each test under its own key prefix.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{Value, json};
use swarm_director::{
    broker::PublishOptions,
    cache::{CacheBackend, ResultCache},
    dlq::DeadReason,
    mirror::{self, LegacyKeys, Mirror, legacy_json::python_json, rebuild},
    task::{Codec, TaskEnvelope},
};
use uuid::Uuid;

use crate::support::{
    TestEnv, eventually,
    nats_server::spare_port,
    own_metrics,
    redis_server::RedisServer,
    schemas::{assert_valid, validator},
    succeeds,
};

fn keys(env: &TestEnv) -> LegacyKeys {
    LegacyKeys::new(&env.settings.redis.key_prefix)
}

/// What the seed's `enqueue_task` writes: `json.dumps` of its dict, scored by priority.
async fn enqueue_task(env: &TestEnv, agent: &str, data: Value, priority: i64) -> Uuid {
    let id = Uuid::new_v4();
    let mut task = serde_json::Map::new();
    task.insert("id".into(), json!(id.to_string()));
    task.insert("data".into(), json!({"agent_type": agent, "data": data}));
    task.insert("priority".into(), json!(priority));
    task.insert("created_at".into(), json!("2026-11-27T06:10:00.123456"));
    task.insert("attempts".into(), json!(0));
    task.insert("max_attempts".into(), json!(3));
    let member = python_json(&task);
    let mut redis = env.redis().await;
    let _: () = redis
        .zadd(&keys(env).agent_tasks, member, priority)
        .await
        .unwrap();
    id
}

async fn hash_entry(env: &TestEnv, key: &str, id: Uuid) -> Option<String> {
    let mut redis = env.redis().await;
    redis.hget(key, id.to_string()).await.unwrap()
}

async fn waiting_member(env: &TestEnv, id: Uuid) -> Option<(String, f64)> {
    let mut redis = env.redis().await;
    let members: Vec<(String, f64)> = redis
        .zrange_withscores(&keys(env).agent_tasks, 0, -1)
        .await
        .unwrap();
    members
        .into_iter()
        .find(|(m, _)| m.contains(&id.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_task_moves_through_the_legacy_keys_in_the_seeds_shape() {
    let env = TestEnv::new().await;
    let schema = validator("legacy-task.schema.json");
    let k = keys(&env);
    // One slot, kept busy, so the observed task is seen waiting first.
    let fleet = env.spawn_assembled(env.legacy_worker(|s| {
        s.worker.concurrency = swarm_director::config::Concurrency::Fixed(1);
        s.worker.fetch_batch = 1;
    }));
    fleet.ready().await;
    let blocker = TaskEnvelope::new("sleep", json!({"ms": 700})).with_priority(9);
    env.broker.publish(&blocker, Codec::Json).await.unwrap();
    let task = TaskEnvelope::new("sleep", json!({"ms": 300, "note": "é"})).with_priority(4);
    env.broker.publish(&task, Codec::MessagePack).await.unwrap();

    let (member, score) = eventually("the waiting entry", Duration::from_secs(5), || {
        waiting_member(&env, task.id)
    })
    .await;
    assert_eq!(score, 4.0);
    println!("waiting    (agent_tasks):      {member}");
    let waiting: Value = serde_json::from_str(&member).unwrap();
    assert_valid(&schema, &waiting);
    assert_eq!(waiting["attempts"], 0);
    assert_eq!(
        waiting["data"],
        json!({"agent_type": "sleep", "data": {"ms": 300, "note": "é"}})
    );
    assert!(
        member.contains(r#""note": "\u00e9""#),
        "Python's ensure_ascii: {member}"
    );
    assert!(waiting.get("worker_id").is_none());

    let processing = eventually("the processing entry", Duration::from_secs(5), || {
        hash_entry(&env, &k.processing_tasks, task.id)
    })
    .await;
    println!("processing (processing_tasks): {processing}");
    let processing: Value = serde_json::from_str(&processing).unwrap();
    assert_valid(&schema, &processing);
    assert!(processing["worker_id"].is_string() && processing["processing_started"].is_string());
    assert!(
        waiting_member(&env, task.id).await.is_none(),
        "moved out of agent_tasks"
    );

    let completed = eventually("the completed entry", Duration::from_secs(5), || {
        hash_entry(&env, &k.completed_tasks, task.id)
    })
    .await;
    println!("completed  (completed_tasks):  {completed}");
    let completed_value: Value = serde_json::from_str(&completed).unwrap();
    assert_valid(&schema, &completed_value);
    assert_eq!(completed_value["result"], json!({"slept_ms": 300}));
    let order: Vec<&str> = completed_value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        order,
        [
            "id",
            "data",
            "priority",
            "created_at",
            "attempts",
            "max_attempts",
            "worker_id",
            "processing_started",
            "result",
            "completed_at"
        ]
    );
    assert!(
        hash_entry(&env, &k.processing_tasks, task.id)
            .await
            .is_none()
    );

    fleet.stop().await;
    assert_eq!(
        swarm_director::metrics::Metrics::global()
            .legacy_intake
            .get(),
        0,
        "the intake did not take the fleet's own waiting entries back in"
    );
    let mut redis = mirror::connect(&env.settings.redis).unwrap();
    let drift = rebuild::check(&env.store, &mut redis, &k).await.unwrap();
    assert!(drift.is_clean(), "{drift:?}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_task_claimed_by_a_process_that_died_is_still_processed() {
    let env = TestEnv::new().await;
    let k = keys(&env);
    // What a fleet process leaves when it dies between claiming and publishing: the member
    // gone from agent_tasks, recorded in the intake hash, nothing in JetStream.
    let id = enqueue_task(&env, "echo", json!({"orphan": true}), 6).await;
    let mut redis = env.redis().await;
    let (member, _) = waiting_member(&env, id).await.unwrap();
    let claimed_long_ago = chrono::Utc::now().timestamp_millis() - 60_000;
    let _: () = redis.zrem(&k.agent_tasks, &member).await.unwrap();
    let _: () = redis
        .hset(&k.intake, &member, claimed_long_ago)
        .await
        .unwrap();

    let fleet = env.spawn_assembled(env.legacy_worker(|_| {}));
    let rows = env.wait_finished(&[id], Duration::from_secs(20)).await;
    fleet.stop().await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("completed", 1)
    );
    let left: usize = redis.hlen(&k.intake).await.unwrap();
    assert_eq!(left, 0, "the claim record is cleared once published");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_task_with_a_nul_is_dead_lettered_and_the_rest_flows() {
    let env = TestEnv::new().await;
    let k = keys(&env);
    // What Python's json.dumps writes for "\x00": the seed's producers can send it.
    let poisoned = enqueue_task(&env, "echo", json!({"s": "a\u{0}b"}), 9).await;
    // A second one: each legacy member's dead letter is its own (they once shared one
    // de-duplication id, and JetStream kept only the first).
    let poisoned_too = enqueue_task(&env, "echo", json!({"s": "c\u{0}d"}), 9).await;
    let good = enqueue_task(&env, "echo", json!({"after": "the poison"}), 1).await;
    let fleet = env.spawn_assembled(env.legacy_worker(|_| {}));
    for poisoned in [poisoned, poisoned_too] {
        let failed = eventually("failed_tasks", Duration::from_secs(10), || {
            hash_entry(&env, &k.failed_tasks, poisoned)
        })
        .await;
        let failed: Value = serde_json::from_str(&failed).unwrap();
        assert!(
            failed["last_error"].as_str().unwrap().contains("NUL"),
            "{failed}"
        );
        assert!(env.store.tasks().get(poisoned).await.unwrap().is_none());
    }
    eventually("completed_tasks", Duration::from_secs(10), || {
        hash_entry(&env, &k.completed_tasks, good)
    })
    .await;
    let letters = env.wait_dead_letters(2, Duration::from_secs(10)).await;
    fleet.stop().await;
    assert_eq!(letters.len(), 2);
    for letter in &letters {
        assert_eq!(letter.letter.reason, DeadReason::BadInput);
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_task_is_processed_once_and_completed() {
    let env = TestEnv::new().await;
    let k = keys(&env);
    let fleet = env.spawn_assembled(env.legacy_worker(|_| {}));
    let id = enqueue_task(&env, "echo", json!({"hello": "legacy"}), 7).await;
    let completed = eventually("completed_tasks", Duration::from_secs(10), || {
        hash_entry(&env, &k.completed_tasks, id)
    })
    .await;
    let completed: Value = serde_json::from_str(&completed).unwrap();
    assert_valid(&validator("legacy-task.schema.json"), &completed);
    assert_eq!(completed["result"], json!({"hello": "legacy"}));
    assert_eq!(
        completed["created_at"], "2026-11-27T06:10:00.123456",
        "the producer's own"
    );
    let counts = fleet.stop().await;
    assert_eq!(counts.completed(), 1);
    let row = env
        .store
        .tasks()
        .get(id)
        .await
        .unwrap()
        .expect("row keyed by the legacy id");
    assert_eq!(
        (row.status.as_str(), row.attempts, row.priority),
        ("completed", 1, 7)
    );
    let trace = row
        .trace_id
        .expect("the intake starts a trace the task continues");
    assert!(trace.len() == 32 && trace.chars().all(|c| c.is_ascii_hexdigit()));
    let mut redis = env.redis().await;
    let (waiting, intake): (usize, usize) = redis::pipe()
        .zcard(&k.agent_tasks)
        .hlen(&k.intake)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        (waiting, intake),
        (0, 0),
        "nothing left behind or taken in twice"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_task_taken_in_stays_waiting_as_its_producer_wrote_it_until_it_runs() {
    let env = TestEnv::new().await;
    let k = keys(&env);
    // One slot, held by a long task: the next one is taken in and waits in the stream.
    let fleet =
        env.spawn_assembled(env.legacy_worker(|s| {
            s.worker.concurrency = swarm_director::config::Concurrency::Fixed(1)
        }));
    let busy = enqueue_task(&env, "sleep", json!({"ms": 1500}), 9).await;
    eventually("the long task running", Duration::from_secs(10), || {
        hash_entry(&env, &k.processing_tasks, busy)
    })
    .await;
    // Written compactly, as a producer in another language might: the fleet's own rendering
    // would differ, so only the producer's member left in place matches below.
    let queued = Uuid::new_v4();
    let written = format!(
        r#"{{"id":"{queued}","data":{{"agent_type":"echo","data":{{"n":1}}}},"priority":1,"created_at":"2026-11-27T06:10:00","attempts":0,"max_attempts":3}}"#
    );
    let mut redis = env.redis().await;
    let _: () = redis.zadd(&k.agent_tasks, &written, 1).await.unwrap();
    let score = 1.0;
    // Taken in: claimed (then forgotten once published), marked the fleet's own copy...
    let marked: String = eventually("the member taken in", Duration::from_secs(10), || async {
        let mut redis = env.redis().await;
        redis
            .hget::<_, _, Option<String>>(&k.mirrored_waiting, queued.to_string())
            .await
            .unwrap()
    })
    .await;
    assert_eq!(marked, written);
    // ... and still there, byte for byte and with its score, while it waits.
    assert_eq!(waiting_member(&env, queued).await, Some((written, score)));
    assert!(
        hash_entry(&env, &k.completed_tasks, queued).await.is_none(),
        "still waiting behind the long task"
    );
    eventually("the queued task completed", Duration::from_secs(10), || {
        hash_entry(&env, &k.completed_tasks, queued)
    })
    .await;
    fleet.stop().await;
    let (waiting, ours): (usize, usize) = redis::pipe()
        .zcard(&k.agent_tasks)
        .hlen(&k.mirrored_waiting)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!((waiting, ours), (0, 0), "gone from agent_tasks once done");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_dead_tasks_look_as_the_seed_leaves_them() {
    let env = TestEnv::new().await;
    let k = keys(&env);
    // The retry waits ≥ 2.4 s: long enough to see it in agent_tasks on a loaded machine.
    let fleet = env.spawn_assembled(env.legacy_worker(|s| s.worker.retry_base_ms = 3000));
    let flaky = enqueue_task(&env, "fail", json!({"succeed_on_attempt": 2}), 5).await;
    let permanent = TaskEnvelope::new("fail", json!({"permanent": true}));
    env.broker.publish(&permanent, Codec::Json).await.unwrap();
    let unknown = enqueue_task(&env, "translate", json!({"text": "hi"}), 5).await;
    let no_agent = {
        let id = Uuid::new_v4();
        let member = format!(
            r#"{{"id": "{id}", "data": {{"text": "no agent named"}}, "priority": 5, "created_at": "2026-11-27T06:10:00", "attempts": 0, "max_attempts": 3}}"#
        );
        let mut redis = env.redis().await;
        let _: () = redis.zadd(&k.agent_tasks, member, 5).await.unwrap();
        id
    };

    // After the first failure: back in agent_tasks with attempts, last_error, failed_at.
    // Generous: on a loaded machine the intake, the first attempt and the mirror's write
    // all queue behind other tests.
    let (member, _) = eventually(
        "the retry in agent_tasks",
        Duration::from_secs(30),
        || async {
            waiting_member(&env, flaky)
                .await
                .filter(|(m, _)| m.contains("last_error"))
        },
    )
    .await;
    println!("retry      (agent_tasks):      {member}");
    let retried: Value = serde_json::from_str(&member).unwrap();
    assert_valid(&validator("legacy-task.schema.json"), &retried);
    assert_eq!(retried["attempts"], 1);
    assert_eq!(
        retried["last_error"],
        "fail agent: attempt 1 failed on purpose"
    );
    assert!(retried["failed_at"].is_string() && retried["worker_id"].is_string());

    let completed = eventually(
        "the retried task completed",
        Duration::from_secs(10),
        || hash_entry(&env, &k.completed_tasks, flaky),
    )
    .await;
    let completed: Value = serde_json::from_str(&completed).unwrap();
    assert_eq!(completed["attempts"], 1, "the seed counts failed attempts");
    assert_eq!(completed["result"], json!({"succeeded_on_attempt": 2}));

    for (id, words) in [
        (permanent.id, "permanent error"),
        (unknown, "unknown agent type \"translate\""),
        (no_agent, "data.agent_type"),
    ] {
        let failed = eventually("failed_tasks", Duration::from_secs(10), || {
            hash_entry(&env, &k.failed_tasks, id)
        })
        .await;
        println!("failed     (failed_tasks):     {failed}");
        let failed: Value = serde_json::from_str(&failed).unwrap();
        assert!(
            failed["last_error"].as_str().unwrap().contains(words),
            "{failed}"
        );
        assert_eq!(failed["attempts"], 1);
    }
    let letters = env.wait_dead_letters(3, Duration::from_secs(10)).await;
    let reasons: Vec<DeadReason> = letters.iter().map(|l| l.letter.reason).collect();
    for reason in [
        DeadReason::PermanentError,
        DeadReason::UnknownAgent,
        DeadReason::SchemaViolation,
    ] {
        assert!(reasons.contains(&reason), "{reasons:?}");
    }
    fleet.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fleet_processes_take_a_legacy_backlog_in_once() {
    let env = TestEnv::new().await;
    let k = keys(&env);
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(enqueue_task(&env, "echo", json!({"n": n}), n % 10).await);
    }
    let spawn = || {
        env.swarmd()
            .arg("worker")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut workers = [spawn(), spawn()];
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    assert!(
        rows.iter()
            .all(|r| r.status == "completed" && r.attempts == 1)
    );
    let mut redis = env.redis().await;
    let completed = eventually("300 completed entries", Duration::from_secs(10), || {
        let mut redis = redis.clone();
        let key = k.completed_tasks.clone();
        async move {
            let n: usize = redis.hlen(&key).await.unwrap();
            (n == 300).then_some(n)
        }
    })
    .await;
    assert_eq!(completed, 300);
    let waiting: usize = redis.zcard(&k.agent_tasks).await.unwrap();
    assert_eq!(waiting, 0);
    assert_eq!(env.dead_letter_count().await, 0);
    env.assert_stream_drains("published once each").await;
    for worker in &mut workers {
        let _ = worker.start_kill();
        let _ = worker.wait().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_mid_run_loses_nothing_and_the_mirror_catches_up() {
    let mut server = RedisServer::start();
    let mut env = TestEnv::new().await;
    env.settings.redis.url = swarm_director::config::SecretUrl::new(server.url());
    let k = keys(&env);
    // A small queue, so the outage overflows it and the catch-up from PostgreSQL must run.
    let redis = mirror::connect(&env.settings.redis).unwrap();
    let (mirror, writer) = Mirror::spawn_with_queue(
        redis.clone(),
        k.clone(),
        env.store.clone(),
        50,
        own_metrics(),
    );
    let worker = env.worker().with_mirror(mirror.clone());
    let running = env.spawn(worker);

    let first: Vec<_> = (0..200)
        .map(|n| TaskEnvelope::new("echo", json!(n)))
        .collect();
    let second: Vec<_> = (0..300)
        .map(|n| TaskEnvelope::new("echo", json!(n)))
        .collect();
    for task in &first {
        env.broker.publish(task, Codec::MessagePack).await.unwrap();
    }
    let ids_first: Vec<_> = first.iter().map(|t| t.id).collect();
    env.wait_finished(&ids_first, Duration::from_secs(20)).await;
    server.kill();
    let down = Instant::now();
    for task in &second {
        env.broker.publish(task, Codec::MessagePack).await.unwrap();
    }
    let ids_second: Vec<_> = second.iter().map(|t| t.id).collect();
    let rows = env
        .wait_finished(&ids_second, Duration::from_secs(20))
        .await;
    println!(
        "Redis down: 300 tasks completed in {:.2} s regardless; {} mirror moves dropped",
        down.elapsed().as_secs_f64(),
        mirror.dropped()
    );
    assert!(
        rows.iter().all(|r| r.status == "completed"),
        "processing never stopped"
    );
    assert!(mirror.dropped() > 0, "the outage overflowed the queue");

    server.launch();
    let mut check_conn = mirror::connect(&env.settings.redis).unwrap();
    let drift = eventually("a clean mirror check", Duration::from_secs(30), || {
        let (store, keys) = (env.store.clone(), k.clone());
        let mut conn = check_conn.clone();
        async move {
            let drift = rebuild::check(&store, &mut conn, &keys).await.ok()?;
            drift.is_clean().then_some(drift)
        }
    })
    .await;
    assert!(drift.is_clean());
    let completed: usize = check_conn.hlen(&k.completed_tasks).await.unwrap();
    assert_eq!(completed, 500);
    running.stop().await;
    drop(mirror);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_rebuild_repairs_drift() {
    let env = TestEnv::new().await;
    let k = keys(&env);
    let fleet = env.spawn_assembled(env.legacy_worker(|_| {}));
    let tasks: Vec<_> = (0..20)
        .map(|n| TaskEnvelope::new("echo", json!(n)))
        .collect();
    for task in &tasks {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    env.wait_finished(&ids, Duration::from_secs(10)).await;
    fleet.stop().await;

    let mut redis = env.redis().await;
    let _: () = redis
        .hdel(&k.completed_tasks, ids[0].to_string())
        .await
        .unwrap();
    let _: () = redis
        .hset(&k.processing_tasks, ids[1].to_string(), "{}")
        .await
        .unwrap();
    let (ok, stdout, _) = {
        let out = env
            .swarmd()
            .args(["mirror", "check"])
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            (),
        )
    };
    assert!(!ok, "drift makes check fail");
    assert!(stdout.contains(&format!("missing: {}", ids[0])), "{stdout}");
    assert!(stdout.contains(&ids[1].to_string()), "{stdout}");

    succeeds(env.swarmd().args(["mirror", "rebuild"])).await;
    let clean = env
        .swarmd()
        .args(["mirror", "check"])
        .output()
        .await
        .unwrap();
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_cache_skips_the_agent_on_a_hit_and_degrades_on_failure() {
    let env = TestEnv::new().await;
    let redis = mirror::connect(&env.settings.redis).unwrap();
    let cache = std::sync::Arc::new(
        ResultCache::new(
            CacheBackend::Single(redis),
            &env.settings.redis.key_prefix,
            Default::default(),
        )
        .with_metrics(own_metrics()),
    );
    let running = env.spawn(env.worker().with_cache(cache.clone()));
    let input = json!({"text": "Short and clear. Easy to read."});
    let first = TaskEnvelope::new("quality", input.clone());
    env.broker.publish(&first, Codec::Json).await.unwrap();
    env.wait_finished(&[first.id], Duration::from_secs(10))
        .await;
    assert_eq!((cache.lookups("hit"), cache.lookups("miss")), (0, 1));

    // Same input, other key order: a hit.
    let second = TaskEnvelope::new("quality", json!({"text": "Short and clear. Easy to read."}));
    env.broker
        .publish(&second, Codec::MessagePack)
        .await
        .unwrap();
    let rows = env
        .wait_finished(&[first.id, second.id], Duration::from_secs(10))
        .await;
    assert_eq!(cache.lookups("hit"), 1);
    assert_eq!(rows[0].result, rows[1].result);
    let key = cache.key("quality", &input);
    assert!(key.starts_with(&format!(
        "{}agent_result:quality:",
        env.settings.redis.key_prefix
    )));
    let mut conn = env.redis().await;
    let ttl: i64 = conn.ttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 3600, "cached with the agent's TTL: {ttl}");
    let stored: Vec<u8> = conn.get(&key).await.unwrap();
    let decoded: Value = rmp_serde::from_slice(&stored).expect("MessagePack, not pickle");
    assert_eq!(Some(decoded), rows[0].result);

    // Not cacheable: echo runs every time.
    let echo = TaskEnvelope::new("echo", json!(1));
    env.broker.publish(&echo, Codec::Json).await.unwrap();
    env.wait_finished(&[echo.id], Duration::from_secs(10)).await;
    assert_eq!(cache.lookups("hit") + cache.lookups("miss"), 2);
    running.stop().await;

    // Redis away: the agent runs, the failure is counted.
    let mut settings = env.settings.redis.clone();
    settings.url =
        swarm_director::config::SecretUrl::new(format!("redis://127.0.0.1:{}", spare_port()));
    let dead = std::sync::Arc::new(
        ResultCache::new(
            CacheBackend::Single(mirror::connect(&settings).unwrap()),
            "",
            Default::default(),
        )
        .with_metrics(own_metrics()),
    );
    let running = env.spawn(env.worker().with_cache(dead.clone()));
    let third = TaskEnvelope::new("quality", json!({"text": "Another text to score."}));
    env.broker.publish(&third, Codec::Json).await.unwrap();
    let rows = env
        .wait_finished(&[third.id], Duration::from_secs(10))
        .await;
    assert_eq!(rows[0].status, "completed");
    assert!(dead.lookups("error") >= 1);
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_queue_is_bounded_in_bytes_while_redis_is_away() {
    let mut env = TestEnv::new().await;
    // Nothing listens on this port: the writer keeps retrying, moves pile up.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.settings.redis.url =
        swarm_director::config::SecretUrl::new(format!("redis://127.0.0.1:{port}"));
    let redis = mirror::connect(&env.settings.redis).unwrap();
    let (mirror, _writer) = Mirror::spawn(redis, keys(&env), env.store.clone(), own_metrics());
    let mirror = mirror.with_max_queued_bytes(64 * 1024);
    for _ in 0..40 {
        let task = TaskEnvelope::new("echo", json!("x".repeat(8 * 1024)));
        mirror.record(swarm_director::mirror::MirrorEvent::published(&task));
    }
    let dropped = mirror.dropped();
    // 64 KiB holds seven moves of a little over 8 KiB, queued or in the writer's hands.
    assert_eq!(dropped, 33, "dropped {dropped} of 40");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_stream_refuses_is_never_shown_waiting() {
    let env = TestEnv::new().await;
    // The stream takes one task, then refuses new ones.
    env.cap_stream(1).await;
    // A pool that leaves echo tasks alone, so the accepted one stays waiting.
    let fleet =
        env.spawn_assembled(env.legacy_worker(|s| s.worker.agents = vec!["quality".into()]));
    fleet.ready().await;
    let accepted = TaskEnvelope::new("echo", json!("kept"));
    env.broker.publish(&accepted, Codec::Json).await.unwrap();
    let refused = TaskEnvelope::new("echo", json!("refused"));
    assert!(env.broker.publish(&refused, Codec::Json).await.is_err());
    eventually("the accepted task waiting", Duration::from_secs(5), || {
        waiting_member(&env, accepted.id)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(waiting_member(&env, refused.id).await, None, "never shown");
    fleet.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_published_as_shown_already_is_not_shown_waiting_again() {
    let env = TestEnv::new().await;
    // A pool that leaves echo tasks alone, so both stay waiting in the stream.
    let fleet =
        env.spawn_assembled(env.legacy_worker(|s| s.worker.agents = vec!["quality".into()]));
    fleet.ready().await;
    // The legacy intake publishes what it claimed in place so: the member is there already.
    let shown = TaskEnvelope::new("echo", json!("claimed in place"));
    let options = PublishOptions {
        shown_waiting: true,
        ..Codec::Json.into()
    };
    env.broker.publish(&shown, options).await.unwrap();
    let plain = TaskEnvelope::new("echo", json!("published"));
    env.broker.publish(&plain, Codec::Json).await.unwrap();
    eventually("the plain task waiting", Duration::from_secs(5), || {
        waiting_member(&env, plain.id)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        waiting_member(&env, shown.id).await,
        None,
        "not shown twice"
    );
    fleet.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_works_as_the_shipped_redis_acl_user_and_anonymous_clients_get_nothing() {
    // The shipped ACL template, filled in as `make secrets` does, loaded by redis-server.
    let password = "acl-test-password";
    let acl: String = include_str!("../../deploy/redis/users.acl.template")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| format!("{}\n", line.replace("${REDIS_PASSWORD}", password)))
        .collect();
    let acl_file = std::env::temp_dir().join(format!("swarm-users-{}.acl", Uuid::new_v4()));
    std::fs::write(&acl_file, acl).unwrap();
    let server = RedisServer::start_with(&["--aclfile", acl_file.to_str().unwrap()]);
    std::fs::remove_file(&acl_file).unwrap();
    let mut env = TestEnv::new().await;
    env.settings.redis.url = swarm_director::config::SecretUrl::new(format!(
        "redis://swarm:{password}@127.0.0.1:{}",
        server.port()
    ));
    let k = keys(&env);

    let anonymous = redis::Client::open(format!("redis://127.0.0.1:{}", server.port()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    if let Ok(mut anonymous) = anonymous {
        let read: redis::RedisResult<Option<String>> = anonymous.get("anything").await;
        assert!(read.is_err(), "the default user is off");
    }

    // Mirror, legacy intake and cache, all as the `swarm` user.
    let running = env.spawn_assembled(env.legacy_worker(|_| {}));
    let native = TaskEnvelope::new("echo", json!({"acl": "native"}));
    env.broker.publish(&native, Codec::Json).await.unwrap();
    let legacy = enqueue_task(&env, "echo", json!({"acl": "legacy"}), 4).await;
    env.wait_finished(&[native.id, legacy], Duration::from_secs(20))
        .await;
    for id in [native.id, legacy] {
        let (env, key) = (&env, k.completed_tasks.clone());
        eventually("the completed entry", Duration::from_secs(10), || {
            let key = key.clone();
            async move { hash_entry(env, &key, id).await }
        })
        .await;
    }
    running.stop().await;

    // The operator's mirror commands work under the same user.
    let output = env
        .swarmd()
        .env("SWARM_REDIS_URL", env.settings.redis.url.expose())
        .args(["mirror", "check"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_own_consumer_beside_the_fleet_runs_each_task_once() {
    let env = TestEnv::new().await;
    let python = crate::support::venv_program("python");
    assert!(python.exists(), "the tools' Python: run `make tools`");
    // Legacy consumers run beside the fleet: agent_tasks holds legacy producers' members only.
    let fleet: Vec<_> = (0..2)
        .map(|_| env.spawn_assembled(env.legacy_worker(|s| s.redis.legacy_consumers = true)))
        .collect();
    let native: Vec<TaskEnvelope> = (0..100)
        .map(|n| TaskEnvelope::new("echo", json!({"native": n})))
        .collect();
    for task in &native {
        env.broker.publish(task, Codec::MessagePack).await.unwrap();
    }
    // The seed's class enqueues 300 tasks and pops what it can, as its workers would.
    let output = succeeds(
        tokio::process::Command::new(&python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/it/python/seed_consumer.py"
            ))
            .arg(env.settings.redis.url.expose())
            .arg(&env.settings.redis.key_prefix)
            .arg("300"),
    )
    .await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let ids = |key: &str| -> std::collections::BTreeSet<Uuid> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect()
    };
    let (enqueued, consumed) = (ids("enqueued"), ids("consumed"));
    let native_ids: Vec<Uuid> = native.iter().map(|t| t.id).collect();
    assert!(
        consumed.iter().all(|id| enqueued.contains(id)),
        "the legacy consumer never pops the fleet's own tasks"
    );
    // What the legacy consumer did not pop, the fleet ran; nothing ran on both sides.
    let taken_in: Vec<Uuid> = enqueued.difference(&consumed).copied().collect();
    let mut all = native_ids.clone();
    all.extend(&taken_in);
    env.wait_finished(&all, Duration::from_secs(30)).await;
    let (run_by_fleet,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks WHERE id = ANY($1)")
        .bind(consumed.iter().copied().collect::<Vec<_>>())
        .fetch_one(env.store.primary())
        .await
        .unwrap();
    assert_eq!(
        run_by_fleet, 0,
        "no task the legacy consumer ran was run by the fleet"
    );
    println!(
        "legacy consumer ran {} of 300, the fleet took in {} (and its 100 own)",
        consumed.len(),
        taken_in.len()
    );
    for worker in fleet {
        worker.stop().await;
    }
    let mut redis = env.redis().await;
    let waiting: usize = redis.zcard(&keys(&env).agent_tasks).await.unwrap();
    assert_eq!(waiting, 0);
    env.cleanup().await;
}

/// `swarmd mirror check` for this environment: whether it found no drift, and its report.
async fn mirror_check(env: &TestEnv) -> (bool, String) {
    let out = env
        .swarmd()
        .args(["mirror", "check"])
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits until `scheduled_tasks` shows `count` delayed tasks.
async fn wait_scheduled(env: &TestEnv, count: usize) {
    let key = keys(env).scheduled_tasks;
    eventually("shown as scheduled", Duration::from_secs(10), || async {
        let mut redis = env.redis().await;
        let shown: usize = redis.zcard(&key).await.unwrap();
        (shown == count).then_some(())
    })
    .await;
}

/// `mirror check` finds no drift, and again after `mirror rebuild`.
async fn assert_mirror_clean_and_rebuilt_clean(env: &TestEnv) {
    let (clean, report) = mirror_check(env).await;
    assert!(clean, "{report}");
    succeeds(env.swarmd().args(["mirror", "rebuild"])).await;
    let (clean, report) = mirror_check(env).await;
    assert!(clean, "after a rebuild: {report}");
}

/// Delayed tasks are the fleet's members of `scheduled_tasks`, not of `agent_tasks`: a legacy
/// member beside them must not be mistaken for one of the fleet's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_task_is_taken_in_while_delayed_tasks_wait() {
    let env = TestEnv::new().await;
    let fleet = env.spawn_assembled(env.legacy_worker(|_| {}));
    fleet.ready().await;
    let mut delayed = Vec::new();
    for n in 0..2 {
        let mut task = TaskEnvelope::new("echo", json!({"later": n}));
        task.not_before = Some(chrono::Utc::now() + chrono::Duration::seconds(60));
        env.broker.publish(&task, Codec::Json).await.unwrap();
        delayed.push(task);
    }
    wait_scheduled(&env, 2).await;
    let id = enqueue_task(&env, "echo", json!({"now": true}), 5).await;
    let rows = env.wait_finished(&[id], Duration::from_secs(5)).await;
    assert_eq!(rows[0].status, "completed");
    fleet.stop().await;
    env.cleanup().await;
}

/// Cancelling a delayed task takes it out of `scheduled_tasks` at once (it is shown given
/// up, as any cancelled task), so the mirror agrees with the database before it comes due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_delayed_task_leaves_scheduled_tasks_at_once() {
    let env = TestEnv::new().await;
    let k = keys(&env);
    let fleet = env.spawn_assembled(env.legacy_worker(|_| {}));
    fleet.ready().await;
    let mut task = TaskEnvelope::new("echo", json!("not today"));
    task.not_before = Some(chrono::Utc::now() + chrono::Duration::seconds(60));
    env.broker.publish(&task, Codec::Json).await.unwrap();
    wait_scheduled(&env, 1).await;
    succeeds(env.swarmd().args(["cancel", &task.id.to_string()])).await;
    let failed = eventually("shown given up", Duration::from_secs(5), || {
        hash_entry(&env, &k.failed_tasks, task.id)
    })
    .await;
    let failed: Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(failed["last_error"], "cancelled");
    let mut redis = env.redis().await;
    let scheduled: usize = redis.zcard(&k.scheduled_tasks).await.unwrap();
    assert_eq!(scheduled, 0, "no longer shown as scheduled");
    assert_mirror_clean_and_rebuilt_clean(&env).await;
    fleet.stop().await;
    env.cleanup().await;
}

/// A result too large for a row is shown where it is (`{"result_ref": …}`), live and after a
/// rebuild alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_checked_result_is_shown_alike_live_and_rebuilt() {
    let env = TestEnv::new().await;
    let k = keys(&env);
    let fleet = env.spawn_assembled(env.legacy_worker(|_| {}));
    let task = TaskEnvelope::new("echo", json!({"text": "x".repeat(300 << 10)}));
    env.broker.publish(&task, Codec::MessagePack).await.unwrap();
    let rows = env.wait_finished(&[task.id], Duration::from_secs(20)).await;
    assert!(rows[0].result_ref.is_some(), "{:?}", rows[0].last_error);
    let completed = eventually("completed_tasks", Duration::from_secs(5), || {
        hash_entry(&env, &k.completed_tasks, task.id)
    })
    .await;
    let completed: Value = serde_json::from_str(&completed).unwrap();
    assert_eq!(
        completed["result"]["result_ref"]["name"],
        format!("{}.result", task.id)
    );
    fleet.stop().await;
    assert_mirror_clean_and_rebuilt_clean(&env).await;
    env.cleanup().await;
}
