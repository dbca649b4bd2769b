//! Progress: an agent reports through its context, the latest report is stored a few times
//! a second and read over HTTP while the task runs, and a retried attempt resumes from it.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};

use crate::{
    api::{app, call, get},
    support::{TestEnv, eventually},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_moves_while_a_task_runs_and_a_retry_resumes_from_it() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let app = app(&env, Some("progress-token"));
    let slow = TaskEnvelope::new("sleep", json!({"ms": 3000}));
    env.broker.publish(&slow, Codec::Json).await.unwrap();
    // Seen moving over HTTP while it runs: two different fractions between 0 and 1.
    let seen = std::sync::Mutex::new(Vec::<f64>::new());
    eventually("progress moving", Duration::from_secs(10), || async {
        let (status, body) = call(&app, get(format!("/v1/tasks/{}", slow.id))).await;
        let mut seen = seen.lock().unwrap();
        if status == StatusCode::OK
            && let Some(fraction) = body["progress"]["fraction"].as_f64()
            && fraction < 1.0
            && !seen.contains(&fraction)
        {
            crate::support::schemas::assert_openapi_response("get", "/v1/tasks/{id}", 200, &body);
            seen.push(fraction);
        }
        (seen.len() >= 2).then_some(())
    })
    .await;

    // An attempt cut short by its timeout: the next one resumes where it was.
    let mut cut = TaskEnvelope::new("sleep", json!({"ms": 1500}));
    cut.timeout = Some(1.0);
    env.broker.publish(&cut, Codec::Json).await.unwrap();
    let rows = env
        .wait_finished(&[slow.id, cut.id], Duration::from_secs(20))
        .await;
    worker.stop().await;
    let cut_row = rows.iter().find(|r| r.id == cut.id).unwrap();
    assert_eq!(cut_row.status, "completed", "{:?}", cut_row.last_error);
    assert_eq!(cut_row.attempts, 2);
    let resumed = cut_row.result.as_ref().unwrap()["resumed_from"]
        .as_u64()
        .expect("resumed from a checkpoint");
    assert!((1..1500).contains(&resumed), "{resumed}");
    env.cleanup().await;
}
