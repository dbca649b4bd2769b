//! NATS least privilege: a private nats-server started with the shipped
//! `deploy/nats/roles.conf`; the fleet works end to end with each process under its own
//! role, and each role is refused what it must not do.

use std::time::Duration;

use serde_json::json;
use swarm_director::{
    broker::Broker,
    config::{SecretUrl, Settings},
    task::{Codec, TaskEnvelope},
};

use crate::support::{TestEnv, eventually, nats_server::NatsServer, succeeds};

const ROLES: &str = include_str!("../../deploy/nats/roles.conf");
const USERS: [(&str, &str); 4] = [
    ("publisher", "SWARM_NATS_PUBLISHER_PASSWORD"),
    ("worker", "SWARM_NATS_WORKER_PASSWORD"),
    ("api", "SWARM_NATS_API_PASSWORD"),
    ("admin", "SWARM_NATS_ADMIN_PASSWORD"),
];

fn password(user: &str) -> String {
    format!("pw-{user}-for-the-roles-test")
}

fn start_server() -> NatsServer {
    let env: Vec<(&str, String)> = USERS
        .iter()
        .map(|(user, var)| (*var, password(user)))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    NatsServer::start_configured("include ./roles.conf", &[("roles.conf", ROLES)], &env)
}

fn url(server: &NatsServer, user: &str) -> String {
    format!(
        "nats://{user}:{}@127.0.0.1:{}",
        password(user),
        server.port()
    )
}

/// Environment for a `swarmd` process of `env` acting as `user` on `server`, with the
/// subject prefix and stream names the roles are written for.
fn process_env_as(env: &TestEnv, server: &NatsServer, user: &str) -> Vec<(&'static str, String)> {
    let mut vars = env.process_env();
    vars.retain(|(name, _)| {
        !matches!(
            *name,
            "SWARM_NATS_URL" | "SWARM_STREAM" | "SWARM_SUBJECT_PREFIX"
        )
    });
    vars.extend([
        ("SWARM_NATS_URL", url(server, user)),
        ("SWARM_STREAM", "SWARM_TASKS".to_string()),
        ("SWARM_SUBJECT_PREFIX", "swarm".to_string()),
        ("SWARM_NATS_INBOX_PREFIX", format!("_INBOX.{user}")),
    ]);
    vars
}

fn settings_as(env: &TestEnv, server: &NatsServer, user: &str) -> Settings {
    let mut settings = env.settings.clone();
    settings.nats.url = SecretUrl::new(url(server, user));
    settings.nats.stream = "SWARM_TASKS".into();
    settings.nats.subject_prefix = "swarm".into();
    settings.nats.inbox_prefix = format!("_INBOX.{user}");
    settings
}

/// A plain client of `user`, with its role's reply prefix.
async fn client_as(server: &NatsServer, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .connect(format!("nats://127.0.0.1:{}", server.port()))
        .await
        .unwrap()
}

/// A JetStream context of `user` that gives up on a request after a second (a refused
/// request gets no answer: the server drops it and tells the client a permission was
/// violated).
async fn jetstream_as(server: &NatsServer, user: &str) -> async_nats::jetstream::Context {
    let client = client_as(server, user).await;
    async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client)
}

/// True when `user` can read messages published on `subject` (a core subscription).
async fn can_read(server: &NatsServer, user: &str, subject: &str, publish_as: &str) -> bool {
    use futures::StreamExt;
    let reader = client_as(server, user).await;
    let mut subscription = reader.subscribe(subject.to_string()).await.unwrap();
    reader.flush().await.unwrap();
    let writer = client_as(server, publish_as).await;
    let target = subject.replace(['>', '*'], "x");
    writer.publish(target, "probe".into()).await.unwrap();
    writer.flush().await.unwrap();
    tokio::time::timeout(Duration::from_millis(500), subscription.next())
        .await
        .is_ok_and(|m| m.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_job_and_nothing_more() {
    let server = start_server();
    let env = TestEnv::on_nats(Some(url(&server, "admin"))).await;

    // Anonymous or wrong passwords get nothing.
    let anonymous = tokio::time::timeout(
        Duration::from_secs(3),
        async_nats::connect(format!("nats://127.0.0.1:{}", server.port())),
    )
    .await;
    assert!(
        !matches!(anonymous, Ok(Ok(_))),
        "anonymous connection accepted"
    );

    // The admin sets the streams up; nobody else may.
    succeeds(
        env.swarmd()
            .envs(process_env_as(&env, &server, "admin"))
            .arg("migrate"),
    )
    .await;

    // A worker (a real process) and the API, each under its own role.
    let mut worker = env
        .swarmd()
        .envs(process_env_as(&env, &server, "worker"))
        .args(["worker", "--no-migrate"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let port = crate::support::nats_server::spare_port();
    let mut api = env
        .swarmd()
        .envs(process_env_as(&env, &server, "api"))
        .env("SWARM_API_TOKEN", "roles-test-token")
        .args(["api", "--addr", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // A publisher's tasks, and one for an agent nobody has, all reach their end.
    let publisher = Broker::connect(&settings_as(&env, &server, "publisher").nats)
        .await
        .unwrap();
    let tasks: Vec<TaskEnvelope> = (0..20)
        .map(|n| TaskEnvelope::new("echo", json!({"n": n})).with_priority((n % 10) as u8))
        .collect();
    for task in &tasks {
        publisher.publish(task, Codec::Json).await.unwrap();
    }
    let stray = TaskEnvelope::new("nonesuch", json!({}));
    publisher.publish(&stray, Codec::Json).await.unwrap();
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    assert!(rows.iter().all(|r| r.status == "completed"));

    // The API reads the backlog and the dead letter, and replays it.
    let http_with = |method: &str, path: &str, body: &str| {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer roles-test-token\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.ok()?;
            Some(response)
        }
    };
    let http = |method: &str, path: &str| http_with(method, path, "");
    let listed = eventually(
        "the API to list the dead letter",
        Duration::from_secs(20),
        || {
            let stray = stray.id.to_string();
            let request = http("GET", "/v1/dlq");
            async move { request.await.filter(|response| response.contains(&stray)) }
        },
    )
    .await;
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    for path in ["/v1/queues", "/v1/scale"] {
        let response = http("GET", path).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    }
    let replayed = http("POST", &format!("/v1/dlq/{}/replay", stray.id))
        .await
        .unwrap();
    assert!(
        replayed.starts_with("HTTP/1.1 202"),
        "{replayed}\n{:#?}",
        server.violations()
    );
    // The API hears the outcome of a task it published and waits for.
    let waited = http_with(
        "POST",
        "/v1/tasks?wait=20s",
        r#"{"agent_type":"echo","data":{"n":1}}"#,
    )
    .await
    .unwrap();
    assert!(
        waited.starts_with("HTTP/1.1 200") && waited.contains(r#""status":"completed""#),
        "{waited}"
    );
    // The operator's read commands under the api role, a publish under the publisher's
    // (which hears its outcome).
    for (user, args) in [
        ("api", vec!["status"]),
        ("api", vec!["dlq", "list"]),
        (
            "publisher",
            vec![
                "publish", "--agent", "echo", "--data", "{}", "--wait", "20s",
            ],
        ),
    ] {
        let output = env
            .swarmd()
            .envs(process_env_as(&env, &server, user))
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?} as {user}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A task too large for a message: the publisher puts its data aside, the worker reads
    // it and puts its result aside, the API answers the result whole.
    let large = TaskEnvelope::new("echo", json!({ "text": "y".repeat(300 * 1024) }));
    let file = std::env::temp_dir().join(format!("swarm-large-{}.jsonl", large.id));
    let line = json!({ "agent_type": "echo", "data": large.data, "id": large.id });
    std::fs::write(&file, line.to_string()).unwrap();
    let published = env
        .swarmd()
        .envs(process_env_as(&env, &server, "publisher"))
        .arg("publish")
        .arg("--file")
        .arg(&file)
        .args(["--wait", "30s"])
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        published.status.success(),
        "{}{:#?}",
        String::from_utf8_lossy(&published.stderr),
        server.violations()
    );
    let answered = http("GET", &format!("/v1/tasks/{}", large.id))
        .await
        .unwrap();
    assert!(
        answered.starts_with("HTTP/1.1 200") && answered.contains(r#""result_ref":{"#),
        "{}",
        &answered[..answered.len().min(600)]
    );
    assert!(
        answered.contains(&"y".repeat(300 * 1024)),
        "the result answered whole"
    );
    // The user and password may also be given on their own, as the Kubernetes manifests do.
    succeeds(
        env.swarmd()
            .envs(process_env_as(&env, &server, "api"))
            .env(
                "SWARM_NATS_URL",
                format!("nats://127.0.0.1:{}", server.port()),
            )
            .env("SWARM_NATS_USER", "api")
            .env("SWARM_NATS_PASSWORD", password("api"))
            .arg("status"),
    )
    .await;
    // Doing its job, no role bumped into its limits.
    assert_eq!(server.violations(), Vec::<String>::new());

    // What each role must not do.
    let publisher_js = jetstream_as(&server, "publisher").await;
    assert!(publisher_js.delete_stream("SWARM_DLQ").await.is_err());
    assert!(
        publisher_js
            .get_stream("SWARM_TASKS")
            .await
            .unwrap()
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("thief".into()),
                ..Default::default()
            })
            .await
            .is_err(),
        "a publisher cannot read the lanes"
    );
    assert!(!can_read(&server, "publisher", "swarm.tasks.>", "admin").await);
    assert!(!can_read(&server, "publisher", "_INBOX.worker.>", "admin").await);
    assert!(!can_read(&server, "api", "_INBOX.worker.>", "admin").await);
    let worker_js = jetstream_as(&server, "worker").await;
    assert!(worker_js.delete_stream("SWARM_TASKS").await.is_err());
    let mut dead_letters = worker_js.get_stream("SWARM_DLQ").await.unwrap();
    assert!(dead_letters.purge().await.is_err(), "a worker cannot purge");
    let _ = dead_letters.info().await;
    let api_js = jetstream_as(&server, "api").await;
    assert!(api_js.delete_stream("SWARM_TASKS").await.is_err());
    // Refused by the server for the role, not failed for another reason.
    let violations = server.violations().join("\n");
    for (user, kind, subject) in [
        ("publisher", "Publish", "$JS.API.STREAM.DELETE.SWARM_DLQ"),
        (
            "publisher",
            "Publish",
            "$JS.API.CONSUMER.CREATE.SWARM_TASKS.thief",
        ),
        ("publisher", "Subscription", "swarm.tasks.>"),
        ("publisher", "Subscription", "_INBOX.worker.>"),
        ("api", "Subscription", "_INBOX.worker.>"),
        ("worker", "Publish", "$JS.API.STREAM.DELETE.SWARM_TASKS"),
        ("worker", "Publish", "$JS.API.STREAM.PURGE.SWARM_DLQ"),
        ("api", "Publish", "$JS.API.STREAM.DELETE.SWARM_TASKS"),
    ] {
        // 2.9 writes `Publish Violation - User "u", Subject "s"`; 2.10 and later name the
        // user with the account before it: `"$G/user:u" - Publish Violation - Subject "s"`.
        let old = format!("{kind} Violation - User \"{user}\", Subject \"{subject}\"");
        let new = format!("/user:{user}\" - {kind} Violation - Subject \"{subject}\"");
        assert!(
            violations.contains(&old) || violations.contains(&new),
            "no {old:?} (or {new:?}) in:\n{violations}"
        );
    }
    // The probes themselves are not refused for the wrong reason: the admin may.
    assert!(can_read(&server, "worker", "swarm.tasks.>", "admin").await);

    for process in [&mut worker, &mut api] {
        let _ = process.start_kill();
        let _ = process.wait().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_or_an_nkey_seed_authenticates_and_a_wrong_one_does_not() {
    let pair = nkeys::KeyPair::new_user();
    let token_server = NatsServer::start_configured(
        "authorization { token: \"the-token-for-the-test\" }",
        &[],
        &[],
    );
    let nkey_server = NatsServer::start_configured(
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}",
            pair.public_key()
        ),
        &[],
        &[],
    );
    let env = TestEnv::new().await;
    // True when a broker with these settings gets a JetStream answer within a few seconds
    // (the client connects in the background, so only a request tells).
    let works = |port: u16, adjust: &dyn Fn(&mut Settings)| {
        let mut settings = env.settings.clone();
        settings.nats.url = SecretUrl::new(format!("nats://127.0.0.1:{port}"));
        adjust(&mut settings);
        async move {
            let attempt = async {
                let broker = Broker::connect(&settings.nats).await.ok()?;
                broker.ensure_stream().await.ok()
            };
            matches!(
                tokio::time::timeout(Duration::from_secs(3), attempt).await,
                Ok(Some(()))
            )
        }
    };
    let token = |value: &str| {
        let value = value.to_string();
        move |s: &mut Settings| s.nats.token = Some(swarm_director::config::Secret::new(&value))
    };
    assert!(works(token_server.port(), &token("the-token-for-the-test")).await);
    assert!(!works(token_server.port(), &token("wrong")).await);
    assert!(!works(token_server.port(), &|_| {}).await);
    // A token given as the URL's userinfo is sent too.
    let in_url = |s: &mut Settings| {
        s.nats.url = SecretUrl::new(
            s.nats
                .url
                .expose()
                .replace("://", "://the-token-for-the-test@"),
        );
    };
    assert!(works(token_server.port(), &in_url).await);

    let with_seed = |seed: String| {
        move |s: &mut Settings| s.nats.nkey_seed = Some(swarm_director::config::Secret::new(&seed))
    };
    assert!(works(nkey_server.port(), &with_seed(pair.seed().unwrap())).await);
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    assert!(!works(nkey_server.port(), &with_seed(stranger)).await);
    env.cleanup().await;
}
