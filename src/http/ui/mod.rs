//! The dashboard at `/ui`: one page of plain HTML, CSS and script embedded in the binary
//! (no front-end build), talking to the API with the operator's token. The page itself holds
//! no data, so it is served without a token; a strict Content-Security-Policy keeps it to
//! its own script and origin.

use axum::{
    Json, Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// What the page may load, run and connect to: itself only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes; `trace_url` links trace ids (`{trace_id}` replaced).
pub fn router(trace_url: String) -> Router {
    Router::new()
        .route(
            "/ui",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/ui/config.json",
            get(move || async move { Json(json!({ "trace_url": trace_url })) }),
        )
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
