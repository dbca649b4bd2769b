//! Where the worker loop's next batch comes from, and when to look: one owner for the lanes'
//! puller, the doorbell subscription, the follow-ups of a bell or alarm that found nothing,
//! the retry alarms and the backstop rescan. The loop asks for a batch; this decides whether
//! to fetch at once or wait for a reason to.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use tokio::sync::watch;

use super::{
    alarm::{RetryAlarms, Woke},
    raised,
};
use crate::{
    broker::{Doorbell, Priorities, PriorityPuller},
    sidecars::Liveness,
};

/// A bell whose scan found nothing is followed up after 1 and 4 ms: the doorbell can ring
/// before JetStream has stored the message.
const BELL_FOLLOW_UP: Duration = Duration::from_millis(1);
const BELL_FOLLOW_UPS: u32 = 2;

/// Pause after a failed pull or subscription before trying again.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// The worker loop's source of messages.
pub(super) struct Pull {
    lanes: PriorityPuller,
    alarms: RetryAlarms,
    liveness: Arc<Liveness>,
    /// The idle backstop: redeliveries nobody rang for are found within this.
    rescan: Duration,
    /// The priorities the next fetch asks: all of them, or those a bell named.
    scan: Priorities,
    /// Empty scans in a row after a bell.
    bell_misses: u32,
    /// Subscribed while the lanes are drained; dropped while a backlog keeps the worker
    /// busy, so a busy worker does not receive a copy of every publish.
    doorbell: Option<Doorbell>,
    /// The last fetch took fewer than asked: wait for a bell, an alarm or the rescan first.
    drained: bool,
    /// The coming fetch follows a retry alarm (followed up when it finds nothing).
    after_alarm: bool,
}

impl Pull {
    pub(super) fn new(
        lanes: PriorityPuller,
        alarms: RetryAlarms,
        liveness: Arc<Liveness>,
        rescan: Duration,
    ) -> Self {
        Self {
            lanes,
            alarms,
            liveness,
            rescan,
            scan: Priorities::ALL,
            bell_misses: 0,
            doorbell: None,
            drained: false,
            after_alarm: false,
        }
    }

    /// Up to `max` messages, highest priority first: fetched at once while the lanes have
    /// work, else once a publish, a retry alarm or the rescan gives a reason to look again.
    /// `None` once `stop` is raised while waiting.
    pub(super) async fn next_batch(
        &mut self,
        max: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<jetstream::Message>> {
        loop {
            if std::mem::take(&mut self.drained) {
                self.wait_for_work(stop).await?;
            }
            let messages = match self.lanes.fetch_available(max, self.scan).await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "pull failed; retrying");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            };
            let rung = std::mem::replace(&mut self.scan, Priorities::ALL);
            if messages.is_empty() && rung != Priorities::ALL && self.bell_misses < BELL_FOLLOW_UPS
            {
                self.follow_up_bell(rung).await;
                continue;
            }
            self.bell_misses = 0;
            if !messages.is_empty() {
                self.alarms.found();
            } else if self.after_alarm {
                self.alarms.missed();
            }
            self.after_alarm = false;
            self.drained = messages.len() < max;
            if !self.drained {
                self.doorbell = None;
            }
            if !messages.is_empty() {
                return Some(messages);
            }
        }
    }

    /// Looks again soon after a bell that found nothing, or at once when another rings.
    async fn follow_up_bell(&mut self, rung: Priorities) {
        self.bell_misses += 1;
        self.scan = rung;
        let follow_up = tokio::time::sleep(BELL_FOLLOW_UP * 4u32.pow(self.bell_misses - 1));
        let more = match self.doorbell.as_mut() {
            Some(bell) => tokio::select! {
                more = bell.ring() => more,
                _ = follow_up => None,
            },
            None => {
                follow_up.await;
                None
            }
        };
        if let Some(more) = more {
            self.scan = rung.union(self.lanes.heard(more));
        }
    }

    /// The lanes are drained: subscribes to the doorbell (and returns at once: a publish
    /// just before the subscription rang no bell, so the lanes are scanned once more), or
    /// waits for a bell, an alarm or the rescan. `None` when `stop` is raised.
    async fn wait_for_work(&mut self, stop: &mut watch::Receiver<bool>) -> Option<()> {
        let Some(bell) = self.doorbell.as_mut() else {
            match self.lanes.doorbell().await {
                Ok(bell) => {
                    self.doorbell = Some(bell);
                    self.liveness.listening();
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot subscribe to the doorbell");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
            return Some(());
        };
        tokio::select! {
            biased;
            _ = raised(stop) => return None,
            rung = bell.ring() => match rung {
                Some(rung) => self.scan = self.lanes.heard(rung),
                None => self.doorbell = None,
            },
            woke = self.alarms.wait(self.rescan) => self.after_alarm = woke == Woke::Alarm,
        }
        self.liveness.turned();
        Some(())
    }
}
