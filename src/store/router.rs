//! The seed's `DatabaseRouter` for real: writes go to the primary; reads go to the replicas
//! round-robin, skipping one that failed for a while, and fall back to the primary when no
//! replica answers — or when the replica has not caught up with a row the caller expects.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::PgPool;
use uuid::Uuid;

use super::{Store, StoreError, TaskRecord};

/// How long a replica that failed is left out of the rotation.
const REPLICA_PAUSE: Duration = Duration::from_secs(10);
/// Longest a read waits for a replica before the primary answers instead. A stopped
/// replica makes the pool retry its connection until the acquire timeout: never wait that.
const REPLICA_PATIENCE: Duration = Duration::from_millis(750);

/// One read replica and its health.
pub(super) struct Replica {
    pool: PgPool,
    url: String,
    down_until: Mutex<Option<Instant>>,
}

impl Replica {
    pub(super) fn new(pool: PgPool, url: String) -> Self {
        Self {
            pool,
            url,
            down_until: Mutex::new(None),
        }
    }

    fn healthy(&self) -> bool {
        self.down_until
            .lock()
            .expect("replica lock")
            .is_none_or(|until| Instant::now() >= until)
    }

    fn failed(&self, error: &dyn std::fmt::Display) {
        tracing::warn!(replica = %self.url, %error, "read replica failed; using others meanwhile");
        *self.down_until.lock().expect("replica lock") = Some(Instant::now() + REPLICA_PAUSE);
    }
}

/// The replicas, in rotation.
pub(super) struct Replicas {
    replicas: Vec<Replica>,
    next: AtomicUsize,
}

impl Replicas {
    pub(super) fn new(replicas: Vec<Replica>) -> Self {
        Self {
            replicas,
            next: AtomicUsize::new(0),
        }
    }

    /// The healthy replicas, starting at the next in the rotation.
    fn rotation(&self) -> impl Iterator<Item = &Replica> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.replicas.len();
        (0..n)
            .map(move |i| &self.replicas[(start + i) % n.max(1)])
            .filter(|r| r.healthy())
    }
}

/// Which server answered a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    Replica,
    Primary,
}

concern_handle! {
    /// Reads routed to a replica, falling back to the primary.
    pub struct Reads for Store, reads
}

impl Reads<'_> {
    /// Runs `read` on the next healthy replica, else on the primary. A replica's answer
    /// that `settled` rejects (a row the replica has not received yet) is asked of the
    /// primary instead, so a caller always reads its own writes. A replica that fails or
    /// takes longer than [`REPLICA_PATIENCE`] leaves the rotation for a while.
    ///
    /// Fails when the primary's read fails.
    async fn routed<T, Fut>(
        &self,
        what: &'static str,
        read: impl Fn(PgPool) -> Fut,
        settled: impl Fn(&T) -> bool,
    ) -> Result<(T, ReadFrom), StoreError>
    where
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        for replica in self.replicas.rotation() {
            match tokio::time::timeout(REPLICA_PATIENCE, read(replica.pool.clone())).await {
                Ok(Ok(answer)) if settled(&answer) => return Ok((answer, ReadFrom::Replica)),
                // Not there yet: the replica may lag behind the caller's own write.
                Ok(Ok(_)) => break,
                Ok(Err(error)) => replica.failed(&error),
                Err(_) => replica.failed(&"no answer in time"),
            }
        }
        let answer = read(self.primary.clone())
            .await
            .map_err(StoreError::query(what))?;
        Ok((answer, ReadFrom::Primary))
    }

    /// One task by id, read from a replica when one answers and has it, else from the
    /// primary (so a task written a moment ago is found).
    pub async fn task(&self, id: Uuid) -> Result<(Option<TaskRecord>, ReadFrom), StoreError> {
        self.routed(
            "reading a task",
            |pool| async move {
                sqlx::query_as("SELECT * FROM tasks WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
            },
            Option::is_some,
        )
        .await
    }

    /// How many tasks are in each status, from a replica when one answers.
    pub async fn status_counts(&self) -> Result<(BTreeMap<String, i64>, ReadFrom), StoreError> {
        self.routed(
            "counting tasks",
            |pool| async move {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status")
                        .fetch_all(&pool)
                        .await?;
                Ok(rows.into_iter().collect())
            },
            |_| true,
        )
        .await
    }

    /// Tasks finished in the last `minutes`, per agent type and status, from a replica when
    /// one answers.
    pub async fn recent_counts(
        &self,
        minutes: i32,
    ) -> Result<(Vec<(String, String, i64)>, ReadFrom), StoreError> {
        self.routed(
            "counting recent tasks",
            |pool| async move {
                sqlx::query_as(
                    "SELECT agent_type, status, count(*) FROM tasks
                      WHERE completed_at > now() - make_interval(mins => $1)
                      GROUP BY agent_type, status ORDER BY agent_type, status",
                )
                .bind(minutes)
                .fetch_all(&pool)
                .await
            },
            |_| true,
        )
        .await
    }

    /// Asks the server a read goes to whether it is a standby, and its port (for checks).
    pub async fn probe(&self) -> Result<(bool, i32, ReadFrom), StoreError> {
        let ((standby, port), from) = self
            .routed(
                "probing the primary",
                |pool| async move {
                    sqlx::query_as::<_, (bool, i32)>(
                        "SELECT pg_is_in_recovery(), inet_server_port()",
                    )
                    .fetch_one(&pool)
                    .await
                },
                |_| true,
            )
            .await?;
        Ok((standby, port, from))
    }
}
