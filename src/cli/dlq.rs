//! `swarmd dlq`: list, show, replay and purge dead letters.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    broker::Broker,
    config::Settings,
    dlq::{self, DeadLetterStream, DeadReason, Filter, StoredDeadLetter},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List dead letters, newest first, a page at a time (read server-side by sequence).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON record per line, for scripts.
        #[arg(long)]
        json: bool,
        /// Most letters to show.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
        /// Only records stored before this stream sequence (the next page's cursor, printed
        /// after a full page).
        #[arg(long)]
        before: Option<u64>,
    },
    /// Show one dead letter in full (JSON), by task or record id.
    Show { id: Uuid },
    /// Publish dead tasks again as new tasks with a fresh attempt budget (linked by
    /// `replay_of`) and remove their dead letters.
    Replay {
        /// The dead letter to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<Uuid>,
        /// Replay every dead letter that matches the filter.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete dead letters for good.
    Purge {
        /// Only those of this agent type.
        #[arg(long)]
        agent: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
struct FilterArgs {
    /// Only this agent type.
    #[arg(long)]
    agent: Option<String>,
    /// Only this reason.
    #[arg(long, value_enum, hide_possible_values = false)]
    reason: Option<DeadReason>,
    /// Only those dead since: an RFC 3339 time or an age such as 30m, 2h, 7d.
    #[arg(long, value_parser = crate::duration::instant_or_age_from_now)]
    since: Option<DateTime<Utc>>,
    /// Only those dead until: an RFC 3339 time or an age such as 30m, 2h, 7d.
    #[arg(long, value_parser = crate::duration::instant_or_age_from_now)]
    until: Option<DateTime<Utc>>,
}

impl From<FilterArgs> for Filter {
    fn from(args: FilterArgs) -> Self {
        Filter {
            agent_type: args.agent,
            reason: args.reason,
            since: args.since,
            until: args.until,
        }
    }
}

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let broker = Broker::connect(&settings.nats)
        .await
        .context("connecting to NATS")?;
    let dead_letters = DeadLetterStream::of(&broker);
    dead_letters.ensure().await?;
    match args.command {
        Command::List {
            filter,
            json,
            limit,
            before,
        } => {
            let page = dead_letters
                .page(&filter.into(), before, usize::from(limit))
                .await?;
            let letters = page.letters;
            if page.unreadable > 0 {
                eprintln!(
                    "skipped {} records that are not dead letters",
                    page.unreadable
                );
            }
            if let Some(next) = page.next_before {
                eprintln!("more: --before {next}");
            }
            if json {
                let mut out = std::io::stdout().lock();
                for stored in &letters {
                    serde_json::to_writer(&mut out, &stored.letter)?;
                    writeln!(out)?;
                }
            } else {
                print_table(&letters);
            }
        }
        Command::Show { id } => {
            let stored = find(&dead_letters, id).await?;
            println!("{}", serde_json::to_string_pretty(&stored.letter)?);
        }
        Command::Replay { id, all, filter } => {
            let targets = match id {
                Some(id) => vec![find(&dead_letters, id).await?],
                None if all => dead_letters.list(&filter.into()).await?,
                None => bail!("give a dead letter id or --all"),
            };
            let mut failed = 0;
            for stored in &targets {
                match dlq::replay(&broker, &dead_letters, stored).await {
                    Ok(new_id) => println!("{} -> {new_id}", stored.letter.id),
                    Err(error) => {
                        failed += 1;
                        eprintln!("{error}");
                    }
                }
            }
            println!("replayed {} of {}", targets.len() - failed, targets.len());
            if failed > 0 {
                bail!("{failed} dead letters were not replayed");
            }
        }
        Command::Purge { agent, yes } => {
            let scope = agent
                .as_deref()
                .map_or("all dead letters".to_string(), |a| {
                    format!("the dead letters of {a}")
                });
            if !yes
                && !confirm(&format!(
                    "Delete {scope} in {} for good?",
                    dead_letters.name()
                ))?
            {
                bail!("purge cancelled");
            }
            let purged = dead_letters.purge(agent.as_deref()).await?;
            println!("purged {purged} dead letters");
        }
    }
    Ok(())
}

async fn find(dead_letters: &DeadLetterStream, id: Uuid) -> anyhow::Result<StoredDeadLetter> {
    dead_letters
        .find(id)
        .await?
        .with_context(|| format!("no dead letter with id {id}"))
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} Type 'yes' to confirm: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

fn print_table(letters: &[StoredDeadLetter]) {
    if letters.is_empty() {
        println!("no dead letters");
        return;
    }
    println!(
        "{:<36}  {:<12} {:<20} {:>8}  {:<20}  error",
        "id", "agent", "reason", "attempts", "dead at"
    );
    for stored in letters {
        let letter = &stored.letter;
        let error: String = letter.error.chars().take(70).collect();
        println!(
            "{:<36}  {:<12} {:<20} {:>8}  {:<20}  {error}",
            letter.id,
            letter.agent_type,
            letter.reason.as_str(),
            letter.source.delivered,
            letter.dead_at.format("%Y-%m-%d %H:%M:%S"),
        );
    }
    println!("{} dead letters", letters.len());
}
