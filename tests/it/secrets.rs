//! Secrets never leak: processes run with distinctive passwords and tokens in every URL and
//! setting, at debug log level, and nothing they print, serve or answer contains them.

use std::{process::Stdio, time::Duration};

use crate::support::{TestEnv, eventually};

/// Distinctive strings put where secrets go; none may appear in any captured output.
const SECRETS: [&str; 5] = [
    "pw-pg-7c1e",
    "pw-nats-one-93fa",
    "pw-nats-two-41bd",
    "tok-write-5e0a",
    "tok-read-d2c8",
];

/// This environment's URLs with the secrets in them (the shared services here do not check
/// credentials: PostgreSQL trusts loopback and NATS has no accounts, so the processes work).
fn secret_env(env: &TestEnv) -> Vec<(&'static str, String)> {
    let mut vars = env.process_env();
    // The same server and database, with the secret as the password of its userinfo.
    let (scheme, rest) = env
        .settings
        .database
        .url
        .expose()
        .split_once("://")
        .expect("a database URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let database = format!("{scheme}://postgres:pw-pg-7c1e@{host}");
    let nats = env.settings.nats.url.expose().replacen("nats://", "", 1);
    vars.retain(|(name, _)| {
        !matches!(*name, "SWARM_DATABASE_URL" | "SWARM_NATS_URL" | "SWARM_LOG")
    });
    vars.extend([
        (
            "SWARM_DATABASE_URL",
            format!(
                "{database}{}password=pw-pg-7c1e",
                if database.contains('?') { '&' } else { '?' }
            ),
        ),
        (
            "SWARM_NATS_URL",
            format!("nats://a:pw-nats-one-93fa@{nats},nats://b:pw-nats-two-41bd@{nats}"),
        ),
        ("SWARM_API_TOKEN", "tok-write-5e0a".to_string()),
        ("SWARM_API_READ_TOKENS", "tok-read-d2c8".to_string()),
        ("SWARM_LOG", "debug".to_string()),
    ]);
    vars
}

fn assert_clean(what: &str, output: &str) {
    for secret in SECRETS {
        assert!(!output.contains(secret), "{what} shows {secret}:\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_of_any_command_shows_a_secret() {
    let env = TestEnv::new().await;
    let vars = secret_env(&env);
    // The settings are really used: the URLs carry the secrets as passwords.
    assert!(vars.iter().any(|(_, v)| v.contains("pw-pg-7c1e")));

    for args in [
        vec!["status"],
        vec!["migrate"],
        vec!["dlq", "list"],
        vec!["prune"],
        vec!["publish", "--agent", "echo", "--data", "{\"n\": 1}"],
    ] {
        let output = env
            .swarmd()
            .envs(vars.clone())
            .args(&args)
            .output()
            .await
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "swarmd {args:?}: {all}");
        assert_clean(&format!("swarmd {args:?}"), &all);
    }

    // A failure names what failed, still without the secret.
    let mut unreachable = vars.clone();
    unreachable.retain(|(name, _)| *name != "SWARM_DATABASE_URL");
    unreachable.push((
        "SWARM_DATABASE_URL",
        "postgres://postgres:pw-pg-7c1e@127.0.0.1:1/test?password=pw-pg-7c1e".into(),
    ));
    let output = env
        .swarmd()
        .envs(unreachable)
        .arg("status")
        .output()
        .await
        .unwrap();
    let all = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success());
    assert!(all.contains("127.0.0.1:1"), "{all}");
    assert_clean("a failed connection", &all);

    // The API: its logs, its metrics and its error answers.
    let port = crate::support::nats_server::spare_port();
    let mut api = env
        .swarmd()
        .envs(vars.clone())
        .args(["api", "--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = |path: &str, token: Option<&str>| {
        let path = path.to_string();
        let token = token.map(str::to_string);
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.ok()?;
            Some(response)
        }
    };
    eventually("the API to start", Duration::from_secs(20), || {
        client("/health", None)
    })
    .await;
    for (path, token) in [
        ("/metrics", Some("tok-read-d2c8")),
        ("/v1/queues", Some("tok-read-d2c8")),
        ("/v1/queues", Some("tok-write-5e0a-but-longer")),
        ("/v1/tasks/not-an-id", Some("tok-write-5e0a")),
        ("/ready", None),
    ] {
        let response = client(path, token).await.expect("the API answers");
        // The request's own header is not echoed back.
        assert_clean(&format!("GET {path}"), &response);
    }
    let _ = api.start_kill();
    let output = api.wait_with_output().await.unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(logs.contains("API on http://"), "{logs}");
    assert_clean("the API's logs", &logs);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_spans_carry_no_secret() {
    // Protobuf keeps strings as they are, so a secret in any attribute would show in the
    // raw bodies.
    let receiver = crate::support::otlp::OtlpReceiver::start().await;
    let env = TestEnv::new().await;
    let mut vars = secret_env(&env);
    vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()));
    let mut worker = env
        .swarmd()
        .envs(vars.clone())
        .args(["worker", "--no-migrate"])
        .spawn()
        .unwrap();
    let published = env
        .swarmd()
        .envs(vars.clone())
        .args(["publish", "--agent", "echo", "--data", "{\"traced\": true}"])
        .output()
        .await
        .unwrap();
    assert!(published.status.success());
    eventually("the task to be done", Duration::from_secs(20), || async {
        let finished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'completed'")
                .fetch_one(env.store.primary())
                .await
                .unwrap();
        (finished == 1).then_some(())
    })
    .await;
    // SIGTERM: the worker shuts down gracefully and flushes its spans.
    let pid = worker.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker stops")
        .unwrap();

    let bodies = receiver.bodies();
    assert!(
        bodies.len() >= 2,
        "spans of the publisher and the worker arrived"
    );
    let all: Vec<u8> = bodies.iter().flat_map(|b| b.iter().copied()).collect();
    let text = String::from_utf8_lossy(&all);
    assert_clean("exported spans", &text);
    env.cleanup().await;
}
