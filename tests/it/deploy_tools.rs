//! The shipped deploy files loaded by the real programs, not only read as text: nginx
//! balances two live `swarmd` APIs with `deploy/nginx/nginx.conf`, and Prometheus's
//! `promtool` loads `deploy/prometheus/` and runs the alerts' unit tests
//! (`scripts/ensure-test-tools.sh` installs both). `prometheus-k8s.yml` is not loaded here:
//! Debian's Prometheus is built without Kubernetes service discovery.

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use swarm_director::http::{
    self,
    api::{self, ApiState},
    auth::Access,
};

use crate::support::{TestEnv, eventually, nats_server::spare_port};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A program of the test tools, in `PATH` or where Debian puts it.
fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin"])
    {
        let candidate = PathBuf::from(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed: run `make tools` (scripts/ensure-test-tools.sh)")
}

fn run(program: &PathBuf, args: &[&str], dir: &PathBuf) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{program:?} {args:?}: {text}");
    text
}

#[test]
fn promtool_loads_the_prometheus_files_and_the_alerts_pass_their_unit_tests() {
    let promtool = tool("promtool");
    let dir = repo("deploy/prometheus");
    // Syntax only: the bearer token file exists in the deployment, not here.
    run(
        &promtool,
        &["check", "config", "--syntax-only", "prometheus.yml"],
        &dir,
    );
    let rules = run(&promtool, &["check", "rules", "alerts.yml"], &dir);
    assert!(rules.contains("SUCCESS: 9 rules found"), "{rules}");
    let tests = run(&promtool, &["test", "rules", "alerts_test.yml"], &dir);
    assert!(tests.contains("SUCCESS"), "{tests}");
}

/// One HTTP/1.1 request over a fresh connection; the status line and body.
async fn http_get(port: u16, path: &str, token: &str) -> String {
    try_get(port, path, token).await.unwrap()
}

async fn try_get(port: u16, path: &str, token: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: swarm\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// nginx with the shipped configuration, its two upstreams and its listener moved to
/// loopback ports; stopped on drop.
struct Nginx {
    process: std::process::Child,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Nginx {
    fn start(listen: u16, api_1: u16, api_2: u16) -> Self {
        let shipped = std::fs::read_to_string(repo("deploy/nginx/nginx.conf")).unwrap();
        let config = shipped
            .replace("server api-1:8080", &format!("server 127.0.0.1:{api_1}"))
            .replace("server api-2:8080", &format!("server 127.0.0.1:{api_2}"))
            .replace("listen 80;", &format!("listen 127.0.0.1:{listen};"));
        assert_ne!(config, shipped, "the upstreams and listener were found");
        let dir = std::env::temp_dir().join(format!("swarm-nginx-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let nginx = tool("nginx");
        let prefix = format!("{}/", dir.display());
        let globals = format!("daemon off; pid {}/nginx.pid;", dir.display());
        let check = Command::new(&nginx)
            .args(["-t", "-p", &prefix, "-e", "stderr", "-c"])
            .arg(&path)
            .args(["-g", &globals])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let process = Command::new(&nginx)
            .args(["-p", &prefix, "-e", "stderr", "-c"])
            .arg(&path)
            .args(["-g", &globals])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Self {
            process,
            _dir: tempdir::Dir(dir),
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop; its workers go with the master.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.process.id().to_string()])
            .status();
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_balances_two_live_apis_with_the_shipped_config_and_rides_out_one_stopping() {
    let env = TestEnv::new().await;
    let token = "balanced-token";
    let app = || {
        api::router(
            Arc::new(ApiState {
                broker: env.broker.clone(),
                store: env.store.clone(),
                access: Arc::new(Access::with_tokens(&[token], &[], 0.0)),
                redis: None,
                meter: Arc::default(),
                events: Default::default(),
                trace_url: swarm_director::config::DEFAULT_TRACE_URL.into(),
                legacy_keys: None,
            }),
            api::Limits::default(),
        )
    };
    let (first, first_server) = http::serve("127.0.0.1:0", app(), std::future::pending())
        .await
        .unwrap();
    let (second, second_server) = http::serve("127.0.0.1:0", app(), std::future::pending())
        .await
        .unwrap();
    let listen = spare_port();
    let _nginx = Nginx::start(listen, first.port(), second.port());
    // nginx is up once its own health answers.
    eventually("nginx to answer", Duration::from_secs(10), || async {
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            try_get(listen, "/nginx-health", token),
        )
        .await;
        matches!(&answer, Ok(Ok(a)) if a.starts_with("HTTP/1.1 200") && a.contains("healthy"))
            .then_some(())
    })
    .await;

    for _ in 0..10 {
        let queues = http_get(listen, "/v1/queues", token).await;
        assert!(queues.starts_with("HTTP/1.1 200"), "{queues}");
        let health = http_get(listen, "/health", token).await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    }
    // Bodies over 1 MiB are refused by nginx itself.
    let refused = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .unwrap();
        let head = format!(
            "POST /v1/tasks HTTP/1.1\r\nHost: swarm\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            2 * 1024 * 1024
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");

    // One API instance stops: every request is still answered, by the other.
    first_server.abort();
    let _ = first_server.await;
    for _ in 0..10 {
        let queues = http_get(listen, "/v1/queues", token).await;
        assert!(queues.starts_with("HTTP/1.1 200"), "{queues}");
    }
    second_server.abort();
    env.cleanup().await;
}
