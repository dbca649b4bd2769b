//! Agents behind an HTTP endpoint (`[agents.<name>] url`): the worker POSTs each task — the
//! JSON of the process protocol's `task` line — and the status code says what happened:
//!
//! | answer | the task |
//! |---|---|
//! | 2xx, a JSON body (or none: `null`) | completed with it |
//! | 429 or 503 with `Retry-After` | retried after that long |
//! | other 4xx | dead at once, the body's first KiB as the reason |
//! | 5xx, 429/503 without `Retry-After`, no connection, a broken answer | retried |
//!
//! Requests carry `Idempotency-Key: <task id>:<attempt>`, `traceparent` when traced, and the
//! agent's bearer token (never logged, never in an error). Connections are kept alive, at
//! most `concurrency` per worker process; a cancelled task's request is closed (the agent
//! sees its client go), as is one the worker stops waiting for.

use std::{sync::Mutex, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    Request, StatusCode, Uri,
    client::conn::http1::SendRequest,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER},
};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{Agent, AgentContext, AgentError, process::protocol::TaskMessage};
use crate::config::{HttpSpec, Secret};

/// How much of an error answer's body becomes the task's error.
const REASON_BYTES: usize = 1024;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection kept alive: its request handle and the task driving it.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    /// It carried a request before: the agent may have closed it meanwhile.
    reused: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closes the socket: an abandoned request is not left running at the agent.
        self.driver.abort();
    }
}

/// An agent reached over HTTP.
pub struct HttpAgent {
    name: &'static str,
    uri: Uri,
    /// `host:port` to connect to, and the `Host` header.
    authority: String,
    token: Option<Secret>,
    timeout: Option<Duration>,
    max_result_bytes: usize,
    /// One permit per request at once: the worker holds one while `run` runs.
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

impl HttpAgent {
    /// The agent `name` at `spec`'s URL; a body over `max_result_bytes` is refused.
    ///
    /// Fails on a URL the settings check would have refused.
    pub fn new(
        name: &str,
        spec: &HttpSpec,
        timeout: Option<Duration>,
        max_result_bytes: usize,
    ) -> Result<Self, String> {
        let uri: Uri = spec.url.parse().map_err(|e| format!("{}: {e}", spec.url))?;
        let host = uri.host().ok_or_else(|| format!("{}: no host", spec.url))?;
        let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80));
        Ok(Self {
            name: Box::leak(name.to_string().into_boxed_str()),
            uri,
            authority,
            token: spec.token.clone(),
            timeout,
            max_result_bytes,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(spec.concurrency)),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The URL, as the logs and the roll call show it.
    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    async fn connect(&self) -> Result<Connection, AgentError> {
        let unreachable = |why: String| {
            AgentError::retryable(format!("agent at {} unreachable: {why}", self.uri))
        };
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            driver,
            reused: false,
        })
    }

    /// A kept-alive connection ready for a request, or a new one.
    async fn connection(&self) -> Result<Connection, AgentError> {
        loop {
            let idle = self.idle.lock().expect("idle lock").pop();
            match idle {
                Some(mut connection) => {
                    if connection.sender.ready().await.is_ok() {
                        connection.reused = true;
                        return Ok(connection);
                    }
                }
                None => return self.connect().await,
            }
        }
    }

    fn request(
        &self,
        body: Vec<u8>,
        context: &AgentContext,
    ) -> Result<Request<Full<Bytes>>, AgentError> {
        let mut request = Request::post(self.uri.clone())
            .header(hyper::header::HOST, &self.authority)
            .header(CONTENT_TYPE, "application/json")
            .header(
                "idempotency-key",
                format!("{}:{}", context.task_id, context.attempt),
            );
        if let Some(traceparent) = super::process::protocol::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        if let Some(token) = &self.token {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    AgentError::permanent("the agent's token is not a valid header value")
                })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AgentError::permanent(format!("cannot build the request: {e}")))
    }

    /// Sends the task and reads the answer; the connection comes back when it can be reused.
    async fn exchange(
        &self,
        mut connection: Connection,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<Duration>, Bytes), AgentError> {
        let broken = |why: String| AgentError::retryable(format!("agent at {}: {why}", self.uri));
        let response = connection
            .sender
            .send_request(request)
            .await
            .map_err(|e| broken(format!("no answer ({e})")))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let body = Limited::new(response.into_body(), self.max_result_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    AgentError::permanent(format!(
                        "agent at {} answered a body over the {}-byte result limit",
                        self.uri, self.max_result_bytes
                    ))
                } else {
                    broken(format!("the answer broke off ({e})"))
                }
            })?
            .to_bytes();
        self.idle.lock().expect("idle lock").push(connection);
        Ok((status, retry_after, body))
    }

    /// What the task's attempt amounts to, from the agent's answer.
    fn outcome(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Result<Value, AgentError> {
        let reason = || {
            let text = String::from_utf8_lossy(&body[..body.len().min(REASON_BYTES)]).into_owned();
            format!("agent at {} answered {status}: {text}", self.uri)
        };
        if status.is_success() {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(body).map_err(|e| {
                AgentError::permanent(format!(
                    "agent at {} answered {status} with a body that is not JSON ({e})",
                    self.uri
                ))
            });
        }
        match (status, retry_after) {
            (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE, Some(after)) => {
                Err(AgentError::retry_after(reason(), after))
            }
            (status, _) if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS => {
                Err(AgentError::Permanent(reason()))
            }
            _ => Err(AgentError::Retryable(reason())),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
        .or(Some(Duration::ZERO))
}

#[async_trait]
impl Agent for HttpAgent {
    fn name(&self) -> &'static str {
        self.name
    }

    /// The caller holds a permit of [`Agent::capacity`]: at most `concurrency` at once.
    async fn run(&self, input: &Value, context: &AgentContext) -> Result<Value, AgentError> {
        let task = TaskMessage::of_attempt(self.name, input, context);
        let body = serde_json::to_vec(&task)
            .map_err(|e| AgentError::permanent(format!("cannot send the task: {e}")))?;
        let send = async {
            let connection = self.connection().await?;
            let reused = connection.reused;
            match self
                .exchange(connection, self.request(body.clone(), context)?)
                .await
            {
                // A kept-alive connection the agent closed while it was idle: once more on
                // a new one (the request carries its idempotency key).
                Err(AgentError::Retryable(_)) if reused => {
                    let fresh = self.connect().await?;
                    self.exchange(fresh, self.request(body, context)?).await
                }
                answer => answer,
            }
        };
        tokio::select! {
            answer = send => {
                let (status, retry_after, body) = answer?;
                self.outcome(status, retry_after, &body)
            }
            // Dropping the exchange drops its connection, which closes the request.
            _ = context.cancellation.cancelled() => Err(AgentError::permanent("cancelled")),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn capacity(&self) -> Option<std::sync::Arc<tokio::sync::Semaphore>> {
        Some(self.slots.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let waited = retry_after(&later).unwrap();
        assert!((88..=90).contains(&waited.as_secs()), "{waited:?}");
        assert_eq!(retry_after("soon"), None);
    }
}
