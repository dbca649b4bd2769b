//! Connecting a fleet process to its services, and hearing when to stop.

use anyhow::Context as _;

use crate::config::Settings;

/// The primary database (migrated when `migrate`) and the broker with its tasks stream.
pub async fn connect_fleet(
    settings: &Settings,
    migrate: bool,
) -> anyhow::Result<(crate::store::Store, crate::broker::Broker)> {
    let store = crate::store::Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    if migrate {
        self::migrate(&store, settings).await?;
    }
    Ok((store, connect_broker(settings).await?))
}

/// Applies the migrations, and the search index when the settings ask for one.
pub async fn migrate(store: &crate::store::Store, settings: &Settings) -> anyhow::Result<()> {
    store.migrate().await.context("applying migrations")?;
    if settings.database.search_index {
        store
            .search()
            .ensure_index()
            .await
            .context("creating the search index")?;
    }
    Ok(())
}

/// How long claim-check objects are kept: as long as the rows pointing at them.
pub fn payload_max_age(settings: &Settings) -> Option<std::time::Duration> {
    settings
        .database
        .retention()
        .and_then(|age| age.to_std().ok())
}

/// The broker, with the tasks stream created or brought to the settings.
pub async fn connect_broker(settings: &Settings) -> anyhow::Result<crate::broker::Broker> {
    let broker = crate::broker::Broker::connect(&settings.nats)
        .await
        .context("connecting to NATS")?;
    broker
        .ensure_stream()
        .await
        .context("setting up the tasks stream")?;
    if let Err(error) = broker.payloads().ensure(payload_max_age(settings)).await {
        // Only large payloads need it; a role that may not create it (a publisher, a
        // worker) finds it made by `swarmd migrate`, or fails such a task clearly.
        tracing::debug!(%error, "cannot set up the claim-check bucket");
    }
    Ok(broker)
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received: shutting down"),
        _ = terminate => tracing::info!("SIGTERM received: shutting down"),
    }
}
