//! Connecting to PostgreSQL with the fleet's schema on the search path, and migrating it.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{
    Store, StoreError,
    router::{Replica, Replicas},
};

/// The options of `url`. A loopback server reached without an `sslmode` is reached without
/// TLS: encrypting a connection that never leaves the host cost 37 % of the burn-down rate
/// here (libpq's default, `prefer`, uses TLS whenever the server offers it). Any other
/// host, or an explicit `sslmode`, is taken as written.
fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name("swarmd");
    let loopback = ["127.0.0.1", "localhost", "::1", "[::1]"].contains(&options.get_host());
    let explicit = url.contains("sslmode=");
    Ok(if loopback && !explicit {
        options.ssl_mode(sqlx::postgres::PgSslMode::Disable)
    } else {
        options
    })
}
use crate::config::{DatabaseSettings, PoolProfile};

impl Store {
    /// The group writer of queued rows, started on first use (inside the runtime).
    pub(super) fn queued_groups(&self) -> &super::grouped::QueuedGroups {
        self.queued
            .get_or_init(|| super::grouped::QueuedGroups::start(self.primary.clone()))
    }

    /// Connects to the primary, creating the configured schema when it is missing.
    ///
    /// Fails when the URL is malformed or the server cannot be reached.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let url = settings.url.to_string();
        let options = connect_options(settings.url.expose()).map_err(|source| StoreError::Url {
            url: url.clone(),
            source,
        })?;
        let pool_options = |profile: PoolProfile| {
            PgPoolOptions::new()
                .max_connections((profile.pool_size + profile.max_overflow).max(1))
                // Development opens connections as needed; other profiles keep pool_size open.
                .min_connections(if settings.profile == "development" {
                    0
                } else {
                    profile.pool_size
                })
                .acquire_timeout(Duration::from_secs(profile.timeout_secs))
                // The seed's pool_pre_ping.
                .test_before_acquire(true)
                .max_lifetime(Duration::from_secs(profile.recycle_secs))
        };
        if settings.schema != "public" {
            let bootstrap = pool_options(settings.pool())
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .map_err(|source| connect_error(&url, source))?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                settings.schema
            )))
            .execute(&bootstrap)
            .await
            .map_err(StoreError::query("creating the schema"))?;
            bootstrap.close().await;
        }
        let primary = pool_options(settings.pool())
            .connect_with(options.options([("search_path", settings.schema.as_str())]))
            .await
            .map_err(|source| connect_error(&url, source))?;
        let mut replicas = Vec::new();
        for replica_url in &settings.replica_urls {
            let options = connect_options(replica_url.expose())
                .map_err(|source| StoreError::Url {
                    url: replica_url.to_string(),
                    source,
                })?
                .options([("search_path", settings.schema.as_str())]);
            // Lazily: a replica that is down at start is skipped, not fatal.
            replicas.push(Replica::new(
                pool_options(settings.replica_pool()).connect_lazy_with(options),
                replica_url.to_string(),
            ));
        }
        Ok(Self {
            primary,
            replicas: Arc::new(Replicas::new(replicas)),
            schema: settings.schema.clone(),
            queued: Arc::default(),
        })
    }

    /// Applies the migrations embedded from `schemas/migrations` (idempotent).
    ///
    /// Fails when a migration fails or the applied ones differ from the embedded ones.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./schemas/migrations")
            .run(&self.primary)
            .await
            .map_err(|source| StoreError::Migrate {
                schema: self.schema.clone(),
                source,
            })
    }

    /// The pool that takes writes.
    pub fn primary(&self) -> &PgPool {
        &self.primary
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Drops the schema with everything in it (tests and benchmarks clean up with this).
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        // The schema name was checked to be letters, digits, '_' and '-' only.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        )))
        .execute(&self.primary)
        .await
        .map_err(StoreError::query("dropping the schema"))?;
        Ok(())
    }
}

/// Why a connection to `url` failed; a database that does not exist says how to make one.
fn connect_error(url: &str, source: sqlx::Error) -> StoreError {
    // 3D000: invalid_catalog_name.
    if let Some(error) = source.as_database_error()
        && error.code().as_deref() == Some("3D000")
    {
        let name = url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default();
        return StoreError::NoDatabase {
            url: url.to_string(),
            name: name.to_string(),
        };
    }
    StoreError::Connect {
        url: url.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgSslMode;

    use super::connect_options;

    #[test]
    fn loopback_skips_tls_unless_told_and_other_hosts_keep_their_mode() {
        let mode = |url: &str| format!("{:?}", connect_options(url).unwrap().get_ssl_mode());
        let disabled = format!("{:?}", PgSslMode::Disable);
        assert_eq!(mode("postgres://postgres@127.0.0.1:5432/test"), disabled);
        assert_eq!(mode("postgres://u@localhost/db"), disabled);
        assert_eq!(
            mode("postgres://u@127.0.0.1/db?sslmode=require"),
            format!("{:?}", PgSslMode::Require)
        );
        assert_eq!(
            mode("postgres://u@db.internal/db"),
            format!("{:?}", PgSslMode::Prefer)
        );
    }
}
