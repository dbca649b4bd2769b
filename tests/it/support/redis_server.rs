//! A private `redis-server` on a spare loopback port, for tests that stop it or start it
//! with their own settings. Removed on drop.

use super::nats_server::spare_port;

/// A private `redis-server` with an append-only file, so a kill loses nothing it stored.
pub struct RedisServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
    args: Vec<String>,
    /// Fresh ports to try when the first one turns out taken (at the first start only: a
    /// restart keeps its port).
    retry_ports: u32,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server that also takes `args` (e.g. `--aclfile <path>`).
    pub fn start_with(args: &[&str]) -> Self {
        let port = spare_port();
        let dir = std::env::temp_dir().join(format!("swarm-redis-{port}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            dir,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            retry_ports: 3,
        };
        server.launch();
        server.retry_ports = 0;
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn launch(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        // Ready when *this* server answers a PING (`+PONG`, or `-NOAUTH` under ACLs): another
        // process may have taken the spare port in between, and a connection alone would not
        // tell.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !answers_ping(self.port) {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() && self.retry_ports > 0 {
                // The spare port was taken before the server bound it: try another.
                self.retry_ports -= 1;
                self.port = spare_port();
                return self.launch();
            }
            assert!(
                exited.is_none(),
                "redis-server exited at start (port {} taken?): {exited:?}",
                self.port
            );
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer on {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when a Redis server answers a PING on `port`.
fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && (reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH"))
}
