//! The async runtime of a fleet process, and how the cores are shared out between worker
//! processes started together on one host.

/// The async runtime a command runs on: one thread per core, unless
/// `SWARM_RUNTIME_THREADS` says how many (`1`: everything on one thread). Several worker
/// processes started together on one host (`swarmd worker --processes N`, `swarmd bench`)
/// share the cores out: each gets cores / N, and one thread per process measured 24 % more
/// tasks/s than two per process on two cores (docs/performance.md) — fewer hand-offs of a
/// message between threads.
///
/// Fails when the variable is not a number or the runtime cannot start.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads = runtime_threads(std::env::var(RUNTIME_THREADS).ok())?;
    let mut builder = match threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n @ 2..) = threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

/// The thread count `SWARM_RUNTIME_THREADS` asks for; `None` when unset or empty.
fn runtime_threads(value: Option<String>) -> std::io::Result<Option<usize>> {
    match value {
        Some(text) if !text.trim().is_empty() => text.trim().parse().map(Some).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{RUNTIME_THREADS}={text:?} is not a number of threads"),
            )
        }),
        _ => Ok(None),
    }
}

/// Names the async runtime's thread count of a `swarmd` process.
pub const RUNTIME_THREADS: &str = "SWARM_RUNTIME_THREADS";

/// The runtime threads each of `processes` worker processes on this host gets: what
/// `SWARM_RUNTIME_THREADS` says when it is set, else an equal share of the cores.
pub fn threads_per_process(processes: usize) -> usize {
    runtime_threads(std::env::var(RUNTIME_THREADS).ok())
        .ok()
        .flatten()
        .unwrap_or_else(|| share_of_cores(crate::scale::available_cores(), processes))
}

/// `cores` shared out between `processes`, at least one thread each.
fn share_of_cores(cores: usize, processes: usize) -> usize {
    (cores / processes.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_threads_are_read_and_shared_out_between_processes() {
        assert_eq!(runtime_threads(None).unwrap(), None);
        assert_eq!(runtime_threads(Some(" ".into())).unwrap(), None);
        assert_eq!(runtime_threads(Some("1".into())).unwrap(), Some(1));
        let refused = runtime_threads(Some("many".into())).unwrap_err();
        assert!(
            refused.to_string().contains("SWARM_RUNTIME_THREADS"),
            "{refused}"
        );
        assert_eq!(share_of_cores(2, 1), 2);
        assert_eq!(share_of_cores(2, 2), 1);
        assert_eq!(share_of_cores(8, 3), 2);
        assert_eq!(share_of_cores(2, 8), 1, "never fewer than one");
        assert_eq!(share_of_cores(4, 0), 4);
    }
}
