//! An OTLP/HTTP trace receiver on a spare loopback port that keeps every raw request body.

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, routing::post};

pub struct OtlpReceiver {
    /// Base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    received: Arc<Mutex<Vec<Bytes>>>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let sink = received.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(body);
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { endpoint, received }
    }

    /// The request bodies received so far (OTLP protobuf).
    pub fn bodies(&self) -> Vec<Bytes> {
        self.received.lock().unwrap().clone()
    }
}
