//! The HTTP contract checked from outside: schemathesis (installed by `make tools`) fuzzes a
//! live `swarmd api` against `schemas/openapi.json` — no 5xx, no schema-valid request
//! rejected, no schema-violating request accepted, no undocumented status or body.

use std::{path::PathBuf, process::Stdio, time::Duration};

use crate::support::TestEnv;

fn schemathesis() -> PathBuf {
    let tools = std::env::var_os("SWARM_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/swarmdirector")
        });
    let st = tools.join("st-venv/bin/st");
    assert!(
        st.exists(),
        "schemathesis is not installed at {}: run `make tools` (scripts/ensure-test-tools.sh)",
        st.display()
    );
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_breach_of_the_openapi_contract() {
    let st = schemathesis();
    let env = TestEnv::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut api = env
        .swarmd()
        .args(["api", "--addr", &format!("127.0.0.1:{port}")])
        .env("SWARM_API_TOKEN", "contract-token")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "the API listens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let openapi = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.json");
    let run = tokio::process::Command::new(&st)
        .args(["run", openapi, "--url", &url])
        .args(["-H", "Authorization: Bearer contract-token"])
        .args([
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--seed",
            "20261130",
        ])
        .args(["--output-sanitize", "false", "--no-color"])
        // Same seed, same cases: no example database carried between runs.
        .args(["--generation-database", "none"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .await
        .unwrap();
    let _ = api.kill().await;
    let report = String::from_utf8_lossy(&run.stdout);
    println!(
        "{}",
        report.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
    assert!(
        run.status.success(),
        "schemathesis found breaches:\n{report}"
    );
    env.cleanup().await;
}
