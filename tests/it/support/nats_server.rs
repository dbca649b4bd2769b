//! A private `nats-server` with JetStream on a spare loopback port, for tests that stop,
//! kill or restart the broker. Its store survives restarts; everything is removed on drop.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct NatsServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// A configuration file to start with, and the environment it reads.
    config: Option<(PathBuf, Vec<(String, String)>)>,
}

/// The `nats-server` tests start: `SWARM_TEST_NATS_SERVER` when set (the suite's run against
/// the modern server sets it), else Debian's.
pub fn binary() -> String {
    if let Ok(path) = std::env::var("SWARM_TEST_NATS_SERVER")
        && !path.is_empty()
    {
        return path;
    }
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("nats-server")
    .to_string()
}

/// A port nobody listens on right now.
pub fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl NatsServer {
    pub fn start() -> Self {
        let port = spare_port();
        let dir = std::env::temp_dir().join(format!("swarm-nats-{port}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("store dir");
        let mut server = Self {
            port,
            dir,
            child: None,
            config: None,
        };
        server.launch();
        server
    }

    /// A server started from `config` (JetStream storing in its own folder), with
    /// `files` (name, text) written beside the configuration for it to include and `env`
    /// in its environment.
    pub fn start_configured(config: &str, files: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let port = spare_port();
        let dir = std::env::temp_dir().join(format!("swarm-nats-{port}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("store dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("an included file");
        }
        let path = dir.join("server.conf");
        let config = format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{config}\n",
            dir.join("store").display()
        );
        std::fs::write(&path, config).expect("the configuration");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut server = Self {
            port,
            dir,
            child: None,
            config: Some((path, env)),
        };
        server.launch();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The permission violations a configured server logged so far.
    pub fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("server.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("Violation"))
            .map(str::to_string)
            .collect()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let mut command = Command::new(binary());
        match &self.config {
            Some((path, env)) => {
                command
                    .arg("-c")
                    .arg(path)
                    .arg("-l")
                    .arg(self.dir.join("server.log"))
                    .envs(env.iter().cloned());
            }
            None => {
                command
                    .args([
                        "-a",
                        "127.0.0.1",
                        "-p",
                        &self.port.to_string(),
                        "-js",
                        "-sd",
                    ])
                    .arg(&self.dir);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (make services installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Ready when *this* server greets with INFO: another process may have taken the
        // spare port in between, and a connection alone would not tell.
        while !greets(self.port) {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "nats-server exited at start (port {} taken?): {exited:?}",
                self.port
            );
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server with SIGKILL (no goodbye to clients), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when a NATS server greets a new connection on `port` with its INFO line.
fn greets(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut greeting = [0u8; 5];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO "
}
