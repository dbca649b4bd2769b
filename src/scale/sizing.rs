//! Sizing from the machine: how many worker processes a host should run (the seed's
//! `get_optimal_worker_count`) and how many tasks one process should run at once.

use super::host::{available_cores, available_memory_bytes};
use crate::config::Concurrency;

/// In-flight tasks per core for `--concurrency auto` (the default). Agents mostly wait on I/O
/// (model calls, mail servers), so one core keeps many busy; and a worker's throughput is
/// its slots divided by the time one task spends between fetch and ack (a few ms of claim,
/// commit and ack round trips even for no work), so too few slots starve the pipeline:
/// measured 2026-11-30, two workers burn down 11,000 tasks/s with 64 slots and 19,000 with
/// 256. CPU-bound agents do not get a thread per slot: they share permits, two per core.
const TASKS_PER_CORE: usize = 128;

/// Memory reserved per in-flight task: a task body may be 1 MiB and is held while it runs,
/// together with its result and its copy in the commit batch.
const BYTES_PER_TASK: u64 = 4 * 1024 * 1024;

/// The seed's rule for worker processes on one host: one per two cores or per 4 GiB of
/// memory, whichever allows fewer, and at least one.
pub fn optimal_worker_processes(cores: usize, memory_bytes: u64) -> usize {
    let cpu_workers = (cores / 2).max(1);
    let memory_workers = ((memory_bytes / (1 << 30)) / 4).max(1) as usize;
    cpu_workers.min(memory_workers)
}

/// In-flight tasks for one process: [`TASKS_PER_CORE`] per core, no more than memory
/// allows, between 8 and 1024.
pub fn concurrency_for(cores: usize, memory_bytes: u64) -> usize {
    let by_cpu = cores * TASKS_PER_CORE;
    let by_memory = (memory_bytes / BYTES_PER_TASK) as usize;
    by_cpu.min(by_memory).clamp(8, 1024)
}

/// `--concurrency auto` on this machine.
pub fn auto_concurrency() -> usize {
    concurrency_for(available_cores(), available_memory_bytes())
}

/// The task slots a concurrency setting gives on this machine.
pub fn slots(setting: Concurrency) -> usize {
    match setting {
        Concurrency::Auto => auto_concurrency(),
        Concurrency::Fixed(n) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn worker_processes_follow_the_seed() {
        // 2 cores, 24 GiB (this machine): one process.
        assert_eq!(optimal_worker_processes(2, 24 * GIB), 1);
        assert_eq!(optimal_worker_processes(16, 64 * GIB), 8);
        // Memory-bound: 16 cores but 8 GiB.
        assert_eq!(optimal_worker_processes(16, 8 * GIB), 2);
        assert_eq!(optimal_worker_processes(1, GIB / 2), 1);
    }

    #[test]
    fn concurrency_scales_with_cores_and_is_capped_by_memory() {
        assert_eq!(concurrency_for(2, 24 * GIB), 256);
        assert_eq!(concurrency_for(8, 24 * GIB), 1024);
        assert_eq!(concurrency_for(1, 24 * GIB), 128);
        // A 256 MiB pod can hold 64 tasks of the largest size.
        assert_eq!(concurrency_for(8, GIB / 4), 64);
        assert_eq!(concurrency_for(1, 16 * 1024 * 1024), 8);
        assert_eq!(concurrency_for(128, 1024 * GIB), 1024);
        assert!(auto_concurrency() >= 8);
    }
}
