//! The HTTP API through its router (in process) and once over real TCP.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use serde_json::{Value, json};
use swarm_director::{
    http::{
        api::{self, ApiState},
        auth::Access,
    },
    task::{Codec, TaskEnvelope},
};
use tower::ServiceExt;

use crate::support::{TestEnv, schemas::assert_openapi_response};

/// The read-only token every test app accepts besides its write token.
const READER: &str = "reader-token";

/// The API with write token `token` and read token [`READER`]; `None`: no authentication.
pub(crate) fn app(env: &TestEnv, token: Option<&str>) -> axum::Router {
    app_with(env, token, 0.0)
}

fn app_with(env: &TestEnv, token: Option<&str>, rate_limit_per_sec: f64) -> axum::Router {
    let access = match token {
        Some(token) => Access::with_tokens(&[token], &[READER], rate_limit_per_sec),
        None => Access::insecure(),
    };
    api::router(
        Arc::new(ApiState {
            broker: env.broker.clone(),
            store: env.store.clone(),
            access: Arc::new(access),
            redis: Some(swarm_director::mirror::connect(&env.settings.redis).unwrap()),
            meter: Arc::default(),
            events: Default::default(),
            trace_url: swarm_director::config::DEFAULT_TRACE_URL.into(),
            legacy_keys: Some(swarm_director::mirror::LegacyKeys::of(&env.settings.redis)),
        }),
        api::Limits::default(),
    )
}

pub(crate) async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// A GET with the read token.
pub(crate) fn get(path: impl AsRef<str>) -> Request<Body> {
    get_as(path, Some(READER))
}

fn get_as(path: impl AsRef<str>, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path.as_ref());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

fn post(body: impl Into<Body>, token: Option<&str>) -> Request<Body> {
    post_to("/v1/tasks", body, token)
}

pub(crate) fn post_to(path: &str, body: impl Into<Body>, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(body.into()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_then_read_the_result() {
    let env = TestEnv::new().await;
    let app = app(&env, Some("s3cret"));

    let (status, body) = call(
        &app,
        post(
            json!({"agent_type": "echo", "data": {"x": 1}}).to_string(),
            Some("s3cret"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, queued) = call(&app, get(format!("/v1/tasks/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        queued["status"], "queued",
        "readable right after the publish"
    );

    let batch = json!({"tasks": [
        {"agent_type": "echo", "data": 1, "priority": 9},
        {"agent_type": "quality", "data": {"text": "Fine words."}},
    ]});
    let (status, body) = call(&app, post(batch.to_string(), Some("s3cret"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ids"].as_array().map(Vec::len), Some(2));

    let worker = env.spawn(env.worker());
    let mut ids: Vec<uuid::Uuid> = vec![id.parse().unwrap()];
    ids.extend(
        body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse::<uuid::Uuid>().unwrap()),
    );
    env.wait_finished(&ids, Duration::from_secs(10)).await;
    worker.stop().await;
    let (status, done) = call(&app, get(format!("/v1/tasks/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], json!({"x": 1}));
    assert_eq!(done["attempts"], 1);
    env.cleanup().await;
}

/// Runs the published tasks and returns each one's recorded trace id.
async fn traces_recorded(env: &TestEnv, ids: &[uuid::Uuid]) -> Vec<Option<String>> {
    let worker = env.spawn(env.worker());
    let rows = env.wait_finished(ids, Duration::from_secs(10)).await;
    worker.stop().await;
    ids.iter()
        .map(|id| rows.iter().find(|r| r.id == *id).unwrap().trace_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_task_continues_the_callers_trace_or_starts_one() {
    let env = TestEnv::new().await;
    let app = app(&env, Some("s3cret"));
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut traced = post(
        json!({"tasks": [{"agent_type": "echo", "data": 1}, {"agent_type": "echo", "data": 2}]})
            .to_string(),
        Some("s3cret"),
    );
    traced.headers_mut().insert(
        "traceparent",
        format!("00-{caller_trace}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let (status, body) = call(&app, traced).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["trace_id"], caller_trace,
        "the response says the trace"
    );
    let mut ids: Vec<uuid::Uuid> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    let (_, queued) = call(&app, get(format!("/v1/tasks/{}", ids[0]))).await;
    assert_eq!(queued["trace_id"], caller_trace, "recorded while queued");

    // No traceparent, or a broken one: a new trace of its own per request.
    let mut broken = post(
        json!({"agent_type": "echo", "data": 3}).to_string(),
        Some("s3cret"),
    );
    broken
        .headers_mut()
        .insert("traceparent", "00-zz-not-a-trace".parse().unwrap());
    let mut started = Vec::new();
    for request in [
        post(
            json!({"agent_type": "echo", "data": 4}).to_string(),
            Some("s3cret"),
        ),
        broken,
    ] {
        let (status, body) = call(&app, request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let trace = body["trace_id"].as_str().unwrap().to_string();
        assert!(trace.len() == 32 && trace.chars().all(|c| c.is_ascii_hexdigit()));
        ids.push(body["id"].as_str().unwrap().parse().unwrap());
        started.push(Some(trace));
    }
    assert_ne!(started[0], started[1], "each request its own trace");

    // The workers continue the trace each task carries; the rows keep it.
    let recorded = traces_recorded(&env, &ids).await;
    let caller = Some(caller_trace.to_string());
    assert_eq!(
        recorded,
        [
            caller.clone(),
            caller,
            started[0].clone(),
            started[1].clone()
        ]
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_stable_codes() {
    let env = TestEnv::new().await;
    let app = app(&env, Some("s3cret"));
    let task = json!({"agent_type": "echo", "data": 1}).to_string();
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post(task.clone(), None),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            post(task.clone(), Some("wrong")),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            post("{not json", Some("s3cret")),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            post(
                json!({"agent_type": "echo", "priority": 12}).to_string(),
                Some("s3cret"),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_task",
        ),
        (
            post(
                json!({"agent_type": "echo", "priority": "high"}).to_string(),
                Some("s3cret"),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            post(json!({"agent_type": "a.b"}).to_string(), Some("s3cret")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_task",
        ),
        (
            post(json!({"tasks": []}).to_string(), Some("s3cret")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
        ),
        (
            post(vec![b'x'; api::MAX_BODY_BYTES + 10], Some("s3cret")),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (get("/v1/tasks/nope"), StatusCode::BAD_REQUEST, "invalid_id"),
        (
            get(format!("/v1/tasks/{}", uuid::Uuid::new_v4())),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (request, expected_status, expected_code) in cases {
        let (status, body) = call(&app, request).await;
        assert_eq!(status, expected_status, "{body}");
        assert_eq!(body["error"]["code"], expected_code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(env.stream_messages().await, 0, "nothing was published");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_over_tcp_with_health_ready_and_metrics() {
    let env = TestEnv::new().await;
    let (addr, server) = swarm_director::http::serve(
        "127.0.0.1:0",
        app(&env, Some("s3cret")),
        std::future::pending(),
    )
    .await
    .unwrap();
    let raw = |request: String| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let body = json!({"agent_type": "echo", "data": "over tcp"}).to_string();
    let published = raw(format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(published.starts_with("HTTP/1.1 202"), "{published}");
    let ready = raw("GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await;
    assert!(
        ready.starts_with("HTTP/1.1 200")
            && ready.contains("\"database\":true")
            && ready.contains("\"redis\":true"),
        "{ready}"
    );
    let health = raw("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("\r\n\r\nok\n"),
        "{health}"
    );
    let anonymous =
        raw("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await;
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    let metrics = raw(format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(
        metrics
            .contains(r#"http_requests_total{endpoint="/v1/tasks",method="POST",status="202"} 1"#),
        "{metrics}"
    );
    server.abort();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_show_a_backlog_and_dead_letters_can_be_listed_and_replayed() {
    let env = TestEnv::new().await;
    let app = app(&env, Some("s3cret"));
    let backlog = json!({"tasks": [
        {"agent_type": "echo", "data": 1, "priority": 7},
        {"agent_type": "echo", "data": 2, "priority": 7},
        {"agent_type": "quality", "data": {"text": "x"}, "priority": 2},
    ]});
    let (status, _) = call(&app, post(backlog.to_string(), Some("s3cret"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, queues) = call(&app, get("/v1/queues")).await;
    assert_eq!(status, StatusCode::OK);
    let p7 = queues["priorities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["priority"] == 7)
        .unwrap();
    assert_eq!(p7["pending"], 2);
    assert!(p7["oldest_pending_secs"].as_i64().unwrap() >= 1, "{queues}");
    assert_eq!(queues["agent_types"], json!({"echo": 2, "quality": 1}));

    // A task that fails for good, listed and replayed through the API.
    let (_, body) = call(
        &app,
        post(
            json!({"agent_type": "fail", "data": {"permanent": true}}).to_string(),
            Some("s3cret"),
        ),
    )
    .await;
    let dead_id = body["id"].as_str().unwrap().to_string();
    let worker = env.spawn(env.worker());
    env.wait_dead_letters(1, Duration::from_secs(10)).await;
    let (status, listed) = call(&app, get("/v1/dlq?reason=permanent_error")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["dead_letters"][0]["id"], dead_id.as_str());
    let (status, _) = call(&app, get("/v1/dlq?reason=nonsense")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Ages in the fleet's one duration grammar, as `swarmd dlq list --since` takes them.
    let (status, recent) = call(&app, get("/v1/dlq?since=2h")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        recent["dead_letters"][0]["id"],
        dead_id.as_str(),
        "{recent}"
    );
    let (status, older) = call(&app, get("/v1/dlq?until=1h30m")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        older["dead_letters"],
        json!([]),
        "none died that long ago: {older}"
    );
    let (status, refused) = call(&app, get("/v1/dlq?since=2x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused.to_string().contains("RFC 3339"), "{refused}");

    let replay = |token: Option<&str>| {
        let mut request = Request::post(format!("/v1/dlq/{dead_id}/replay"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    let (status, _) = call(&app, replay(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, replayed) = call(&app, replay(Some("s3cret"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(replayed["replay_of"], dead_id.as_str());
    let new_id: uuid::Uuid = replayed["id"].as_str().unwrap().parse().unwrap();
    let rows = env.wait_finished(&[new_id], Duration::from_secs(10)).await;
    assert_eq!(
        rows[0].replay_of.map(|id| id.to_string()),
        Some(dead_id.clone())
    );
    let (status, _) = call(&app, replay(Some("s3cret"))).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a replayed dead letter is gone"
    );
    worker.stop().await;
    env.cleanup().await;
}

#[test]
#[should_panic(expected = "breaks the schema")]
fn the_openapi_check_catches_a_wrong_response() {
    assert_openapi_response(
        "get",
        "/v1/tasks/{id}",
        200,
        &json!({"id": 7, "status": "lost"}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_get_a_422_naming_the_rule_and_leave_no_row() {
    let env = TestEnv::new().await;
    let app = app(&env, Some("t"));
    let cases = [
        (
            json!({"agent_type": "echo", "data": {"s": "a\u{0}b"}}),
            "NUL",
        ),
        (
            json!({"agent_type": "echo", "data": {"k\u{0}": 1}}),
            "a key in data",
        ),
        (
            json!({"agent_type": "echo", "data": 1, "timeout": 1e20}),
            "timeout",
        ),
        (
            json!({"agent_type": "echo", "data": 1, "priority": 10}),
            "priority",
        ),
    ];
    for (task, words) in cases {
        let (status, body) = call(&app, post(task.to_string(), Some("t"))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{task}: {body}");
        assert_openapi_response("post", "/v1/tasks", 422, &body);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message} lacks {words}");
    }
    // An integer written as a float is an integer (JSON Schema agrees).
    let task = json!({"agent_type": "echo", "data": 1, "max_attempts": 94.0, "priority": 3.0});
    let (status, body) = call(&app, post(task.to_string(), Some("t"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (counts, _) = env.store.reads().status_counts().await.unwrap();
    assert_eq!(
        counts.values().sum::<i64>(),
        1,
        "only the good task has a row"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_published_part_way_says_which_tasks_failed_and_leaves_no_orphan() {
    let env = TestEnv::new().await;
    // The stream takes three more messages, then refuses new ones.
    env.cap_stream(3).await;
    let app = app(&env, Some("t"));
    let batch = json!({"tasks": (0..5).map(|i| json!({"agent_type": "echo", "data": i})).collect::<Vec<_>>()});
    let (status, body) = call(&app, post(batch.to_string(), Some("t"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_openapi_response("post", "/v1/tasks", 503, &body);
    let tasks = body["tasks"].as_array().unwrap();
    let with = |status: &str| -> Vec<uuid::Uuid> {
        tasks
            .iter()
            .filter(|t| t["status"] == status)
            .map(|t| t["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let (accepted, failed) = (with("accepted"), with("failed"));
    assert_eq!((accepted.len(), failed.len()), (3, 2), "{body}");
    assert_eq!(
        env.store.tasks().by_ids(&failed).await.unwrap().len(),
        0,
        "no orphan rows"
    );
    let queued = env.store.tasks().by_ids(&accepted).await.unwrap();
    assert!(queued.iter().all(|row| row.status == "queued"));
    assert_eq!(queued.len(), 3);

    // The accepted ones run; nothing is left waiting.
    let worker = env.spawn(env.worker());
    env.wait_finished(&accepted, Duration::from_secs(10)).await;
    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_read_a_page_at_a_time_and_a_bad_record_is_skipped() {
    let env = TestEnv::new().await;
    let app = app(&env, Some("t"));
    let dead_letters = env.dead_letters();
    dead_letters.ensure().await.unwrap();
    let tasks: Vec<_> = (0..7)
        .map(|i| TaskEnvelope::new("fail", json!({"permanent": true, "i": i})))
        .collect();
    for task in &tasks {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let worker = env.spawn(env.worker());
    env.wait_dead_letters(7, Duration::from_secs(10)).await;
    worker.stop().await;
    // A record that is not a dead letter, in the middle of the stream's history.
    env.broker
        .jetstream()
        .publish(
            env.broker.subjects().dead_letter("fail"),
            "not a letter".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut unreadable = 0;
    let mut path = "/v1/dlq?limit=3&reason=".to_string();
    loop {
        let (status, page) = call(&app, get(&path)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_openapi_response("get", "/v1/dlq", 200, &page);
        assert_eq!(page["total"], 8, "every stored record counts");
        let letters = page["dead_letters"].as_array().unwrap();
        assert!(letters.len() <= 3);
        seen.extend(
            letters
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_string()),
        );
        unreadable += page["unreadable"].as_u64().unwrap();
        match page["next_before"].as_u64() {
            Some(before) => path = format!("/v1/dlq?limit=3&before={before}"),
            None => break,
        }
    }
    let expected: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
    assert_eq!(unreadable, 1);
    assert_eq!(seen.len(), 7, "each letter once over the pages");
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort();
    assert_eq!(sorted_seen, sorted_expected);
    let (status, other) = call(&app, get("/v1/dlq?agent_type=echo")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (other["total"].as_u64(), other["next_before"].is_null()),
        (Some(0), true)
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_health_and_ready_needs_a_token_of_its_role() {
    let env = TestEnv::new().await;
    env.dead_letters().ensure().await.unwrap();
    let app = app(&env, Some("s3cret"));
    let unknown = uuid::Uuid::new_v4();
    let reads = [
        format!("/v1/tasks/{unknown}"),
        "/v1/queues".to_string(),
        "/v1/dlq".to_string(),
        "/v1/scale".to_string(),
        "/metrics".to_string(),
    ];
    for path in &reads {
        let response = app.clone().oneshot(get_as(path, None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{path}");
        for token in [READER, "s3cret"] {
            let (status, body) = call(&app, get_as(path, Some(token))).await;
            assert!(
                status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                "{path} as {token}: {status} {body}"
            );
        }
    }
    let task = json!({"agent_type": "echo", "data": 1}).to_string();
    let replay = |token: Option<&str>| {
        let mut request = Request::post(format!("/v1/dlq/{unknown}/replay"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    for (request, expected) in [
        (post(task.clone(), None), StatusCode::UNAUTHORIZED),
        (post(task.clone(), Some(READER)), StatusCode::FORBIDDEN),
        (post(task.clone(), Some("s3cret")), StatusCode::ACCEPTED),
        (replay(None), StatusCode::UNAUTHORIZED),
        (replay(Some(READER)), StatusCode::FORBIDDEN),
        (replay(Some("s3cret")), StatusCode::NOT_FOUND),
    ] {
        let (status, body) = call(&app, request).await;
        assert_eq!(status, expected, "{body}");
        if status == StatusCode::FORBIDDEN {
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
    for path in ["/health", "/ready"] {
        let (status, _) = call(&app, get_as(path, None)).await;
        assert_eq!(status, StatusCode::OK, "{path} is open to probes");
    }
    // The token is checked before the body is read: an anonymous 2 MiB body gets 401, not
    // 413, and is never parsed.
    let huge = format!(
        r#"{{"agent_type": "echo", "data": "{}"}}"#,
        "x".repeat(2 << 20)
    );
    let (status, _) = call(&app, post(huge, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The scheme is matched in any case.
    let lower = Request::post("/v1/tasks")
        .header("content-type", "application/json")
        .header("authorization", "bearer s3cret")
        .body(Body::from(task))
        .unwrap();
    assert_eq!(call(&app, lower).await.0, StatusCode::ACCEPTED);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_gets_429_and_others_are_unaffected() {
    let env = TestEnv::new().await;
    let app = app_with(&env, Some("s3cret"), 1.0);
    // A burst of twice the rate, then refused.
    for _ in 0..2 {
        assert_eq!(call(&app, get("/v1/queues")).await.0, StatusCode::OK);
    }
    let response = app.clone().oneshot(get("/v1/queues")).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, _) = call(&app, get_as("/v1/queues", Some("s3cret"))).await;
    assert_eq!(status, StatusCode::OK, "another token has its own bucket");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_bounds_get_503_instead_of_piling_up() {
    let env = TestEnv::new().await;
    let state = || {
        Arc::new(ApiState {
            broker: env.broker.clone(),
            store: env.store.clone(),
            access: Arc::new(Access::with_tokens(&["s3cret"], &[READER], 0.0)),
            redis: None,
            meter: Arc::default(),
            events: Default::default(),
            trace_url: swarm_director::config::DEFAULT_TRACE_URL.into(),
            legacy_keys: Some(swarm_director::mirror::LegacyKeys::of(&env.settings.redis)),
        })
    };
    // One request at a time: while one holds the only slot (its body never ends), the next
    // is shed at once.
    let one_at_a_time = api::router(
        state(),
        api::Limits {
            request_timeout: Duration::from_secs(30),
            max_concurrent: 1,
            ..api::Limits::default()
        },
    );
    let (_keep_open, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let endless = Body::from_stream(tokio_stream_of(body));
    let holder = tokio::spawn(one_at_a_time.clone().oneshot(post(endless, Some("s3cret"))));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = call(&one_at_a_time, get("/v1/queues")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    holder.abort();
    // A request not answered in time: its body never ends (a route that answers within
    // the timer's first millisecond would race a nanosecond bound).
    let hasty = api::router(
        state(),
        api::Limits {
            request_timeout: Duration::from_millis(200),
            max_concurrent: 8,
            max_wait: Duration::ZERO,
        },
    );
    let (_keep_open, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let endless = Body::from_stream(tokio_stream_of(body));
    let (status, body) = call(&hasty, post(endless, Some("s3cret"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    env.cleanup().await;
}

/// A body stream fed by `receiver` (ends when the sender is dropped).
fn tokio_stream_of(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_without_a_token_refuses_to_start_unless_told_it_is_insecure() {
    let env = TestEnv::new().await;
    let output = env
        .swarmd()
        .args(["api", "--addr", "127.0.0.1:0"])
        .env_remove("SWARM_API_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no API token configured") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    let output = env
        .swarmd()
        .args(["api", "--addr", "127.0.0.1:0"])
        .env("SWARM_API_TOKEN", "good, ,also-good")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("an empty token"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let insecure = app(&env, None);
    let response = insecure
        .clone()
        .oneshot(get_as("/health", None))
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"ok (insecure: API authentication is off)\n");
    env.cleanup().await;
}

/// Concurrent `record_queued` calls share statements; a value the database refuses fails
/// its own call only, and every other call's rows are written with their own trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_queued_rows_fail_only_the_caller_whose_value_is_refused() {
    use swarm_director::task::TaskEnvelope;
    let env = TestEnv::new().await;
    let calls: Vec<_> = (0..50)
        .map(|n| {
            // PostgreSQL refuses a NUL in jsonb (the API's checks would stop it earlier).
            let data = if n == 17 {
                json!("\u{0}")
            } else {
                json!({ "n": n })
            };
            let task = TaskEnvelope::new("echo", data);
            let (store, trace) = (env.store.clone(), format!("{n:032x}"));
            tokio::spawn(async move {
                let written = store
                    .tasks()
                    .record_queued(std::slice::from_ref(&task), Some(&trace))
                    .await;
                (task.id, trace, written)
            })
        })
        .collect();
    let mut refused = 0;
    for call in calls {
        let (id, trace, written) = call.await.unwrap();
        match written {
            Ok(()) => {
                let row = env.store.tasks().get(id).await.unwrap().expect("its row");
                assert_eq!(
                    (row.status.as_str(), row.trace_id.as_deref()),
                    ("queued", Some(trace.as_str()))
                );
            }
            Err(error) => {
                refused += 1;
                use swarm_director::fault::Classify as _;
                assert_eq!(
                    error.fault(),
                    swarm_director::fault::Fault::Permanent,
                    "{error}"
                );
                assert!(env.store.tasks().get(id).await.unwrap().is_none());
            }
        }
    }
    assert_eq!(refused, 1, "only the call with the NUL");
    env.cleanup().await;
}
