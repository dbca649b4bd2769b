//! The documentation, followed as a newcomer would: every example a document shows runs here,
//! as printed, against the real services (`tests/shared/doc_examples.rs` says how each is
//! found and marked). Shell examples run with bash in an empty directory, with the `swarmd`
//! this suite built first on `PATH` and this test's own stream, schema and key prefix in the
//! environment; `curl` fails on an HTTP error; background jobs (`swarmd worker &`) are told
//! to stop when the example ends. Ports 8080 and 9000 become spare ports, so documents run in
//! parallel.

use std::{path::Path, time::Duration};

use crate::doc_examples::{Example, examples};
use crate::support::{TestEnv, nats_server::spare_port};

/// The longest one example may take.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(180);

async fn run_document(document: &'static str) {
    let found = examples(document);
    for example in &found {
        if let Some(why) = example.skipped() {
            println!("SKIPPED {} ({}): {why}", example.place(), example.language);
            continue;
        }
        if example.checked_elsewhere() {
            println!(
                "checked elsewhere: {} {:?}",
                example.place(),
                example.markers
            );
            continue;
        }
        match example.language.as_str() {
            "sh" => run_shell(example).await,
            "toml" => load_settings(example),
            "nginx" => nginx_accepts(example).await,
            other => panic!("{}: no way to run a `{other}` example", example.place()),
        }
    }
}

/// Runs a shell example in a fresh environment of its own; fails unless every command
/// succeeds and the output holds what the example's markers expect.
async fn run_shell(example: &Example) {
    let env = TestEnv::new().await;
    // The ports the documents name, each a spare one here.
    let ports: Vec<(&str, String)> = ["8080", "9000"]
        .into_iter()
        .map(|port| (port, spare_port().to_string()))
        .collect();
    let local = |text: String| {
        ports
            .iter()
            .fold(text, |text, (port, spare)| text.replace(port, spare))
    };
    let dir = std::env::temp_dir().join(format!("swarm-doc-{}", uuid::Uuid::new_v4()));
    let (bin, work) = (dir.join("bin"), dir.join("work"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_swarmd"), bin.join("swarmd")).unwrap();
    // Examples run from the repository's root: the files they name are there (a copy, so
    // what they build or write stays out of the checkout).
    copy_tree(
        &crate::doc_examples::repository().join("clients"),
        &work.join("clients"),
    );
    write_executable(
        &bin.join("curl"),
        "#!/bin/sh\nexec /usr/bin/curl --fail-with-body --show-error \"$@\"\n",
    );
    let script = format!(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2>/dev/null || true; wait || true' EXIT\n\
         {setup}\n{code}\n{check}\n",
        setup = local(example.setup()),
        code = local(example.code.clone()),
        check = local(example.check()),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .envs(env.process_env())
        // A task still running when the example ends (a 60 s `sleep`) is handed back at once.
        .env("SWARM_SHUTDOWN_GRACE_SECS", "1")
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(EXAMPLE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{} ran over {EXAMPLE_TIMEOUT:?}", example.place()))
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    println!("── {} ──\n{stdout}{stderr}", example.place());
    assert!(
        output.status.success(),
        "{} failed ({}):\n{script}\n── stdout ──\n{stdout}\n── stderr ──\n{stderr}",
        example.place(),
        output.status
    );
    for expected in example.expected() {
        assert!(
            stdout.contains(expected),
            "{}: the output lacks {expected:?}:\n{stdout}",
            example.place()
        );
    }
    env.cleanup().await;
}

/// Copies the files under `from` to `to`, leaving out what builds and runs leave behind.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text == "__pycache__" || name_text == "build" || name_text.ends_with(".egg-info") {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A settings file as shown loads: every key known, every value readable.
fn load_settings(example: &Example) {
    let path = std::env::temp_dir().join(format!("swarm-doc-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, &example.code).unwrap();
    let loaded = swarm_director::config::Settings::load(Some(&path));
    let _ = std::fs::remove_file(&path);
    if let Err(error) = loaded {
        panic!("{}: {error}", example.place());
    }
}

/// An nginx fragment as shown passes `nginx -t` inside a minimal configuration, with the
/// certificate files it names made for the test.
async fn nginx_accepts(example: &Example) {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: run `make tools`");
    let dir = std::env::temp_dir().join(format!("swarm-doc-nginx-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    let made = tokio::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("tls/api.key"))
        .arg("-out")
        .arg(dir.join("tls/api.crt"))
        .output()
        .await
        .unwrap();
    assert!(made.status.success(), "openssl: {made:?}");
    let fragment = example
        .code
        .replace("/etc/nginx/tls/", &format!("{}/tls/", dir.display()))
        .replace("listen 443", &format!("listen 127.0.0.1:{}", spare_port()));
    let config = format!(
        "pid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\nhttp {{\n\
         access_log off;\nupstream swarm_api {{ server 127.0.0.1:9; }}\n{fragment}\n}}\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let checked = tokio::process::Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        checked.status.success(),
        "{}: {}",
        example.place(),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_examples_run_as_written() {
    run_document("README.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_guides_examples_run_as_written() {
    run_document("docs/usage.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_pages_examples_run_as_written() {
    for document in [
        "docs/configuration.md",
        "docs/operations.md",
        "docs/guarantees.md",
        "docs/performance.md",
        "deploy/README.md",
        "SECURITY.md",
        "schemas/README.md",
        "schemas/agent-protocol.md",
    ] {
        run_document(document).await;
    }
}
