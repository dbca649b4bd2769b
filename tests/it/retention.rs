//! Retention: day partitions created ahead and dropped whole once expired, unfinished and
//! recently finished rows kept, the default partition trimmed, the legacy mirror's finished
//! hashes trimmed by the same period, and the migration keeping rows stored before it.

use std::{sync::Arc, time::Duration};

use chrono::{Days, NaiveDate, Utc};
use redis::AsyncCommands;
use serde_json::json;
use swarm_director::{
    config::DatabaseSettings,
    mirror::LegacyKeys,
    sidecars::upkeep::{LegacyMirror, Upkeep},
    store::{
        Claim, DAYS_AHEAD, Origin, PartitionReport, RowKey, Settled, SettledStatus, Store,
        partition_name,
    },
    task::TaskEnvelope,
};
use uuid::Uuid;

use crate::support::TestEnv;

const WORKER: &str = "retention-test";

/// A task created at noon of `day`.
fn created_on(day: NaiveDate) -> TaskEnvelope {
    let mut task = TaskEnvelope::new("echo", json!({"day": day.to_string()}));
    task.created_at = day.and_hms_opt(12, 0, 0).unwrap().and_utc();
    task
}

/// Stores `task` completed, as a first delivery's outcome does.
async fn complete(store: &Store, task: &TaskEnvelope) {
    let settled = Settled {
        id: task.id,
        attempt: 1,
        status: SettledStatus::Completed,
        result: Some(json!({"ok": true})),
        result_ref: None,
        error: None,
        cancelled_by: None,
        origin: Origin::of(Arc::new(task.clone()), None, Utc::now()),
    };
    let applied = store.tasks().settle(&[&settled], WORKER).await.unwrap();
    assert!(applied.contains(&task.id));
}

/// Stores `task` as `processing` (a redelivery's claim).
async fn start(store: &Store, task: &TaskEnvelope) {
    let claim = Claim {
        task,
        attempt: 2,
        trace_id: None,
    };
    let claimed = store.tasks().claim(&[claim], WORKER).await.unwrap();
    assert!(claimed.contains_key(&task.id));
}

/// Pretends `ids` finished `days` ago.
async fn finished_days_ago(store: &Store, ids: &[Uuid], days: i32) {
    sqlx::query(
        "UPDATE tasks SET completed_at = now() - make_interval(days => $2) WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(days)
    .execute(store.primary())
    .await
    .unwrap();
}

/// The partition holding the row of `id`, if any.
async fn partition_of(store: &Store, id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_optional(store.primary())
        .await
        .unwrap()
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

#[tokio::test]
async fn expired_days_are_dropped_whole_keeping_unfinished_and_recently_finished_rows() {
    let env = TestEnv::new().await;
    let store = &env.store;
    let old_day = today() - Days::new(10);
    let mut report = PartitionReport::default();
    store
        .retention()
        .ensure_partitions(old_day, old_day, &mut report)
        .await
        .unwrap();
    assert_eq!(report.created, vec![old_day]);

    let expired = created_on(old_day);
    let unfinished = created_on(old_day);
    let finished_lately = created_on(old_day);
    complete(store, &expired).await;
    start(store, &unfinished).await;
    complete(store, &finished_lately).await;
    finished_days_ago(store, &[expired.id], 9).await;
    // A day without a partition: these wait in the default partition.
    let ancient_day = today() - Days::new(400);
    let ancient_expired = created_on(ancient_day);
    let ancient_recent = created_on(ancient_day);
    complete(store, &ancient_expired).await;
    complete(store, &ancient_recent).await;
    finished_days_ago(store, &[ancient_expired.id], 8).await;
    assert_eq!(
        partition_of(store, expired.id).await.as_deref(),
        Some(partition_name(old_day).as_str())
    );
    assert_eq!(
        partition_of(store, ancient_expired.id).await.as_deref(),
        Some("tasks_default")
    );

    let report = store
        .retention()
        .upkeep_partitions(Utc::now(), Some(chrono::Duration::days(7)))
        .await
        .unwrap();
    assert_eq!(report.dropped, vec![old_day]);
    assert_eq!(report.kept_rows, 2, "{report:?}");
    assert_eq!(report.trimmed_rows, 1, "{report:?}");
    let days = store.retention().partition_days().await.unwrap();
    assert!(!days.contains(&old_day));
    for ahead in 0..=DAYS_AHEAD {
        assert!(days.contains(&(today() + Days::new(ahead))), "{days:?}");
    }

    assert!(store.tasks().get(expired.id).await.unwrap().is_none());
    assert!(
        store
            .tasks()
            .get(ancient_expired.id)
            .await
            .unwrap()
            .is_none()
    );
    for kept in [&finished_lately, &ancient_recent] {
        let row = store.tasks().get(kept.id).await.unwrap().expect("kept");
        assert_eq!(row.status, "completed");
        assert_eq!(
            partition_of(store, kept.id).await.as_deref(),
            Some("tasks_default")
        );
    }
    let row = store
        .tasks()
        .get(unfinished.id)
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(row.status, "processing");
    // The kept row is still the task's row: its outcome lands on it, and then it is final.
    complete(store, &unfinished).await;
    let finished = store
        .tasks()
        .finished_among(&[RowKey::of(&unfinished)])
        .await
        .unwrap();
    assert!(finished.contains(&unfinished.id));
    env.cleanup().await;
}

#[tokio::test]
async fn a_row_waiting_in_the_default_partition_moves_into_its_days_new_partition() {
    let env = TestEnv::new().await;
    let store = &env.store;
    let future_day = today() + Days::new(DAYS_AHEAD + 7);
    let early = created_on(future_day);
    complete(store, &early).await;
    assert_eq!(
        partition_of(store, early.id).await.as_deref(),
        Some("tasks_default")
    );
    let mut report = PartitionReport::default();
    store
        .retention()
        .ensure_partitions(future_day, future_day, &mut report)
        .await
        .unwrap();
    assert_eq!(report.created, vec![future_day]);
    assert_eq!(report.adopted_rows, 1);
    assert_eq!(
        partition_of(store, early.id).await.as_deref(),
        Some(partition_name(future_day).as_str())
    );
    // Still recognised as finished: a duplicate delivery is not run again.
    let finished = store
        .tasks()
        .finished_among(&[RowKey::of(&early)])
        .await
        .unwrap();
    assert!(finished.contains(&early.id));
    env.cleanup().await;
}

#[tokio::test]
async fn workers_running_upkeep_at_once_take_turns() {
    let env = TestEnv::new().await;
    let far = today() + Days::new(30);
    let rounds = (0..6).map(|_| {
        let store = env.store.clone();
        async move {
            let mut report = PartitionReport::default();
            store
                .retention()
                .ensure_partitions(far, far + Days::new(4), &mut report)
                .await
                .map(|()| report)
        }
    });
    let reports = futures::future::join_all(rounds).await;
    let mut created = Vec::new();
    for report in reports {
        created.extend(report.expect("no round fails").created);
    }
    created.sort();
    let days = env.store.retention().partition_days().await.unwrap();
    for offset in 0..=4 {
        let day = far + Days::new(offset);
        assert!(days.contains(&day), "{days:?}");
        assert_eq!(
            created.iter().filter(|d| **d == day).count(),
            1,
            "{created:?}"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn the_legacy_mirrors_finished_hashes_are_trimmed_by_the_same_period() {
    let env = TestEnv::new().await;
    let keys = LegacyKeys::new(&env.settings.redis.key_prefix);
    let mut redis = env.redis().await;
    let old = "2020-01-01T00:00:00.000001";
    let recent = swarm_director::mirror::legacy_json::python_timestamp(Utc::now());
    let entries = [
        (
            &keys.completed_tasks,
            "c-old",
            json!({"id": "c-old", "completed_at": old}),
        ),
        (
            &keys.completed_tasks,
            "c-new",
            json!({"id": "c-new", "completed_at": recent}),
        ),
        (
            &keys.completed_tasks,
            "c-odd",
            json!({"id": "c-odd", "note": "no time"}),
        ),
        (
            &keys.failed_tasks,
            "f-old",
            json!({"id": "f-old", "failed_at": old}),
        ),
        (
            &keys.failed_tasks,
            "f-new",
            json!({"id": "f-new", "failed_at": recent}),
        ),
    ];
    for (hash, id, entry) in &entries {
        let _: () = redis.hset(*hash, *id, entry.to_string()).await.unwrap();
        let _: () = redis.hset(&keys.mirror_state, *id, 3).await.unwrap();
    }
    let manager = swarm_director::mirror::connect(&env.settings.redis).unwrap();
    let upkeep =
        Upkeep::new(env.store.clone(), Some(chrono::Duration::days(7))).with_legacy(LegacyMirror {
            redis: manager,
            keys: keys.clone(),
        });

    let report = upkeep.round(Utc::now(), true).await.unwrap();
    let trimmed = report.legacy.expect("the first worker takes the lease");
    assert_eq!((trimmed.completed, trimmed.failed), (1, 1));
    let completed: Vec<String> = redis.hkeys(&keys.completed_tasks).await.unwrap();
    let failed: Vec<String> = redis.hkeys(&keys.failed_tasks).await.unwrap();
    let mut completed = completed;
    completed.sort();
    assert_eq!(completed, vec!["c-new", "c-odd"]);
    assert_eq!(failed, vec!["f-new"]);
    let state: Vec<String> = redis.hkeys(&keys.mirror_state).await.unwrap();
    assert!(!state.contains(&"c-old".to_string()) && !state.contains(&"f-old".to_string()));
    assert!(state.contains(&"c-new".to_string()));

    // Within the hour another worker leaves the mirror alone; an operator's prune does not.
    let _: () = redis
        .hset(
            &keys.completed_tasks,
            "c-old2",
            json!({"completed_at": old}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(upkeep.round(Utc::now(), true).await.unwrap().legacy, None);
    let forced = upkeep.round(Utc::now(), false).await.unwrap();
    assert_eq!(forced.legacy.map(|t| t.completed), Some(1));
    env.cleanup().await;
}

#[tokio::test]
async fn swarmd_prune_reports_what_it_removed() {
    let env = TestEnv::new().await;
    let old_day = today() - Days::new(12);
    let mut report = PartitionReport::default();
    env.store
        .retention()
        .ensure_partitions(old_day, old_day, &mut report)
        .await
        .unwrap();
    let expired = created_on(old_day);
    complete(&env.store, &expired).await;
    finished_days_ago(&env.store, &[expired.id], 12).await;

    let output = env
        .swarmd()
        .args(["prune", "--retention-days", "7"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("partitions dropped: {old_day}")),
        "{stdout}"
    );
    assert!(env.store.tasks().get(expired.id).await.unwrap().is_none());

    // Retention 0 keeps everything.
    let kept_day = today() - Days::new(20);
    env.store
        .retention()
        .ensure_partitions(kept_day, kept_day, &mut report)
        .await
        .unwrap();
    let output = env
        .swarmd()
        .args(["prune", "--retention-days", "0"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("keep everything"));
    assert!(
        env.store
            .retention()
            .partition_days()
            .await
            .unwrap()
            .contains(&kept_day)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_worker_writes_into_todays_partition() {
    let env = TestEnv::new().await;
    let running = env.spawn(env.worker());
    let task = TaskEnvelope::new("echo", json!({"hello": "partitions"}));
    env.broker
        .publish(&task, swarm_director::task::Codec::Json)
        .await
        .unwrap();
    env.wait_finished(&[task.id], Duration::from_secs(20)).await;
    assert_eq!(
        partition_of(&env.store, task.id).await,
        Some(partition_name(task.created_at.date_naive()))
    );
    // The day's indexes: the key and unfinished rows as B-trees, completion times as a
    // BRIN (no per-row insertion on the hot path), which still answers recent counts. No
    // data search index unless asked for (`database.search_index`).
    let methods: Vec<(String, String)> = sqlx::query_as(
        "SELECT am.amname::text, pg_get_indexdef(x.indexrelid)
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam
          WHERE x.indrelid = $1::regclass ORDER BY 1, 2",
    )
    .bind(partition_name(task.created_at.date_naive()))
    .fetch_all(env.store.primary())
    .await
    .unwrap();
    let methods: Vec<&str> = methods.iter().map(|(am, _)| am.as_str()).collect();
    assert_eq!(methods, ["brin", "btree", "btree"]);
    let (recent, _) = env.store.reads().recent_counts(5).await.unwrap();
    assert_eq!(recent, [("echo".to_string(), "completed".to_string(), 1)]);
    running.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_partitioning_migration_keeps_rows_stored_before_it() {
    let env = TestEnv::new().await;
    let settings = DatabaseSettings {
        schema: format!("{}_pre", env.settings.database.schema),
        ..env.settings.database.clone()
    };
    let store = Store::connect(&settings).await.unwrap();
    let migrations = [
        include_str!("../../schemas/migrations/0001_tasks.sql"),
        include_str!("../../schemas/migrations/0002_task_partitions.sql"),
        include_str!("../../schemas/migrations/0003_completed_at_brin.sql"),
        include_str!("../../schemas/migrations/0004_payload_refs.sql"),
        include_str!("../../schemas/migrations/0005_task_keys.sql"),
        include_str!("../../schemas/migrations/0006_scheduled_status.sql"),
        include_str!("../../schemas/migrations/0007_schedules.sql"),
        include_str!("../../schemas/migrations/0008_cron_schedules.sql"),
        include_str!("../../schemas/migrations/0009_progress.sql"),
        include_str!("../../schemas/migrations/0010_not_before.sql"),
        include_str!("../../schemas/migrations/0011_cancellation.sql"),
    ];
    sqlx::raw_sql(sqlx::AssertSqlSafe(migrations[0]))
        .execute(store.primary())
        .await
        .unwrap();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO tasks (id, agent_type, priority, data, status, result, created_at,
                            completed_at)
         VALUES ($1, 'echo', 5, '{\"n\": 1}', 'completed', '{\"ok\": true}', now(), now())",
    )
    .bind(id)
    .execute(store.primary())
    .await
    .unwrap();
    for later in &migrations[1..] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*later))
            .execute(store.primary())
            .await
            .unwrap();
    }
    let row = store
        .tasks()
        .get(id)
        .await
        .unwrap()
        .expect("the row survives");
    assert_eq!(
        (row.status.as_str(), row.result),
        ("completed", Some(json!({"ok": true})))
    );
    assert_eq!(
        partition_of(&store, id).await.as_deref(),
        Some("tasks_default")
    );
    // The day's partition, created afterwards, takes the row in.
    let report = store
        .retention()
        .upkeep_partitions(Utc::now(), None)
        .await
        .unwrap();
    assert_eq!(report.adopted_rows, 1);
    store.drop_schema().await.unwrap();
    env.cleanup().await;
}
