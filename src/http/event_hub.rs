//! The API process's one feed of live events for the dashboard: an `overview` (the backlog
//! per priority and lane, outcomes per minute) read once a second while anybody watches, and
//! what workers announce on `<prefix>.events.*` — `settled` (each settled batch: task ids and
//! their new status) and `progress` (each round of progress reports).

use std::{sync::OnceLock, time::Duration};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::{broker::Broker, store::Store};

/// How often the overview is read while somebody watches.
const OVERVIEW_EVERY: Duration = Duration::from_secs(1);
/// Outcomes per minute are read every this many overviews.
const THROUGHPUT_EVERY: u32 = 5;
/// Events a slow viewer may fall behind before it skips some.
const BACKLOG: usize = 256;

/// The process's feed of live events.
#[derive(Default)]
pub struct EventHub {
    sender: OnceLock<broadcast::Sender<(String, Value)>>,
}

impl EventHub {
    /// A receiver of every event from now on; the feeds start with the first viewer.
    pub(super) fn subscribe(
        &self,
        broker: &Broker,
        store: &Store,
    ) -> broadcast::Receiver<(String, Value)> {
        self.sender
            .get_or_init(|| {
                let (sender, _) = broadcast::channel(BACKLOG);
                tokio::spawn(feed_overview(broker.clone(), store.clone(), sender.clone()));
                tokio::spawn(feed_worker_events(broker.clone(), sender.clone()));
                sender
            })
            .subscribe()
    }
}

async fn feed_overview(broker: Broker, store: Store, sender: broadcast::Sender<(String, Value)>) {
    let mut tick = tokio::time::interval(OVERVIEW_EVERY);
    let mut round = 0u32;
    let mut throughput = Value::Null;
    loop {
        tick.tick().await;
        if sender.receiver_count() == 0 {
            continue;
        }
        if round.is_multiple_of(THROUGHPUT_EVERY) {
            throughput = match store.search().outcomes_per_minute(60).await {
                Ok(minutes) => json!(minutes),
                Err(error) => {
                    tracing::debug!(%error, "cannot count outcomes for the dashboard");
                    throughput
                }
            };
        }
        round = round.wrapping_add(1);
        let queues = match broker.lanes().backlog().await {
            Ok(backlog) => json!(backlog),
            Err(error) => {
                tracing::debug!(%error, "cannot read the backlog for the dashboard");
                continue;
            }
        };
        let _ = sender.send((
            "overview".into(),
            json!({ "queues": queues, "throughput": throughput, "at": chrono::Utc::now() }),
        ));
    }
}

async fn feed_worker_events(broker: Broker, sender: broadcast::Sender<(String, Value)>) {
    let subject = broker.subjects().worker_events();
    let mut events = match broker.client().subscribe(subject).await {
        Ok(events) => events,
        Err(error) => {
            tracing::warn!(%error, "cannot hear the workers' events; the dashboard shows overviews only");
            return;
        }
    };
    while let Some(message) = events.next().await {
        let kind = message.subject.rsplit('.').next().unwrap_or_default();
        if !matches!(kind, "settled" | "progress") {
            continue;
        }
        if let Ok(data) = serde_json::from_slice::<Value>(&message.payload) {
            let _ = sender.send((kind.to_string(), data));
        }
    }
}
