//! The `swarmd` binary as users run it: publishing from a file, and a clean exit on SIGTERM.

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};
use tokio::process::Command;

use crate::support::{TestEnv, eventually, succeeds};

fn swarmd(env: &TestEnv) -> Command {
    env.swarmd()
}

async fn signal(signal: &str, pid: &str) {
    let sent = Command::new("kill")
        .args([signal, pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

/// Waits until exactly `count` worker processes answer the roll call; returns them.
async fn workers_answering(
    env: &TestEnv,
    count: usize,
) -> Vec<swarm_director::scale::WorkerPresence> {
    eventually(
        &format!("{count} worker processes answering"),
        Duration::from_secs(30),
        || async {
            let present = swarm_director::scale::roll_call(&env.broker, Duration::from_millis(200))
                .await
                .unwrap();
            (present.len() == count).then_some(present)
        },
    )
    .await
}

/// SIGTERM, then the process must exit 0 within `within` (its grace period).
async fn stop_cleanly(process: &mut tokio::process::Child, within: Duration, what: &str) {
    signal("-TERM", &process.id().unwrap().to_string()).await;
    let status = tokio::time::timeout(within, process.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit within {within:?} of SIGTERM"))
        .unwrap();
    assert_eq!(status.code(), Some(0), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_from_a_file_checks_every_line_first() {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(format!("swarmd-{}", env.settings.database.schema));
    std::fs::create_dir_all(&dir).unwrap();
    let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    let good = dir.join("good.jsonl");
    std::fs::write(
        &good,
        format!(
            "{}\n\n{}\n{}\n",
            json!({"agent_type": "echo", "data": {"n": 1}, "id": ids[0], "priority": 9}),
            json!({"agent_type": "quality", "data": {"text": "Fine."}, "id": ids[1]}),
            json!({"agent_type": "echo", "data": null, "id": ids[2], "max_attempts": 1}),
        ),
    )
    .unwrap();
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"agent_type\": \"echo\", \"data\": 1}\n{\"agent_type\": \"echo\", \"data\": 1, \"priority\": 12}\nnot json\n{\"agent_type\": \"echo\", \"data\": {\"s\": \"a\\u0000b\"}}\n",
    )
    .unwrap();

    let refused = swarmd(&env)
        .args(["publish", "--file"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("line 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 4") && stderr.contains("NUL"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was published"), "{stderr}");
    env.assert_stream_drains("every message acknowledged").await;

    let published = swarmd(&env)
        .args(["publish", "--file"])
        .arg(&good)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&published.stdout);
    assert!(
        published.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&published.stderr)
    );
    assert!(stdout.contains("published 3 tasks"), "{stdout}");
    assert_eq!(env.stream_messages().await, 3);

    let one = swarmd(&env)
        .args([
            "publish",
            "--agent",
            "echo",
            "--priority",
            "2",
            "--data",
            "{\"x\": 1}",
        ])
        .output()
        .await
        .unwrap();
    assert!(one.status.success());
    let id: uuid::Uuid = String::from_utf8_lossy(&one.stdout)
        .trim()
        .parse()
        .expect("prints the id");

    let worker = env.spawn(env.worker());
    let mut all = ids.clone();
    all.push(id);
    let rows = env.wait_finished(&all, Duration::from_secs(20)).await;
    worker.stop().await;
    assert!(rows.iter().all(|r| r.status == "completed"));
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_tasks_finish_and_exits_zero() {
    let env = TestEnv::new().await;
    let tasks: Vec<_> = (0..3)
        .map(|_| TaskEnvelope::new("sleep", json!({"ms": 800})))
        .collect();
    for task in &tasks {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let mut process = swarmd(&env)
        .arg("worker")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    eventually(
        "the worker to take the tasks",
        Duration::from_secs(20),
        || async {
            (env.store.tasks().by_ids(&ids).await.unwrap().len() == ids.len()).then_some(())
        },
    )
    .await;
    stop_cleanly(&mut process, Duration::from_secs(20), "the worker").await;
    let rows = env.store.tasks().by_ids(&ids).await.unwrap();
    assert!(
        rows.iter().all(|r| r.status == "completed"),
        "in-flight tasks finished"
    );
    env.assert_stream_drains("and were acknowledged before exit")
        .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_and_prints_sane_figures() {
    let env = TestEnv::new().await;
    let out = succeeds(env.swarmd().args([
        "bench",
        "--n",
        "2000",
        "--workers",
        "1",
        "--concurrency",
        "64",
        "--json",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["tasks"], 2000);
    for field in [
        "enqueue_per_sec",
        "burn_down_per_sec",
        "worker_peak_rss_mib",
    ] {
        assert!(
            report[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {report}"
        );
    }
    let p50 = report["latency_ms"]["p50"].as_f64().unwrap();
    let max = report["latency_ms"]["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= max, "{report}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_at_a_steady_rate_publishes_that_many_and_reports_latency() {
    let env = TestEnv::new().await;
    let started = std::time::Instant::now();
    let out = succeeds(env.swarmd().args([
        "bench",
        "--rate",
        "300",
        "--duration",
        "2",
        "--workers",
        "1",
        "--json",
    ]))
    .await;
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON object");
    assert_eq!(
        (report["mode"].as_str(), report["tasks"].as_u64()),
        (Some("steady-rate"), Some(600))
    );
    // Spread over the duration, not sent at once.
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let enqueue = report["enqueue_per_sec"].as_f64().unwrap();
    assert!((100.0..=330.0).contains(&enqueue), "{report}");
    for latency in ["latency_ms", "pickup_ms"] {
        let (p50, p99) = (
            report[latency]["p50"].as_f64().unwrap(),
            report[latency]["p99"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{latency}: {report}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_runs_several_worker_processes_and_stops_them_all() {
    let env = TestEnv::new().await;
    let mut supervisor = swarmd(&env)
        .args(["worker", "--processes", "2", "--concurrency", "4"])
        .args(["--no-mirror", "--no-intake"])
        .env("SWARM_WORKER_ID", "pair")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let present = workers_answering(&env, 2).await;
    let ids: Vec<&str> = present.iter().map(|p| p.worker_id.as_str()).collect();
    assert_eq!(ids, ["pair-0", "pair-1"], "two processes, one id each");
    assert!(present.iter().all(|p| p.concurrency == 4));

    // A process that dies is started again under the same id.
    let victim = present[0].pid.to_string();
    signal("-KILL", &victim).await;
    eventually("pair-0 restarted", Duration::from_secs(30), || async {
        let present = swarm_director::scale::roll_call(&env.broker, Duration::from_millis(200))
            .await
            .unwrap();
        let restarted = present
            .iter()
            .any(|p| p.worker_id == "pair-0" && p.pid.to_string() != victim);
        (restarted && present.len() == 2).then_some(())
    })
    .await;

    let tasks: Vec<_> = (0..200)
        .map(|i| TaskEnvelope::new("sleep", json!({"ms": 5})).with_priority((i % 10) as u8))
        .collect();
    for task in &tasks {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    let workers: BTreeSet<_> = rows.iter().filter_map(|r| r.worker_id.clone()).collect();
    assert!(rows.iter().all(|r| r.status == "completed"));
    assert!(
        workers.iter().all(|w| w.starts_with("pair-")),
        "{workers:?}"
    );

    stop_cleanly(&mut supervisor, Duration::from_secs(30), "the supervisor").await;
    let left = swarm_director::scale::roll_call(&env.broker, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "worker processes outlived the supervisor: {left:?}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_worker_runs_a_process_per_core_and_none_outlive_a_killed_supervisor() {
    let env = TestEnv::new().await;
    let expected = swarm_director::scale::optimal_worker_processes(
        swarm_director::scale::available_cores(),
        swarm_director::scale::available_memory_bytes(),
    );
    let mut supervisor = swarmd(&env)
        .args(["worker", "--concurrency", "4", "--no-mirror", "--no-intake"])
        .env_remove("SWARM_WORKER_PROCESSES")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let present = workers_answering(&env, expected).await;
    let supervisor_pid = supervisor.id().unwrap();
    if expected > 1 {
        assert!(
            present.iter().all(|p| p.pid != supervisor_pid),
            "the supervisor runs no worker itself"
        );
    }

    // SIGKILL: the supervisor cannot pass anything on; its processes notice and drain.
    signal("-KILL", &supervisor_pid.to_string()).await;
    supervisor.wait().await.unwrap();
    workers_answering(&env, 0).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_its_summary_cleanly_and_logs_to_a_file() {
    let env = TestEnv::new().await;
    let log = std::env::temp_dir().join(format!("swarm-demo-{}.log", uuid::Uuid::new_v4()));
    let output = swarmd(&env)
        .args(["demo", "--tasks", "200", "--wait", "60", "--log-file"])
        .arg(&log)
        .env("SWARM_LOG", "info")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("200 of 200 tasks finished"), "{stdout}");
    assert!(stdout.contains(&format!("worker logs: {}", log.display())));
    for line in stdout.lines().chain(stderr.lines()) {
        assert!(
            !(line.contains(" INFO ") || line.contains(" WARN ") || line.contains(" ERROR ")),
            "a log line in the demo's output: {line}"
        );
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("worker started"), "{logged}");
    assert!(
        !logged.contains('\u{1b}'),
        "no terminal colours in the file"
    );
    let _ = std::fs::remove_file(&log);
    env.cleanup().await;
}

/// `--log warn` prints nothing but trouble, whatever library logs; at `info` each NATS
/// connection says one line and PostgreSQL's NOTICEs of the migrations stay quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_levels_mean_what_they_say_for_every_target() {
    let env = TestEnv::new().await;
    let fresh = format!("{}_fresh", env.settings.database.schema);
    let migrate = |level: &str| {
        let mut command = swarmd(&env);
        command
            .args(["--log", level, "migrate"])
            .env("SWARM_DATABASE_SCHEMA", &fresh);
        command
    };
    // A fresh schema: its migrations raise NOTICEs (`DROP CONSTRAINT IF EXISTS`).
    let told = succeeds(&mut migrate("info")).await;
    let stderr = String::from_utf8_lossy(&told.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line per connection: {stderr}");
    assert!(lines[0].contains("connected"), "{stderr}");
    let quiet = succeeds(&mut migrate("warn")).await;
    assert_eq!(
        String::from_utf8_lossy(&quiet.stderr),
        "",
        "nothing at warn"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{fresh}\" CASCADE"
    )))
    .execute(env.store.primary())
    .await
    .unwrap();
    env.cleanup().await;
}
