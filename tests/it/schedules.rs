//! Periodic schedules: fired by whichever worker takes the row, each fire exactly once
//! (its task id derives from the fire), paused and resumed, missed fires made up for as
//! configured.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::support::{TestEnv, succeeds};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_fire_a_2s_schedule_once_per_period() {
    let env = TestEnv::new().await;
    let (a, b) = (env.spawn(env.worker()), env.spawn(env.worker()));
    succeeds(&mut add(&env, "tick", "2s", &[])).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    succeeds(env.swarmd().args(["schedule", "remove", "tick"])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.stop().await;
    b.stop().await;
    let fired = fires(&env, "tick").await;
    assert!((3..=4).contains(&fired.len()), "{fired:?}");
    on_the_grid(&fired, 2);
    assert!(fired.iter().all(|(_, status)| status == "completed"));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_fires_are_made_up_for_as_configured_and_pause_holds_them() {
    let env = TestEnv::new().await;
    succeeds(&mut add(&env, "all", "1s", &["--catch-up", "all"])).await;
    succeeds(&mut add(&env, "one", "1s", &["--catch-up", "one"])).await;
    succeeds(&mut add(&env, "none", "1s", &["--catch-up", "none"])).await;
    let added = Utc::now();
    // No worker for 4 s: three or four fires of each are missed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let worker = env.spawn(env.worker());
    let started = Utc::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    succeeds(env.swarmd().args(["schedule", "pause", "all"])).await;
    let listed = succeeds(env.swarmd().args(["schedule", "list", "--json"])).await;
    let listed: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["name"], "all");
    assert_eq!(listed[0]["paused"], true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_pause = fires(&env, "all").await.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused = fires(&env, "all").await.len();
    assert_eq!(paused, before_pause, "nothing fires while paused");
    succeeds(env.swarmd().args(["schedule", "resume", "all"])).await;
    let trigger = succeeds(env.swarmd().args(["schedule", "trigger", "none"])).await;
    let triggered: uuid::Uuid = String::from_utf8_lossy(&trigger.stdout)
        .trim()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    worker.stop().await;

    let missed = |times: &[(DateTime<Utc>, String)]| {
        times
            .iter()
            .filter(|(at, _)| *at < started - chrono::Duration::seconds(1))
            .count()
    };
    // all: every missed fire, each once, on the grid, then the regular ones.
    let all = fires(&env, "all").await;
    assert!(missed(&all) >= 3, "{all:?}");
    assert!(
        all[0].0 <= added + chrono::Duration::seconds(1),
        "from the first: {all:?}"
    );
    assert!(
        fires(&env, "all").await.len() > paused,
        "fires again once resumed"
    );
    // one: a single make-up fire for the missed ones.
    let one = fires(&env, "one").await;
    assert_eq!(missed(&one), 0, "{one:?}");
    on_the_grid(&one, 1);
    // none: the missed ones dropped.
    let none: Vec<_> = fires(&env, "none")
        .await
        .into_iter()
        .filter(|(at, _)| at.timestamp_subsec_micros() == 0)
        .collect();
    assert!(
        none.iter()
            .all(|(at, _)| *at >= started - chrono::Duration::seconds(1)),
        "{none:?}"
    );
    let triggered_row = env
        .store
        .task(triggered)
        .await
        .unwrap()
        .expect("the trigger fired");
    assert_eq!(triggered_row.status, "completed");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_in_a_time_zone_fires_at_its_local_times_and_bad_ones_are_refused() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    succeeds(&mut add_cron(
        &env,
        "crony",
        "*/2 * * * * *",
        "Europe/Berlin",
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    succeeds(env.swarmd().args(["schedule", "pause", "crony"])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.stop().await;
    let fired = fires(&env, "crony").await;
    assert!((2..=3).contains(&fired.len()), "{fired:?}");
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
    tokio::time::sleep(Duration::from_millis(4500)).await;
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
