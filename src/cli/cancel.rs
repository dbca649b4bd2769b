//! `swarmd cancel`: cancel tasks by id, or every unfinished one of an agent type and
//! status. A queued or delayed task never runs; a running one is told at once and, after
//! the workers' grace period, abandoned; either way it ends `cancelled`, with who asked.

use anyhow::Context;
use uuid::Uuid;

use crate::{
    config::Settings,
    store::{CancelFilter, Store},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task ids to cancel.
    #[arg(required_unless_present = "agent", conflicts_with = "agent")]
    ids: Vec<Uuid>,
    /// Cancel every unfinished task of this agent type instead (tasks with a row: those a
    /// NATS producer published and no worker took yet have none).
    #[arg(long)]
    agent: Option<String>,
    /// With --agent: only tasks in these statuses (queued, scheduled, processing, failed).
    #[arg(long, value_delimiter = ',', requires = "agent")]
    status: Vec<String>,
}

/// Unfinished statuses a cancel by filter may name.
pub const UNFINISHED: [&str; 4] = ["queued", "scheduled", "processing", "failed"];

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    if let Some(bad) = args
        .status
        .iter()
        .find(|s| !UNFINISHED.contains(&s.as_str()))
    {
        anyhow::bail!(
            "--status {bad:?}: expected one of {}",
            UNFINISHED.join(", ")
        );
    }
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    let broker = super::connect_broker(&settings).await?;
    let by = format!("cli:{}", who());
    let stopped = match &args.agent {
        Some(agent) => {
            let filter = CancelFilter {
                agent_type: Some(agent.clone()),
                statuses: args.status.clone(),
            };
            let ids = store.cancellations().cancel_matching(&filter, &by).await?;
            for id in &ids {
                println!("{id} cancelled");
            }
            eprintln!("{} tasks cancelled", ids.len());
            ids
        }
        None => {
            let report = store.cancellations().cancel(&args.ids, &by).await?;
            for id in &report.cancelled {
                println!("{id} cancelled");
            }
            for id in &report.requested {
                println!("{id} cancel requested (no worker has taken it yet)");
            }
            for (id, status) in &report.finished {
                println!("{id} already {status}: not cancelled");
            }
            report.to_stop()
        }
    };
    // Rows and `cancellations` are written: a worker that misses this reads them shortly.
    broker
        .cancellations()
        .announce(&stopped, &by)
        .await
        .context("telling the workers")?;
    Ok(())
}

/// `user@host` of whoever runs the command.
fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}
