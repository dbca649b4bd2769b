//! `swarmd migrate`: apply the embedded migrations.

use anyhow::Context;

use crate::{config::Settings, store::Store};

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    store.migrate().await.context("applying migrations")?;
    println!("migrations applied to schema {}", store.schema());
    Ok(())
}
