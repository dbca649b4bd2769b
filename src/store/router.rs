//! The seed's `DatabaseRouter` for real: writes go to the primary; reads go to the replicas
//! round-robin, skipping one that failed for a while, and fall back to the primary when no
//! replica answers — or when the replica has not caught up with a row the caller expects.

use std::{
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

impl Store {
    /// One task by id, read from a replica when one answers and has it, else from the
    /// primary (so a task written a moment ago is found).
    pub async fn read_task(&self, id: Uuid) -> Result<(Option<TaskRecord>, ReadFrom), StoreError> {
        let query = "SELECT * FROM tasks WHERE id = $1";
        for replica in self.replicas.rotation() {
            let read = sqlx::query_as(query).bind(id).fetch_optional(&replica.pool);
            match tokio::time::timeout(REPLICA_PATIENCE, read).await {
                Ok(Ok(Some(task))) => return Ok((Some(task), ReadFrom::Replica)),
                // Not there yet: the replica may lag behind the caller's own write.
                Ok(Ok(None)) => break,
                Ok(Err(error)) => replica.failed(&error),
                Err(_) => replica.failed(&"no answer in time"),
            }
        }
        let task = sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&self.primary)
            .await
            .map_err(StoreError::query("reading a task"))?;
        Ok((task, ReadFrom::Primary))
    }

    /// Asks the server a read goes to whether it is a standby, and its port (for checks).
    pub async fn read_probe(&self) -> Result<(bool, i32, ReadFrom), StoreError> {
        let query = "SELECT pg_is_in_recovery(), inet_server_port()";
        for replica in self.replicas.rotation() {
            let read = sqlx::query_as::<_, (bool, i32)>(query).fetch_one(&replica.pool);
            match tokio::time::timeout(REPLICA_PATIENCE, read).await {
                Ok(Ok((standby, port))) => return Ok((standby, port, ReadFrom::Replica)),
                Ok(Err(error)) => replica.failed(&error),
                Err(_) => replica.failed(&"no answer in time"),
            }
        }
        let (standby, port): (bool, i32) = sqlx::query_as(query)
            .fetch_one(&self.primary)
            .await
            .map_err(StoreError::query("probing the primary"))?;
        Ok((standby, port, ReadFrom::Primary))
    }
}
