//! A three-node NATS cluster with JetStream on spare loopback ports, started from the
//! deployment's node configuration, whose nodes a test can kill. Removed on drop.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::nats_server::{binary, spare_port};

/// The password variables of `deploy/nats/roles.conf`, all set to [`ADMIN_PASSWORD`] here.
const ROLE_PASSWORDS: [&str; 4] = [
    "SWARM_NATS_PUBLISHER_PASSWORD",
    "SWARM_NATS_WORKER_PASSWORD",
    "SWARM_NATS_API_PASSWORD",
    "SWARM_NATS_ADMIN_PASSWORD",
];
const ADMIN_PASSWORD: &str = "cluster-test-admin";

pub struct NatsCluster {
    dir: PathBuf,
    /// (server name, client port, process)
    nodes: Vec<(String, u16, Option<Child>)>,
}

impl NatsCluster {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("swarm-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let client_ports: Vec<u16> = (0..3).map(|_| spare_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| spare_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let config = deploy_config();
        // The users the node configuration includes; this test connects as admin.
        std::fs::write(
            dir.join("roles.conf"),
            include_str!("../../../deploy/nats/roles.conf"),
        )
        .unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let name = format!("node-{i}");
            let store = dir.join(&name);
            // The deployment's node configuration, with this node's store and loopback ports.
            let conf = dir.join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                config.replace("/data/jetstream", store.to_str().expect("UTF-8 path")),
            )
            .unwrap();
            let child = Command::new(binary())
                .arg("-c")
                .arg(&conf)
                .args(["-a", "127.0.0.1", "-p", &client_ports[i].to_string()])
                .args(["-m", &spare_port().to_string(), "-n", &name])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", route_ports[i])])
                .args(["--routes", &routes])
                .envs(ROLE_PASSWORDS.iter().map(|var| (*var, ADMIN_PASSWORD)))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            nodes.push((name, client_ports[i], Some(child)));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, port, _) in &nodes {
            while TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "cluster node did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Self { dir, nodes }
    }

    /// Every node's client URL, comma separated, as the admin user (its credentials in
    /// the first URL serve for all).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, (_, port, _))| match i {
                0 => format!("nats://admin:{ADMIN_PASSWORD}@127.0.0.1:{port}"),
                _ => format!("nats://127.0.0.1:{port}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills the node named `name` with SIGKILL.
    pub fn kill(&mut self, name: &str) {
        for (node, _, child) in &mut self.nodes {
            if node == name
                && let Some(mut child) = child.take()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `deploy/nats/cluster.conf` as this machine's server accepts it: NATS 2.9 does not know
/// `sync_interval` (2.10 and later do) and refuses to start with it, so the line is left
/// out there; every other setting is the deployment's.
fn deploy_config() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/cluster.conf");
    let config = std::fs::read_to_string(path).expect("deploy/nats/cluster.conf");
    assert!(config.contains("sync_interval: always"));
    let version = Command::new(binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if version.contains("v2.9.") || version.contains("v2.8.") {
        config
            .lines()
            .filter(|line| !line.trim_start().starts_with("sync_interval"))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        config
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
