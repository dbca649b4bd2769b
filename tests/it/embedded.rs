//! The worker embedded in a program of the user's own: `examples/custom_agent.rs`, built
//! and run as a process against the real services, with its own agent beside the built-ins.

use std::{path::PathBuf, time::Duration};

use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};

use crate::support::TestEnv;

/// The example's binary, built (or found up to date) by cargo. `cargo test` builds it
/// beside the suite, with the suite's features: asked the same way, cargo has nothing to do
/// (`cargo build` would rebuild the library without the dev-dependencies' features).
async fn example(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = tokio::process::Command::new(cargo);
    // The variables cargo sets for this test (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`,
    // `OUT_DIR`) would look like a changed environment to build scripts that watch them
    // (ring's), and the next build of the suite would start over.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") || name.starts_with("__CARGO") || name == "OUT_DIR")
            && !matches!(name.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
            && !name.starts_with("CARGO_BUILD_")
        {
            command.env_remove(name.as_ref());
        }
    }
    let built = command
        .args(["test", "--quiet", "--no-run", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // The test binary lives in target/<profile>/deps; examples in target/<profile>/examples.
    let deps = std::env::current_exe().unwrap();
    deps.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_of_its_own_runs_the_worker_with_its_own_agent() {
    let binary = example("custom_agent").await;
    let env = TestEnv::new().await;
    let program = tokio::process::Command::new(&binary)
        .envs(env.process_env())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let shout = TaskEnvelope::new("shout", json!({"text": "hello"}));
    let wrong = TaskEnvelope::new("shout", json!({"text": 42})).with_max_attempts(3);
    let echo = TaskEnvelope::new("echo", json!({"built-in": true}));
    for task in [&shout, &wrong, &echo] {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let rows = env
        .wait_finished(&[shout.id, wrong.id, echo.id], Duration::from_secs(60))
        .await;
    let row = |id| rows.iter().find(|r| r.id == id).unwrap();
    assert_eq!(
        row(shout.id).result,
        Some(json!({"text": "HELLO", "attempt": 1}))
    );
    assert_eq!(
        (row(wrong.id).status.as_str(), row(wrong.id).attempts),
        ("dead", 1)
    );
    assert_eq!(
        row(echo.id).result,
        Some(json!({"built-in": true})),
        "built-ins still run"
    );
    let exited = crate::support::terminate(program).await;
    assert!(exited.status.success(), "{:?}", exited.status);
    env.cleanup().await;
}
