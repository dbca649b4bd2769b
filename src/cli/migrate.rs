//! `swarmd migrate`: apply the embedded migrations and create the coming days' task
//! partitions.

use anyhow::Context;

use crate::{config::Settings, store::Store};

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    store.migrate().await.context("applying migrations")?;
    let report = store
        .upkeep_partitions(chrono::Utc::now(), None)
        .await
        .context("creating task partitions")?;
    println!(
        "migrations applied to schema {} ({} task partitions created)",
        store.schema(),
        report.created.len()
    );
    Ok(())
}
