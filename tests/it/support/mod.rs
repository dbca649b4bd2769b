//! A private fleet environment per test, and helpers to run workers and wait for results.

pub mod nats_cluster;
pub mod nats_server;
pub mod otlp;
pub mod pg_cluster;
pub mod redis_cluster;
pub mod redis_server;
pub mod schemas;
pub mod switch;
pub mod tcp_proxy;

use std::time::{Duration, Instant};

use swarm_director::{
    agent::AgentRegistry,
    broker::Broker,
    config::Settings,
    dlq::{DeadLetterStream, Filter, StoredDeadLetter},
    metrics::Metrics,
    store::{Store, TaskRecord},
    worker::{self, Worker},
};
use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

/// One test's stream, subjects, consumers and schema on the shared services.
pub struct TestEnv {
    pub settings: Settings,
    pub broker: Broker,
    pub store: Store,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::on_nats(None).await
    }

    /// An environment whose broker is the NATS server at `nats_url` (a test's own server),
    /// or the shared one.
    pub async fn on_nats(nats_url: Option<String>) -> Self {
        Self::on_cluster(nats_url, 1).await
    }

    /// An environment on the NATS server(s) at `nats_url` (comma separated) with streams
    /// of `replicas` replicas.
    pub async fn on_cluster(nats_url: Option<String>, replicas: usize) -> Self {
        let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
        let mut settings = Settings::default();
        settings
            .apply_env(|name| std::env::var(name).ok())
            .expect("valid SWARM_* environment");
        if let Some(url) = nats_url {
            settings.nats.url = swarm_director::config::SecretUrl::new(url);
        }
        settings.nats.stream = format!("TEST_{tag}");
        settings.nats.subject_prefix = format!("test.{tag}");
        settings.nats.ack_wait_secs = 5.0;
        settings.nats.replicas = replicas;
        settings.database.schema = format!("test_{tag}");
        settings.redis.key_prefix = format!("test:{tag}:");
        settings.database.max_connections = Some(4);
        settings.worker.concurrency = swarm_director::config::Concurrency::Fixed(16);
        settings.worker.retry_base_ms = 100;
        settings.worker.idle_rescan_ms = 100;
        settings.worker.shutdown_grace_secs = 5.0;
        settings.validate().expect("valid test settings");
        let store = Store::connect(&settings.database)
            .await
            .expect("PostgreSQL is running (make services)");
        store.migrate().await.expect("migrations apply");
        // As a worker does at start: today's rows go to today's partition.
        store
            .retention()
            .upkeep_partitions(chrono::Utc::now(), None)
            .await
            .expect("task partitions are created");
        let broker = Broker::connect(&settings.nats)
            .await
            .expect("NATS is running (make services)");
        sweep_stale_streams(&broker, &store).await;
        // A fresh cluster may still be electing its JetStream leader: retry a little.
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(error) = broker.ensure_stream().await {
            assert!(Instant::now() < deadline, "stream is created: {error}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // As `swarmd migrate` does: large payloads have their bucket.
        broker
            .payloads()
            .ensure(None)
            .await
            .expect("the claim-check bucket is created");
        Self {
            settings,
            broker,
            store,
        }
    }

    /// A worker with the built-in agents and this environment's settings.
    pub fn worker(&self) -> Worker {
        self.worker_with(|_| {})
    }

    pub fn worker_with(&self, adjust: impl FnOnce(&mut Settings)) -> Worker {
        self.worker_with_agents(AgentRegistry::with_builtins(), adjust)
    }

    pub fn worker_with_agents(
        &self,
        registry: AgentRegistry,
        adjust: impl FnOnce(&mut Settings),
    ) -> Worker {
        let mut settings = self.settings.clone();
        adjust(&mut settings);
        Worker::new(
            Broker::with_client(self.broker.client().clone(), &settings.nats),
            self.store.clone(),
            registry,
            settings.worker,
        )
        // Its own metrics: what a test reads is what this worker did.
        .with_metrics(own_metrics())
    }

    /// A `swarmd` command pointed at this environment.
    pub fn swarmd(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmd"));
        command
            .envs(self.process_env())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// A real `swarmd api` process for this environment on a spare loopback port, with
    /// `token` as its write token and `extra` settings, once it listens. Returns the process
    /// (killed when dropped) and its base URL.
    pub async fn spawn_api(
        &self,
        token: &str,
        extra: &[(&str, &str)],
    ) -> (tokio::process::Child, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = self
            .swarmd()
            .args(["api", "--addr", &format!("127.0.0.1:{port}")])
            .env("SWARM_API_TOKEN", token)
            .envs(extra.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("swarmd api starts");
        eventually("the API to listen", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        (api, format!("http://127.0.0.1:{port}"))
    }

    /// Starts `worker` in the background; stop it with [`RunningWorker::stop`].
    pub fn spawn(&self, worker: Worker) -> RunningWorker {
        let (counts, liveness) = (Settled(worker.metrics()), worker.liveness());
        run_in_background(counts, liveness, |stop| async move {
            worker.run(stop).await.expect("worker runs");
        })
    }

    /// A worker with the legacy mirror, intake and result cache (this test's key prefix).
    pub fn legacy_worker(&self, adjust: impl FnOnce(&mut Settings)) -> worker::Assembled {
        let mut settings = self.settings.clone();
        adjust(&mut settings);
        worker::assemble(
            &settings,
            Broker::with_client(self.broker.client().clone(), &settings.nats),
            self.store.clone(),
            AgentRegistry::with_builtins(),
        )
        .expect("valid Redis settings")
    }

    /// Starts an assembled worker in the background.
    pub fn spawn_assembled(&self, assembled: worker::Assembled) -> RunningWorker {
        let (counts, liveness) = (
            Settled(assembled.worker.metrics()),
            assembled.worker.liveness(),
        );
        run_in_background(counts, liveness, |stop| async move {
            assembled
                .run(stop, Duration::from_secs(5))
                .await
                .expect("worker runs");
        })
    }

    /// Publishes `task` as a NATS producer would, straight to its task subject with its id as
    /// `Nats-Msg-Id`, bypassing the library's publisher (no delay handling, no row).
    pub async fn publish_straight(&self, task: &swarm_director::task::TaskEnvelope) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            swarm_director::broker::headers::MSG_ID,
            task.id.to_string().as_str(),
        );
        headers.insert(
            swarm_director::broker::headers::CONTENT_TYPE,
            "application/json",
        );
        self.broker
            .publish_raw(
                self.broker.subjects().task(task.priority, &task.agent_type),
                headers,
                swarm_director::task::Codec::Json.encode(task).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Waits until every id is `completed` or `dead`; panics after `timeout`.
    pub async fn wait_finished(&self, ids: &[Uuid], timeout: Duration) -> Vec<TaskRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let finished = self.store.tasks().count_finished(ids).await.expect("count");
            if finished as usize == ids.len() {
                return self.store.tasks().by_ids(ids).await.expect("read tasks");
            }
            assert!(
                Instant::now() < deadline,
                "only {finished} of {} tasks finished within {timeout:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the stream holds no message (acks follow commits by a moment).
    pub async fn assert_stream_drains(&self, why: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.stream_messages().await;
            if left == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{left} messages left in the stream: {why}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// This test's tasks stream.
    pub async fn stream(&self) -> async_nats::jetstream::stream::Stream {
        self.broker
            .jetstream()
            .get_stream(&self.settings.nats.stream)
            .await
            .expect("stream exists")
    }

    /// Makes this test's stream take `max_messages` in all and refuse further publishes.
    pub async fn cap_stream(&self, max_messages: i64) {
        let mut stream = self.stream().await;
        let mut config = stream.info().await.expect("stream info").config.clone();
        if config.allow_message_schedules {
            // A stream that takes message schedules (NATS 2.12+) cannot refuse new messages,
            // nor stop taking schedules: made again, empty, as `SWARM_DELAYS=stream` makes it.
            self.broker.delete_stream().await.expect("stream deleted");
            let mut settings = self.settings.nats.clone();
            settings.delays = swarm_director::config::DelayMode::Stream;
            let broker = Broker::with_client(self.broker.client().clone(), &settings);
            broker.ensure_stream().await.expect("stream made again");
            config = self
                .stream()
                .await
                .info()
                .await
                .expect("info")
                .config
                .clone();
            assert!(!config.allow_message_schedules);
        }
        config.max_messages = max_messages;
        config.discard = async_nats::jetstream::stream::DiscardPolicy::New;
        self.broker
            .jetstream()
            .update_stream(&config)
            .await
            .expect("the stream takes the cap");
    }

    /// Messages still stored in this test's stream.
    pub async fn stream_messages(&self) -> u64 {
        let mut stream = self.stream().await;
        stream.info().await.expect("stream info").state.messages
    }

    /// Messages waiting for delivery and delivered-but-unacknowledged, over all lanes.
    pub async fn consumer_backlog(&self) -> (u64, usize) {
        let backlog = self.broker.lanes().backlog().await.expect("backlog");
        let pending = backlog.lanes.iter().map(|lane| lane.pending).sum();
        let unacked = backlog
            .lanes
            .iter()
            .map(|lane| lane.in_flight as usize)
            .sum();
        (pending, unacked)
    }

    /// Environment variables that point a `swarmd` process at this test's resources.
    pub fn process_env(&self) -> Vec<(&'static str, String)> {
        let s = &self.settings;
        vec![
            ("SWARM_NATS_URL", s.nats.url.expose().to_string()),
            ("SWARM_DATABASE_URL", s.database.url.expose().to_string()),
            ("SWARM_DATABASE_SCHEMA", s.database.schema.clone()),
            ("SWARM_STREAM", s.nats.stream.clone()),
            ("SWARM_SUBJECT_PREFIX", s.nats.subject_prefix.clone()),
            ("SWARM_ACK_WAIT_SECS", s.nats.ack_wait_secs.to_string()),
            ("SWARM_NATS_REPLICAS", s.nats.replicas.to_string()),
            ("SWARM_REDIS_URL", s.redis.url.expose().to_string()),
            ("SWARM_REDIS_PREFIX", s.redis.key_prefix.clone()),
            ("SWARM_METRICS_ADDR", String::new()),
            ("SWARM_LOG", "warn".to_string()),
            // One process per `swarmd worker`: a test that kills a worker kills the worker.
            ("SWARM_WORKER_PROCESSES", "1".to_string()),
        ]
    }

    /// Dead letters stored now.
    pub async fn dead_letter_count(&self) -> usize {
        let listed = self.dead_letters().list(&Filter::default()).await;
        listed.expect("dead letters readable").len()
    }

    /// This environment's dead-letter stream.
    pub fn dead_letters(&self) -> DeadLetterStream {
        DeadLetterStream::of(&self.broker)
    }

    /// Waits until the dead-letter stream holds `n` records and returns them.
    pub async fn wait_dead_letters(&self, n: usize, timeout: Duration) -> Vec<StoredDeadLetter> {
        let deadline = Instant::now() + timeout;
        let dlq = self.dead_letters();
        loop {
            let letters = dlq.list(&Filter::default()).await.unwrap_or_default();
            if letters.len() >= n {
                return letters;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} dead letters within {timeout:?}",
                letters.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A Redis connection for driving and inspecting the legacy side.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.settings.redis.url.expose())
            .expect("valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis is running (make services)")
    }

    /// Deletes the streams, drops the schema and removes this test's Redis keys.
    pub async fn cleanup(self) {
        if let Ok(client) = redis::Client::open(self.settings.redis.url.expose())
            && let Ok(mut redis) = client.get_multiplexed_async_connection().await
        {
            let prefix = &self.settings.redis.key_prefix;
            let _ = swarm_director::mirror::delete_keys_with_prefix(&mut redis, prefix).await;
        }
        let _ = self.dead_letters().delete_stream().await;
        let _ = self.broker.delete_stream().await;
        let _ = self.store.drop_schema().await;
    }
}

/// Deletes test streams left by runs that panicked before their cleanup (older than an
/// hour, so no running test loses its stream), and their database schemas.
async fn sweep_stale_streams(broker: &Broker, store: &Store) {
    use futures::StreamExt;
    let cutoff = chrono::Utc::now().timestamp() - 3600;
    let mut streams = broker.jetstream().streams();
    let mut stale = Vec::new();
    while let Some(Ok(info)) = streams.next().await {
        let ours = ["TEST_", "OBJ_TEST_"]
            .iter()
            .any(|prefix| info.config.name.starts_with(prefix));
        if ours && info.created.unix_timestamp() < cutoff {
            stale.push(info.config.name.clone());
        }
    }
    for name in stale {
        let _ = broker.jetstream().delete_stream(&name).await;
        if let Some(tag) = name.strip_prefix("TEST_").filter(|t| !t.ends_with("_DLQ")) {
            // Tags are 12 hex digits: safe to name in the statement.
            if tag.chars().all(|c| c.is_ascii_hexdigit()) {
                let drop = format!("DROP SCHEMA IF EXISTS test_{tag} CASCADE");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(store.primary())
                    .await;
            }
        }
    }
}

/// A worker running in the background of a test.
pub struct RunningWorker {
    stop_tx: watch::Sender<bool>,
    handle: JoinHandle<()>,
    pub counts: Settled,
    liveness: std::sync::Arc<swarm_director::sidecars::Liveness>,
}

impl RunningWorker {
    /// Waits until the worker has set up, drained what was waiting and hears new publishes.
    pub async fn ready(&self) {
        eventually("the worker listens", Duration::from_secs(30), || async {
            self.liveness.is_listening().then_some(())
        })
        .await;
    }

    /// Asks the worker to shut down and waits until it has.
    pub async fn stop(self) -> Settled {
        let _ = self.stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task did not panic");
        self.counts
    }
}

/// A metrics registry of its own, for one worker of a test.
pub fn own_metrics() -> &'static Metrics {
    Box::leak(Box::new(Metrics::new()))
}

/// What a worker settled, read from its metrics (live, or after it stopped).
#[derive(Clone, Copy)]
pub struct Settled(pub &'static Metrics);

impl Settled {
    pub fn completed(&self) -> u64 {
        self.0.settled("completed")
    }
    pub fn retried(&self) -> u64 {
        self.0.settled("retry")
    }
    pub fn dead(&self) -> u64 {
        self.0.settled("dead")
    }
    pub fn duplicates(&self) -> u64 {
        self.0.settled("duplicate")
    }
    pub fn rejected(&self) -> u64 {
        self.0.settled("rejected")
    }
    pub fn cancelled(&self) -> u64 {
        self.0.settled("cancelled")
    }
    /// Late outcomes fenced off (an agent ran twice for one committed result).
    pub fn fenced(&self) -> u64 {
        self.0.duplicate_executions.get()
    }
    pub fn store_failures(&self) -> u64 {
        self.0.store_failures.get()
    }
    pub fn metrics(&self) -> &'static Metrics {
        self.0
    }
}

/// Runs `run` on a task until the returned handle is told to stop.
fn run_in_background<F, Fut>(
    counts: Settled,
    liveness: std::sync::Arc<swarm_director::sidecars::Liveness>,
    run: F,
) -> RunningWorker
where
    F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stop = Box::pin(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    RunningWorker {
        stop_tx,
        handle: tokio::spawn(run(stop)),
        counts,
        liveness,
    }
}

/// Polls until `probe` returns something, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A program of the tools' Python environment (`make tools`; `SWARM_TOOLS_DIR` overrides
/// where it lives).
pub fn venv_program(name: &str) -> std::path::PathBuf {
    let tools = std::env::var_os("SWARM_TOOLS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/swarmdirector")
        });
    tools.join("st-venv/bin").join(name)
}

/// Runs `command` to its end and returns its output; panics with its stderr when it fails.
pub async fn succeeds(command: &mut tokio::process::Command) -> std::process::Output {
    let output = command.output().await.expect("the program starts");
    assert!(
        output.status.success(),
        "{:?} failed: {}",
        command.as_std().get_program(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Sends SIGTERM to `child` (a `swarmd` process this test started) and waits, at most 30 s,
/// for it to drain and exit; returns what it printed.
pub async fn terminate(child: tokio::process::Child) -> std::process::Output {
    let pid = child.id().expect("the process is running") as i32;
    // SAFETY: a plain kill(2) of a process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("it drains within 30 s")
        .expect("its output")
}
