//! The suite runs twice: against Debian's NATS (2.9 on bookworm) and against a modern one
//! (2.15 from PyPI, `make test`'s second pass sets `SWARM_TEST_NATS_VERSION`). This checks
//! each pass really talks to the server it names, and that `swarmd status` says which.

use crate::support::{TestEnv, nats_server, succeeds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_against_the_nats_server_it_was_asked_for() {
    let env = TestEnv::new().await;
    let version = env
        .broker
        .server_version()
        .expect("the server says its version");
    let started = std::process::Command::new(nats_server::binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if let Ok(wanted) = std::env::var("SWARM_TEST_NATS_VERSION") {
        assert!(
            version.to_string().starts_with(&wanted),
            "the shared server is {version}, not {wanted}"
        );
        assert!(
            started.contains(&format!("v{wanted}")),
            "servers the tests start are {started:?}, not {wanted}"
        );
    } else {
        // The first pass: Debian's server, the one production packages give on bookworm.
        assert!(version.major == 2, "{version}");
    }
    let status = succeeds(env.swarmd().arg("status")).await;
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(
        printed.contains(&format!("NATS server {version}")),
        "{printed}"
    );
    println!("NATS server {version}; tests start {started}");
    env.cleanup().await;
}
