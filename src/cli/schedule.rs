//! `swarmd schedule`: periodic tasks — add, list, remove, pause, resume, trigger. Workers
//! fire them (see `crate::schedule`); this command only edits their rows.

use anyhow::{Context, bail};
use chrono::Utc;

use crate::{
    config::Settings,
    schedule::{CatchUp, Definition, Overlap, Schedule},
    store::Store,
    task::{Codec, DEFAULT_PRIORITY},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a schedule, or redefine the one of that name.
    Add {
        /// Letters, digits, `_` and `-`.
        name: String,
        /// Fire every this long (e.g. 10s, 5m; whole seconds, at least 1 s), on a grid
        /// from the Unix epoch.
        #[arg(long, value_parser = crate::duration::parse, required_unless_present = "cron", conflicts_with = "cron")]
        every: Option<std::time::Duration>,
        /// Fire at the local times this cron expression names in `--tz`: 5 fields as crontab
        /// ('*/5 * * * *', '30 2 * * 1-5'), 6 with seconds first, 7 with a year last, or
        /// @hourly, @daily, @weekly, @monthly, @yearly.
        #[arg(long)]
        cron: Option<String>,
        /// Time zone of `--cron` (IANA name, e.g. Europe/Berlin).
        #[arg(long, default_value = "UTC", requires = "cron")]
        tz: String,
        /// Agent type of each fire's task.
        #[arg(long)]
        agent: String,
        /// Each fire's input, as JSON.
        #[arg(long, default_value = "null")]
        data: String,
        /// 0-9, higher runs first.
        #[arg(long, default_value_t = DEFAULT_PRIORITY, value_parser = clap::value_parser!(u8).range(0..=9))]
        priority: u8,
        /// While the previous fire's task runs: skip this fire, or allow it beside.
        #[arg(long, value_enum, default_value = "allow")]
        overlap: Overlap,
        /// After no worker ran for a while: make up for none, the latest, or all missed fires.
        #[arg(long, value_enum, default_value = "one")]
        catch_up: CatchUp,
    },
    /// Every schedule with its next fire.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Delete a schedule (tasks already fired run on).
    Remove { name: String },
    /// Stop firing a schedule until resumed.
    Pause { name: String },
    /// Fire a paused schedule again, from its next fire time.
    Resume { name: String },
    /// Fire a schedule once now, besides its times.
    Trigger { name: String },
}

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to PostgreSQL")?;
    match args.command {
        Command::Add {
            name,
            every,
            cron,
            tz,
            agent,
            data,
            priority,
            overlap,
            catch_up,
        } => {
            let every_secs = every
                .map(|every| {
                    u32::try_from(every.as_secs())
                        .ok()
                        .filter(|secs| *secs >= 1 && every.subsec_nanos() == 0)
                        .context("--every must be a whole number of seconds, at least 1 s")
                })
                .transpose()?;
            let data = serde_json::from_str(&data).context("--data is not valid JSON")?;
            let schedule = Definition {
                name,
                agent_type: agent,
                data,
                priority: Some(priority),
                every_secs,
                time_zone: cron.is_some().then_some(tz),
                cron,
                overlap: Some(overlap),
                catch_up: Some(catch_up),
            }
            .schedule(Utc::now())
            .map_err(anyhow::Error::msg)?;
            store.schedules().put(&schedule).await?;
            set_alarm(&settings, &schedule.name, schedule.next_fire).await;
            println!(
                "schedule {} fires {} {}, next at {}",
                schedule.name,
                schedule.agent_type,
                when(&schedule),
                schedule.next_fire
            );
        }
        Command::List { json } => {
            let schedules = store.schedules().list().await?;
            if json {
                for schedule in &schedules {
                    println!("{}", serde_json::to_string(schedule)?);
                }
            } else if schedules.is_empty() {
                println!("(no schedules)");
            }
            if !json {
                for s in &schedules {
                    let state = if s.paused { "paused" } else { "active" };
                    println!(
                        "{:<24} {:<36} {:<12} {state:<7} next {}  last {}",
                        s.name,
                        when(s),
                        s.agent_type,
                        s.next_fire,
                        s.last_fire.map_or("-".to_string(), |t| t.to_string())
                    );
                }
            }
        }
        Command::Remove { name } => found(store.schedules().remove(&name).await?, &name)?,
        Command::Pause { name } => found(store.schedules().pause(&name, true, None).await?, &name)?,
        Command::Resume { name } => {
            let schedule = store
                .schedules()
                .get(&name)
                .await?
                .with_context(|| format!("no schedule {name:?}"))?;
            let next = schedule
                .first_after(Utc::now())
                .map_err(anyhow::Error::msg)?;
            found(
                store.schedules().pause(&name, false, Some(next)).await?,
                &name,
            )?;
            set_alarm(&settings, &name, next).await;
        }
        Command::Trigger { name } => {
            let schedule = store
                .schedules()
                .get(&name)
                .await?
                .with_context(|| format!("no schedule {name:?}"))?;
            let broker = super::connect_broker(&settings).await?;
            let task = schedule.fire(Utc::now());
            broker.publish(&task, Codec::MessagePack).await?;
            println!("{}", task.id);
        }
    }
    Ok(())
}

/// When a schedule fires, in words.
fn when(schedule: &Schedule) -> String {
    match (&schedule.cron, schedule.every_secs) {
        (Some(cron), _) => format!("cron '{cron}' ({})", schedule.time_zone),
        (None, Some(secs)) => format!("every {secs} s"),
        (None, None) => "never".into(),
    }
}

fn found(done: bool, name: &str) -> anyhow::Result<()> {
    if done {
        Ok(())
    } else {
        bail!("no schedule {name:?}")
    }
}

/// Sets the server's alarm for a schedule's next fire, where the server has alarms; without
/// it (a user that may not publish alarms) the workers' ticker fires it within seconds.
async fn set_alarm(settings: &crate::config::Settings, name: &str, at: chrono::DateTime<Utc>) {
    let set = async {
        let broker = super::connect_broker(settings).await?;
        crate::schedule::alarm::set(&broker, name, at).await?;
        anyhow::Ok(())
    };
    if let Err(error) = set.await {
        tracing::debug!(%error, "cannot set the schedule's alarm; the workers' ticker fires it");
    }
}
