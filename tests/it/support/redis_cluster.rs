//! A private Redis Cluster of three masters (no replicas) on spare loopback ports, made with
//! `redis-cli --cluster create`, for the result cache on a cluster. Masters keep serving
//! their slots when one dies (`cluster-require-full-coverage no`). Removed on drop.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use super::redis_server::RedisServer;

pub struct RedisCluster {
    masters: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let masters: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-require-full-coverage",
                    "no",
                ])
            })
            .collect();
        let nodes: Vec<String> = masters
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port()))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self { masters };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(0..3).all(|i| cluster.info(i).contains("cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the cluster forms");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The masters' URLs, comma separated (`SWARM_CACHE_REDIS_URL`).
    pub fn urls(&self) -> String {
        self.masters
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Keys master `index` holds.
    pub fn keys_on(&self, index: usize) -> usize {
        self.cli(index, &["DBSIZE"])
            .trim()
            .parse()
            .expect("a count")
    }

    pub fn kill(&mut self, index: usize) {
        self.masters[index].kill();
    }

    fn info(&self, index: usize) -> String {
        self.cli(index, &["CLUSTER", "INFO"])
    }

    fn cli(&self, index: usize, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.masters[index].port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}
