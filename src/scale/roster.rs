//! Who is working: every worker answers a roll call on `<prefix>.workers.roll` with what it
//! serves and how busy it is. Core NATS request with many replies, so a worker that died
//! simply stops answering; nothing to clean up.

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, BrokerError};

/// One worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerPresence {
    pub worker_id: String,
    /// Operating-system process id, for an operator on that host.
    pub pid: u32,
    /// The agent types it takes: `all`, `only a,b` or `all but a,b`.
    pub agents: String,
    pub concurrency: usize,
    pub in_flight: usize,
    /// The `swarmd` version it runs (empty from workers older than this field).
    #[serde(default)]
    pub version: String,
    /// Each agent type it runs and how: `built-in`, `process` or `http`.
    #[serde(default)]
    pub agent_kinds: std::collections::BTreeMap<String, String>,
}

/// Answers roll calls with `presence()` until `stop` completes.
///
/// Fails when the subscription cannot be made.
pub async fn answer_roll_calls(
    broker: Broker,
    presence: impl Fn() -> WorkerPresence,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), BrokerError> {
    let client = broker.client().clone();
    let mut calls = client
        .subscribe(broker.subjects().roll_call())
        .await
        .map_err(|e| BrokerError::Request(e.into()))?;
    tokio::pin!(stop);
    loop {
        let call = tokio::select! {
            _ = &mut stop => return Ok(()),
            call = calls.next() => call,
        };
        let Some(call) = call else {
            return Ok(());
        };
        let Some(reply) = call.reply else {
            continue;
        };
        let body = serde_json::to_vec(&presence()).expect("presence serializes");
        if let Err(error) = client.publish(reply, body.into()).await {
            tracing::debug!(%error, "cannot answer a roll call");
        }
    }
}

/// Calls the roll and collects the answers that arrive within `wait`, sorted by worker id.
///
/// Fails when the call cannot be sent.
pub async fn roll_call(
    broker: &Broker,
    wait: Duration,
) -> Result<Vec<WorkerPresence>, BrokerError> {
    let client = broker.client();
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| BrokerError::Request(e.into()))?;
    client
        .publish_with_reply(broker.subjects().roll_call(), inbox, "".into())
        .await
        .map_err(|e| BrokerError::Request(e.into()))?;
    client
        .flush()
        .await
        .map_err(|e| BrokerError::Request(e.into()))?;
    let mut present = Vec::new();
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            answer = answers.next() => match answer {
                Some(answer) => match serde_json::from_slice::<WorkerPresence>(&answer.payload) {
                    Ok(presence) => present.push(presence),
                    Err(error) => tracing::debug!(%error, "unreadable roll-call answer"),
                },
                None => break,
            },
        }
    }
    present.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(present)
}
