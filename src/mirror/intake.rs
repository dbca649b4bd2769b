//! Intake of legacy producers: tasks that the seed's `enqueue_task` put in `agent_tasks`
//! are claimed atomically (a Lua script, safe with many fleet processes) — left in place as
//! the fleet's waiting copy, so the seed's tools never see them vanish — recorded in the
//! intake hash, published to JetStream with their own id (so a re-publish is dropped), and
//! only then forgotten. A process that dies in between leaves the record; any process
//! publishes it again after [`RECLAIM_AFTER`].
//!
//! A legacy task names its agent in `data.agent_type` and its input in `data.data`.
//!
//! Longer than most modules: the claim, publish and reclaim steps share one contract with
//! the seed's producers, and its unit tests of that contract sit beside it.

use std::time::Duration;

use chrono::Utc;
use opentelemetry::context::FutureExt as _;
use redis::{AsyncCommands, aio::ConnectionManager};
use serde_json::Value;
use tokio::task::JoinSet;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{LegacyKeys, LegacyTask, MirrorError, legacy_json, scripts};
use crate::fault::{Classify, Fault};
use crate::{
    broker::{Broker, PublishOptions},
    dlq::{DeadLetter, DeadLetterStream, DeadReason, RawMessage, Source},
    task::{Codec, DEFAULT_MAX_ATTEMPTS, MAX_PRIORITY, TaskEnvelope, valid_agent_type},
    telemetry,
};

/// A claimed legacy task not forgotten after this long was not published: publish again.
pub const RECLAIM_AFTER: Duration = Duration::from_secs(10);
/// Members offered to one claim script run (≈ 3 ms of Redis): 500 took in 6 % more tasks/s
/// than 200 beside the workers (interleaved ×8).
const CLAIM_CHUNK: usize = 500;
/// Members asked of one `ZSCAN` page.
const SCAN_PAGE: usize = 1000;
/// Claimed chunks being published at once by one process.
const CHUNKS_IN_FLIGHT: usize = 8;
/// However the counts compare, `agent_tasks` is scanned at least this often: the counts
/// tell legacy members apart only while the fleet's bookkeeping matches the keys, and a
/// tool that removed one of the fleet's members would otherwise hide a legacy one.
const FULL_LOOK_EVERY: Duration = Duration::from_secs(30);

/// Claimed chunks being published, each by a task of its own (so they progress while the
/// next chunk is claimed); each tells how many it published.
type Chunks = JoinSet<Result<usize, MirrorError>>;

/// Takes legacy producers' tasks into the fleet.
#[derive(Clone)]
pub struct Intake {
    redis: ConnectionManager,
    keys: LegacyKeys,
    broker: Broker,
    dead_letters: DeadLetterStream,
    worker_id: String,
    /// When `agent_tasks` was last scanned whole.
    last_full_look: Option<std::time::Instant>,
    /// Where intakes and refused dead letters are counted.
    metrics: &'static crate::metrics::Metrics,
}

impl Intake {
    pub fn new(
        redis: ConnectionManager,
        keys: LegacyKeys,
        broker: Broker,
        worker_id: String,
    ) -> Self {
        Self {
            redis,
            keys,
            dead_letters: DeadLetterStream::of(&broker),
            broker,
            worker_id,
            last_full_look: None,
            metrics: crate::metrics::Metrics::global(),
        }
    }

    /// Counts into `metrics` instead of the process's own.
    pub fn with_metrics(mut self, metrics: &'static crate::metrics::Metrics) -> Self {
        self.dead_letters = self.dead_letters.with_metrics(metrics);
        self.metrics = metrics;
        self
    }

    /// Looks for legacy tasks every `interval` until `shutdown`.
    pub async fn run(
        mut self,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        // The intake publishes in bursts: on the worker's connection its publishes and
        // their acknowledgements would queue behind the worker's fetches and acks.
        match self.broker.own_connection().await {
            Ok(broker) => {
                self.dead_letters = DeadLetterStream::of(&broker);
                self.broker = broker;
            }
            Err(error) => {
                tracing::warn!(%error, "legacy intake shares the worker's NATS connection")
            }
        }
        let mut failures = 0u32;
        loop {
            match self.poll_once().await {
                Ok(_) => failures = 0,
                Err(error) => {
                    if failures.is_multiple_of(20) {
                        tracing::warn!(%error, "legacy intake failed; retrying");
                    }
                    failures += 1;
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Takes in every legacy task waiting now; returns how many were published.
    ///
    /// Fails when Redis or NATS does not answer; claimed tasks stay recorded then.
    pub async fn poll_once(&mut self) -> Result<usize, MirrorError> {
        let mut published = self.reclaim_stale().await?;
        // `mirrored_waiting` lists the fleet's members of `agent_tasks` *and* of
        // `scheduled_tasks` (delayed tasks): only the former hide legacy members.
        let (waiting, ours, scheduled): (usize, usize, usize) = redis::pipe()
            .zcard(&self.keys.agent_tasks)
            .hlen(&self.keys.mirrored_waiting)
            .zcard(&self.keys.scheduled_tasks)
            .query_async(&mut self.redis)
            .await?;
        let due_for_full_look = self
            .last_full_look
            .is_none_or(|at| at.elapsed() >= FULL_LOOK_EVERY);
        if waiting == 0 || (waiting <= ours.saturating_sub(scheduled) && !due_for_full_look) {
            return Ok(published);
        }
        self.last_full_look = Some(std::time::Instant::now());
        // Chunks are published while the next ones are claimed: one chunk at a time left the
        // intake waiting on JetStream's acks and the workers waiting on the intake.
        let mut in_flight = JoinSet::new();
        let scanned = self.claim_waiting(&mut in_flight).await;
        // Chunks already claimed are published even when the scan failed.
        let mut failure = scanned.err();
        while let Some(chunk) = in_flight.join_next().await {
            match chunk {
                Ok(Ok(count)) => published += count,
                Ok(Err(error)) => failure = failure.or(Some(error)),
                Err(panicked) => {
                    failure = failure.or(Some(MirrorError::Publish(panicked.to_string())))
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(published),
        }
    }

    /// Scans `agent_tasks`, claims its legacy members chunk by chunk and starts publishing
    /// each chunk in `in_flight`, keeping at most [`CHUNKS_IN_FLIGHT`] there. Returns how
    /// many the chunks that finished meanwhile published.
    async fn claim_waiting(&mut self, in_flight: &mut Chunks) -> Result<usize, MirrorError> {
        let mut published = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("ZSCAN")
                .arg(&self.keys.agent_tasks)
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_PAGE)
                .query_async(&mut self.redis)
                .await?;
            // ZSCAN returns member, score, member, score, ...
            let members: Vec<String> = page.into_iter().step_by(2).collect();
            let candidates = self.not_ours(members).await?;
            for chunk in candidates.chunks(2 * CLAIM_CHUNK) {
                let taken = self.claim(chunk).await?;
                if taken.is_empty() {
                    continue;
                }
                let mut taker = self.clone();
                in_flight.spawn(async move { taker.take_in(&taken).await });
                while in_flight.len() >= CHUNKS_IN_FLIGHT {
                    match in_flight.join_next().await {
                        Some(Ok(chunk)) => published += chunk?,
                        Some(Err(panicked)) => {
                            return Err(MirrorError::Publish(panicked.to_string()));
                        }
                        None => break,
                    }
                }
            }
            if next == 0 {
                return Ok(published);
            }
            cursor = next;
        }
    }

    /// Claims the `member, id` pairs of `chunk` that are still unclaimed legacy members;
    /// returns their pairs.
    async fn claim(&mut self, chunk: &[String]) -> Result<Vec<String>, MirrorError> {
        Ok(scripts::CLAIM
            .key(&self.keys.agent_tasks)
            .key(&self.keys.mirrored_waiting)
            .key(&self.keys.intake)
            .key(&self.keys.mirror_state)
            .arg(Utc::now().timestamp_millis())
            .arg(if self.keys.show_waiting { "1" } else { "0" })
            .arg(chunk)
            .invoke_async(&mut self.redis)
            .await?)
    }

    /// Of scanned `members`, those the fleet did not write, each followed by its id (empty
    /// when it has none), ready for the claim script. The fleet's own waiting members are
    /// told apart here, with one `HMGET` per page, so Redis never decodes them; the script
    /// checks again atomically.
    async fn not_ours(&mut self, members: Vec<String>) -> Result<Vec<String>, MirrorError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = members.iter().map(|m| member_id(m)).collect();
        let mirrored: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.keys.mirrored_waiting)
            .arg(&ids)
            .query_async(&mut self.redis)
            .await?;
        let mut candidates = Vec::new();
        for ((member, id), mirrored) in members.into_iter().zip(ids).zip(mirrored) {
            if mirrored.as_deref() != Some(member.as_str()) {
                candidates.push(member);
                candidates.push(id);
            }
        }
        Ok(candidates)
    }

    /// Publishes again what a process claimed but did not get to publish.
    async fn reclaim_stale(&mut self) -> Result<usize, MirrorError> {
        let records: Vec<(String, i64)> = self.redis.hgetall(&self.keys.intake).await?;
        let cutoff = Utc::now().timestamp_millis() - RECLAIM_AFTER.as_millis() as i64;
        let stale: Vec<String> = records
            .into_iter()
            .filter(|(_, taken_at)| *taken_at < cutoff)
            .flat_map(|(member, _)| {
                let id = member_id(&member);
                [member, id]
            })
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        tracing::info!(
            count = stale.len() / 2,
            "publishing legacy tasks claimed by a process that stopped"
        );
        let mut published = 0;
        for chunk in stale.chunks(2 * CLAIM_CHUNK) {
            published += self.take_in(chunk).await?;
        }
        Ok(published)
    }

    /// Publishes claimed members, given as `member, id` pairs (acknowledgements awaited
    /// together, not one by one) or dead-letters those that cannot be tasks, then forgets
    /// their claims in one command. Returns how many tasks were published.
    ///
    /// Fails when NATS or Redis does not answer; the claims of members not yet published
    /// stay recorded, so they are published again later.
    async fn take_in(&mut self, claimed: &[String]) -> Result<usize, MirrorError> {
        // Claimed in place (the claim script's rule: an id in the fleet's form), a member
        // shows its task waiting already; one without was taken out, and the feeder shows
        // its task.
        let mut shown = (Vec::new(), Vec::new());
        let mut unshown = (Vec::new(), Vec::new());
        let mut done: Vec<&str> = Vec::with_capacity(claimed.len() / 2);
        for pair in claimed.chunks_exact(2) {
            let (member, id) = (&pair[0], &pair[1]);
            match envelope_of(member) {
                Ok(task) => {
                    let in_place = self.keys.show_waiting && !id.is_empty();
                    let group = if in_place { &mut shown } else { &mut unshown };
                    group.0.push(task);
                    group.1.push(member.as_str());
                }
                Err((reason, error)) => {
                    self.reject(member, reason, &error).await?;
                    done.push(member);
                }
            }
        }
        // Legacy producers send no trace context: each intake starts a trace, which its
        // tasks continue and their rows record.
        let span = tracing::info_span!(
            "legacy intake",
            otel.kind = "producer",
            messaging.system = "nats",
            tasks = shown.0.len() + unshown.0.len(),
        );
        let trace = telemetry::continue_trace(&span, telemetry::new_trace());
        tracing::debug!(
            trace_id = telemetry::trace_id(&trace).unwrap_or_default(),
            tasks = shown.0.len() + unshown.0.len(),
            "taking legacy tasks in"
        );
        let mut owners = Vec::with_capacity(claimed.len() / 2);
        let mut results = Vec::with_capacity(claimed.len() / 2);
        for (shown_waiting, (tasks, members)) in [(true, shown), (false, unshown)] {
            if tasks.is_empty() {
                continue;
            }
            let options = PublishOptions {
                shown_waiting,
                ..Codec::MessagePack.into()
            };
            let published = self
                .broker
                .publish_many(&tasks, options, CLAIM_CHUNK, || {})
                .instrument(span.clone())
                .with_context(trace.clone())
                .await;
            results.extend(published);
            owners.extend(members);
        }
        let mut published = 0;
        let mut transient = None;
        for (member, result) in owners.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    published += 1;
                    done.push(member);
                }
                // The broker will never take this one (too large): it must not block the
                // intake of every legacy task behind it.
                Err(error) if error.fault() == Fault::Permanent => {
                    self.reject(member, DeadReason::PayloadTooLarge, &error.to_string())
                        .await?;
                    done.push(member);
                }
                Err(error) => transient = Some(error),
            }
        }
        self.metrics.legacy_intake.inc_by(published as u64);
        if !done.is_empty() {
            let _: () = self.redis.hdel(&self.keys.intake, &done).await?;
        }
        match transient {
            Some(error) => Err(MirrorError::Publish(error.to_string())),
            None => Ok(published),
        }
    }

    /// Dead-letters a legacy task that cannot become a task, and shows it in
    /// `failed_tasks` as the seed would when it has an id.
    async fn reject(
        &mut self,
        member: &str,
        reason: DeadReason,
        error: &str,
    ) -> Result<(), MirrorError> {
        tracing::warn!(%reason, %error, "dead-lettering a legacy task");
        let parsed: Option<LegacyTask> = serde_json::from_str(member).ok();
        let agent_type = parsed
            .as_ref()
            .and_then(|t| t.data.get("agent_type"))
            .and_then(Value::as_str)
            .filter(|a| valid_agent_type(a))
            .unwrap_or("unknown")
            .to_string();
        let letter = DeadLetter {
            id: Uuid::now_v7(),
            agent_type,
            reason,
            error: error.to_string(),
            attempts: Vec::new(),
            envelope: None,
            raw: Some(RawMessage::new(
                serde_json::json!({ "source": [self.keys.agent_tasks.clone()] }),
                member.as_bytes(),
                512 * 1024,
            )),
            source: Source {
                stream: format!("redis:{}", self.keys.agent_tasks),
                stream_sequence: 0,
                subject: self.keys.agent_tasks.clone(),
                delivered: 1,
            },
            worker_id: self.worker_id.clone(),
            dead_at: Utc::now(),
            trace_id: None,
            traceparent: None,
            truncated: false,
            original_sizes: Default::default(),
        };
        let refused = self
            .dead_letters
            .publish(&mut [letter])
            .await
            .map_err(|e| MirrorError::Publish(e.to_string()))?;
        for (id, error) in refused {
            self.metrics.dead_letters_refused.inc();
            tracing::error!(letter_id = %id, %error, "the broker refuses this legacy task's dead letter");
        }
        // A member claimed in place leaves agent_tasks now; shown failed as the seed would.
        let mut pipe = redis::pipe();
        pipe.zrem(&self.keys.agent_tasks, member).ignore();
        if let Some(task) = parsed {
            let id = task.id.clone();
            let failed = task.failed(error, Utc::now());
            pipe.hdel(&self.keys.mirrored_waiting, &id)
                .ignore()
                .hdel(&self.keys.mirror_state, &id)
                .ignore()
                .hset(&self.keys.failed_tasks, id, failed.to_python_json())
                .ignore();
        }
        let _: () = pipe.query_async(&mut self.redis).await?;
        Ok(())
    }
}

/// The member's task id when it is a UUID in the canonical form the fleet writes its keys
/// with (lowercase, hyphenated), else empty: such a member cannot be the fleet's, and is not
/// claimed in place (the fleet's later moves would not find it by that id).
fn member_id(member: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<Value>,
    }
    match serde_json::from_str::<Id>(member).ok().and_then(|m| m.id) {
        Some(Value::String(id)) if Uuid::parse_str(&id).is_ok_and(|u| u.to_string() == id) => id,
        _ => String::new(),
    }
}

/// The envelope of a legacy task, or why it cannot have one.
pub fn envelope_of(member: &str) -> Result<TaskEnvelope, (DeadReason, String)> {
    let value: Value = serde_json::from_str(member).map_err(|e| {
        (
            DeadReason::Undecodable,
            format!("legacy task is not JSON: {e}"),
        )
    })?;
    let schema = |message: String| (DeadReason::SchemaViolation, message);
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| schema("legacy task has no string `id`".into()))?;
    let id =
        Uuid::parse_str(id).map_err(|_| schema(format!("legacy task id {id:?} is not a UUID")))?;
    let data = value.get("data");
    let agent_type = data
        .and_then(|d| d.get("agent_type"))
        .and_then(Value::as_str)
        .ok_or_else(|| schema("legacy task has no `data.agent_type` naming its agent".into()))?;
    if !valid_agent_type(agent_type) {
        return Err(schema(format!(
            "legacy task's data.agent_type {agent_type:?} is not a valid agent name"
        )));
    }
    let priority = value
        .get("priority")
        .and_then(Value::as_f64)
        .map_or(f64::from(crate::task::DEFAULT_PRIORITY), |p| {
            p.round().clamp(0.0, f64::from(MAX_PRIORITY))
        }) as u8;
    let created_at = value
        .get("created_at")
        .and_then(Value::as_str)
        .and_then(legacy_json::parse_timestamp)
        .unwrap_or_else(Utc::now);
    let max_attempts = value
        .get("max_attempts")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_MAX_ATTEMPTS, |m| m.clamp(1, 100) as u32);
    let task = TaskEnvelope {
        id,
        agent_type: agent_type.to_string(),
        data: data
            .and_then(|d| d.get("data"))
            .cloned()
            .unwrap_or(Value::Null),
        priority,
        created_at,
        max_attempts,
        timeout: None,
        idempotency_key: None,
        replay_of: None,
        data_ref: None,
        expires_at: None,
        unique_for_secs: None,
        not_before: None,
    };
    // The same rules as every other entry: a NUL in the seed's JSON (Python writes
    // "\u0000" for "\x00") never reaches the database.
    task.validate().map_err(|e| {
        let reason = if e.is_content() {
            DeadReason::BadInput
        } else {
            DeadReason::SchemaViolation
        };
        (reason, format!("legacy task breaks the contract: {e}"))
    })?;
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_task_becomes_an_envelope() {
        let member = r#"{"id": "7d2f1c3e-8a1b-4c5d-9e0f-123456789abc", "data": {"agent_type": "email", "data": {"to": "a@b.org"}}, "priority": 7, "created_at": "2026-11-27T06:10:00.123456", "attempts": 0, "max_attempts": 3}"#;
        let task = envelope_of(member).unwrap();
        assert_eq!(task.agent_type, "email");
        assert_eq!(task.priority, 7);
        assert_eq!(task.data, serde_json::json!({"to": "a@b.org"}));
        assert_eq!(
            legacy_json::python_timestamp(task.created_at),
            "2026-11-27T06:10:00.123456"
        );
        // Round trip: the fleet's own waiting member is the producer's byte for byte.
        assert_eq!(LegacyTask::waiting(&task).to_python_json(), member);
    }

    #[test]
    fn a_members_id_is_read_without_the_rest_of_it_mattering() {
        let id = "7d2f1c3e-8a1b-4c5d-9e0f-123456789abc";
        assert_eq!(
            member_id(&format!(r#"{{"id": "{id}", "data": {{"x": [1, 2]}}}}"#)),
            id
        );
        // Only the canonical form the fleet's own keys use.
        assert_eq!(
            member_id(&format!(r#"{{"id": "{}"}}"#, id.to_uppercase())),
            ""
        );
        assert_eq!(member_id(r#"{"id": "abc", "data": {"x": [1, 2]}}"#), "");
        assert_eq!(member_id(r#"{"data": 1, "id": 42}"#), "");
        assert_eq!(member_id(r#"{"data": 1}"#), "");
        assert_eq!(member_id(r#"{"id": null}"#), "");
        assert_eq!(member_id("not json"), "");
        assert_eq!(member_id(r#"["id", "abc"]"#), "");
    }

    #[test]
    fn bad_legacy_tasks_say_why() {
        let no_agent =
            r#"{"id": "7d2f1c3e-8a1b-4c5d-9e0f-123456789abc", "data": {"to": 1}, "priority": 5}"#;
        let (reason, error) = envelope_of(no_agent).unwrap_err();
        assert_eq!(reason, DeadReason::SchemaViolation);
        assert!(error.contains("data.agent_type"), "{error}");
        assert_eq!(
            envelope_of("not json").unwrap_err().0,
            DeadReason::Undecodable
        );
        let bad_id = r#"{"id": 12, "data": {"agent_type": "echo"}}"#;
        assert!(envelope_of(bad_id).unwrap_err().1.contains("id"));
    }
}
