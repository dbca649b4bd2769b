//! One trace from producer to database: the worker's spans continue the producer's span
//! through the NATS headers, retries stay in the trace, and spans really leave the process
//! over OTLP/HTTP.

use std::{sync::OnceLock, time::Duration};

use opentelemetry::trace::{SpanId, TraceId, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use prost::Message as _;
use serde_json::json;
use swarm_director::{
    task::{Codec, TaskEnvelope},
    telemetry,
};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

use crate::support::TestEnv;

/// The process-wide subscriber of this test binary process, exporting to memory.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = PROVIDER.get_or_init(|| {
            SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build()
        });
        tracing_subscriber::registry()
            .with(telemetry::trace_layer(provider.tracer("test")))
            .init();
        exporter
    })
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

fn children(spans: &[SpanData], parent: SpanId) -> Vec<&str> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent)
        .map(|s| s.name.as_ref())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_and_its_retry_form_one_trace_from_the_producer() {
    exporter();
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let task = TaskEnvelope::new("fail", json!({"succeed_on_attempt": 2}));
    env.broker.publish(&task, Codec::Json).await.unwrap();
    let rows = env.wait_finished(&[task.id], Duration::from_secs(10)).await;
    worker.stop().await;

    let publish = exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .find(|s| {
            s.name.starts_with("publish ") && attribute(s, "task.id") == Some(task.id.to_string())
        })
        .expect("the producer's span");
    let trace = publish.span_context.trace_id();
    assert_eq!(
        rows[0].trace_id,
        Some(trace.to_string()),
        "trace id stored with the row"
    );

    let spans = spans_of(trace);
    let processes: Vec<&SpanData> = spans.iter().filter(|s| s.name == "process fail").collect();
    assert_eq!(
        processes.len(),
        2,
        "both attempts in the producer's trace: {:?}",
        spans.iter().map(|s| s.name.as_ref()).collect::<Vec<_>>()
    );
    for process in &processes {
        assert_eq!(
            process.parent_span_id,
            publish.span_context.span_id(),
            "child of the producer"
        );
        assert_eq!(
            attribute(process, "messaging.system").as_deref(),
            Some("nats")
        );
        assert_eq!(
            attribute(process, "messaging.message.id"),
            Some(task.id.to_string())
        );
        assert_eq!(attribute(process, "agent_type").as_deref(), Some("fail"));
        let kids = children(&spans, process.span_context.span_id());
        for expected in ["agent.run", "db.commit", "ack"] {
            assert!(
                kids.contains(&expected),
                "{expected} missing under process: {kids:?}"
            );
        }
    }
    let attempts: Vec<String> = processes
        .iter()
        .filter_map(|p| attribute(p, "attempt"))
        .collect();
    assert!(
        attempts.contains(&"1".to_string()) && attempts.contains(&"2".to_string()),
        "{attempts:?}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_keeps_the_trace_and_its_replay_continues_it() {
    exporter();
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let task = TaskEnvelope::new("fail", json!({"permanent": true}));
    env.broker.publish(&task, Codec::Json).await.unwrap();
    let letters = env.wait_dead_letters(1, Duration::from_secs(10)).await;
    let letter = &letters[0];
    let trace_id = letter
        .letter
        .trace_id
        .clone()
        .expect("trace id in the dead letter");
    assert!(
        letter
            .letter
            .traceparent
            .as_deref()
            .unwrap()
            .contains(&trace_id)
    );

    let replayed = swarm_director::dlq::replay(&env.broker, &env.dead_letters(), letter)
        .await
        .unwrap();
    let rows = env
        .wait_finished(&[replayed], Duration::from_secs(10))
        .await;
    worker.stop().await;
    assert_eq!(
        rows[0].trace_id.as_deref(),
        Some(trace_id.as_str()),
        "the replay joins the trace"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_producers_traceparent_is_continued_through_the_api() {
    use tower::ServiceExt;
    exporter();
    let env = TestEnv::new().await;
    let app = swarm_director::http::api::router(
        std::sync::Arc::new(swarm_director::http::api::ApiState {
            broker: env.broker.clone(),
            store: env.store.clone(),
            access: std::sync::Arc::new(swarm_director::http::auth::Access::insecure()),
            redis: None,
            meter: std::sync::Arc::default(),
            events: Default::default(),
            trace_url: swarm_director::config::DEFAULT_TRACE_URL.into(),
            legacy_keys: None,
        }),
        swarm_director::http::api::Limits::default(),
    );
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let request = axum::http::Request::post("/v1/tasks")
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .body(axum::body::Body::from(
            json!({"agent_type": "echo", "data": {"via": "http"}}).to_string(),
        ))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["trace_id"], caller_trace);
    let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let worker = env.spawn(env.worker());
    let rows = env.wait_finished(&[id], Duration::from_secs(10)).await;
    worker.stop().await;
    assert_eq!(rows[0].trace_id.as_deref(), Some(caller_trace));

    // caller -> POST /v1/tasks -> publish -> process, all in the caller's trace.
    let spans = spans_of(TraceId::from_hex(caller_trace).unwrap());
    let server = spans
        .iter()
        .find(|s| s.name == "POST /v1/tasks")
        .expect("the request's span in the caller's trace");
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex(caller_span).unwrap()
    );
    let publish = spans
        .iter()
        .find(|s| {
            s.name.starts_with("publish ") && s.parent_span_id == server.span_context.span_id()
        })
        .expect("the publish under the request");
    assert!(
        spans.iter().any(|s| s.name == "process echo"
            && s.parent_span_id == publish.span_context.span_id()),
        "{:?}",
        spans.iter().map(|s| s.name.as_ref()).collect::<Vec<_>>()
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    let receiver = crate::support::otlp::OtlpReceiver::start().await;
    let provider = telemetry::otlp_provider(&receiver.endpoint).unwrap();
    provider.tracer("swarmd").in_span("probe", |_| {});
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();

    let bodies = receiver.bodies();
    assert!(!bodies.is_empty(), "no OTLP request arrived");
    let names: Vec<String> = bodies
        .iter()
        .flat_map(|body| {
            ExportTraceServiceRequest::decode(body.as_ref())
                .expect("an OTLP protobuf body")
                .resource_spans
        })
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .map(|s| s.name)
        .collect();
    assert!(names.contains(&"probe".to_string()), "{names:?}");
}
