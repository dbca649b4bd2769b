//! `swarmd publish`: one task from flags, or many from a JSON-lines file with a progress bar.

use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    broker::{OutcomeWatch, PublishOptions},
    config::Settings,
    store::{Store, TaskStatus},
    task::{Codec, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, TaskEnvelope},
    waiter::{Look, await_outcomes},
};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["agent", "file"])))]
pub struct Args {
    /// Agent type of the task (e.g. email, quality, review, echo, sleep, fail).
    #[arg(long, short, requires = "data")]
    agent: Option<String>,
    /// The task's input, as JSON.
    #[arg(long, short)]
    data: Option<String>,
    /// 0-9, higher runs first.
    #[arg(long, short, default_value_t = DEFAULT_PRIORITY, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: u8,
    /// Attempts before the task is dead-lettered.
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// How long one attempt may run (e.g. 90s, 5m; a bare number is seconds).
    #[arg(long, value_parser = crate::duration::parse)]
    timeout: Option<std::time::Duration>,
    /// Give up on the task if no attempt has begun this long after publishing (e.g. 30s,
    /// 5m, 1h): it then ends `dead` with reason `expired`.
    #[arg(long, value_parser = crate::duration::parse)]
    expires_in: Option<std::time::Duration>,
    /// Run no earlier than this long from now (e.g. 30s, 5m, 2h): held by the server's own
    /// message schedule on NATS 2.12 and later, in the fleet's delay stream before.
    #[arg(long, value_parser = crate::duration::parse, conflicts_with = "at")]
    delay: Option<std::time::Duration>,
    /// Run no earlier than this instant (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long)]
    at: Option<chrono::DateTime<Utc>>,
    /// The producer's key for the task: while a task holding it lives (or for
    /// `--unique-for`), publishing another with it publishes nothing and prints that
    /// task's id.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Hold the idempotency key this long (e.g. 10m, 1h) instead of until the task finishes.
    #[arg(long, requires = "idempotency_key", value_parser = crate::duration::parse)]
    unique_for: Option<std::time::Duration>,
    /// Task id (a UUID); re-publishing an id within the duplicate window is a no-op.
    #[arg(long)]
    id: Option<Uuid>,
    /// JSON-lines file: one object per line with agent_type, data and optional priority,
    /// max_attempts, id, timeout, idempotency_key.
    #[arg(long, short, conflicts_with_all = ["agent", "data"])]
    file: Option<PathBuf>,
    /// Body encoding.
    #[arg(long, value_enum, default_value = "msgpack")]
    codec: CodecArg,
    /// Wait this long (e.g. 30s, 500ms, 2m) for the outcomes and print each as a JSON line;
    /// fails unless every task completed.
    #[arg(long, value_parser = crate::duration::parse)]
    wait: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CodecArg {
    Json,
    Msgpack,
}

impl From<CodecArg> for Codec {
    fn from(arg: CodecArg) -> Self {
        match arg {
            CodecArg::Json => Codec::Json,
            CodecArg::Msgpack => Codec::MessagePack,
        }
    }
}

/// One line of a `--file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskLine {
    agent_type: String,
    data: serde_json::Value,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    expires_at: Option<chrono::DateTime<Utc>>,
    #[serde(default)]
    unique_for_secs: Option<u32>,
    #[serde(default)]
    not_before: Option<chrono::DateTime<Utc>>,
}

impl TaskLine {
    fn into_task(self) -> TaskEnvelope {
        TaskEnvelope {
            id: self.id.unwrap_or_else(Uuid::now_v7),
            agent_type: self.agent_type,
            data: self.data,
            priority: self.priority.unwrap_or(DEFAULT_PRIORITY),
            created_at: Utc::now(),
            max_attempts: self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            timeout: self.timeout,
            idempotency_key: self.idempotency_key,
            replay_of: None,
            data_ref: None,
            expires_at: self.expires_at,
            unique_for_secs: self.unique_for_secs,
            not_before: self.not_before,
        }
    }
}

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let codec = PublishOptions {
        codec: Codec::from(args.codec),
        announce: args.wait.is_some(),
        shown_waiting: false,
    };
    let tasks = match &args.file {
        Some(path) => read_file(path)?,
        None => vec![single(&args)?],
    };
    let broker = super::connect_broker(&settings).await?;
    let keyed = tasks.iter().any(|t| t.idempotency_key.is_some());
    let now = Utc::now();
    let delayed: Vec<TaskEnvelope> = tasks
        .iter()
        .filter(|t| t.not_before.is_some_and(|due| due > now))
        .cloned()
        .collect();
    let store = if keyed || args.wait.is_some() || !delayed.is_empty() {
        Some(
            Store::connect(&settings.database)
                .await
                .context("connecting to PostgreSQL")?,
        )
    } else {
        None
    };
    // Unique tasks: one whose key a live task holds is that task, and is not published.
    let holders = match (&store, keyed) {
        (Some(store), true) => store.keys().take(&tasks.iter().collect::<Vec<_>>()).await?,
        _ => Default::default(),
    };
    let holder = |task: &TaskEnvelope| holders.get(&task.id).copied().unwrap_or(task.id);
    let ids: Vec<Uuid> = tasks.iter().map(holder).collect();
    let (tasks, held): (Vec<TaskEnvelope>, Vec<TaskEnvelope>) =
        tasks.into_iter().partition(|task| holder(task) == task.id);
    for task in &held {
        eprintln!(
            "note: task {} holds idempotency key {:?}: not published again",
            holder(task),
            task.idempotency_key.as_deref().unwrap_or_default()
        );
    }
    // Listening before publishing: an outcome announced at once is not missed.
    let watch = match args.wait {
        Some(_) => Some(broker.outcomes().watch(&ids).await?),
        None => None,
    };
    // A task due later is recorded `scheduled`, so it can be read while it waits.
    let delayed: Vec<TaskEnvelope> = delayed
        .into_iter()
        .filter(|task| holder(task) == task.id)
        .collect();
    if let (Some(store), false) = (&store, delayed.is_empty()) {
        store.tasks().record_queued(&delayed, None).await?;
    }
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(tasks.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("static template"),
    );
    if args.file.is_none() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let results = broker.publish_many(&tasks, codec, 512, || bar.inc(1)).await;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut duplicates = 0;
    let mut failed = Vec::new();
    let mut failures = Vec::new();
    for (task, result) in tasks.iter().zip(&results) {
        match result {
            Ok(receipt) if receipt.duplicate => duplicates += 1,
            Ok(_) => {}
            Err(error) => {
                failed.push(task.id);
                failures.push(format!("task {}: {error}", task.id));
            }
        }
    }
    if let (Some(store), false) = (&store, failed.is_empty()) {
        // Nothing will run these: their keys are free for the next try, their rows go.
        store.keys().release(&failed).await?;
        store.tasks().forget_queued(&failed).await?;
    }
    let published = tasks.len() - failures.len() - duplicates;
    let summary = format!(
        "published {published} tasks in {elapsed:.2} s ({:.0}/s), {duplicates} duplicates, \
         {} already held their key, {} failed",
        published as f64 / elapsed.max(1e-9),
        held.len(),
        failures.len()
    );
    for failure in &failures {
        eprintln!("  {failure}");
    }
    if !failures.is_empty() {
        println!("{summary}");
        bail!("{} tasks were not published", failures.len());
    }
    if duplicates > 0 && args.file.is_none() {
        eprintln!(
            "note: task {} was already published (duplicate ignored)",
            ids[0]
        );
    }
    match (watch, args.wait, store) {
        (Some(watch), Some(wait), Some(store)) => {
            // Outcomes go to stdout as JSON lines; the summary beside them to stderr.
            if args.file.is_some() {
                eprintln!("{summary}");
            }
            // A task held before, or a duplicate, may have finished before this command.
            let look = if duplicates > 0 || !held.is_empty() {
                Look::FirstAndAtTheEnd
            } else {
                Look::AtTheEnd
            };
            report_outcomes(&store, watch, &ids, wait, look).await
        }
        _ if args.file.is_none() => {
            println!("{}", ids[0]);
            Ok(())
        }
        _ => {
            println!("{summary}");
            Ok(())
        }
    }
}

/// Waits for the outcomes, prints each as a JSON line, and fails unless all completed.
async fn report_outcomes(
    store: &Store,
    watch: OutcomeWatch,
    ids: &[Uuid],
    wait: std::time::Duration,
    look: Look,
) -> anyhow::Result<()> {
    let awaited = await_outcomes(watch, store, ids, wait, look).await?;
    for outcome in &awaited.outcomes {
        println!("{}", serde_json::to_string(outcome)?);
    }
    let completed = awaited
        .outcomes
        .iter()
        .filter(|o| o.status == TaskStatus::Completed.as_str())
        .count();
    let pending = awaited.pending().len();
    if completed < ids.len() {
        let ended = |status: TaskStatus| {
            awaited
                .outcomes
                .iter()
                .filter(|o| o.status == status.as_str())
                .count()
        };
        bail!(
            "{completed} of {} tasks completed; {} dead, {} cancelled, {pending} not final after \
             {wait:?}",
            ids.len(),
            ended(TaskStatus::Dead),
            ended(TaskStatus::Cancelled),
        );
    }
    Ok(())
}

fn single(args: &Args) -> anyhow::Result<TaskEnvelope> {
    let agent = args.agent.clone().context("--agent is required")?;
    let raw = args.data.as_deref().context("--data is required")?;
    let data = serde_json::from_str(raw).context("--data is not valid JSON")?;
    let mut task = TaskEnvelope::new(agent, data)
        .with_priority(args.priority)
        .with_max_attempts(args.max_attempts);
    task.timeout = args.timeout.map(|t| t.as_secs_f64());
    task.idempotency_key = args.idempotency_key.clone();
    task.not_before = match (args.delay, args.at) {
        (Some(delay), _) => Some(
            task.created_at + chrono::Duration::from_std(delay).context("--delay is too long")?,
        ),
        (None, at) => at,
    };
    task.unique_for_secs = args
        .unique_for
        .map(|wait| u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
    if let Some(after) = args.expires_in {
        task.expires_at = Some(
            task.created_at
                + chrono::Duration::from_std(after).context("--expires-in is too long")?,
        );
    }
    if let Some(id) = args.id {
        task.id = id;
    }
    task.validate()?;
    Ok(task)
}

/// Reads every line first, so a file with a bad line publishes nothing and names each error.
fn read_file(path: &PathBuf) -> anyhow::Result<Vec<TaskEnvelope>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut tasks = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<TaskLine>(line)
            .map_err(|e| e.to_string())
            .map(TaskLine::into_task)
            .and_then(|task| task.validate().map(|()| task).map_err(|e| e.to_string()));
        match parsed {
            Ok(task) => tasks.push(task),
            Err(error) => errors.push(format!("line {}: {error}", number + 1)),
        }
    }
    if !errors.is_empty() {
        for error in errors.iter().take(20) {
            eprintln!("{}: {error}", path.display());
        }
        bail!(
            "{} of the lines in {} are invalid; nothing was published",
            errors.len(),
            path.display()
        );
    }
    if tasks.is_empty() {
        bail!("{} holds no tasks", path.display());
    }
    Ok(tasks)
}
