//! The users' own agents behind HTTP (`[agents.<name>] url`): a real HTTP server in the
//! test answers as an agent would, and the status codes decide each task's end.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use serde_json::{Value, json};
use swarm_director::{
    agent::AgentRegistry,
    config::{AgentKind, AgentSpec, HttpSpec, Secret},
    task::{Codec, TaskEnvelope},
};

use crate::support::{TestEnv, eventually, succeeds};

const TOKEN: &str = "agent-s3cret-token";

/// What the test agent saw.
#[derive(Default)]
struct Seen {
    /// Each request: its path, headers, body and when it came.
    requests: Mutex<Vec<(String, HeaderMap, Value, Instant)>>,
    slow_started: AtomicBool,
    slow_closed: AtomicBool,
}

/// Sets a flag when the request's handler is dropped: the client went away.
struct ClosedWhenDropped(Arc<Seen>);

impl Drop for ClosedWhenDropped {
    fn drop(&mut self) {
        self.0.slow_closed.store(true, Ordering::SeqCst);
    }
}

async fn answer(
    State(seen): State<Arc<Seen>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(task): Json<Value>,
) -> axum::response::Response {
    let path = uri.path().to_string();
    seen.requests
        .lock()
        .unwrap()
        .push((path.clone(), headers, task.clone(), Instant::now()));
    let attempt = task["attempt"].as_u64().unwrap_or(0);
    match path.as_str() {
        "/echo" => Json(task["data"].clone()).into_response(),
        "/limited" if attempt == 1 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            "slow down",
        )
            .into_response(),
        "/limited" => Json(json!({"attempt": attempt})).into_response(),
        "/flaky" if attempt == 1 => (StatusCode::BAD_GATEWAY, "upstream hiccup").into_response(),
        "/flaky" => Json(json!({"attempt": attempt})).into_response(),
        "/refuse" => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("no such customer {}", "x".repeat(3000)),
        )
            .into_response(),
        "/not-json" => (StatusCode::OK, "hello").into_response(),
        "/slow" => {
            let _guard = ClosedWhenDropped(seen.clone());
            seen.slow_started.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Json(json!("too late")).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An HTTP agent server on a spare loopback port; its base URL.
async fn agent_server(seen: Arc<Seen>) -> String {
    let app = Router::new()
        .route("/{*path}", post(answer))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}")
}

fn http_agent(name: &str, url: String) -> AgentSpec {
    AgentSpec {
        name: name.into(),
        kind: AgentKind::Http(HttpSpec {
            url,
            concurrency: 8,
            token: Some(Secret::new(TOKEN)),
        }),
        timeout: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_decide_each_tasks_end_and_the_token_goes_only_to_the_agent() {
    let env = TestEnv::new().await;
    let seen = Arc::new(Seen::default());
    let base = agent_server(seen.clone()).await;
    let agents: Vec<AgentSpec> = ["echo", "limited", "flaky", "refuse", "not-json"]
        .iter()
        .map(|path| http_agent(&format!("http-{path}"), format!("{base}/{path}")))
        .collect();
    let registry = AgentRegistry::with_builtins()
        .with_declared(&agents, env.settings.worker.max_result_bytes)
        .unwrap();
    assert_eq!(registry.kind("http-echo"), "http");
    let worker = env.spawn(env.worker_with_agents(registry, |s| {
        s.worker.retry_base_ms = 100;
        s.worker.retry_max_ms = 200;
    }));
    let mut tasks = Vec::new();
    for (agent, data) in [
        ("http-echo", json!({"hello": "http"})),
        ("http-limited", json!({})),
        ("http-flaky", json!({})),
        ("http-refuse", json!({"customer": 7})),
        ("http-not-json", json!({})),
    ] {
        let task = TaskEnvelope::new(agent, data);
        env.broker.publish(&task, Codec::Json).await.unwrap();
        tasks.push(task);
    }
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    worker.stop().await;
    let row = |n: usize| rows.iter().find(|r| r.id == tasks[n].id).unwrap();
    assert_eq!(row(0).result, Some(json!({"hello": "http"})));
    assert_eq!((row(1).status.as_str(), row(1).attempts), ("completed", 2));
    assert_eq!(
        (row(2).status.as_str(), row(2).attempts),
        ("completed", 2),
        "5xx is retried"
    );
    assert_eq!(
        (row(3).status.as_str(), row(3).attempts),
        ("dead", 1),
        "4xx is permanent"
    );
    let reason = row(3).last_error.clone().unwrap();
    assert!(
        reason.contains("422") && reason.contains("no such customer"),
        "{reason}"
    );
    assert!(
        reason.len() < 1400,
        "the body's first KiB: {} bytes",
        reason.len()
    );
    assert_eq!(row(4).status, "dead");
    assert!(row(4).last_error.as_deref().unwrap().contains("not JSON"));

    let requests = seen.requests.lock().unwrap().clone();
    // A 429 with `Retry-After: 2`: not asked again for two seconds.
    let limited: Vec<Instant> = requests
        .iter()
        .filter(|(path, ..)| path == "/limited")
        .map(|(.., at)| *at)
        .collect();
    assert_eq!(limited.len(), 2);
    assert!(
        limited[1] - limited[0] >= Duration::from_millis(1950),
        "{:?}",
        limited[1] - limited[0]
    );
    // Every request: the task as the process protocol's line, the token, an idempotency key.
    for (path, headers, body, _) in requests.iter() {
        assert_eq!(
            headers["authorization"],
            format!("Bearer {TOKEN}").as_str(),
            "{path}"
        );
        let key = format!("{}:{}", body["id"].as_str().unwrap(), body["attempt"]);
        assert_eq!(headers["idempotency-key"], key.as_str());
        assert_eq!(body["type"], "task");
        crate::support::schemas::assert_valid(
            &crate::support::schemas::validator("agent-input.schema.json"),
            body,
        );
    }
    // The token is in no row and no dead letter.
    for row in &rows {
        assert!(!serde_json::to_string(&row.errors).unwrap().contains(TOKEN));
    }
    let letters = env.wait_dead_letters(2, Duration::from_secs(10)).await;
    for letter in letters {
        assert!(
            !serde_json::to_string(&letter.letter)
                .unwrap()
                .contains(TOKEN)
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_closes_the_request_and_the_task_ends_cancelled() {
    let env = TestEnv::new().await;
    let seen = Arc::new(Seen::default());
    let base = agent_server(seen.clone()).await;
    let agents = [http_agent("http-slow", format!("{base}/slow"))];
    let registry = AgentRegistry::with_builtins()
        .with_declared(&agents, env.settings.worker.max_result_bytes)
        .unwrap();
    let worker = env.spawn(env.worker_with_agents(registry, |_| {}));
    let task = TaskEnvelope::new("http-slow", json!({}));
    env.broker.publish(&task, Codec::Json).await.unwrap();
    eventually(
        "the agent working on it",
        Duration::from_secs(10),
        || async { seen.slow_started.load(Ordering::SeqCst).then_some(()) },
    )
    .await;
    env.store
        .cancellations()
        .cancel(&[task.id], "test")
        .await
        .unwrap();
    env.broker
        .cancellations()
        .announce(&[task.id], "test")
        .await
        .unwrap();
    eventually("the request closed", Duration::from_secs(3), || async {
        seen.slow_closed.load(Ordering::SeqCst).then_some(())
    })
    .await;
    eventually(
        "the attempt ended cancelled",
        Duration::from_secs(3),
        || async { (worker.counts.cancelled() == 1).then_some(()) },
    )
    .await;
    worker.stop().await;
    let rows = env.wait_finished(&[task.id], Duration::from_secs(5)).await;
    assert_eq!(rows[0].status, "cancelled");
    env.cleanup().await;
}

/// A real `swarmd worker` with the agent declared in its settings file, logging at debug:
/// the token is sent, and printed nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_http_agent_runs_under_swarmd_worker_and_its_token_is_never_logged() {
    let env = TestEnv::new().await;
    let seen = Arc::new(Seen::default());
    let base = agent_server(seen.clone()).await;
    let dir = std::env::temp_dir().join(format!("swarm-http-agent-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("swarm.toml");
    std::fs::write(
        &config,
        format!(
            "[agents.email]\nurl = \"{base}/echo\"\ntoken_env = \"EMAIL_AGENT_TOKEN\"\n\n\
             [agents.refuser]\nurl = \"{base}/refuse\"\ntoken_env = \"EMAIL_AGENT_TOKEN\"\n"
        ),
    )
    .unwrap();
    let worker = env
        .swarmd()
        .arg("--config")
        .arg(&config)
        .args(["--log", "debug", "worker"])
        .env("EMAIL_AGENT_TOKEN", TOKEN)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let published = succeeds(env.swarmd().args([
        "publish",
        "--agent",
        "email",
        "--data",
        r#"{"to": "ann@example.org"}"#,
        "--wait",
        "30s",
    ]))
    .await;
    assert!(
        String::from_utf8_lossy(&published.stdout).contains(r#""result":{"to":"ann@example.org"}"#)
    );
    let refused = env
        .swarmd()
        .args([
            "publish", "--agent", "refuser", "--data", "{}", "--wait", "30s",
        ])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&refused.stdout).contains("no such customer"));
    let output = crate::support::terminate(worker).await;
    let _ = std::fs::remove_dir_all(&dir);
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains("email"),
        "the worker logged at debug: {}",
        &logs[..logs.len().min(2000)]
    );
    assert!(!logs.contains(TOKEN), "the token was logged");
    let requests = seen.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .all(|(_, headers, ..)| headers["authorization"] == format!("Bearer {TOKEN}").as_str())
    );
    env.cleanup().await;
}
