//! `clients/python`'s producer side, `swarmd.Client`, against a real `swarmd api` and worker.

use std::time::Duration;

use crate::support::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_publishes_waits_and_reports_refusals() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let (mut api, url) = env
        .spawn_api("client-token", &[("SWARM_API_MAX_WAIT_SECS", "1")])
        .await;
    let repo = env!("CARGO_MANIFEST_DIR");
    let run = tokio::process::Command::new("python3")
        .arg(format!("{repo}/tests/it/python/client_check.py"))
        .env("PYTHONPATH", format!("{repo}/clients/python"))
        .env("SWARM_TEST_API", &url)
        .env("SWARM_TEST_TOKEN", "client-token")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the checks end within 2 minutes")
        .unwrap();
    let _ = api.kill().await;
    worker.stop().await;
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    env.cleanup().await;
}
