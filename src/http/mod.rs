//! The HTTP side of a process: `/metrics` and `/health` for every worker, the request
//! metrics middleware that every route shares, readiness and scale signals ([`probes`]), and
//! the publishers' API ([`api`], publishing in `publish`) and who may use it ([`auth`]).

pub mod api;
pub mod auth;
mod browse;
mod cancel;
mod dead_letter_actions;
mod event_hub;
pub mod events;
pub mod probes;
mod publish;
mod request;
mod schedules;
mod state;
pub mod ui;

use std::{net::SocketAddr, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::metrics::Metrics;

/// `GET /metrics` (Prometheus text) and `GET /health`, with request metrics.
pub fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .layer(middleware::from_fn(track))
}

pub(crate) async fn metrics() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        Metrics::global().render(),
    )
}

/// Counts and times every request by method, route template (never the raw path, so
/// label values stay bounded) and status.
pub async fn track(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = Metrics::global();
    metrics
        .http_requests
        .with_label_values(&[method, &endpoint, response.status().as_str()])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[method, &endpoint])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a metric label: the standard ones by name, any other (a client may send
/// any token as a method) as `OTHER`, so label values stay bounded.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Serves `router` on `addr` until `shutdown`; returns the bound address (port 0 picks one).
///
/// Fails when the address cannot be bound.
pub async fn serve(
    addr: &str,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "HTTP server stopped");
        }
    });
    Ok((bound, handle))
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let odd = Method::from_bytes(b"X-RANDOM-123").unwrap();
        assert_eq!(method_label(&odd), "OTHER");
    }
}
