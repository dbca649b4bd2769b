//! Logs and traces. Logs are structured (`tracing`), human-readable or JSON. Traces follow a
//! task from its producer to the database: the producer's span context travels in the NATS
//! headers (W3C `traceparent`/`tracestate`) and the worker's spans continue that trace.
//! Spans are exported over OTLP/HTTP only when an endpoint is configured; without one no
//! OpenTelemetry layer is installed and spans cost what a plain `tracing` span costs.

use async_nats::HeaderMap;
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// Keeps the exporter alive; dropping it flushes the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber: a log layer filtered by `filter`, and an OpenTelemetry
/// layer exporting to `otlp_endpoint` (an OTLP/HTTP base URL such as `http://jaeger:4318`)
/// when one is given.
///
/// Fails when the exporter cannot be built; call once, inside the Tokio runtime.
pub fn init(
    filter: &str,
    json_logs: bool,
    otlp_endpoint: Option<&str>,
    log_file: Option<std::fs::File>,
) -> Result<Telemetry, TelemetryError> {
    let provider = otlp_endpoint
        .filter(|endpoint| !endpoint.is_empty())
        .map(otlp_provider)
        .transpose()?;
    let logs = match log_file {
        Some(file) => log_layer_to(filter, json_logs, std::sync::Mutex::new(file)),
        None => log_layer(filter, json_logs),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(provider.as_ref().map(|p| trace_layer(p.tracer("swarmd"))))
        .init();
    Ok(Telemetry { provider })
}

/// Dependencies' modules held at most at a level unless the filter names them: async-nats's
/// connector prints each server address with its password at debug (and one line per
/// connection at info); sqlx prints PostgreSQL's NOTICEs at info, which the migrations'
/// `IF EXISTS` guards raise on a fresh database.
const CAPPED_MODULES: [(&str, LevelFilter); 3] = [
    ("async_nats", LevelFilter::WARN),
    ("async_nats::connector", LevelFilter::INFO),
    ("sqlx::postgres::notice", LevelFilter::WARN),
];

/// `filter` with each of [`CAPPED_MODULES`] at the quieter of its cap and the level the
/// filter gives it, so `SWARM_LOG=debug` never prints a password and `SWARM_LOG=warn`
/// prints no connection line.
fn confined(filter: &str) -> String {
    let mut confined = filter.to_string();
    for (module, cap) in CAPPED_MODULES {
        if !filter.contains(module) {
            let level = level_for(filter, module).min(cap);
            confined.push_str(&format!(",{module}={level}"));
        }
    }
    confined
}

/// The level `filter` gives events of `target`: its most specific `target=level` directive
/// naming `target` or a parent module, else its bare level, else `error` (as EnvFilter).
fn level_for(filter: &str, target: &str) -> LevelFilter {
    let mut best: Option<(usize, LevelFilter)> = None;
    let mut bare = None;
    for directive in filter.split(',').map(str::trim) {
        // Span and field directives (`[span{field}]`) never match a plain event's target.
        if directive.contains('[') {
            continue;
        }
        match directive.split_once('=') {
            Some((module, level)) => {
                let names = target == module
                    || target
                        .strip_prefix(module)
                        .is_some_and(|rest| rest.starts_with("::"));
                if let (true, Ok(level)) = (names, level.parse::<LevelFilter>())
                    && best.is_none_or(|(length, _)| module.len() > length)
                {
                    best = Some((module.len(), level));
                }
            }
            None => bare = directive.parse::<LevelFilter>().ok().or(bare),
        }
    }
    best.map(|(_, level)| level)
        .or(bare)
        .unwrap_or(LevelFilter::ERROR)
}

/// The log layer, filtered on its own so traces can hold finer spans than the logs show.
pub fn log_layer<S>(filter: &str, json: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    log_layer_to(filter, json, std::io::stderr)
}

/// The log layer writing to `writer` (a file, for commands whose own output is the point).
fn log_layer_to<S, W>(filter: &str, json: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(confined(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    if json {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    }
}

/// The OpenTelemetry layer: every fleet span (the per-task ones are at debug level, so they
/// cost nothing when no exporter is set).
pub fn trace_layer<S>(
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::new("warn,swarm_director=debug"))
        .boxed()
}

/// An OTLP/HTTP exporter of spans to `endpoint` with a batching processor.
///
/// Fails when the exporter cannot be built.
pub fn otlp_provider(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    // The hyper client (the `hyper-client` feature) runs on this Tokio runtime.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&traces)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: traces.clone(),
            reason: e.to_string(),
        })?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("swarmd")
                .build(),
        )
        .build())
}

/// Writes the span context of `span` into NATS headers (`traceparent`, `tracestate`). When
/// `span` records no trace (no exporter configured), the caller's context is written instead
/// (`Context::current()`: an HTTP request's incoming `traceparent`, a trace the legacy intake
/// started), so the task still continues it. Writes nothing when neither carries a trace.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = context_or(span, Context::current());
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// The trace an HTTP request continues: its W3C `traceparent` (and `tracestate`) when valid,
/// else a new trace (see [`new_trace`]).
pub fn continue_or_start(headers: &axum::http::HeaderMap) -> Context {
    let incoming = TraceContextPropagator::new().extract(&HttpHeaderExtractor(headers));
    if incoming.span().span_context().is_valid() {
        incoming
    } else {
        new_trace()
    }
}

/// A new trace with random ids, sampled: tasks published under it carry it to the workers
/// and their rows record its id, exporter or not.
pub fn new_trace() -> Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let trace_id = TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes());
    let span_id = SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes());
    Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// Makes `span` a child of `parent` and returns the trace work under it continues: the
/// span's context when an exporter records it, else `parent` itself (attach it with
/// `with_context`, so published tasks still carry it).
pub fn continue_trace(span: &tracing::Span, parent: Context) -> Context {
    let _ = span.set_parent(parent.clone());
    context_or(span, parent)
}

/// The context a span records, or `fallback` when the span records none (no exporter).
pub fn context_or(span: &tracing::Span, fallback: Context) -> Context {
    let context = span.context();
    if context.span().span_context().is_valid() {
        context
    } else {
        fallback
    }
}

/// Reads W3C headers of an HTTP request.
struct HttpHeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HttpHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The producer's span context carried by a message's headers.
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => TraceContextPropagator::new().extract(&HeaderExtractor(headers)),
        None => Context::new(),
    }
}

/// The trace id of a context, as 32 hex digits, when it carries a trace.
pub fn trace_id(context: &Context) -> Option<String> {
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The W3C `traceparent` of a context, when it carries a trace.
pub fn traceparent(context: &Context) -> Option<String> {
    let mut headers = HeaderMap::new();
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(&mut headers));
    headers.get("traceparent").map(|v| v.as_str().to_string())
}

/// A context continuing the trace of a stored `traceparent`.
pub fn from_traceparent(traceparent: &str) -> Context {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", traceparent);
    extract(Some(&headers))
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_modules_are_never_louder_than_the_filter_asks() {
        assert_eq!(
            confined("warn"),
            "warn,async_nats=warn,async_nats::connector=warn,sqlx::postgres::notice=warn"
        );
        assert_eq!(
            confined("info"),
            "info,async_nats=warn,async_nats::connector=info,sqlx::postgres::notice=warn"
        );
        // Debug everywhere never reaches the connector's passwords.
        assert_eq!(
            confined("debug"),
            "debug,async_nats=warn,async_nats::connector=info,sqlx::postgres::notice=warn"
        );
        assert_eq!(
            confined("info,async_nats=error"),
            "info,async_nats=error,async_nats::connector=error,sqlx::postgres::notice=warn"
        );
        // A filter naming the module itself is taken as written.
        assert_eq!(
            confined("async_nats::connector=debug"),
            "async_nats::connector=debug,sqlx::postgres::notice=error"
        );
        assert_eq!(
            level_for("info,async=debug", "async_nats::connector"),
            LevelFilter::INFO
        );
        assert_eq!(
            level_for("swarm_director=debug", "async_nats::connector"),
            LevelFilter::ERROR
        );
    }
}
