//! A private PostgreSQL primary and a streaming hot standby of it (`pg_basebackup -R`) on
//! spare loopback ports, for read-replica tests. Removed on drop.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::nats_server::spare_port;

pub struct PgPair {
    dir: PathBuf,
    bin: PathBuf,
    pub primary_port: u16,
    pub standby_port: u16,
    standby_running: bool,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries (make services installs them)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb")
}

impl PgPair {
    /// A primary only, serving TLS with a self-signed certificate (`ssl = on`).
    pub fn start_primary_with_tls() -> Self {
        let pair = Self::init_primary();
        let primary = pair.dir.join("primary");
        let (key, cert) = (primary.join("server.key"), primary.join("server.crt"));
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                path(&key),
                "-out",
                path(&cert),
            ],
            is_root(),
        );
        run("chmod", &["600", path(&key)], is_root());
        pair.pg_ctl_start(&primary, pair.primary_port, "-c ssl=on");
        pair
    }

    pub fn start() -> Self {
        let pair = Self::init_primary();
        let primary = pair.dir.join("primary");
        pair.pg_ctl_start(
            &primary,
            pair.primary_port,
            "-c wal_level=replica -c max_wal_senders=5",
        );
        let standby = pair.dir.join("standby");
        let port = pair.primary_port.to_string();
        pair.pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                path(&standby),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
            ],
        );
        let mut pair = pair;
        pair.pg_ctl_start(&standby, pair.standby_port, "-c hot_standby=on");
        pair.standby_running = true;
        pair
    }

    /// A fresh data directory for the primary (not started).
    fn init_primary() -> Self {
        let dir = std::env::temp_dir().join(format!("swarm-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let pair = Self {
            bin: bin_dir(),
            primary_port: spare_port(),
            standby_port: spare_port(),
            standby_running: false,
            dir,
        };
        // The server refuses to run as root: hand the directory to `postgres` then.
        if is_root() {
            run(
                "chown",
                &["-R", "postgres:postgres", pair.dir.to_str().unwrap()],
                false,
            );
        }
        let primary = pair.dir.join("primary");
        pair.pg(
            "initdb",
            &["-D", path(&primary), "-U", "postgres", "--auth=trust", "-N"],
        );
        pair
    }

    pub fn primary_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.primary_port
        )
    }

    pub fn standby_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.standby_port
        )
    }

    pub fn stop_standby(&mut self) {
        self.pg(
            "pg_ctl",
            &[
                "-D",
                path(&self.dir.join("standby")),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        self.standby_running = false;
    }

    fn pg_ctl_start(&self, data: &Path, port: u16, extra: &str) {
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {extra}",
            path(&self.dir)
        );
        let log = data.with_extension("log");
        self.pg(
            "pg_ctl",
            &[
                "-D",
                path(data),
                "-l",
                path(&log),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        run(program.to_str().unwrap(), args, is_root());
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(program: &str, args: &[&str], as_postgres: bool) {
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    };
    let out = command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for PgPair {
    fn drop(&mut self) {
        for (node, running) in [("standby", self.standby_running), ("primary", true)] {
            if running {
                let data = self.dir.join(node);
                let program = self.bin.join("pg_ctl");
                let mut command = if is_root() {
                    let mut c = Command::new("runuser");
                    c.args(["-u", "postgres", "--"]).arg(&program);
                    c
                } else {
                    Command::new(&program)
                };
                let _ = command
                    .args(["-D", path(&data), "-m", "immediate", "-w", "stop"])
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
