//! Concurrent `record_queued` calls grouped into one statement: producers that each publish
//! one task per HTTP request would otherwise pay one commit each (measured: 1,970 requests/s
//! from 64 connections). A call joins the group being gathered and gets its own answer; the
//! group is written as soon as a statement is free (no waiting for more), so a lone call
//! costs what it did. A group the database refuses is written again call by call, so one
//! caller's bad value fails that caller only.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::StoreError;
use crate::task::TaskEnvelope;

/// Statements in flight at once (each holds a connection of the primary pool).
const STATEMENTS: usize = 4;
/// Most rows one statement writes.
const ROWS: usize = 2000;

/// One caller's tasks and where its answer goes.
struct Call {
    tasks: Vec<TaskEnvelope>,
    trace_id: Option<String>,
    answer: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle callers send their tasks to.
#[derive(Clone)]
pub(super) struct QueuedGroups {
    calls: mpsc::UnboundedSender<Call>,
    /// For a call the loop can no longer take (its runtime is shutting down).
    pool: PgPool,
}

impl QueuedGroups {
    /// Starts the loop that writes the groups through `pool`.
    pub(super) fn start(pool: PgPool) -> Self {
        let (calls, received) = mpsc::unbounded_channel();
        tokio::spawn(gather(pool.clone(), received));
        Self { calls, pool }
    }

    /// Records `tasks` (with the caller's trace) in the next group; answers when its
    /// statement committed.
    pub(super) async fn record(
        &self,
        tasks: Vec<TaskEnvelope>,
        trace_id: Option<String>,
    ) -> Result<(), StoreError> {
        let (answer, answered) = oneshot::channel();
        let call = Call {
            tasks,
            trace_id,
            answer,
        };
        if let Err(mpsc::error::SendError(call)) = self.calls.send(call) {
            return write_alone(&self.pool, &call).await;
        }
        match answered.await {
            Ok(written) => written,
            // The loop dropped the call (its runtime is shutting down): nothing was written.
            Err(_) => Err(StoreError::Query {
                doing: "recording queued tasks",
                source: sqlx::Error::PoolClosed,
            }),
        }
    }
}

/// Takes calls as they come: whatever waits when a statement is free forms its group.
async fn gather(pool: PgPool, mut received: mpsc::UnboundedReceiver<Call>) {
    let statements = Arc::new(Semaphore::new(STATEMENTS));
    while let Some(first) = received.recv().await {
        let permit = statements
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let mut group = vec![first];
        let mut rows = group[0].tasks.len();
        while rows < ROWS {
            match received.try_recv() {
                Ok(call) => {
                    rows += call.tasks.len();
                    group.push(call);
                }
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, group).await;
            drop(permit);
        });
    }
}

/// Writes `group` in one statement; if that fails, each call on its own.
async fn write(pool: &PgPool, group: Vec<Call>) {
    if group.len() > 1 {
        let tasks: Vec<&TaskEnvelope> = group.iter().flat_map(|c| &c.tasks).collect();
        let traces: Vec<Option<&str>> = group
            .iter()
            .flat_map(|c| std::iter::repeat_n(c.trace_id.as_deref(), c.tasks.len()))
            .collect();
        if super::tasks::insert_queued(pool, &tasks, &traces)
            .await
            .is_ok()
        {
            for call in group {
                let _ = call.answer.send(Ok(()));
            }
            return;
        }
    }
    for call in group {
        let written = write_alone(pool, &call).await;
        let _ = call.answer.send(written);
    }
}

async fn write_alone(pool: &PgPool, call: &Call) -> Result<(), StoreError> {
    let tasks: Vec<&TaskEnvelope> = call.tasks.iter().collect();
    let traces = vec![call.trace_id.as_deref(); tasks.len()];
    super::tasks::insert_queued(pool, &tasks, &traces).await
}
