//! The dashboard in a real browser: headless Chromium (Debian's, driven by playwright-core
//! from npm, no browser download) against a real `swarmd api` and a worker. The browser
//! side is `tests/ui/dashboard.mjs`; screenshots go to `target/ui-artifacts/`. Run by
//! `make test-ui` (part of `make test`) once `scripts/ensure-ui-tools.sh` found or installed
//! Chromium and playwright-core; without them that target reports the test skipped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use swarm_director::{
    agent::AgentRegistry,
    task::{Codec, TaskEnvelope},
};

use crate::support::{TestEnv, switch::Switch};

fn tool(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let tools = tool(
        "SWARM_TOOLS_DIR",
        &format!("{}/.cache/swarmdirector", std::env::var("HOME").unwrap()),
    );
    let playwright = tool(
        "SWARM_TEST_PLAYWRIGHT",
        &format!("{tools}/ui-node/node_modules/playwright-core"),
    );
    let chromium = tool("SWARM_TEST_CHROMIUM", "/usr/bin/chromium");
    assert!(
        std::path::Path::new(&playwright).exists() && std::path::Path::new(&chromium).exists(),
        "playwright-core ({playwright}) and Chromium ({chromium}) are installed: run `make test-ui`"
    );
    let env = TestEnv::new().await;
    let ready = Arc::new(AtomicBool::new(false));
    let registry = || AgentRegistry::with_builtins().with(Switch(ready.clone()));
    // With the legacy mirror, so the task page shows its view.
    let mut settings = env.settings.clone();
    settings.worker.concurrency = swarm_director::config::Concurrency::Fixed(2);
    let assembled = swarm_director::worker::assemble(
        &settings,
        swarm_director::broker::Broker::with_client(env.broker.client().clone(), &settings.nats),
        env.store.clone(),
        registry(),
    )
    .expect("valid Redis settings");
    let worker = env.spawn_assembled(assembled);

    // Three dead letters that a replay will complete once `switch` is on.
    let lates: Vec<TaskEnvelope> = (0..3)
        .map(|i| TaskEnvelope::new("switch", json!({ "n": i })))
        .collect();
    for task in &lates {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    // And one that will never succeed, to be purged.
    let hopeless = TaskEnvelope::new("fail", json!({ "permanent": true }));
    env.broker.publish(&hopeless, Codec::Json).await.unwrap();
    env.wait_dead_letters(4, Duration::from_secs(15)).await;
    ready.store(true, Ordering::SeqCst);

    let needle = "needle-4711";
    let found = TaskEnvelope::new("echo", json!({ "customer": needle, "note": "find me" }));
    env.broker.publish(&found, Codec::Json).await.unwrap();
    env.wait_finished(&[found.id], Duration::from_secs(10))
        .await;
    // A long task first (it holds one of the two slots), then a backlog for the other.
    let sleeper = TaskEnvelope::new("sleep", json!({ "ms": 60_000 })).with_priority(9);
    env.broker.publish(&sleeper, Codec::Json).await.unwrap();
    let backlog: Vec<TaskEnvelope> = (0..150)
        .map(|_| TaskEnvelope::new("sleep", json!({ "ms": 20 })))
        .collect();

    let (mut api, base) = env.spawn_api("ui-write-token", &[]).await;
    let results = env
        .broker
        .publish_many(&backlog, Codec::Json, 256, || {})
        .await;
    assert!(results.iter().all(Result::is_ok));

    let artifacts = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ui-artifacts");
    let scenario = json!({
        "needle": needle,
        "needle_id": found.id,
        "sleeper_id": sleeper.id,
        "late_agent": "switch",
    });
    let run = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/ui/dashboard.mjs"
        ))
        .env("BASE", &base)
        .env("TOKEN", "ui-write-token")
        .env("SCENARIO", scenario.to_string())
        .env("ARTIFACTS", artifacts)
        .env("PLAYWRIGHT", &playwright)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser run ends within two minutes")
        .expect("node runs");
    let said = String::from_utf8_lossy(&run.stdout);
    let complained = String::from_utf8_lossy(&run.stderr);
    println!("{said}");
    assert!(
        run.status.success(),
        "the browser run failed: {complained}\n{said}"
    );

    // What the clicks did, as the database tells it.
    let sleeper_row = env.store.tasks().get(sleeper.id).await.unwrap().unwrap();
    assert_eq!(sleeper_row.status, "cancelled");
    let replays: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM tasks WHERE replay_of IS NOT NULL")
            .fetch_all(env.store.primary())
            .await
            .unwrap();
    assert_eq!(replays.len(), 3, "every dead letter replayed once");
    let rows = env.wait_finished(&replays, Duration::from_secs(15)).await;
    assert!(rows.iter().all(|r| r.status == "completed"), "{rows:?}");
    let left = env
        .dead_letters()
        .list(&swarm_director::dlq::Filter::default())
        .await
        .unwrap();
    assert!(left.is_empty(), "replayed or purged, none left: {left:?}");
    api.kill().await.unwrap();
    worker.stop().await;
    env.cleanup().await;
}
