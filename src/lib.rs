//! SwarmDirector: a message-driven worker fleet over NATS JetStream.
//!
//! Producers publish task envelopes to priority-keyed JetStream subjects; stateless workers
//! pull them highest priority first, run an agent on each, commit the result to PostgreSQL
//! and only then acknowledge the message.
//!
//! # Layout
//! - [`config`]: one table of settings drives the typed tree (defaults, file, environment)
//!   and the generated reference `docs/configuration.md`; secrets redacted.
//! - [`task`]: the wire contract: the task envelope and its JSON / MessagePack codecs.
//! - [`broker`]: JetStream: subjects, stream and consumer setup, publishing; the rest by
//!   concern, one handle each: `lanes()` (priority pull, backlog), `delays()`, `payloads()`
//!   (claim checks), `cancellations()`, `outcomes()` (announced on core NATS), `strays()`.
//! - [`agent`]: the `Agent` trait, its typed errors, the registry and the built-in agents.
//! - [`cache`]: the Redis result cache of deterministic agents.
//! - [`clock`]: the wall clock the due and expiry decisions read, injected (manual in tests).
//! - [`fault`]: transient or permanent-for-one-message failures, and isolating the latter.
//! - [`duration`]: the one grammar of lengths of time (`500ms`, `30s`, `2h`, `7d`) and
//!   instants (RFC 3339, or an age back from now).
//! - [`backoff`]: the one doubling pause of the fleet's own retry loops.
//! - [`dlq`]: dead letters: the record, and the stream that keeps them for inspection and replay.
//! - [`mirror`]: the seed's Redis queue contract: mirror of every task's state, intake of
//!   legacy producers, drift check and rebuild.
//! - [`metrics`]: every Prometheus metric, in one place.
//! - [`http`]: the HTTP side: metrics and health endpoints, request metrics, the publishers'
//!   API and who may use it (token roles, request bounds).
//! - [`telemetry`]: logs, and traces carried in NATS headers and exported over OTLP.
//! - [`scale`]: host readings, the workers' roll call, scale-up/down signals and sizing.
//! - [`schedule`]: periodic schedules: fire times, exactly-once fire tasks, the ticker.
//! - [`store`]: PostgreSQL pools and embedded migrations; the queries by concern, one handle
//!   each: `tasks()`, `search()`, `reads()` (replicas), `keys()` (idempotency),
//!   `cancellations()`, `retention()` (day partitions that expire whole), `schedules()`.
//! - [`waiter`]: waiting for tasks' outcomes (announced on NATS, the store read once).
//! - [`delivery`]: a JetStream message becomes a task, or a rejection kept as a dead letter.
//! - [`sidecars`]: the jobs beside a worker's pull loop (cancellations, progress, delayed
//!   tasks' view, strays, gauges, liveness, hourly upkeep), started and stopped by one owner.
//! - [`worker`]: the per-delivery path: executing one task to an outcome, committing
//!   outcomes in batches, acking, the pull loop with graceful shutdown.
//! - [`fleet`]: a whole worker process — connect, migrate, run the worker with its agents,
//!   probes and metrics, drain on shutdown, or supervise several — for `swarmd worker` and
//!   for programs that embed the worker with agents of their own.
//! - [`cli`]: one file per `swarmd` subcommand; `main.rs` only dispatches.
//!
//! Layers point one way: no module imports another that imports it back, directly or
//! around a loop (`tests/checks/layers.rs` fails on one).

/// A view of `$owner` that holds one concern's methods (`store.tasks()`,
/// `broker.lanes()`): the handle, its accessor on the owner, and `Deref` to the owner, so
/// the concern's methods use the owner's fields and helpers as they are.
macro_rules! concern_handle {
    ($(#[$doc:meta])* pub struct $handle:ident for $owner:ty, $accessor:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $handle<'a>(pub(crate) &'a $owner);

        impl $owner {
            pub fn $accessor(&self) -> $handle<'_> {
                $handle(self)
            }
        }

        impl std::ops::Deref for $handle<'_> {
            type Target = $owner;
            fn deref(&self) -> &$owner {
                self.0
            }
        }
    };
}

pub mod agent;
pub mod backoff;
pub mod broker;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod dlq;
pub mod duration;
pub mod fault;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod mirror;
pub mod scale;
pub mod schedule;
pub mod sidecars;
pub mod store;
pub mod task;
pub mod telemetry;
pub mod waiter;
pub mod worker;
