//! `swarmd worker --processes N|auto` (and [`super::Fleet::processes`]): one supervisor running N worker processes on this host,
//! like Celery's prefork pool. `auto` (the default) is one process per core
//! (`scale::optimal_worker_processes`). Each process gets its own worker id and metrics port;
//! one that dies is started again; SIGTERM or ctrl-c reaches every process, and the
//! supervisor returns once all have drained. A supervisor killed outright (SIGKILL, OOM)
//! cannot pass anything on: its processes notice it is gone and drain on their own.

use std::{
    ffi::OsString,
    process::ExitStatus,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{process::Command, task::JoinSet};

use crate::config::{Concurrency, Settings};

/// A process that dies is started again after this pause.
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// More restarts than this within [`RESTART_WINDOW`] means something is wrong with the setup
/// rather than one task: the supervisor stops the rest and fails.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Names the supervisor's process id in the environment of the processes it starts.
const SUPERVISOR_PID: &str = "SWARM_SUPERVISOR_PID";
/// How often a supervised process checks that its supervisor is still there.
const SUPERVISOR_CHECK: Duration = Duration::from_secs(1);

/// Resolves once the supervisor that started this process is gone, so the process drains
/// and exits as on SIGTERM instead of running on unsupervised (and unseen by whoever stops
/// the supervisor). Never resolves in a process no supervisor started.
pub async fn supervisor_gone() {
    let supervisor = std::env::var(SUPERVISOR_PID)
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok());
    let Some(supervisor) = supervisor else {
        return std::future::pending().await;
    };
    // An orphan is adopted by init (or a subreaper): its parent id changes.
    while std::os::unix::process::parent_id() == supervisor {
        tokio::time::sleep(SUPERVISOR_CHECK).await;
    }
    tracing::warn!(supervisor, "the supervisor is gone: shutting down");
}

/// Whether a supervisor started this process (it then runs as one worker).
pub fn is_supervised() -> bool {
    std::env::var_os(SUPERVISOR_PID).is_some()
}

/// Runs `count` worker processes — this program again, with the same arguments — until
/// `shutdown` completes (then each is told with SIGTERM and drained).
///
/// Fails when a process cannot be started, or they keep dying.
pub async fn supervise(
    count: usize,
    settings: &Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this program's executable")?;
    let mut args = without_flag(std::env::args_os().skip(1), "--processes");
    let base_id = settings.worker.worker_id();
    let threads = super::threads::threads_per_process(count);
    let slots = memory_shared_slots(
        settings.worker.concurrency,
        crate::scale::available_cores(),
        crate::scale::available_memory_bytes(),
        count,
    );
    if slots.is_some() {
        // `--concurrency auto` given here would size each process against all the memory.
        args = without_flag(args.into_iter(), "--concurrency");
    }
    let start = |index: usize| {
        let mut command = Command::new(&exe);
        if let Some(slots) = slots {
            command.env("SWARM_CONCURRENCY", slots.to_string());
        }
        command
            .args(&args)
            .env("SWARM_WORKER_PROCESSES", "1")
            .env(SUPERVISOR_PID, std::process::id().to_string())
            .env(super::threads::RUNTIME_THREADS, threads.to_string())
            .env("SWARM_WORKER_ID", format!("{base_id}-{index}"))
            .env(
                "SWARM_METRICS_ADDR",
                shifted_port(&settings.worker.metrics_addr, index),
            );
        command
            .spawn()
            .with_context(|| format!("starting worker process {index}"))
    };
    tracing::info!(processes = count, "starting worker processes");
    let mut pids = vec![None; count];
    let mut running = JoinSet::new();
    for (index, pid) in pids.iter_mut().enumerate() {
        let mut child = start(index)?;
        *pid = child.id();
        running.spawn(async move { (index, child.wait().await) });
    }
    let mut restarts: Vec<Instant> = Vec::new();
    tokio::pin!(shutdown);
    let failure = loop {
        let (index, status) = tokio::select! {
            _ = &mut shutdown => break None,
            Some(ended) = running.join_next() => ended.context("watching a worker process")?,
        };
        pids[index] = None;
        let status: Option<ExitStatus> = status.ok();
        tracing::warn!(index, ?status, "a worker process ended; starting it again");
        restarts.retain(|at| at.elapsed() < RESTART_WINDOW);
        restarts.push(Instant::now());
        if restarts.len() > MAX_RESTARTS {
            break Some(anyhow::anyhow!(
                "worker processes ended {} times within {RESTART_WINDOW:?} (last: {status:?})",
                restarts.len()
            ));
        }
        tokio::time::sleep(RESTART_PAUSE).await;
        let mut child = start(index)?;
        pids[index] = child.id();
        running.spawn(async move { (index, child.wait().await) });
    };
    for pid in pids.into_iter().flatten() {
        terminate(pid);
    }
    // Each process drains within its own grace period.
    while running.join_next().await.is_some() {}
    tracing::info!("every worker process stopped");
    failure.map_or(Ok(()), Err)
}

/// The slots each of `count` processes gets when they are sized `auto`: as one process
/// would be, but against its share of the memory, so that together they reserve no more
/// than the host has. `None` for a fixed concurrency (every process runs that many).
fn memory_shared_slots(
    setting: Concurrency,
    cores: usize,
    memory_bytes: u64,
    count: usize,
) -> Option<usize> {
    match setting {
        Concurrency::Auto => Some(crate::scale::concurrency_for(
            cores,
            memory_bytes / count.max(1) as u64,
        )),
        Concurrency::Fixed(_) => None,
    }
}

/// Asks a process to shut down gracefully.
fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) only sends a signal; `pid` is a child we started and have not reaped
    // (its waiter is still in the join set), so the id cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// A command line without `flag` and its value (`--flag value` or `--flag=value`).
fn without_flag(args: impl Iterator<Item = OsString>, flag: &str) -> Vec<OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.to_str() {
            Some(given) if given == flag => skip_value = true,
            Some(given) if given.strip_prefix(flag).is_some_and(|v| v.starts_with('=')) => {}
            _ => kept.push(arg),
        }
    }
    kept
}

/// `host:port` with the port moved up by `index`, so the processes' metrics endpoints do not
/// collide; empty (off) and port 0 (any) stay as they are.
fn shifted_port(addr: &str, index: usize) -> String {
    match addr
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()))
    {
        Some((host, Ok(port))) if port != 0 => {
            format!("{host}:{}", port.saturating_add(index as u16))
        }
        _ => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_run_the_same_command_without_the_flag() {
        let args = [
            "worker",
            "--processes",
            "3",
            "--agents",
            "email",
            "--processes=2",
        ]
        .map(OsString::from);
        assert_eq!(
            without_flag(args.into_iter(), "--processes"),
            ["worker", "--agents", "email"].map(OsString::from)
        );
        let args = [
            "worker",
            "--concurrency=auto",
            "--concurrency-x",
            "--concurrency",
            "auto",
        ];
        assert_eq!(
            without_flag(args.map(OsString::from).into_iter(), "--concurrency"),
            ["worker", "--concurrency-x"].map(OsString::from)
        );
    }

    #[test]
    fn auto_sized_processes_share_the_memory() {
        const GIB: u64 = 1 << 30;
        // This machine: two processes of 256 slots, as one would have.
        assert_eq!(
            memory_shared_slots(Concurrency::Auto, 2, 24 * GIB, 2),
            Some(256)
        );
        // 16 cores, 8 GiB, 8 processes: 1 GiB each holds 256 tasks of the largest size,
        // not the 1,024 each would take sized against all 8 GiB.
        assert_eq!(
            memory_shared_slots(Concurrency::Auto, 16, 8 * GIB, 8),
            Some(256)
        );
        assert_eq!(memory_shared_slots(Concurrency::Fixed(4), 16, GIB, 8), None);
    }

    #[test]
    fn metrics_ports_move_up_per_process() {
        assert_eq!(shifted_port("0.0.0.0:9464", 2), "0.0.0.0:9466");
        assert_eq!(shifted_port("[::1]:9464", 1), "[::1]:9465");
        assert_eq!(shifted_port("", 3), "");
        assert_eq!(shifted_port("127.0.0.1:0", 3), "127.0.0.1:0");
    }
}
