//! `swarmd mirror`: compare the legacy Redis keys with PostgreSQL, or rewrite them.

use anyhow::{Context, bail};

use crate::{
    broker::Broker,
    config::Settings,
    mirror::{self, LegacyKeys, rebuild},
    store::Store,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List drift between the legacy keys and PostgreSQL (missing, stale, extra entries);
    /// exits 1 when there is any.
    Check,
    /// Rewrite the fleet's part of the legacy keys from PostgreSQL and the tasks stream.
    Rebuild,
}

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    let mut redis = mirror::connect(&settings.redis).context("connecting to Redis")?;
    let keys = LegacyKeys::of(&settings.redis);
    match args.command {
        Command::Check => {
            let drift = rebuild::check(&store, &mut redis, &keys).await?;
            for (kind, lines) in [
                ("missing", &drift.missing),
                ("stale", &drift.stale),
                ("extra", &drift.extra),
            ] {
                for line in lines {
                    println!("{kind}: {line}");
                }
            }
            if !drift.is_clean() {
                bail!(
                    "legacy keys drifted: {} missing, {} stale, {} extra (fix: swarmd mirror rebuild)",
                    drift.missing.len(),
                    drift.stale.len(),
                    drift.extra.len()
                );
            }
            println!("legacy keys match PostgreSQL");
        }
        Command::Rebuild => {
            let broker = Broker::connect(&settings.nats)
                .await
                .context("connecting to NATS")?;
            let rebuilt = rebuild::rebuild(&store, &broker, &mut redis, &keys).await?;
            println!(
                "rewrote {} tasks from PostgreSQL and {} waiting in the stream",
                rebuilt.from_database, rebuilt.waiting_in_stream
            );
        }
    }
    Ok(())
}
