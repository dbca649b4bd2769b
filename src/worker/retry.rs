//! The delay between attempts: exponential with jitter, capped. JetStream carries the wait
//! (a nak with this delay), so a worker that dies meanwhile loses neither task nor delay.

use std::time::Duration;

use crate::config::WorkerSettings;

/// `base * factor^(attempt-1)`, capped at `max`, spread by +/- `jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub factor: f64,
    pub max: Duration,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// The seed's 2, 4, 8 s, with 20 % jitter.
    fn default() -> Self {
        Self::from_settings(&WorkerSettings::default())
    }
}

impl RetryPolicy {
    pub fn from_settings(settings: &WorkerSettings) -> Self {
        Self {
            base: Duration::from_millis(settings.retry_base_ms),
            factor: settings.retry_factor.max(1.0),
            max: Duration::from_millis(settings.retry_max_ms),
            jitter: settings.retry_jitter.clamp(0.0, 1.0),
        }
    }

    /// Delay after failed attempt number `attempt` (1-based). `unit_random` in [0, 1) picks
    /// the point in the jitter band, so callers choose the random source.
    pub fn delay(&self, attempt: u32, unit_random: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let nominal =
            (self.base.as_secs_f64() * self.factor.powi(exponent)).min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * unit_random.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((nominal * spread).min(self.max.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_schedule_without_jitter() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let secs: Vec<u64> = (1..=3).map(|a| policy.delay(a, 0.5).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8]);
    }

    #[test]
    fn jitter_stays_in_band_and_cap_holds() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, 0.0), Duration::from_secs_f64(1.6));
        assert_eq!(policy.delay(1, 1.0), Duration::from_secs_f64(2.4));
        assert_eq!(policy.delay(40, 0.99), Duration::from_secs(300));
    }
}
