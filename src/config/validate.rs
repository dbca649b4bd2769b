//! Checks that catch settings which would make the fleet misbehave rather than fail loudly.

use super::{ConfigError, PoolProfile, Settings};

impl Settings {
    /// Rejects settings that would make the fleet misbehave rather than fail loudly.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, tokens) in [
            ("api.write_tokens", &self.api.write_tokens),
            ("api.read_tokens", &self.api.read_tokens),
        ] {
            if tokens.iter().any(|t| t.expose().trim().is_empty()) {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "an empty token would let anyone in: remove it".into(),
                });
            }
        }
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !token_ok(&self.nats.stream) {
            return Err(ConfigError::Invalid {
                name: "nats.stream",
                reason: format!("{:?} must be letters, digits, '_' or '-'", self.nats.stream),
            });
        }
        if !token_ok(&self.nats.consumer_group) {
            return Err(ConfigError::Invalid {
                name: "nats.consumer_group",
                reason: format!(
                    "{:?} must be letters, digits, '_' or '-'",
                    self.nats.consumer_group
                ),
            });
        }
        if self.nats.subject_prefix.is_empty()
            || self
                .nats
                .subject_prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            return Err(ConfigError::Invalid {
                name: "nats.subject_prefix",
                reason: format!(
                    "{:?} must be dot-separated subject tokens without wildcards",
                    self.nats.subject_prefix
                ),
            });
        }
        if !token_ok(&self.database.schema) {
            return Err(ConfigError::Invalid {
                name: "database.schema",
                reason: format!("{:?} must be letters, digits or '_'", self.database.schema),
            });
        }
        if PoolProfile::named(&self.database.profile).is_none() {
            return Err(ConfigError::Invalid {
                name: "database.profile",
                reason: format!(
                    "{:?} is not development, staging or production",
                    self.database.profile
                ),
            });
        }
        for (name, value) in [
            ("worker.fetch_batch", self.worker.fetch_batch),
            ("worker.commit_batch", self.worker.commit_batch),
            ("worker.commit_parallelism", self.worker.commit_parallelism),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be at least 1".into(),
                });
            }
        }
        self.worker.agent_filter()?;
        let scale = &self.scale;
        if [scale.cpu_percent, scale.memory_percent]
            .iter()
            .any(|p| !(0.0..=100.0).contains(p))
            || !(scale.backlog_per_worker > 0.0 && scale.oldest_pending_secs >= 0.0)
        {
            return Err(ConfigError::Invalid {
                name: "scale",
                reason: "percentages must be 0-100, backlog_per_worker positive, \
                         oldest_pending_secs not negative"
                    .into(),
            });
        }
        if self.nats.lane_expiry_secs.is_nan() || self.nats.lane_expiry_secs < 1.0 {
            return Err(ConfigError::Invalid {
                name: "nats.lane_expiry_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.nats.ack_wait_secs.is_nan() || self.nats.ack_wait_secs <= 0.0 {
            return Err(ConfigError::Invalid {
                name: "nats.ack_wait_secs",
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }
}
