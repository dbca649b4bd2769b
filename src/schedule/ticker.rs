//! The ticker every worker runs: takes due schedules (row locks, so each is handled by one
//! worker at a time), publishes their fires, records the next fire time, commits. A fire
//! published but not recorded (a failed commit) is published again next tick under the
//! same id: one task.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Overlap, store::Schedules};
use crate::{broker::Broker, clock::Clock, store::Store, task::Codec};

/// How often due schedules are looked for without alarms: fires are late by at most
/// about this.
const TICK: Duration = Duration::from_millis(200);
/// How often they are looked for behind the server's alarms: only an alarm never set (or
/// lost) waits for it.
const TICK_BEHIND_ALARMS: Duration = Duration::from_secs(2);

/// Fires due schedules until `stop` completes: when the server's alarm for one rings, and
/// on a steady tick.
pub async fn run(
    store: Store,
    broker: Broker,
    clock: Clock,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut rings = super::alarm::rings(&broker).await.unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot take schedule alarms; the ticker alone fires schedules");
        None
    });
    let pause = if rings.is_some() {
        TICK_BEHIND_ALARMS
    } else {
        TICK
    };
    let mut rang: Option<async_nats::jetstream::Message> = None;
    loop {
        match tick(&store, &broker, clock.now()).await {
            Ok(advanced) => {
                super::alarm::set_all(&broker, &advanced).await;
                if let Some(alarm) = rang.take()
                    && let Err(error) = alarm.ack().await
                {
                    tracing::debug!(%error, "cannot acknowledge an alarm; it rings again");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot fire schedules; trying again"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(pause) => {}
            alarm = super::alarm::next(&mut rings), if rang.is_none() => rang = Some(alarm),
        }
    }
}

/// One look at `now`: the schedules advanced, with their next fire time (for their alarms).
pub async fn tick(
    store: &Store,
    broker: &Broker,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
    let mut tx = store.schedules().begin().await?;
    let due = Schedules::due(&mut tx, now).await?;
    let mut advanced = Vec::with_capacity(due.len());
    for schedule in due {
        let (mut fires, next) = match schedule.due(now) {
            Ok(due) => due,
            Err(error) => {
                // Refused at `schedule add`; a row edited by hand is reported, not fired.
                tracing::error!(schedule = %schedule.name, %error, "cannot compute fire times");
                continue;
            }
        };
        if schedule.overlap == Overlap::Skip
            && let Some(last) = schedule.last_task
            && Schedules::still_running(&mut tx, last).await?
        {
            tracing::info!(schedule = %schedule.name, "fire skipped: the previous one still runs");
            fires.clear();
        }
        let mut last = None;
        for at in fires {
            let task = schedule.fire(at);
            broker.publish(&task, Codec::MessagePack).await?;
            last = Some((at, task.id));
        }
        Schedules::advance(&mut tx, &schedule.name, next, last).await?;
        advanced.push((schedule.name.clone(), next));
    }
    tx.commit().await?;
    Ok(advanced)
}
