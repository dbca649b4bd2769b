//! `sleep`: waits `ms` milliseconds (`{"ms": 5}`), then returns `{"slept_ms": ms}`.
//! Stands in for slow I/O-bound work in tests of leases, timeouts, shutdown and progress:
//! it reports progress in tenths, and after a retry resumes from the last one reported
//! (`{"slept_ms": ms, "resumed_from": n}`). It stops when its task is cancelled, unless
//! told `"ignore_cancel": true`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::agent::{Agent, AgentContext, AgentError};

pub struct SleepAgent;

#[async_trait]
impl Agent for SleepAgent {
    fn name(&self) -> &'static str {
        "sleep"
    }

    async fn run(&self, input: &Value, context: &AgentContext) -> Result<Value, AgentError> {
        let ms = input
            .get("ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| AgentError::invalid_input("ms", "a whole number of milliseconds"))?;
        // Resumed after a retry: what an earlier attempt slept already counts.
        let resumed_from = context
            .checkpoint
            .as_ref()
            .and_then(|c| c.pointer("/detail/slept_ms"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(ms);
        let step = (ms / 10).max(1);
        let mut slept = resumed_from;
        // `"ignore_cancel": true` stands in for an agent that never looks (tests of the
        // grace period).
        let hears_cancel = !input
            .get("ignore_cancel")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        while slept < ms {
            let nap = step.min(ms - slept);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(nap)) => {}
                by = context.cancellation.cancelled(), if hears_cancel => {
                    return Err(AgentError::Permanent(format!("cancelled by {by}")));
                }
            }
            slept += nap;
            context
                .progress
                .report(slept as f64 / ms as f64, json!({ "slept_ms": slept }));
        }
        if resumed_from > 0 {
            Ok(json!({ "slept_ms": ms, "resumed_from": resumed_from }))
        } else {
            Ok(json!({ "slept_ms": ms }))
        }
    }
}
