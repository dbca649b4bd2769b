//! Alarms: on a tasks stream that takes message schedules (NATS ≥ 2.12) the server itself
//! wakes the fleet when a schedule is due. Each schedule's next fire time is held in the
//! stream as one message on `<prefix>.alarms.set.<key>` (`Nats-Schedule: @at <next fire>`,
//! key = UUIDv5 of the name: one alarm per schedule, a newer one replacing it); when due the
//! server publishes it to `<prefix>.alarms.due`, which every worker takes from one shared
//! consumer to run a ticker round at once. The rows still decide everything — which fires
//! are due, catch-up, overlap, the time zone and DST rules, the exactly-once ids — so an
//! alarm that rings for a paused, removed or already-fired schedule fires nothing, and the
//! slow ticker behind it makes up for an alarm never set (a process that could not set it).

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, pull},
    },
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use uuid::Uuid;

use crate::broker::{Broker, BrokerError, headers};

/// Headers of the server's message schedules (ADR-51).
const SCHEDULE: &str = "Nats-Schedule";
const SCHEDULE_TARGET: &str = "Nats-Schedule-Target";

/// Namespace of alarm keys (UUIDv5 of a schedule's name).
const ALARM_KEYS: Uuid = Uuid::from_u128(0x5c4e_d01e_a1a2_4d5b_9a7e_11a2_3b4c_5d6e);

/// Due alarms, as they ring.
pub type Rings = jetstream::consumer::pull::Stream;

/// The subject holding schedule `name`'s alarm.
fn alarm_subject(broker: &Broker, name: &str) -> String {
    let key = Uuid::new_v5(&ALARM_KEYS, name.as_bytes());
    format!("{}.alarms.set.{key}", broker.subjects().prefix())
}

/// Sets schedule `name`'s alarm for `at`, where the stream takes schedules (a no-op
/// elsewhere: the ticker alone serves).
///
/// Fails when the alarm cannot be published.
pub async fn set(broker: &Broker, name: &str, at: DateTime<Utc>) -> Result<(), BrokerError> {
    if !broker.stream_takes_schedules() {
        return Ok(());
    }
    let subject = alarm_subject(broker, name);
    let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut headers = HeaderMap::new();
    headers.insert(SCHEDULE, format!("@at {at}").as_str());
    headers.insert(SCHEDULE_TARGET, broker.subjects().alarms_due().as_str());
    // The same alarm set twice (two workers, a retry) is stored once.
    headers.insert(headers::MSG_ID, format!("alarm:{name}:{at}").as_str());
    broker
        .publish_raw(subject, headers, name.to_string().into())
        .await
        .map(|_| ())
}

/// Sets every alarm in `alarms`, logging the ones that cannot be set (the ticker fires
/// those schedules a little later).
pub async fn set_all(broker: &Broker, alarms: &[(String, DateTime<Utc>)]) {
    for (name, at) in alarms {
        if let Err(error) = set(broker, name, *at).await {
            tracing::debug!(schedule = %name, %error, "cannot set the alarm; the ticker fires it");
        }
    }
}

/// Due alarms from the fleet's shared consumer, or `None` where the stream takes no
/// schedules.
///
/// Fails when the consumer cannot be made.
pub async fn rings(broker: &Broker) -> Result<Option<Rings>, BrokerError> {
    if !broker.stream_takes_schedules() {
        return Ok(None);
    }
    let name = format!("{}-alarms", broker.settings().consumer_group);
    let consumer_error = |source: crate::broker::NatsError| BrokerError::Consumer {
        consumer: name.clone(),
        source,
    };
    let stream = broker
        .jetstream()
        .get_stream(&broker.settings().stream)
        .await
        .map_err(|e| consumer_error(e.into()))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            description: Some("SwarmDirector workers woken by due schedules".into()),
            filter_subject: broker.subjects().alarms_due(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| consumer_error(e.into()))?;
    consumer
        .messages()
        .await
        .map(Some)
        .map_err(|e| consumer_error(e.into()))
}

/// The next alarm to ring; pending forever without alarms or once their stream ended.
pub async fn next(rings: &mut Option<Rings>) -> jetstream::Message {
    loop {
        match rings.as_mut() {
            Some(stream) => match stream.next().await {
                Some(Ok(message)) => return message,
                Some(Err(error)) => {
                    tracing::debug!(%error, "alarm consumer hiccup; the ticker carries on");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => *rings = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}
