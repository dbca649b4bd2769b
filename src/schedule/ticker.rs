//! The ticker every worker runs: takes due schedules (row locks, so each is handled by one
//! worker at a time), publishes their fires, records the next fire time, commits. A fire
//! published but not recorded (a failed commit) is published again next tick under the
//! same id: one task.

use std::time::Duration;

use chrono::Utc;

use super::Overlap;
use crate::{broker::Broker, store::Store, task::Codec};

/// How often due schedules are looked for: fires are late by at most about this.
const TICK: Duration = Duration::from_millis(200);

/// Fires due schedules until `stop` completes.
pub async fn run(store: Store, broker: Broker, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        if let Err(error) = tick(&store, &broker).await {
            tracing::warn!(%error, "cannot fire schedules; trying again");
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One look: the fires made.
pub async fn tick(store: &Store, broker: &Broker) -> anyhow::Result<usize> {
    let mut tx = store.begin_schedules().await?;
    let due = Store::due_schedules(&mut tx).await?;
    let mut fired = 0;
    for schedule in due {
        let (mut fires, next) = match schedule.due(Utc::now()) {
            Ok(due) => due,
            Err(error) => {
                // Refused at `schedule add`; a row edited by hand is reported, not fired.
                tracing::error!(schedule = %schedule.name, %error, "cannot compute fire times");
                continue;
            }
        };
        if schedule.overlap == Overlap::Skip
            && let Some(last) = schedule.last_task
            && Store::still_running(&mut tx, last).await?
        {
            tracing::info!(schedule = %schedule.name, "fire skipped: the previous one still runs");
            fires.clear();
        }
        let mut last = None;
        for at in fires {
            let task = schedule.fire(at);
            broker.publish(&task, Codec::MessagePack).await?;
            last = Some((at, task.id));
            fired += 1;
        }
        Store::advance_schedule(&mut tx, &schedule.name, next, last).await?;
    }
    tx.commit().await?;
    Ok(fired)
}
