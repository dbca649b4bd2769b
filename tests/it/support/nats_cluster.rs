//! A three-node NATS cluster with JetStream on spare loopback ports, whose nodes a test can
//! kill. Removed on drop.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::nats_server::{binary, spare_port};

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
        let mut nodes = Vec::new();
        for i in 0..3 {
            let name = format!("node-{i}");
            let store = dir.join(&name);
            let child = Command::new(binary())
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &client_ports[i].to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(&store)
                .args(["-n", &name, "--cluster_name", "swarm-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", route_ports[i])])
                .args(["--routes", &routes])
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

    /// Every node's client URL, comma separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|(_, port, _)| format!("nats://127.0.0.1:{port}"))
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
