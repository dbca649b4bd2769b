//! The HTTP contract checked from outside: schemathesis (installed by `make tools`) fuzzes a
//! live `swarmd api` against `schemas/openapi.json` — no 5xx, no schema-valid request
//! rejected, no schema-violating request accepted, no undocumented status or body.

use std::{path::PathBuf, time::Duration};

use crate::support::{TestEnv, eventually, venv_program};

fn schemathesis() -> PathBuf {
    let st = venv_program("st");
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
    // A worker beside the API: tasks run, fail into dead letters and are waited for, so
    // the fuzzer meets the states clients see (a `?wait=` still ends at a short deadline).
    let worker = env.spawn(env.worker());
    let (mut api, url) = env
        .spawn_api("contract-token", &[("SWARM_API_MAX_WAIT_SECS", "0.2")])
        .await;
    let openapi = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.json");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/schemathesis.toml");
    // The suite's settings; an outside run picks its own (`SWARM_CONTRACT_SEED=7
    // SWARM_CONTRACT_EXAMPLES=300 cargo nextest run schemathesis`).
    let setting = |name: &str, default: &str| std::env::var(name).unwrap_or(default.into());
    let (seed, examples) = (
        setting("SWARM_CONTRACT_SEED", "20261130"),
        setting("SWARM_CONTRACT_EXAMPLES", "80"),
    );
    let run = tokio::process::Command::new(&st)
        .args(["--config-file", config])
        .args(["run", openapi, "--url", &url])
        .args(["-H", "Authorization: Bearer contract-token"])
        .args([
            "--checks",
            "all",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
        ])
        .args(["--output-sanitize", "false", "--no-color"])
        // Same seed, same cases: no example database carried between runs.
        .args(["--generation-database", "none"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .await
        .unwrap();
    let _ = api.kill().await;
    worker.stop().await;
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

/// The first fenced block of `language` after `heading` in `schemas/README.md`.
fn readme_example(heading: &str, language: &str) -> String {
    let readme = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/README.md"),
    )
    .unwrap();
    let after = &readme[readme.find(heading).expect("the example's heading")..];
    let fence = format!("```{language}\n");
    let start = after.find(&fence).expect("a fenced example") + fence.len();
    after[start..start + after[start..].find("```").unwrap()].to_string()
}

/// A Python example of `schemas/README.md` as printed, pointed at this test's server and
/// subjects; what it prints.
async fn run_python_example(env: &TestEnv, heading: &str) -> String {
    let python = venv_program("python");
    assert!(
        python.exists(),
        "the tools' Python is not installed: run `make tools`"
    );
    let example = readme_example(heading, "python");
    let prefix = &env.settings.nats.subject_prefix;
    let script = example
        .replace("nats://127.0.0.1:4222", env.settings.nats.url.expose())
        .replace("\"swarm.tasks.", &format!("\"{prefix}.tasks."))
        .replace("\"swarm.results.", &format!("\"{prefix}.results."))
        .replace(
            "\"SWARM_TASKS_PAYLOADS\"",
            &format!("\"{}\"", env.broker.payloads().bucket()),
        );
    assert_ne!(
        script, example,
        "the example names the server and the subject"
    );
    let output = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_python_producer_publishes_a_task_the_fleet_runs() {
    let env = TestEnv::new().await;
    let printed = run_python_example(&env, "Python (").await;
    // It prints the stream sequence and whether it was a duplicate.
    assert_eq!(printed.trim(), "1 False");

    let worker = env.spawn(env.worker());
    let row = eventually("the task completed", Duration::from_secs(15), || async {
        let rows: Vec<(String, String, Option<serde_json::Value>)> =
            sqlx::query_as("SELECT agent_type, status, result FROM tasks")
                .fetch_all(env.store.primary())
                .await
                .unwrap();
        rows.into_iter().find(|r| r.1 == "completed")
    })
    .await;
    worker.stop().await;
    assert_eq!(row.0, "quality");
    assert!(row.2.is_some_and(|result| result.get("score").is_some()));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_python_producer_waits_for_its_outcome_on_nats() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let printed = run_python_example(&env, "Python, waiting for the outcome (").await;
    worker.stop().await;
    assert_eq!(printed.trim(), r#"completed {"n": 42}"#);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_python_producer_sends_large_data_by_claim_check() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let printed = run_python_example(&env, "Large data: claim checks").await;
    let (id, size) = printed.trim().split_once(' ').expect("id and size");
    let id: uuid::Uuid = id.parse().unwrap();
    let size: u64 = size.parse().unwrap();
    assert!(size > 2 << 20, "more than a message holds: {size}");
    let rows = env.wait_finished(&[id], Duration::from_secs(30)).await;
    worker.stop().await;
    assert_eq!(rows[0].status, "completed", "{:?}", rows[0].last_error);
    // `echo` answered the whole input, itself put aside by claim check.
    let result_ref = rows[0].result_ref.clone().expect("a result by claim check");
    // Python wrote `", "` between items; the fleet writes compact JSON.
    assert!(result_ref.size > 2 << 20 && result_ref.size <= size);
    let result = env.broker.payloads().get(&result_ref).await.unwrap();
    assert_eq!(result["rows"].as_array().map(Vec::len), Some(200_000));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_go_producer_publishes_a_task_the_fleet_runs() {
    let go = ["/usr/bin/go", "/usr/lib/go/bin/go"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Go is not installed: run `make tools` (scripts/ensure-test-tools.sh)");
    let env = TestEnv::new().await;
    let prefix = &env.settings.nats.subject_prefix;
    let example = readme_example("Go (", "go");
    let program = example
        .replace("nats://127.0.0.1:4222", env.settings.nats.url.expose())
        .replace("\"swarm.tasks.", &format!("\"{prefix}.tasks."));
    assert_ne!(
        program, example,
        "the example names the server and the subject"
    );
    let dir = std::env::temp_dir().join(format!("swarm-go-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.go"), program).unwrap();
    // Debian's packaged libraries, in GOPATH mode: no module proxy needed.
    let output = tokio::process::Command::new(go)
        .args(["run", "main.go"])
        .current_dir(&dir)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.join("cache"))
        .env("GOFLAGS", "")
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // It prints the task id, the stream sequence and whether it was a duplicate.
    let fields: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(fields[1..], ["1", "false"], "{printed}");
    let id: uuid::Uuid = fields[0].parse().unwrap();

    let worker = env.spawn(env.worker());
    let rows = env.wait_finished(&[id], Duration::from_secs(20)).await;
    worker.stop().await;
    assert_eq!(rows[0].status, "completed");
    assert_eq!(rows[0].result, Some(serde_json::json!({"n": 1})));
    env.cleanup().await;
}
