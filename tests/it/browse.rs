//! What the dashboard reads and does over HTTP: tasks found by status, agent, and inside
//! their data, result and errors; outcomes per minute from the rows; the roll call; every
//! dead letter matching a filter replayed at once.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};

use crate::{
    api::{app, call, get, post_to},
    support::{TestEnv, eventually, schemas::assert_openapi_response},
};

fn read(path: &str) -> axum::http::Request<axum::body::Body> {
    let mut request = get(path);
    request.headers_mut().insert(
        axum::http::header::AUTHORIZATION,
        "Bearer browse-token".parse().unwrap(),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_found_by_what_is_inside_them_and_dead_letters_replayed_by_filter() {
    let env = TestEnv::new().await;
    let app = app(&env, Some("browse-token"));
    let worker = env.spawn(env.worker());
    let wanted = TaskEnvelope::new("echo", json!({"customer": 4242, "note": "Needle in hay"}));
    let others: Vec<TaskEnvelope> = (0..20)
        .map(|i| TaskEnvelope::new("echo", json!({"customer": i, "note": "hay"})))
        .collect();
    let failing: Vec<TaskEnvelope> = (0..3)
        .map(|_| TaskEnvelope::new("fail", json!({"permanent": true, "customer": 7})))
        .collect();
    let all: Vec<TaskEnvelope> = std::iter::once(wanted.clone())
        .chain(others.clone())
        .chain(failing.clone())
        .collect();
    for task in &all {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let ids: Vec<uuid::Uuid> = all.iter().map(|t| t.id).collect();
    env.wait_finished(&ids, Duration::from_secs(15)).await;

    // With the data index (`database.search_index`), made twice: it is idempotent.
    env.store.search().ensure_index().await.unwrap();
    env.store.search().ensure_index().await.unwrap();
    let (status, found) = call(&app, read("/v1/tasks?contains=%7B%22customer%22%3A4242%7D")).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_openapi_response("get", "/v1/tasks", 200, &found);
    assert_eq!(found["tasks"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["tasks"][0]["id"], wanted.id.to_string());
    let (_, by_text) = call(&app, read("/v1/tasks?q=needle")).await;
    assert_eq!(
        by_text["tasks"][0]["id"],
        wanted.id.to_string(),
        "{by_text}"
    );
    let (_, by_error) = call(&app, read("/v1/tasks?q=permanent%20failure&status=dead")).await;
    assert_eq!(by_error["tasks"].as_array().unwrap().len(), 3, "{by_error}");
    // An age past what the database stores means "since ever" (found by schemathesis: it
    // was answered 503), and "until" then reads nothing.
    let (status, ever) = call(&app, read("/v1/tasks?since=946502521h&limit=500")).await;
    assert_eq!(status, StatusCode::OK, "{ever}");
    assert_eq!(ever["tasks"].as_array().unwrap().len(), ids.len(), "{ever}");
    let (status, never) = call(&app, read("/v1/tasks?until=946502521h")).await;
    assert_eq!(
        (status, &never["tasks"]),
        (StatusCode::OK, &json!([])),
        "{never}"
    );
    // Pages: 5 at a time through the 21 echo tasks.
    let mut seen = 0;
    let mut before = String::new();
    loop {
        let path = format!(
            "/v1/tasks?agent_type=echo&limit=5&before={}",
            urlencode(&before)
        );
        let (status, page) = call(&app, read(&path)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen += page["tasks"].as_array().unwrap().len();
        match page["next_before"].as_str() {
            Some(next) => before = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, 21);
    for bad in [
        "/v1/tasks?status=nope",
        "/v1/tasks?contains=42",
        "/v1/tasks?limit=0",
        "/v1/tasks?before=garbage",
    ] {
        let (status, body) = call(&app, read(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    let (_, throughput) = call(&app, read("/v1/throughput")).await;
    assert_openapi_response("get", "/v1/throughput", 200, &throughput);
    let minutes = throughput["minutes"].as_array().unwrap();
    let completed: i64 = minutes
        .iter()
        .map(|m| m["completed"].as_i64().unwrap())
        .sum();
    let dead: i64 = minutes.iter().map(|m| m["dead"].as_i64().unwrap()).sum();
    assert_eq!((completed, dead), (21, 3), "{throughput}");

    let (_, workers) = call(&app, read("/v1/workers")).await;
    assert_openapi_response("get", "/v1/workers", 200, &workers);
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "{workers}");

    // The three dead letters, replayed by one request; they fail again as dead letters.
    eventually("three dead letters", Duration::from_secs(10), || async {
        let (_, page) = call(&app, read("/v1/dlq?agent_type=fail")).await;
        (page["total"] == 3).then_some(())
    })
    .await;
    let (status, replayed) = call(
        &app,
        post_to(
            "/v1/dlq/replay",
            json!({"agent_type": "fail", "reason": "permanent_error"}).to_string(),
            Some("browse-token"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_openapi_response("post", "/v1/dlq/replay", 200, &replayed);
    assert_eq!(replayed["matched"], 3);
    assert_eq!(replayed["replayed"].as_array().unwrap().len(), 3);
    let replays: Vec<uuid::Uuid> = replayed["replayed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["replay"].as_str().unwrap().parse().unwrap())
        .collect();
    env.wait_finished(&replays, Duration::from_secs(15)).await;
    worker.stop().await;
    env.cleanup().await;
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A filter's agent type is a name or nothing: empty reads every letter (as a form left
/// blank), and `*` or `a.b` — wildcards or several tokens as a subject — match no letter
/// instead of all of them or a refusal answered "try again" (found by schemathesis), for
/// reading, replaying and purging alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_invalid_agent_type_filter_means_nothing_or_all_never_a_wildcard() {
    let env = TestEnv::new().await;
    let app = app(&env, Some("browse-token"));
    let worker = env.spawn(env.worker());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let task = TaskEnvelope::new("fail", json!({"permanent": true}));
        env.broker.publish(&task, Codec::Json).await.unwrap();
        ids.push(task.id);
    }
    env.wait_dead_letters(2, Duration::from_secs(10)).await;
    worker.stop().await;
    for agent_type in ["*", ">", "a.b", "fail.>"] {
        let (status, page) = call(
            &app,
            read(&format!("/v1/dlq?agent_type={}", urlencode(agent_type))),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{agent_type}: {page}");
        assert_eq!(page["dead_letters"], json!([]), "{agent_type}: {page}");
        let (status, purged) = call(
            &app,
            post_to(
                "/v1/dlq/purge",
                json!({"agent_type": agent_type}).to_string(),
                Some("browse-token"),
            ),
        )
        .await;
        assert_eq!(
            (status, &purged["matched"]),
            (StatusCode::OK, &json!(0)),
            "{agent_type}: {purged}"
        );
    }
    // Replay reads the same way: one letter chosen, with an empty agent type.
    let (status, replayed) = call(
        &app,
        post_to(
            "/v1/dlq/replay",
            json!({"agent_type": "", "ids": [ids[0]]}).to_string(),
            Some("browse-token"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(
        replayed["replayed"].as_array().map(Vec::len),
        Some(1),
        "{replayed}"
    );
    let (status, purged) = call(
        &app,
        post_to(
            "/v1/dlq/purge",
            json!({"agent_type": ""}).to_string(),
            Some("browse-token"),
        ),
    )
    .await;
    assert_eq!(
        (status, &purged["matched"]),
        (StatusCode::OK, &json!(1)),
        "{purged}"
    );
    env.cleanup().await;
}
