//! The seed's `should_scale_up` / `should_scale_down`, turned into one reading an autoscaler
//! or an operator can act on: the host's CPU and memory (the seed's thresholds, 70 % and
//! 80 %, half of those to scale down), and what the seed could not see: the backlog per live
//! worker and the age of the oldest waiting task.

use std::time::Duration;

use serde::Serialize;

use super::{HostSampler, HostUsage, WorkerPresence, roll_call, sizing};
use crate::{
    broker::{Backlog, Broker, BrokerError},
    config::ScaleSettings,
    task::AgentFilter,
};

/// How long a roll call waits for answers.
pub const ROLL_CALL_WAIT: Duration = Duration::from_millis(250);

/// One reading of everything a scaling decision needs.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleSignals {
    /// The pool the reading is about (`only email`, `all but email`, `all`); `None`: the
    /// whole fleet.
    pub pool: Option<String>,
    /// The host this reading was taken on (the process serving it).
    pub host: HostUsage,
    /// Workers that answered the roll call.
    pub workers: usize,
    /// Tasks waiting for delivery, all priorities.
    pub pending: u64,
    /// `pending / workers`; `None` when no worker is alive.
    pub backlog_per_worker: Option<f64>,
    pub oldest_pending_secs: i64,
    pub should_scale_up: bool,
    pub should_scale_down: bool,
    /// Why, in words: each threshold crossed.
    pub reasons: Vec<String>,
    /// The seed's `get_optimal_worker_count` for this host.
    pub recommended_worker_processes: usize,
    /// What `--concurrency auto` picks on this host.
    pub auto_concurrency: usize,
    pub thresholds: ScaleSettings,
}

/// Takes scale readings against fixed thresholds; keeps the host sampler between readings
/// so CPU use covers the time since the previous one.
#[derive(Default)]
pub struct ScaleMeter {
    sampler: HostSampler,
    thresholds: ScaleSettings,
    /// A worker's own pool: its readings count the tasks of its lanes and the workers of its
    /// pool only, so each pool's autoscaler sees its own backlog. `None`: the whole fleet.
    pool: Option<AgentFilter>,
}

impl ScaleMeter {
    pub fn new(thresholds: ScaleSettings) -> Self {
        Self {
            sampler: HostSampler::new(),
            thresholds,
            pool: None,
        }
    }

    /// Readings for the pool of workers that take `agents`.
    pub fn for_pool(mut self, agents: AgentFilter) -> Self {
        self.pool = Some(agents);
        self
    }

    /// Reads the backlog and calls the roll, then decides.
    ///
    /// Fails when the stream cannot be read.
    pub async fn measure(&self, broker: &Broker) -> Result<ScaleSignals, BrokerError> {
        let (backlog, workers) =
            tokio::join!(broker.lanes().backlog(), roll_call(broker, ROLL_CALL_WAIT));
        Ok(self.decide(&backlog?, &workers?))
    }

    /// Decides from a backlog already read and the roll call's answers.
    pub fn decide(&self, backlog: &Backlog, present: &[WorkerPresence]) -> ScaleSignals {
        let Some(pool) = &self.pool else {
            return ScaleSignals::from_readings(
                self.sampler.sample(),
                present.len(),
                backlog.pending(),
                backlog.oldest_pending_secs(),
                &self.thresholds,
            );
        };
        let lanes = backlog.lanes.iter().filter(|l| pool.admits(&l.agent_type));
        let (pending, oldest) = lanes.fold((0, 0), |(pending, oldest), lane| {
            (pending + lane.pending, oldest.max(lane.oldest_pending_secs))
        });
        let name = pool.to_string();
        let workers = present.iter().filter(|w| w.agents == name).count();
        let mut signals = ScaleSignals::from_readings(
            self.sampler.sample(),
            workers,
            pending,
            oldest,
            &self.thresholds,
        );
        signals.pool = Some(name);
        signals
    }
}

impl ScaleSignals {
    /// The decision for given readings.
    pub fn from_readings(
        host: HostUsage,
        workers: usize,
        pending: u64,
        oldest_pending_secs: i64,
        thresholds: &ScaleSettings,
    ) -> Self {
        let backlog_per_worker = (workers > 0).then(|| pending as f64 / workers as f64);
        let mut up = Vec::new();
        if host.cpu_percent > thresholds.cpu_percent {
            up.push(format!(
                "CPU {:.1} % > {} %",
                host.cpu_percent, thresholds.cpu_percent
            ));
        }
        if host.memory_percent > thresholds.memory_percent {
            up.push(format!(
                "memory {:.1} % > {} %",
                host.memory_percent, thresholds.memory_percent
            ));
        }
        match backlog_per_worker {
            None if pending > 0 => up.push(format!("{pending} tasks wait and no worker answers")),
            Some(per_worker) if per_worker > thresholds.backlog_per_worker => up.push(format!(
                "{per_worker:.0} waiting tasks per worker > {}",
                thresholds.backlog_per_worker
            )),
            _ => {}
        }
        if thresholds.oldest_pending_secs > 0.0
            && oldest_pending_secs as f64 > thresholds.oldest_pending_secs
        {
            up.push(format!(
                "oldest waiting task {oldest_pending_secs} s > {} s",
                thresholds.oldest_pending_secs
            ));
        }
        let should_scale_up = !up.is_empty();
        let quiet = host.cpu_percent < thresholds.cpu_percent * 0.5
            && host.memory_percent < thresholds.memory_percent * 0.5
            && backlog_per_worker.unwrap_or(0.0) < thresholds.backlog_per_worker * 0.5
            && (oldest_pending_secs as f64) <= thresholds.oldest_pending_secs * 0.5;
        // Never recommend going below one worker while there is work or none is left.
        let should_scale_down = !should_scale_up && quiet && workers > 1;
        let reasons = if should_scale_up {
            up
        } else if should_scale_down {
            vec![format!(
                "CPU {:.1} % and memory {:.1} % under half their thresholds, backlog small",
                host.cpu_percent, host.memory_percent
            )]
        } else {
            Vec::new()
        };
        Self {
            pool: None,
            host,
            workers,
            pending,
            backlog_per_worker,
            oldest_pending_secs,
            should_scale_up,
            should_scale_down,
            reasons,
            recommended_worker_processes: sizing::optimal_worker_processes(
                host.cores,
                super::available_memory_bytes(),
            ),
            auto_concurrency: sizing::auto_concurrency(),
            thresholds: thresholds.clone(),
        }
    }

    /// 1 to scale up, -1 to scale down, 0 to hold: the `swarm_scale_recommendation` gauge.
    pub fn recommendation(&self) -> i64 {
        match (self.should_scale_up, self.should_scale_down) {
            (true, _) => 1,
            (false, true) => -1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(cpu: f64, memory: f64) -> HostUsage {
        HostUsage {
            cpu_percent: cpu,
            memory_percent: memory,
            load_average: [0.0; 3],
            cores: 2,
            disk_percent: 50.0,
            active_connections: 10,
            active_processes: 100,
        }
    }

    #[test]
    fn the_seed_thresholds_decide() {
        let t = ScaleSettings::default();
        let busy = ScaleSignals::from_readings(host(71.0, 10.0), 2, 0, 0, &t);
        assert!(busy.should_scale_up && !busy.should_scale_down);
        assert_eq!(busy.recommendation(), 1);
        let full = ScaleSignals::from_readings(host(10.0, 81.0), 2, 0, 0, &t);
        assert!(full.should_scale_up);
        let idle = ScaleSignals::from_readings(host(34.0, 39.0), 2, 10, 0, &t);
        assert!(idle.should_scale_down && !idle.should_scale_up);
        assert_eq!(idle.recommendation(), -1);
        // Between half and full thresholds: hold.
        let steady = ScaleSignals::from_readings(host(50.0, 50.0), 2, 0, 0, &t);
        assert_eq!(steady.recommendation(), 0);
        assert!(steady.reasons.is_empty());
    }

    #[test]
    fn the_backlog_and_its_age_decide_too() {
        let t = ScaleSettings::default();
        let deep = ScaleSignals::from_readings(host(20.0, 20.0), 2, 5_000, 5, &t);
        assert!(deep.should_scale_up, "{:?}", deep.reasons);
        assert_eq!(deep.backlog_per_worker, Some(2_500.0));
        let stale = ScaleSignals::from_readings(host(20.0, 20.0), 4, 10, 120, &t);
        assert!(stale.should_scale_up, "{:?}", stale.reasons);
        let orphaned = ScaleSignals::from_readings(host(1.0, 1.0), 0, 1, 0, &t);
        assert!(orphaned.should_scale_up && orphaned.backlog_per_worker.is_none());
        // The last worker is never scaled away.
        let alone = ScaleSignals::from_readings(host(1.0, 1.0), 1, 0, 0, &t);
        assert!(!alone.should_scale_down);
    }
}
