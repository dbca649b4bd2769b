//! Scale signals: the roll call finds live workers, the backlog per worker and the seed's
//! thresholds decide, and workers and the API serve them with readiness.

use std::{sync::Arc, time::Duration};

use axum::{body::Body, http::Request};
use serde_json::{Value, json};
use swarm_director::{
    config::ScaleSettings,
    http::{
        api::{self, ApiState},
        probes::{self, Probes},
    },
    metrics::Metrics,
    scale::{ScaleMeter, roll_call},
    sidecars::gauges,
    task::AgentFilter,
    task::{Codec, TaskEnvelope},
};
use tower::ServiceExt;

use crate::support::{TestEnv, eventually, schemas::assert_openapi_response};

async fn get_json(app: &axum::Router, path: &str) -> (u16, Value) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_count_live_workers_and_recommend_from_the_backlog() {
    let env = TestEnv::new().await;
    let thresholds = ScaleSettings {
        backlog_per_worker: 10.0,
        // The machine's own load must not decide this test.
        cpu_percent: 100.0,
        memory_percent: 100.0,
        ..ScaleSettings::default()
    };
    let meter = Arc::new(ScaleMeter::new(thresholds));
    let api = api::router(
        Arc::new(ApiState {
            broker: env.broker.clone(),
            store: env.store.clone(),
            access: Arc::new(swarm_director::http::auth::Access::insecure()),
            redis: None,
            meter: meter.clone(),
            events: Default::default(),
            trace_url: swarm_director::config::DEFAULT_TRACE_URL.into(),
            legacy_keys: None,
        }),
        api::Limits::default(),
    );

    // Nobody works and tasks wait: scale up from zero.
    for i in 0..30 {
        let task = TaskEnvelope::new("email", json!({"n": i})).with_priority(3);
        env.broker.publish(&task, Codec::Json).await.unwrap();
    }
    let (status, orphaned) = get_json(&api, "/v1/scale").await;
    assert_eq!(status, 200, "{orphaned}");
    assert_openapi_response("get", "/v1/scale", 200, &orphaned);
    assert_eq!(orphaned["workers"], 0);
    assert_eq!(orphaned["pending"], 30);
    assert_eq!(orphaned["backlog_per_worker"], Value::Null);
    assert_eq!(orphaned["should_scale_up"], true, "{orphaned}");

    // One quality worker answers the roll call; the email backlog is 30 per worker.
    let worker = env.spawn(env.worker_with(|s| {
        s.worker.agents = vec!["quality".into()];
        s.worker.concurrency = swarm_director::config::Concurrency::Fixed(7);
    }));
    let present = eventually("the worker to answer", Duration::from_secs(10), || async {
        let present = roll_call(&env.broker, Duration::from_millis(200))
            .await
            .unwrap();
        (!present.is_empty()).then_some(present)
    })
    .await;
    assert_eq!(present.len(), 1, "{present:?}");
    assert_eq!(present[0].agents, "only quality");
    assert_eq!(present[0].concurrency, 7);

    let (_, signals) = get_json(&api, "/v1/scale").await;
    assert_openapi_response("get", "/v1/scale", 200, &signals);
    assert_eq!(signals["workers"], 1);
    assert_eq!(signals["backlog_per_worker"], 30.0);
    assert_eq!(signals["should_scale_up"], true);
    assert_eq!(signals["should_scale_down"], false);
    let reasons = signals["reasons"].to_string();
    assert!(reasons.contains("per worker"), "{reasons}");
    assert!(signals["recommended_worker_processes"].as_u64().unwrap() >= 1);
    assert!(signals["host"]["cores"].as_u64().unwrap() >= 1);

    // The quality pool's own reading: the email backlog is not its work.
    let pool = ScaleMeter::new(ScaleSettings {
        backlog_per_worker: 10.0,
        cpu_percent: 100.0,
        memory_percent: 100.0,
        ..ScaleSettings::default()
    })
    .for_pool(AgentFilter::Only(["quality".to_string()].into()));
    let own = pool.measure(&env.broker).await.unwrap();
    assert_eq!(own.pool.as_deref(), Some("only quality"));
    assert_eq!((own.workers, own.pending), (1, 0));
    assert!(!own.should_scale_up, "{:?}", own.reasons);
    let email_pool = ScaleMeter::default().for_pool(AgentFilter::Only(["email".into()].into()));
    let orphan = email_pool.measure(&env.broker).await.unwrap();
    assert_eq!((orphan.workers, orphan.pending), (0, 30));
    assert!(
        orphan.should_scale_up,
        "no email worker while email tasks wait"
    );

    // The same reading as gauges, for an autoscaler that scrapes Prometheus.
    let metrics = Metrics::new();
    gauges::refresh(&env.broker, &env.store, &meter, &metrics).await;
    assert_eq!(metrics.fleet_workers.get(), 1);
    assert_eq!(metrics.backlog_per_worker.get(), 30.0);
    assert_eq!(metrics.scale_recommendation.get(), 1);
    assert_eq!(
        metrics.agent_backlog.with_label_values(&["email"]).get(),
        30
    );
    assert!(metrics.host_memory.get() > 0.0);
    // The seed's other readings: this test holds NATS, PostgreSQL and Redis connections.
    assert!(metrics.host_disk.get() > 0.0 && metrics.host_disk.get() <= 100.0);
    assert!(metrics.host_connections.get() >= 3);
    assert!(metrics.host_processes.get() >= 1);

    // A worker's own port serves readiness and the same signals.
    let worker_http = probes::worker_router(Probes {
        broker: env.broker.clone(),
        store: env.store.clone(),
        redis: None,
        meter,
        liveness: None,
    });
    let (status, ready) = get_json(&worker_http, "/ready").await;
    assert_eq!(
        (status, &ready["nats"], &ready["database"]),
        (200, &json!(true), &json!(true))
    );
    let (status, signals) = get_json(&worker_http, "/scale").await;
    assert_eq!((status, &signals["workers"]), (200, &json!(1)));

    worker.stop().await;
    env.cleanup().await;
}
