//! `swarmd prune`: one round of retention upkeep now — the task table's day partitions
//! created ahead, what finished before the retention period removed, the legacy mirror's
//! finished entries trimmed — and a report of what was done. Workers do the same hourly;
//! this is for operators and cron.

use anyhow::Context;

use crate::{
    config::Settings,
    mirror::LegacyKeys,
    sidecars::upkeep::{LegacyMirror, Upkeep},
    store::Store,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep finished tasks this many days (0 keeps everything); default: the settings'
    /// `retention_days` (SWARM_RETENTION_DAYS, 7 unless set).
    #[arg(long)]
    retention_days: Option<u32>,
}

pub async fn run(mut settings: Settings, args: Args) -> anyhow::Result<()> {
    if let Some(days) = args.retention_days {
        settings.database.retention_days = days;
    }
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    let mut upkeep = Upkeep::new(store.clone(), settings.database.retention());
    if settings.redis.mirror {
        upkeep = upkeep.with_legacy(LegacyMirror {
            redis: crate::mirror::connect(&settings.redis).context("connecting to Redis")?,
            keys: LegacyKeys::of(&settings.redis),
        });
    }
    let report = upkeep
        .round(chrono::Utc::now(), false)
        .await
        .context("pruning")?;
    let partitions = &report.partitions;
    let days = |days: &[chrono::NaiveDate]| {
        days.iter()
            .map(|day| day.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "partitions created: {} ({} waiting rows moved in)",
        days(&partitions.created),
        partitions.adopted_rows
    );
    match settings.database.retention() {
        None => println!("retention: keep everything (retention_days = 0)"),
        Some(keep) => println!(
            "retention: {} days; partitions dropped: {} ({} unfinished or recent rows kept); \
             finished rows trimmed outside partitions: {}",
            keep.num_days(),
            days(&partitions.dropped),
            partitions.kept_rows,
            partitions.trimmed_rows
        ),
    }
    if let Some(legacy) = report.legacy {
        println!(
            "legacy mirror trimmed: {} completed_tasks, {} failed_tasks",
            legacy.completed, legacy.failed
        );
    }
    Ok(())
}
