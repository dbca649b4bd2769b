//! `swarmd bench`: burn-down and steady-rate benchmarks on the configured services, in a
//! private stream, schema and Redis prefix that are removed afterwards.
//!
//! Longer than most commands: setting up, running and reporting a benchmark share its
//! private resources and are read together.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::{
    broker::Broker,
    config::Settings,
    dlq::DeadLetterStream,
    store::Store,
    task::{Codec, TaskEnvelope},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tasks to burn down.
    #[arg(long, short, default_value_t = 20_000)]
    n: usize,
    /// Agent of every task (`echo` costs nothing, so the fleet itself is measured).
    #[arg(long, default_value = "echo")]
    agent: String,
    /// Worker processes (`swarmd worker`) to start.
    #[arg(long, short, default_value_t = 2)]
    workers: usize,
    /// Tasks each worker runs at once; by default what a plain `swarmd worker` runs (its
    /// `auto` sizing, or `SWARM_CONCURRENCY`), so the figure is what the defaults deliver.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Keep the legacy Redis mirror off.
    #[arg(long)]
    no_mirror: bool,
    /// Steady-rate mode: publish this many tasks per second (for --duration) against
    /// running workers and report the latency, instead of a burn-down.
    #[arg(long)]
    rate: Option<u32>,
    /// How long the steady-rate mode publishes (e.g. 10s, 2m; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse)]
    duration: std::time::Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Spread the tasks over this many priorities (9, 8, ... down), one lane each.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=10))]
    priorities: u8,
    /// Fill the table with this many finished tasks first (generated in PostgreSQL, then
    /// vacuumed), to measure how the fleet ages as history grows.
    #[arg(long, default_value_t = 0)]
    history: u64,
    /// Run `--agent` as a process agent started by this command (split at spaces), e.g.
    /// "python3 -m swarmd.agent swarmd.examples:echo": the fleet around an agent of yours.
    #[arg(long, conflicts_with = "agent_url")]
    agent_command: Option<String>,
    /// Processes of `--agent-command` per worker process.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    agent_processes: u16,
    /// Run `--agent` as an HTTP agent at this URL (e.g. one `python3 -m swarmd.agent --http`
    /// serves).
    #[arg(long)]
    agent_url: Option<String>,
    /// Requests at once per worker process of `--agent-url`.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    agent_concurrency: u16,
}

impl Args {
    /// The `[agents.<agent>]` table the workers get, when the agent is the user's; and how
    /// the report names it.
    fn declared_agent(&self) -> Option<(String, String)> {
        let quote = |text: &str| serde_json::to_string(text).expect("a string serialises");
        if let Some(command) = &self.agent_command {
            let words: Vec<String> = command.split_whitespace().map(quote).collect();
            let table = format!(
                "[agents.{}]\ncommand = [{}]\nprocesses = {}\n",
                quote(&self.agent),
                words.join(", "),
                self.agent_processes
            );
            return Some((
                table,
                format!("process agent `{command}` x {}", self.agent_processes),
            ));
        }
        self.agent_url.as_ref().map(|url| {
            let table = format!(
                "[agents.{}]\nurl = {}\nconcurrency = {}\n",
                quote(&self.agent),
                quote(url),
                self.agent_concurrency
            );
            (
                table,
                format!("HTTP agent {url} x {}", self.agent_concurrency),
            )
        })
    }
}

/// `worker_id` of the rows `--history` makes, so the figures leave them out.
const HISTORY_WORKER: &str = "bench-history";

#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    tasks: usize,
    agent: String,
    /// How the workers reach the agent: `built-in`, or the declared process or URL.
    agent_kind: String,
    workers: usize,
    concurrency: usize,
    mirror: bool,
    /// Finished rows in the table before the run.
    history: u64,
    enqueue_per_sec: f64,
    burn_down_per_sec: f64,
    latency_ms: Latency,
    /// Publish to claim (queueing, pull, claim statement).
    pickup_ms: Latency,
    worker_cpu_ms_per_task: f64,
    worker_peak_rss_mib: f64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Latency {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

pub async fn run(mut settings: Settings, args: Args) -> anyhow::Result<()> {
    let tag = Uuid::new_v4().simple().to_string()[..10].to_string();
    settings.nats.stream = format!("BENCH_{tag}");
    settings.nats.subject_prefix = format!("bench.{tag}");
    settings.database.schema = format!("bench_{tag}");
    settings.redis.key_prefix = format!("bench:{tag}:");
    settings.redis.mirror = !args.no_mirror;
    let (store, broker) = super::connect_fleet(&settings, true).await?;
    let outcome = match fill_history(&store, args.history).await {
        Ok(()) => bench(&settings, &args, &broker, &store).await,
        Err(error) => Err(error),
    };
    cleanup(&settings, &broker, &store).await;
    let report = outcome?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn bench(
    settings: &Settings,
    args: &Args,
    broker: &Broker,
    store: &Store,
) -> anyhow::Result<Report> {
    let task = |n: usize| {
        let level = (n % usize::from(args.priorities)) as u8;
        TaskEnvelope::new(args.agent.clone(), json!({ "n": n })).with_priority(9 - level)
    };
    let bar = indicatif::ProgressBar::new(args.n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} {wide_bar} {pos}/{len} ({per_sec})")
            .expect("static template"),
    );
    let (mode, tasks, enqueue_per_sec, mut workers, started_at) = match args.rate {
        None => {
            bar.set_message("publish");
            let tasks: Vec<TaskEnvelope> = (0..args.n).map(task).collect();
            let published = Instant::now();
            let results = broker
                .publish_many(&tasks, Codec::MessagePack, 1024, || bar.inc(1))
                .await;
            let enqueue = tasks.len() as f64 / published.elapsed().as_secs_f64();
            if let Some(error) = results.into_iter().find_map(Result::err) {
                bail!("publishing failed: {error}");
            }
            bar.reset();
            bar.set_message("burn-down");
            let started = chrono::Utc::now();
            let workers = spawn_workers(settings, args)?;
            ("burn-down", tasks.len(), enqueue, workers, started)
        }
        Some(rate) => {
            let workers = spawn_workers(settings, args)?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let total = (f64::from(rate) * args.duration.as_secs_f64()) as usize;
            bar.set_length(total as u64);
            bar.set_message("steady");
            let started = chrono::Utc::now();
            let clock = Instant::now();
            // Every millisecond: ticks of 10 ms made bursts that queued behind each other
            // and measured the burst rather than the fleet (p99 at 8,000/s 88 vs 34 ms).
            let mut ticker = tokio::time::interval(Duration::from_millis(1));
            let per_tick = (rate as f64 / 1000.0).max(0.001);
            let mut sent = 0usize;
            let mut owed = 0.0;
            while sent < total {
                ticker.tick().await;
                owed += per_tick;
                let now: Vec<TaskEnvelope> = (sent..(sent + owed as usize).min(total))
                    .map(task)
                    .collect();
                owed -= now.len() as f64;
                sent += now.len();
                broker
                    .publish_many(&now, Codec::MessagePack, 256, || bar.inc(1))
                    .await;
            }
            let enqueue = total as f64 / clock.elapsed().as_secs_f64();
            ("steady-rate", total, enqueue, workers, started)
        }
    };
    loop {
        // Progress from the broker (pending + unacknowledged): counting rows would load the
        // very database being measured. The end time comes from the rows afterwards.
        let backlog = broker.lanes().backlog().await?;
        let left: u64 = backlog
            .priorities
            .iter()
            .map(|p| p.pending + p.in_flight)
            .sum();
        bar.set_position((tasks as u64).saturating_sub(left));
        if left == 0 {
            let (done,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM tasks WHERE status IN ('completed', 'dead', 'cancelled')
                        AND worker_id IS DISTINCT FROM $1",
            )
            .bind(HISTORY_WORKER)
            .fetch_one(store.primary())
            .await?;
            if done as usize >= tasks {
                break;
            }
        }
        if workers
            .iter_mut()
            .any(|w| matches!(w.try_wait(), Ok(Some(_))))
        {
            bail!("a worker process exited during the benchmark");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From the first claim, not from spawning the workers: start-up (connecting, creating
    // streams, which takes seconds on a busy cluster) is not burn-down.
    let (elapsed,): (f64,) = sqlx::query_as(
        "SELECT extract(epoch FROM max(completed_at) - greatest(min(started_at), $1))::float8
           FROM tasks WHERE worker_id IS DISTINCT FROM $2",
    )
    .bind(started_at)
    .bind(HISTORY_WORKER)
    .fetch_one(store.primary())
    .await?;
    bar.finish_and_clear();
    let (cpu_ms, peak_rss_kib) = workers.iter().fold((0.0, 0u64), |(cpu, rss), w| {
        let pid = w.id().unwrap_or(0);
        (cpu + cpu_ms(pid), rss.max(peak_rss_kib(pid)))
    });
    for worker in &mut workers {
        let _ = worker.start_kill();
        let _ = worker.wait().await;
    }
    let percentiles = |until: &str| {
        format!(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95,
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
                    max(ms) AS max
               FROM (SELECT extract(epoch FROM {until} - created_at)::float8 * 1000 AS ms
                       FROM tasks WHERE worker_id IS DISTINCT FROM '{HISTORY_WORKER}') AS t"
        )
    };
    let latency: Latency = sqlx::query_as(sqlx::AssertSqlSafe(percentiles("completed_at")))
        .fetch_one(store.primary())
        .await?;
    let pickup: Latency = sqlx::query_as(sqlx::AssertSqlSafe(percentiles("started_at")))
        .fetch_one(store.primary())
        .await?;
    Ok(Report {
        mode,
        tasks,
        agent: args.agent.clone(),
        agent_kind: args
            .declared_agent()
            .map_or_else(|| "built-in".to_string(), |(_, kind)| kind),
        workers: args.workers,
        concurrency: args
            .concurrency
            .unwrap_or_else(|| crate::scale::slots(settings.worker.concurrency)),
        mirror: !args.no_mirror,
        history: args.history,
        enqueue_per_sec,
        burn_down_per_sec: tasks as f64 / elapsed,
        latency_ms: latency,
        pickup_ms: pickup,
        worker_cpu_ms_per_task: cpu_ms / tasks as f64,
        worker_peak_rss_mib: peak_rss_kib as f64 / 1024.0,
    })
}

/// Creates the task partitions of today and the coming days, as workers do at start, and —
/// when `rows` > 0 — of the days the history covers; then inserts `rows` finished tasks
/// (100 per second of the past, in statements of a million, generated server-side), then
/// vacuums and analyzes the table and checkpoints, as months of history would leave it.
async fn fill_history(store: &Store, rows: u64) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let oldest = now - chrono::Duration::seconds((rows / 100) as i64);
    let mut partitions = crate::store::PartitionReport::default();
    store
        .retention()
        .ensure_partitions(
            oldest.date_naive(),
            now.date_naive() + chrono::Days::new(crate::store::DAYS_AHEAD),
            &mut partitions,
        )
        .await
        .context("creating task partitions")?;
    if rows == 0 {
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(rows);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} {wide_bar} {pos}/{len}")
            .expect("static template"),
    );
    bar.set_message("history");
    let mut done = 0;
    while done < rows {
        let chunk = (rows - done).min(1_000_000);
        sqlx::query(
            "INSERT INTO tasks (id, agent_type, priority, data, status, attempts, max_attempts,
                                result, worker_id, created_at, started_at, completed_at,
                                updated_at)
             SELECT gen_random_uuid(), 'echo', (g % 10)::int2, jsonb_build_object('n', g),
                    'completed', 1, 3, jsonb_build_object('n', g), $3, t, t, t, t
               FROM generate_series($1::bigint, $2::bigint) AS g,
                    LATERAL (SELECT now() - make_interval(secs => g::float8 / 100)) AS at(t)",
        )
        .bind(done as i64)
        .bind((done + chunk - 1) as i64)
        .bind(HISTORY_WORKER)
        .execute(store.primary())
        .await
        .context("filling the history")?;
        done += chunk;
        bar.set_position(done);
    }
    bar.set_message("vacuum");
    sqlx::query("VACUUM ANALYZE tasks")
        .execute(store.primary())
        .await
        .context("vacuuming the history")?;
    // Written in a minute, the history's pages would still be going to disk during the
    // burn-down (checkpoints), which history gathered over months does not cause.
    bar.set_message("checkpoint");
    if let Err(error) = sqlx::query("CHECKPOINT").execute(store.primary()).await {
        tracing::warn!(%error, "cannot checkpoint after the history; the figure may suffer");
    }
    bar.finish_and_clear();
    Ok(())
}

/// Starts `swarmd worker` processes on the benchmark's private resources (with the agent
/// declared when it is the user's).
fn spawn_workers(settings: &Settings, args: &Args) -> anyhow::Result<Vec<tokio::process::Child>> {
    let exe = std::env::current_exe().context("locating the swarmd binary")?;
    let config = match args.declared_agent() {
        Some((table, _)) => {
            let path = std::env::temp_dir().join(format!("{}.toml", settings.nats.stream));
            std::fs::write(&path, table).with_context(|| format!("writing {}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    (0..args.workers)
        .map(|_| {
            let mut worker = tokio::process::Command::new(&exe);
            if let Some(config) = &config {
                worker.arg("--config").arg(config);
            }
            worker.args(["worker", "--no-migrate", "--processes", "1"]);
            if let Some(concurrency) = args.concurrency {
                worker.arg("--concurrency").arg(concurrency.to_string());
            }
            worker
                .env("SWARM_NATS_URL", settings.nats.url.expose())
                .env("SWARM_STREAM", &settings.nats.stream)
                .env("SWARM_SUBJECT_PREFIX", &settings.nats.subject_prefix)
                .env("SWARM_DATABASE_URL", settings.database.url.expose())
                .env("SWARM_DATABASE_SCHEMA", &settings.database.schema)
                .env("SWARM_REDIS_URL", settings.redis.url.expose())
                .env("SWARM_REDIS_PREFIX", &settings.redis.key_prefix)
                .env("SWARM_MIRROR", settings.redis.mirror.to_string())
                .env("SWARM_LOG", "warn")
                .env("SWARM_METRICS_ADDR", "")
                .env(
                    crate::fleet::threads::RUNTIME_THREADS,
                    crate::fleet::threads::threads_per_process(args.workers).to_string(),
                )
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")
        })
        .collect()
}

/// User + system CPU time of a process so far, in milliseconds (Linux).
fn cpu_ms(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks * 1000.0 / 100.0 // USER_HZ is 100 on Linux
}

/// Peak resident set of a process, in KiB (Linux `VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

async fn cleanup(settings: &Settings, broker: &Broker, store: &Store) {
    let _ =
        std::fs::remove_file(std::env::temp_dir().join(format!("{}.toml", settings.nats.stream)));
    let _ = DeadLetterStream::of(broker).delete_stream().await;
    let _ = broker.delete_stream().await;
    let _ = store.drop_schema().await;
    if let Ok(mut redis) = crate::mirror::connect(&settings.redis) {
        let _ =
            crate::mirror::delete_keys_with_prefix(&mut redis, &settings.redis.key_prefix).await;
    }
}

fn print_table(report: &Report) {
    let l = &report.latency_ms;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{} of {} `{}` tasks ({}), {} worker processes x {} slots, mirror {}",
        report.mode,
        report.tasks,
        report.agent,
        report.agent_kind,
        report.workers,
        report.concurrency,
        if report.mirror { "on" } else { "off" }
    );
    if report.history > 0 {
        println!(
            "{} finished rows in the table before the run",
            report.history
        );
    }
    println!(
        "  enqueue            {:>10.0} tasks/s",
        report.enqueue_per_sec
    );
    println!(
        "  burn-down          {:>10.0} tasks/s (first pull to last commit)",
        report.burn_down_per_sec
    );
    println!(
        "  latency (ms)       p50 {}  p95 {}  p99 {}  max {}  (publish to commit)",
        ms(l.p50),
        ms(l.p95),
        ms(l.p99),
        ms(l.max)
    );
    let p = &report.pickup_ms;
    println!(
        "  pick-up (ms)       p50 {}  p95 {}  p99 {}  max {}  (publish to claim)",
        ms(p.p50),
        ms(p.p95),
        ms(p.p99),
        ms(p.max)
    );
    println!(
        "  worker CPU         {:>10.3} ms/task",
        report.worker_cpu_ms_per_task
    );
    println!(
        "  worker peak RSS    {:>10.1} MiB",
        report.worker_peak_rss_mib
    );
}
