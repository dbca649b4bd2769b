//! Connection pool sizes per environment (the seed's `DatabaseConfig` and `DatabaseRouter`),
//! with the configured overrides applied.

use super::DatabaseSettings;

/// Pool sizes per environment, after the seed's `DatabaseConfig.get_engine_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolProfile {
    /// Connections kept open (`pool_size`).
    pub pool_size: u32,
    /// More opened under load (`max_overflow`).
    pub max_overflow: u32,
    /// Seconds to wait for a connection (`pool_timeout`).
    pub timeout_secs: u64,
    /// Seconds before a connection is replaced (`pool_recycle`).
    pub recycle_secs: u64,
}

impl PoolProfile {
    pub fn named(name: &str) -> Option<Self> {
        let (pool_size, max_overflow, timeout_secs, recycle_secs) = match name {
            "development" => (5, 10, 20, 1800),
            "staging" => (10, 20, 30, 1800),
            "production" => (20, 40, 60, 900),
            _ => return None,
        };
        Some(Self {
            pool_size,
            max_overflow,
            timeout_secs,
            recycle_secs,
        })
    }
}

impl PoolProfile {
    /// A read replica's pool in profile `name`, after the seed's `DatabaseRouter`: three
    /// quarters of the primary's connections (production: 15 + 30 beside the primary's
    /// 20 + 40), the same wait, recycled every 30 minutes.
    pub fn replica_named(name: &str) -> Option<Self> {
        let primary = Self::named(name)?;
        Some(Self {
            pool_size: (primary.pool_size * 3 / 4).max(1),
            max_overflow: primary.max_overflow * 3 / 4,
            timeout_secs: primary.timeout_secs,
            recycle_secs: 1800,
        })
    }

    /// This profile with the configured overrides applied.
    fn overridden(mut self, settings: &DatabaseSettings) -> Self {
        if let Some(max) = settings.max_connections {
            self.pool_size = self.pool_size.min(max);
            self.max_overflow = max - self.pool_size;
        }
        if let Some(secs) = settings.acquire_timeout_secs {
            self.timeout_secs = secs;
        }
        if let Some(secs) = settings.max_lifetime_secs {
            self.recycle_secs = secs;
        }
        self
    }
}

impl DatabaseSettings {
    /// The effective pool settings of the primary: the profile's, with the overrides applied.
    pub fn pool(&self) -> PoolProfile {
        PoolProfile::named(&self.profile)
            .unwrap_or_else(|| PoolProfile::named("development").expect("known profile"))
            .overridden(self)
    }

    /// The effective pool settings of each read replica.
    pub fn replica_pool(&self) -> PoolProfile {
        PoolProfile::replica_named(&self.profile)
            .unwrap_or_else(|| PoolProfile::replica_named("development").expect("known profile"))
            .overridden(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn profiles_follow_the_seed_and_overrides_win() {
        let mut database = DatabaseSettings::default();
        assert_eq!(database.pool().pool_size + database.pool().max_overflow, 15);
        database.profile = "production".into();
        assert_eq!(
            database.pool(),
            PoolProfile {
                pool_size: 20,
                max_overflow: 40,
                timeout_secs: 60,
                recycle_secs: 900
            }
        );
        // The seed's DatabaseRouter: replicas 15 + 30, recycled every 1800 s.
        assert_eq!(
            database.replica_pool(),
            PoolProfile {
                pool_size: 15,
                max_overflow: 30,
                timeout_secs: 60,
                recycle_secs: 1800
            }
        );
        database.max_connections = Some(8);
        database.acquire_timeout_secs = Some(3);
        for pool in [database.pool(), database.replica_pool()] {
            assert_eq!(
                (pool.pool_size + pool.max_overflow, pool.timeout_secs),
                (8, 3)
            );
        }
        let mut settings = Settings::default();
        settings.database.profile = "qa".into();
        assert!(settings.validate().is_err());
    }
}
