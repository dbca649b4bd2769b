//! `swarmd status`: the backlog per priority and lane, the workers answering the roll call,
//! and what finished recently.

use anyhow::Context;
use futures::StreamExt;

use crate::{
    broker::Broker,
    config::Settings,
    dlq::DeadLetterStream,
    scale::{ROLL_CALL_WAIT, roll_call},
    store::Store,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Window of the "recent" counts, in minutes.
    #[arg(long, default_value_t = 15)]
    minutes: i32,
}

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let broker = Broker::connect(&settings.nats)
        .await
        .context("connecting to NATS")?;
    let mut stream = broker
        .jetstream()
        .get_stream(&settings.nats.stream)
        .await
        .with_context(|| format!("stream {} not found", settings.nats.stream))?;
    let info = stream.info().await.context("reading stream info")?;
    let version = broker
        .server_version()
        .map_or_else(|| "unknown".to_string(), |v| v.to_string());
    println!("NATS server {version}");
    println!(
        "stream {} ({}): {} messages, {} bytes",
        settings.nats.stream,
        broker.subjects().stream_subject(),
        info.state.messages,
        info.state.bytes
    );
    let delayed = broker
        .delays()
        .counts()
        .await
        .context("counting delayed tasks")?;
    println!(
        "scheduled (not due yet): {} — held by the server's schedules: {}, in the delay stream {}: {}",
        delayed.total(),
        delayed.held_by_server,
        broker.delays().stream(),
        delayed.in_delay_stream
    );
    let backlog = broker
        .lanes()
        .backlog()
        .await
        .context("reading the backlog")?;
    println!(
        "\n{:<9} {:>9} {:>10} {:>12}",
        "priority", "pending", "in flight", "oldest (s)"
    );
    for level in backlog
        .priorities
        .iter()
        .filter(|p| p.pending + p.in_flight > 0)
    {
        println!(
            "{:<9} {:>9} {:>10} {:>12}",
            format!("p{}", level.priority),
            level.pending,
            level.in_flight,
            level.oldest_pending_secs
        );
    }
    println!(
        "\n{:<9} {:<16} {:<28} {:>9} {:>10} {:>12}",
        "lane", "agent type", "consumer", "pending", "in flight", "redelivered"
    );
    if backlog.lanes.is_empty() {
        println!("  (no task waits)");
    }
    for lane in &backlog.lanes {
        println!(
            "{:<9} {:<16} {:<28} {:>9} {:>10} {:>12}",
            format!("p{}", lane.priority),
            lane.agent_type,
            lane.consumer.as_deref().unwrap_or("(not served yet)"),
            lane.pending,
            lane.in_flight,
            lane.redelivered
        );
    }
    let workers = roll_call(&broker, ROLL_CALL_WAIT)
        .await
        .context("calling the workers' roll")?;
    println!("\nworkers answering ({}):", workers.len());
    for worker in &workers {
        println!(
            "  {:<28} agents {:<24} {:>4}/{} busy",
            worker.worker_id, worker.agents, worker.in_flight, worker.concurrency
        );
    }

    let store = Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    let (totals, _) = store.reads().status_counts().await?;
    println!("\ntasks in PostgreSQL (schema {}):", store.schema());
    for (status, count) in &totals {
        println!("  {status:<12} {count}");
    }
    let (recent, _) = store.reads().recent_counts(args.minutes).await?;
    println!("\nfinished in the last {} minutes:", args.minutes);
    if recent.is_empty() {
        println!("  (none)");
    }
    for (agent, status, count) in recent {
        println!("  {agent:<12} {status:<10} {count}");
    }
    let dead_letters = DeadLetterStream::of(&broker);
    match broker.jetstream().get_stream(dead_letters.name()).await {
        Ok(dlq) => {
            let mut subjects = dlq
                .info_with_subjects(broker.subjects().all_dead_letters())
                .await
                .context("reading dead-letter stream info")?;
            let mut per_subject = Vec::new();
            while let Some(entry) = subjects.next().await {
                per_subject.push(entry.context("reading dead-letter subjects")?);
            }
            per_subject.sort();
            println!("\ndead letters ({}):", dead_letters.name());
            if per_subject.is_empty() {
                println!("  (none)");
            }
            for (subject, count) in per_subject {
                println!("  {subject:<40} {count}");
            }
        }
        Err(_) => println!(
            "\ndead letters: stream {} not created yet",
            dead_letters.name()
        ),
    }
    Ok(())
}
