//! Periodic schedules: fired by whichever worker takes the row, each fire exactly once
//! (its task id derives from the fire), paused and resumed, missed fires made up for as
//! configured. The workers run on a manual clock the tests move: no test waits for a
//! period to pass, except the one that measures how late fires start in real time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use swarm_director::clock::Clock;

use crate::support::{TestEnv, eventually, succeeds};

/// Fire times of the tasks a schedule's agent made (`data.schedule` = `name`), in order.
async fn fires(env: &TestEnv, name: &str) -> Vec<(DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT created_at, status FROM tasks WHERE data->>'schedule' = $1 ORDER BY created_at",
    )
    .bind(name)
    .fetch_all(env.store.primary())
    .await
    .unwrap()
}

fn add(env: &TestEnv, name: &str, every: &str, extra: &[&str]) -> tokio::process::Command {
    let mut command = env.swarmd();
    command
        .args(["schedule", "add", name, "--every", every, "--agent", "echo"])
        .args(["--data", &format!(r#"{{"schedule": "{name}"}}"#)])
        .args(extra);
    command
}

/// Consecutive fire times `secs` apart.
fn on_the_grid(times: &[(DateTime<Utc>, String)], secs: i64) {
    for pair in times.windows(2) {
        assert_eq!((pair[1].0 - pair[0].0).num_seconds(), secs, "{times:?}");
    }
    for (at, _) in times {
        assert_eq!(at.timestamp() % secs, 0, "on the grid: {at}");
        assert_eq!(at.timestamp_subsec_micros(), 0);
    }
}

/// When `name` fires next, as its row says.
async fn next_fire(env: &TestEnv, name: &str) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT next_fire FROM schedules WHERE name = $1")
        .bind(name)
        .fetch_one(env.store.primary())
        .await
        .unwrap()
}

/// Waits until `name` made `count` tasks, all completed; returns them.
async fn completed_fires(env: &TestEnv, name: &str, count: usize) -> Vec<(DateTime<Utc>, String)> {
    eventually(
        &format!("{count} completed fires of {name}"),
        Duration::from_secs(15),
        || async {
            let fired = fires(env, name).await;
            (fired.len() == count && fired.iter().all(|(_, status)| status == "completed"))
                .then_some(fired)
        },
    )
    .await
}

/// The workers run on a manual clock: each step sets it to the next fire time, and exactly
/// one task of that fire appears (two workers, one fire each period).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_fire_a_2s_schedule_once_per_period() {
    let env = TestEnv::new().await;
    let clock = Clock::manual(Utc::now());
    let a = env.spawn(env.worker().with_clock(clock.clone()));
    let b = env.spawn(env.worker().with_clock(clock.clone()));
    succeeds(&mut add(&env, "tick", "2s", &[])).await;
    let first = next_fire(&env, "tick").await;
    for period in 0..3 {
        clock.set(first + chrono::Duration::seconds(2 * period));
        completed_fires(&env, "tick", period as usize + 1).await;
    }
    succeeds(env.swarmd().args(["schedule", "remove", "tick"])).await;
    a.stop().await;
    b.stop().await;
    let fired = fires(&env, "tick").await;
    assert_eq!(fired.len(), 3, "one task per fire: {fired:?}");
    assert_eq!(fired[0].0, first);
    on_the_grid(&fired, 2);
    env.cleanup().await;
}

/// A worker starting 3.5 s (of its manual clock) after the first fire time finds four or
/// five fires missed: `all` makes up each, `one` the latest, `none` drops them; pause holds fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_fires_are_made_up_for_as_configured_and_pause_holds_them() {
    let env = TestEnv::new().await;
    succeeds(&mut add(&env, "all", "1s", &["--catch-up", "all"])).await;
    succeeds(&mut add(&env, "one", "1s", &["--catch-up", "one"])).await;
    succeeds(&mut add(&env, "none", "1s", &["--catch-up", "none"])).await;
    // Added a moment apart, they may start a second apart.
    let first = next_fire(&env, "all").await;
    let latest = next_fire(&env, "none").await;
    let start = latest + chrono::Duration::milliseconds(3500);
    let last_missed = latest + chrono::Duration::seconds(3);
    let clock = Clock::manual(start);
    let worker = env.spawn(env.worker().with_clock(clock.clone()));
    eventually(
        "the missed fires handled",
        Duration::from_secs(15),
        || async {
            let next = last_missed + chrono::Duration::seconds(1);
            (next_fire(&env, "none").await == next && next_fire(&env, "all").await == next)
                .then_some(())
        },
    )
    .await;
    // all: every missed fire, each once, on the grid.
    let missed = (last_missed - first).num_seconds() as usize + 1;
    assert!((4..=5).contains(&missed));
    let all = completed_fires(&env, "all", missed).await;
    assert_eq!(all[0].0, first, "from the first: {all:?}");
    on_the_grid(&all, 1);
    // one: a single make-up fire, the latest.
    let one = completed_fires(&env, "one", 1).await;
    assert_eq!(one[0].0, last_missed);
    // none: the missed ones dropped; the last, half a second late, is on time.
    let none = completed_fires(&env, "none", 1).await;
    assert_eq!(none[0].0, last_missed);

    succeeds(env.swarmd().args(["schedule", "pause", "all"])).await;
    let listed = succeeds(env.swarmd().args(["schedule", "list", "--json"])).await;
    let listed: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["name"], "all");
    assert_eq!(listed[0]["paused"], true);
    // The others fire on, a second at a time; the paused one does not.
    for more in 1..=2 {
        clock.advance(chrono::Duration::seconds(1));
        completed_fires(&env, "one", 1 + more).await;
        completed_fires(&env, "none", 1 + more).await;
    }
    assert_eq!(
        fires(&env, "all").await.len(),
        4,
        "nothing fires while paused"
    );

    // Resumed, it fires again (from the next fire time after the real now).
    succeeds(env.swarmd().args(["schedule", "resume", "all"])).await;
    clock.set(Utc::now().max(clock.now()) + chrono::Duration::seconds(2));
    eventually("fires once resumed", Duration::from_secs(15), || async {
        (fires(&env, "all").await.len() > missed).then_some(())
    })
    .await;
    let trigger = succeeds(env.swarmd().args(["schedule", "trigger", "none"])).await;
    let triggered: uuid::Uuid = String::from_utf8_lossy(&trigger.stdout)
        .trim()
        .parse()
        .unwrap();
    let rows = env
        .wait_finished(&[triggered], Duration::from_secs(15))
        .await;
    worker.stop().await;
    assert_eq!(rows[0].status, "completed", "the trigger fired");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_in_a_time_zone_fires_at_its_local_times_and_bad_ones_are_refused() {
    let env = TestEnv::new().await;
    let clock = Clock::manual(Utc::now());
    let worker = env.spawn(env.worker().with_clock(clock.clone()));
    succeeds(&mut add_cron(
        &env,
        "crony",
        "*/2 * * * * *",
        "Europe/Berlin",
    ))
    .await;
    let first = next_fire(&env, "crony").await;
    for period in 0..3 {
        clock.set(first + chrono::Duration::seconds(2 * period));
        completed_fires(&env, "crony", period as usize + 1).await;
    }
    succeeds(env.swarmd().args(["schedule", "pause", "crony"])).await;
    worker.stop().await;
    let fired = fires(&env, "crony").await;
    assert_eq!(fired.len(), 3, "{fired:?}");
    on_the_grid(&fired, 2);
    let listed = succeeds(env.swarmd().args(["schedule", "list"])).await;
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("cron '*/2 * * * * *' (Europe/Berlin)")
    );
    // Crontab's five fields, as people write them.
    succeeds(&mut add_cron(&env, "five", "*/5 * * * *", "UTC")).await;
    for (cron, tz, why) in [
        ("every two seconds", "UTC", "5 fields (minute hour"),
        (
            "0 0 * * 8",
            "UTC",
            "the day-of-week field \"8\" has 8, out of range 0–7",
        ),
        ("*/2 * * * * *", "Mars/Olympus", "time zone"),
    ] {
        let refused = add_cron(&env, "bad", cron, tz).output().await.unwrap();
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains(why));
    }
    env.cleanup().await;
}

fn add_cron(env: &TestEnv, name: &str, cron: &str, tz: &str) -> tokio::process::Command {
    let mut command = env.swarmd();
    command
        .args([
            "schedule", "add", name, "--cron", cron, "--tz", tz, "--agent", "echo",
        ])
        .args(["--data", &format!(r#"{{"schedule": "{name}"}}"#)]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_defined_listed_and_removed_over_http() {
    use axum::{
        body::Body,
        http::{Request, StatusCode},
    };
    use serde_json::json;

    use crate::api::{app, call, get, post_to};
    let env = TestEnv::new().await;
    let app = app(&env, Some("sched-token"));
    let definition = json!({"name": "nightly", "agent_type": "echo", "data": {"n": 1},
                            "cron": "0 30 2 * * *", "time_zone": "Europe/Berlin",
                            "overlap": "skip", "catch_up": "none"});
    let (status, body) = call(
        &app,
        post_to("/v1/schedules", definition.to_string(), Some("sched-token")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    crate::support::schemas::assert_openapi_response("post", "/v1/schedules", 201, &body);
    let next: DateTime<Utc> = serde_json::from_value(body["next_fire"].clone()).unwrap();
    let local = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(local.format("%H:%M:%S").to_string(), "02:30:00");
    // A read token may list but not define.
    let (status, _) = call(
        &app,
        post_to(
            "/v1/schedules",
            definition.to_string(),
            Some("reader-token"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, listed) = call(&app, get("/v1/schedules")).await;
    assert_eq!(status, StatusCode::OK);
    crate::support::schemas::assert_openapi_response("get", "/v1/schedules", 200, &listed);
    assert_eq!(listed["schedules"][0]["name"], "nightly");
    for (bad, why) in [
        (
            json!({"name": "x", "agent_type": "echo", "cron": "nope"}),
            "cron expression",
        ),
        (
            json!({"name": "x", "agent_type": "echo", "cron": "0 24 * * *"}),
            "the hour field \"24\" has 24, out of range 0–23",
        ),
        (
            json!({"name": "x", "agent_type": "echo"}),
            "either every_secs or cron",
        ),
        (
            json!({"name": "x", "agent_type": "echo", "every_secs": 5, "cron": "* * * * * *"}),
            "either every_secs or cron",
        ),
        (
            json!({"name": "x y", "agent_type": "echo", "every_secs": 5}),
            "schedule name",
        ),
    ] {
        let (status, body) = call(
            &app,
            post_to("/v1/schedules", bad.to_string(), Some("sched-token")),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    let delete = |name: &str| {
        Request::delete(format!("/v1/schedules/{name}"))
            .header("authorization", "Bearer sched-token")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        call(&app, delete("nightly")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(call(&app, delete("nightly")).await.0, StatusCode::NOT_FOUND);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_start_on_time_woken_by_the_servers_alarms_where_it_has_them() {
    let env = TestEnv::new().await;
    let version = env
        .broker
        .server_version()
        .expect("the server says its version");
    let alarms = version.at_least(2, 12);
    let worker = env.spawn(env.worker());
    succeeds(&mut add(&env, "prompt", "1s", &[])).await;
    if alarms {
        // The next fire waits in the stream as the server's own schedule.
        let stream = env.stream().await;
        let mut held = stream
            .info_with_subjects(format!("{}.alarms.set.*", env.settings.nats.subject_prefix))
            .await
            .unwrap();
        let mut set = 0;
        while let Some(entry) = futures::StreamExt::next(&mut held).await {
            set += entry.unwrap().1;
        }
        assert_eq!(set, 1, "one alarm for the schedule");
    }
    eventually("three fires started", Duration::from_secs(15), || async {
        let started: Option<i64> = sqlx::query_scalar(
            "SELECT count(started_at) FROM tasks WHERE data->>'schedule' = 'prompt'",
        )
        .fetch_one(env.store.primary())
        .await
        .unwrap();
        (started.unwrap_or(0) >= 3).then_some(())
    })
    .await;
    succeeds(env.swarmd().args(["schedule", "remove", "prompt"])).await;
    worker.stop().await;
    let started: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT created_at, started_at FROM tasks WHERE data->>'schedule' = 'prompt'
          ORDER BY created_at",
    )
    .fetch_all(env.store.primary())
    .await
    .unwrap();
    assert!(started.len() >= 3, "{started:?}");
    let mut late: Vec<i64> = started
        .iter()
        .map(|(due, started)| (started.expect("it ran") - *due).num_milliseconds())
        .collect();
    late.sort_unstable();
    println!("NATS {version}: fires started {late:?} ms after they were due");
    assert!(late[0] >= 0, "never early: {late:?}");
    // Behind alarms the ticker looks every 2 s: without them, fires would be up to 2 s late.
    let bound = if alarms { 500 } else { 1000 };
    assert!(*late.last().unwrap() < bound, "on time: {late:?}");
    env.cleanup().await;
}
