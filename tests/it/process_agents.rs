//! The users' own agents as child processes (`[agents.<name>] command`), here Python served
//! by `clients/python` (`python3 -m swarmd.agent`), under every guarantee a built-in agent
//! has: results and classified errors, a killed or hung process replaced, cancel and
//! progress passed through, hostile output refused with a reason.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_director::{
    agent::AgentRegistry,
    config::{AgentKind, AgentSpec, ProcessSpec, Secret},
    task::{Codec, TaskEnvelope},
    worker::Worker,
};

use crate::{
    api::{app, call, get},
    support::{TestEnv, eventually},
};

/// A Python agent `name` served by `python3 -m swarmd.agent <target>`, with the package and
/// the test agents on its path.
fn python_agent(
    name: &str,
    target: &str,
    processes: usize,
    timeout: Option<Duration>,
) -> AgentSpec {
    let repo = env!("CARGO_MANIFEST_DIR");
    AgentSpec {
        name: name.into(),
        kind: AgentKind::Process(ProcessSpec {
            command: ["python3", "-m", "swarmd.agent", target]
                .map(String::from)
                .to_vec(),
            processes,
            env: [(
                "PYTHONPATH".to_string(),
                Secret::new(format!(
                    "{repo}/clients/python:{repo}/tests/it/python/agents"
                )),
            )]
            .into(),
            cwd: None,
        }),
        timeout,
    }
}

fn worker(env: &TestEnv, agents: &[AgentSpec]) -> Worker {
    let registry = AgentRegistry::with_builtins()
        .with_declared(agents, env.settings.worker.max_result_bytes)
        .unwrap();
    env.worker_with_agents(registry, |s| {
        // Retries come quickly here: the tests are about what ends a task, not when.
        s.worker.retry_base_ms = 100;
        s.worker.retry_max_ms = 200;
    })
}

async fn publish(env: &TestEnv, agent: &str, data: Value, max_attempts: u32) -> TaskEnvelope {
    let task = TaskEnvelope::new(agent, data).with_max_attempts(max_attempts);
    env.broker.publish(&task, Codec::Json).await.unwrap();
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_agent_classes_run_unchanged_and_their_returns_are_the_results() {
    let env = TestEnv::new().await;
    let agents = [
        python_agent("email", "seed_agents:EmailAgent", 1, None),
        python_agent("quality", "seed_agents:QualityScorer", 1, None),
        python_agent("review", "seed_agents:DraftReviewAgent", 1, None),
    ];
    let registry = AgentRegistry::with_builtins()
        .with_declared(&agents, 1 << 20)
        .unwrap();
    assert_eq!(
        (registry.kind("email"), registry.kind("echo")),
        ("process", "built-in"),
        "a declared agent replaces the built-in of its name"
    );
    let running = env.spawn(worker(&env, &agents));
    running.ready().await;
    // The roll call (the dashboard's workers page) says how each agent is reached.
    let present = swarm_director::scale::roll_call(&env.broker, Duration::from_millis(300))
        .await
        .unwrap();
    let kinds = &present[0].agent_kinds;
    assert_eq!(
        (
            kinds["email"].as_str(),
            kinds["review"].as_str(),
            kinds["echo"].as_str()
        ),
        ("process", "process", "built-in")
    );
    let email = publish(
        &env,
        "email",
        json!({"to": "ann@example.org", "subject": " Hi "}),
        3,
    )
    .await;
    let quality = publish(&env, "quality", json!({"text": "ship it ship it now"}), 3).await;
    let review = publish(&env, "review", json!({"body": "Hello, TODO"}), 3).await;
    let rows = env
        .wait_finished(&[email.id, quality.id, review.id], Duration::from_secs(30))
        .await;
    running.stop().await;
    let result = |id| rows.iter().find(|r| r.id == id).unwrap().result.clone();
    assert_eq!(
        result(email.id),
        Some(json!({"to": "ann@example.org", "valid": true, "subject": "Hi"}))
    );
    assert_eq!(result(quality.id), Some(json!({"words": 5, "score": 60})));
    assert_eq!(
        result(review.id),
        Some(json!({"approved": false, "findings": ["TODO"]}))
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified_as_the_agent_raises_them() {
    let env = TestEnv::new().await;
    let agents = [
        python_agent("refuses", "behaviours:refuses", 1, None),
        python_agent("crashes", "behaviours:crashes", 1, None),
        python_agent("limited", "behaviours:rate_limited", 1, None),
    ];
    let running = env.spawn(worker(&env, &agents));
    let refused = publish(&env, "refuses", json!({}), 3).await;
    let crashed = publish(&env, "crashes", json!({}), 2).await;
    let limited = publish(&env, "limited", json!({}), 3).await;
    let rows = env
        .wait_finished(
            &[refused.id, crashed.id, limited.id],
            Duration::from_secs(30),
        )
        .await;
    running.stop().await;
    let row = |id| rows.iter().find(|r| r.id == id).unwrap();
    let refused = row(refused.id);
    assert_eq!((refused.status.as_str(), refused.attempts), ("dead", 1));
    assert!(
        refused
            .last_error
            .as_deref()
            .unwrap()
            .contains("this input can never work")
    );
    let crashed = row(crashed.id);
    assert_eq!(
        (crashed.status.as_str(), crashed.attempts),
        ("dead", 2),
        "retried"
    );
    assert!(
        crashed
            .last_error
            .as_deref()
            .unwrap()
            .contains("KeyError: 'missing'"),
        "{:?}",
        crashed.last_error
    );
    // `Retryable(retry_after=2)`: the next attempt waited two seconds, not the backoff.
    let limited = row(limited.id);
    assert_eq!(
        (limited.status.as_str(), limited.attempts),
        ("completed", 2)
    );
    let failed_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(limited.errors[0]["at"].clone()).unwrap();
    let waited = limited.started_at.unwrap() - failed_at;
    assert!(
        waited >= chrono::Duration::milliseconds(1900),
        "waited {waited}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_task_costs_that_attempt_and_a_fresh_one_finishes_it() {
    let env = TestEnv::new().await;
    let agents = [python_agent("fragile", "behaviours:killed_first", 1, None)];
    let running = env.spawn(worker(&env, &agents));
    let pid_file = std::env::temp_dir().join(format!("swarm-agent-{}.pid", uuid::Uuid::new_v4()));
    let task = publish(&env, "fragile", json!({"pid_file": pid_file}), 3).await;
    let pid: i32 = eventually("the agent running", Duration::from_secs(20), || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    // SAFETY: a plain kill(2) of the agent process this test's worker started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let rows = env.wait_finished(&[task.id], Duration::from_secs(30)).await;
    running.stop().await;
    let _ = std::fs::remove_file(&pid_file);
    let row = &rows[0];
    assert_eq!((row.status.as_str(), row.attempts), ("completed", 2));
    assert_ne!(
        row.result.as_ref().unwrap()["pid"],
        json!(pid),
        "a fresh process"
    );
    let first = row.errors[0]["error"].as_str().unwrap();
    assert!(
        first.contains("agent process exited") && first.contains("signal: 9"),
        "{first}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_process_is_killed_at_the_deadline_and_its_slot_freed() {
    let env = TestEnv::new().await;
    // One process: the second task runs only once the hung one's process is gone. (A
    // deadline counts a new process's start: 3 s leaves room for a loaded machine.)
    let agents = [python_agent(
        "stuck",
        "behaviours:maybe_hang",
        1,
        Some(Duration::from_secs(3)),
    )];
    let running = env.spawn(worker(&env, &agents));
    let hung = publish(&env, "stuck", json!({"hang": true}), 1).await;
    let next = publish(&env, "stuck", json!({"hang": false}), 1).await;
    let rows = env
        .wait_finished(&[hung.id, next.id], Duration::from_secs(30))
        .await;
    running.stop().await;
    let row = |id| rows.iter().find(|r| r.id == id).unwrap();
    assert_eq!(row(hung.id).status, "dead");
    assert!(
        row(hung.id)
            .last_error
            .as_deref()
            .unwrap()
            .contains("timed out after 3.000 s"),
        "{:?}",
        row(hung.id).last_error
    );
    assert_eq!(row(next.id).result, Some(json!({"hang": false})));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_cancel_reach_a_python_agent() {
    let env = TestEnv::new().await;
    let agents = [python_agent("slow", "behaviours:slow", 1, None)];
    let running = env.spawn(worker(&env, &agents));
    let api = app(&env, Some("progress-token"));
    let task = publish(&env, "slow", json!({"ms": 20000}), 3).await;
    let progress = eventually("progress over HTTP", Duration::from_secs(20), || async {
        let (_, body) = call(&api, get(format!("/v1/tasks/{}", task.id))).await;
        body["progress"]["fraction"]
            .as_f64()
            .filter(|f| *f > 0.0)
            .map(|_| body)
    })
    .await;
    assert!(
        progress["progress"]["detail"]["step"].as_u64().unwrap() >= 1,
        "{progress}"
    );
    let asked = Instant::now();
    let report = env
        .store
        .cancellations()
        .cancel(&[task.id], "test")
        .await
        .unwrap();
    assert_eq!(report.cancelled, [task.id]);
    env.broker
        .cancellations()
        .announce(&[task.id], "test")
        .await
        .unwrap();
    // The agent stopped when told, not when the worker's grace (5 s) ran out.
    eventually(
        "the attempt ended cancelled",
        Duration::from_secs(3),
        || async { (running.counts.cancelled() == 1).then_some(()) },
    )
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    let rows = env.wait_finished(&[task.id], Duration::from_secs(20)).await;
    assert_eq!(rows[0].status, "cancelled");
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_output_is_a_permanent_error_with_its_reason_and_the_worker_carries_on() {
    let env = TestEnv::new().await;
    let agents = [
        python_agent("hostile", "behaviours:hostile", 6, None),
        python_agent("echoes", "behaviours:echo", 1, None),
    ];
    let running = env.spawn(worker(&env, &agents));
    let cases = [
        ("nul", "not JSON"),
        ("not json", "not JSON"),
        ("not an object", "not a JSON object"),
        ("no id", "missing field `id`"),
        (
            "other id",
            "a line about task 0193e0a0-0000-7000-8000-000000000001",
        ),
        ("100 MB", "a line over"),
    ];
    let mut tasks = Vec::new();
    for (write, _) in cases {
        tasks.push(publish(&env, "hostile", json!({"write": write}), 3).await);
    }
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let rows = env.wait_finished(&ids, Duration::from_secs(60)).await;
    for ((write, words), task) in cases.iter().zip(&tasks) {
        let row = rows.iter().find(|r| r.id == task.id).unwrap();
        let error = row.last_error.as_deref().unwrap_or_default();
        assert_eq!(
            (row.status.as_str(), row.attempts),
            ("dead", 1),
            "{write}: {error}"
        );
        assert!(
            error.contains("broke the protocol") && error.contains(words),
            "{write}: {error}"
        );
    }
    // The worker is unharmed: the next task runs.
    let after = publish(&env, "echoes", json!({"still": "here"}), 1).await;
    let rows = env
        .wait_finished(&[after.id], Duration::from_secs(20))
        .await;
    assert_eq!(rows[0].result, Some(json!({"still": "here"})));
    running.stop().await;
    env.cleanup().await;
}

/// The example exchange of `schemas/agent-protocol.md` is what the schemas allow and what
/// the worker reads; what the worker writes and what `swarmd.agent` writes are too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_lines_match_their_schemas() {
    use swarm_director::agent::process::protocol::{self, CancelMessage, TaskMessage};

    use crate::support::schemas::{assert_valid, validator};
    let (input, output) = (
        validator("agent-input.schema.json"),
        validator("agent-output.schema.json"),
    );
    let page = crate::doc_examples::examples("schemas/agent-protocol.md");
    let exchange = page
        .iter()
        .find(|e| e.language == "json")
        .expect("the example");
    for line in exchange.code.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).unwrap();
        if matches!(value["type"].as_str(), Some("task" | "cancel")) {
            assert_valid(&input, &value);
        } else {
            assert_valid(&output, &value);
            protocol::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }
    // What the worker writes.
    let data = json!({"n": 1});
    let checkpoint = json!({"fraction": 0.5});
    let task = TaskMessage {
        kind: "task",
        id: uuid::Uuid::now_v7(),
        agent_type: "email",
        data: &data,
        attempt: 2,
        max_attempts: 3,
        checkpoint: Some(&checkpoint),
        deadline: chrono::Utc::now(),
        timeout_ms: 1000,
        traceparent: None,
    };
    assert_valid(&input, &serde_json::to_value(&task).unwrap());
    assert_valid(
        &input,
        &serde_json::to_value(CancelMessage::new(task.id)).unwrap(),
    );
    // What `python3 -m swarmd.agent` writes, for a result, progress and each error.
    let repo = env!("CARGO_MANIFEST_DIR");
    let mut agent = tokio::process::Command::new("python3")
        .args([
            "-m",
            "swarmd.agent",
            "slow=behaviours:slow",
            "refuses=behaviours:refuses",
        ])
        .args([
            "limited=behaviours:rate_limited",
            "crashes=behaviours:crashes",
        ])
        .env(
            "PYTHONPATH",
            format!("{repo}/clients/python:{repo}/tests/it/python/agents"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = agent.stdin.take().unwrap();
    for (agent_type, data) in [
        ("slow", json!({"ms": 100})),
        ("refuses", json!({})),
        ("limited", json!({})),
        ("crashes", json!({})),
    ] {
        let line = json!({"type": "task", "id": uuid::Uuid::now_v7(), "agent_type": agent_type,
                          "data": data, "attempt": 1, "max_attempts": 3, "checkpoint": null,
                          "deadline": "2030-01-01T00:00:00Z", "timeout_ms": 1000,
                          "traceparent": null});
        use tokio::io::AsyncWriteExt as _;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    drop(stdin);
    let written = agent.wait_with_output().await.unwrap();
    let lines: Vec<&str> = std::str::from_utf8(&written.stdout)
        .unwrap()
        .lines()
        .collect();
    let kinds: Vec<String> = lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            assert_valid(&output, &value);
            protocol::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
            value["type"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(kinds[0], "ready");
    assert_eq!(
        kinds.iter().filter(|k| *k == "progress").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "error").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("error"));
}

/// Tasks waiting for a busy agent's process wait without spending their deadline: five
/// 300 ms tasks through one process with a 1 s deadline all complete (1.5 s in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_free_process_does_not_spend_the_deadline() {
    let env = TestEnv::new().await;
    let agents = [python_agent(
        "queued",
        "behaviours:slow",
        1,
        Some(Duration::from_secs(1)),
    )];
    let running = env.spawn(worker(&env, &agents));
    // Started and warm first: a new process's start counts against the first deadline.
    let warm = publish(&env, "queued", json!({"ms": 50}), 3).await;
    env.wait_finished(&[warm.id], Duration::from_secs(20)).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(publish(&env, "queued", json!({"ms": 300}), 1).await.id);
    }
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    running.stop().await;
    for row in &rows {
        assert_eq!(row.status, "completed", "{:?}", row.last_error);
    }
    env.cleanup().await;
}

/// A real `swarmd worker` whose pool is one declared process agent (`--agents`): it runs
/// the agent's tasks, and the agent's stderr reaches the worker's log with the task's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_a_declared_agent_runs_it_and_logs_its_stderr_with_the_task() {
    let env = TestEnv::new().await;
    let repo = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("swarm-process-agent-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("swarm.toml");
    std::fs::write(
        &config,
        format!(
            "[agents.talker]\ncommand = [\"python3\", \"-m\", \"swarmd.agent\", \"behaviours:echo\"]\n\
             env = {{ PYTHONPATH = \"{repo}/clients/python:{repo}/tests/it/python/agents\" }}\n"
        ),
    )
    .unwrap();
    let worker = env
        .swarmd()
        .arg("--config")
        .arg(&config)
        .args(["--log", "info", "worker", "--agents", "talker"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let task = publish(&env, "talker", json!({"said": "hi"}), 3).await;
    let rows = env.wait_finished(&[task.id], Duration::from_secs(30)).await;
    assert_eq!(rows[0].result, Some(json!({"said": "hi"})));
    let output = crate::support::terminate(worker).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "{:?}", output.status);
    let logs = String::from_utf8_lossy(&output.stderr);
    let line = logs
        .lines()
        .find(|line| line.contains("agent stderr: echoing"))
        .unwrap_or_else(|| panic!("no stderr line in the log:\n{logs}"));
    assert!(
        line.contains(&task.id.to_string()) && line.contains("talker"),
        "{line}"
    );
    env.cleanup().await;
}

/// A process that dies while idle (killed from outside) is replaced before the next task,
/// which keeps its attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_died_while_idle_costs_the_next_task_nothing() {
    let env = TestEnv::new().await;
    let agents = [python_agent("whoami", "behaviours:pid", 1, None)];
    let running = env.spawn(worker(&env, &agents));
    let first = publish(&env, "whoami", json!({}), 1).await;
    let rows = env
        .wait_finished(&[first.id], Duration::from_secs(20))
        .await;
    let pid = rows[0].result.as_ref().unwrap()["pid"].as_i64().unwrap() as i32;
    // SAFETY: a plain kill(2) of the agent process this test's worker started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = publish(&env, "whoami", json!({}), 1).await;
    let rows = env
        .wait_finished(&[second.id], Duration::from_secs(20))
        .await;
    running.stop().await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("completed", 1),
        "{:?}",
        rows[0].last_error
    );
    assert_ne!(rows[0].result.as_ref().unwrap()["pid"], json!(pid));
    env.cleanup().await;
}
