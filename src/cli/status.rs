//! `swarmd status`: the backlog per priority, the consumers, and what finished recently.

use anyhow::Context;
use futures::StreamExt;

use crate::{
    broker::Broker, config::Settings, dlq::DeadLetterStream, store::Store, task::MAX_PRIORITY,
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
    println!(
        "stream {} ({}): {} messages, {} bytes",
        settings.nats.stream,
        broker.subjects().all_tasks(),
        info.state.messages,
        info.state.bytes
    );
    println!(
        "\n{:<10} {:<16} {:>9} {:>12} {:>11} {:>13}",
        "priority", "consumer", "pending", "in flight", "redelivered", "waiting pulls"
    );
    for priority in (0..=MAX_PRIORITY).rev() {
        let name = broker.consumer_name(priority);
        match stream.consumer_info(&name).await {
            Ok(c) => println!(
                "{:<10} {:<16} {:>9} {:>12} {:>11} {:>13}",
                format!("p{priority}"),
                name,
                c.num_pending,
                c.num_ack_pending,
                c.num_redelivered,
                c.num_waiting
            ),
            Err(_) => println!(
                "{:<10} {:<16} {:>9}",
                format!("p{priority}"),
                name,
                "(none)"
            ),
        }
    }

    let store = Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    let totals = store.status_counts().await?;
    println!("\ntasks in PostgreSQL (schema {}):", store.schema());
    for (status, count) in &totals {
        println!("  {status:<12} {count}");
    }
    let recent = store.recent_counts(args.minutes).await?;
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
