//! `swarmd migrate`: apply the embedded migrations, create the coming days' task
//! partitions, and create (or bring up to date) the tasks and dead-letter streams — the
//! one command that needs NATS's admin role (`deploy/nats/roles.conf`); workers and
//! publishers then only read the streams' settings.

use anyhow::Context;

use crate::{config::Settings, store::Store};

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    crate::fleet::connect::migrate(&store, &settings).await?;
    if settings.database.search_index {
        println!("task data indexed for searches by content (SWARM_SEARCH_INDEX)");
    }
    let report = store
        .retention()
        .upkeep_partitions(chrono::Utc::now(), None)
        .await
        .context("creating task partitions")?;
    println!(
        "migrations applied to schema {} ({} task partitions created)",
        store.schema(),
        report.created.len()
    );
    let broker = super::connect_broker(&settings).await?;
    crate::dlq::DeadLetterStream::of(&broker)
        .ensure()
        .await
        .context("setting up the dead-letter stream")?;
    broker
        .payloads()
        .ensure(super::payload_max_age(&settings))
        .await
        .context("setting up the claim-check bucket")?;
    println!(
        "streams {} and its dead letters ready, claim checks in {}",
        settings.nats.stream,
        broker.payloads().bucket()
    );
    Ok(())
}
