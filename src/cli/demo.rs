//! `swarmd demo`: a small fleet on the configured services, a mix of tasks for every
//! built-in agent at several priorities, and a readable summary of what happened.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    agent::AgentRegistry,
    config::Settings,
    store::Store,
    task::{Codec, TaskEnvelope},
    worker,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tasks to publish.
    #[arg(long, default_value_t = 2000)]
    tasks: usize,
    /// Worker loops to start in this process.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// How long to wait for the fleet to finish (e.g. 90s, 5m; a bare number is seconds).
    #[arg(long, default_value = "120s", value_parser = crate::duration::parse)]
    wait: Duration,
    /// Where the workers' logs go, so the summary reads cleanly [default: swarmd-demo.log in
    /// the temporary directory]
    #[arg(long)]
    log_file: Option<std::path::PathBuf>,
}

impl Args {
    /// The file the demo's logs go to.
    pub fn log_file(&self) -> std::path::PathBuf {
        self.log_file
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("swarmd-demo.log"))
    }
}

const NAMES: [&str; 5] = ["Ann", "Bo", "Chen", "Dara", "Eli"];
const TEXTS: [&str; 3] = [
    "Our new release is out. It makes search faster and fixes the login bug. Update today and \
     tell us what you think.",
    "Buy buy buy now now now, the best best best deal deal deal of the year year year!!!",
    "The quarterly report shows steady growth across all regions, with particularly strong \
     results in the northern markets where the new distribution agreements took effect.",
];

pub async fn run(mut settings: Settings, args: Args) -> anyhow::Result<()> {
    // Quick retries so the demo shows a retried task finishing within seconds.
    settings.worker.retry_base_ms = settings.worker.retry_base_ms.min(250);
    let (store, broker) = super::connect_fleet(&settings, true).await?;

    println!(
        "SwarmDirector demo: {} workers (concurrency {} each) on stream {} / PostgreSQL schema {}",
        args.workers,
        crate::scale::slots(settings.worker.concurrency),
        settings.nats.stream,
        store.schema()
    );
    println!("worker logs: {}", args.log_file().display());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut fleet = Vec::new();
    for n in 0..args.workers {
        let mut fleet_settings = settings.clone();
        fleet_settings.worker.id = Some(format!("demo-{}-{n}", std::process::id()));
        let assembled = worker::assemble(
            &fleet_settings,
            broker.clone(),
            store.clone(),
            AgentRegistry::with_builtins(),
        )?;
        let mut stop = stop_rx.clone();
        fleet.push(tokio::spawn(async move {
            let stop = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            assembled.run(stop, Duration::from_secs(5)).await
        }));
    }

    let tasks: Vec<TaskEnvelope> = (0..args.tasks).map(demo_task).collect();
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    let started = Instant::now();
    let results = broker
        .publish_many(&tasks, Codec::MessagePack, 512, || {})
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        bail!("{failed} tasks could not be published");
    }
    println!(
        "published {} tasks in {:.2} s",
        tasks.len(),
        started.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + args.wait;
    let finished = loop {
        let finished = store.tasks().count_finished(&ids).await?;
        if finished as usize >= ids.len() || Instant::now() > deadline {
            break finished;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    for worker in fleet {
        worker.await.context("worker task panicked")??;
    }

    print_summary(&store, &ids, finished, elapsed).await?;
    if (finished as usize) < ids.len() {
        bail!(
            "only {finished} of {} tasks finished within {:?}",
            ids.len(),
            args.wait
        );
    }
    Ok(())
}

/// The `i`-th task of the mix: mostly real agents, some failures, one unknown agent.
fn demo_task(i: usize) -> TaskEnvelope {
    let priority = (i % 10) as u8;
    let name = NAMES[i % NAMES.len()];
    let (agent, data): (&str, Value) = match i % 8 {
        0 | 1 => (
            "email",
            json!({
                "to": if i.is_multiple_of(40) { "broken-address".to_string() } else { format!("{}@example.org", name.to_lowercase()) },
                "subject": "Order {{order}} has shipped",
                "template": "Dear {{name}},\nyour order {{order}} is on its way.\nThe team",
                "variables": {"name": name, "order": 1000 + i},
            }),
        ),
        2 => ("quality", json!({ "text": TEXTS[i % TEXTS.len()] })),
        3 => (
            "review",
            json!({
                "subject": if i.is_multiple_of(3) { "" } else { "Welcome aboard" },
                "body": if i.is_multiple_of(2) { format!("Hello {name},\nwelcome to the team.") }
                        else { "Dear [CUSTOMER], FREE OFFER!! http://deal.example".to_string() },
            }),
        ),
        4 | 5 => ("echo", json!({ "n": i })),
        6 => ("sleep", json!({ "ms": 5 + i % 20 })),
        _ if i == 7 => ("translate", json!({ "text": "no agent serves this" })),
        _ if i % 24 == 15 => ("fail", json!({ "permanent": true })),
        _ => ("fail", json!({ "succeed_on_attempt": 2 })),
    };
    TaskEnvelope::new(agent, data).with_priority(priority)
}

async fn print_summary(
    store: &Store,
    ids: &[Uuid],
    finished: i64,
    elapsed: f64,
) -> anyhow::Result<()> {
    println!(
        "\n{finished} of {} tasks finished in {elapsed:.2} s: {:.0} tasks/s (publish to last commit)\n",
        ids.len(),
        finished as f64 / elapsed.max(1e-9)
    );
    println!(
        "{:<10} {:>6} {:>6} {:>8} {:>10} {:>10} {:>10}",
        "agent", "done", "dead", "retried", "waiting", "p50 ms", "p99 ms"
    );
    for row in store.tasks().agent_summary(ids).await? {
        println!(
            "{:<10} {:>6} {:>6} {:>8} {:>10} {:>10.1} {:>10.1}",
            row.agent_type,
            row.completed,
            row.dead,
            row.retried,
            row.unfinished,
            row.p50_ms.unwrap_or(f64::NAN),
            row.p99_ms.unwrap_or(f64::NAN)
        );
    }
    println!("\na few results:");
    let records = store.tasks().by_ids(&ids[..ids.len().min(16)]).await?;
    let mut shown = std::collections::BTreeSet::new();
    for record in records {
        if !shown.insert(record.agent_type.clone()) {
            continue;
        }
        let what = match (&record.result, &record.last_error) {
            (Some(result), _) => result.to_string(),
            (None, Some(error)) => format!("error: {error}"),
            (None, None) => "(no result yet)".into(),
        };
        let what: String = what.chars().take(150).collect();
        println!(
            "  {:<9} p{} {:<10} {what}",
            record.agent_type, record.priority, record.status
        );
    }
    Ok(())
}
