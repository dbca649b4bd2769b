//! Sizing from the machine: how many worker processes a host should run (the seed's
//! `get_optimal_worker_count`, with our measured rule) and how many tasks one process should
//! run at once.

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

/// Worker processes for one host: one per core, at most one per GiB of memory, at least
/// one. The seed's `get_optimal_worker_count` ran one per two cores; measured here
/// (2026-12-01, docs/performance.md), one process per core with one runtime thread each
/// burns down 1.5× what one process with a thread per core does, since a message is never
/// handed between threads.
pub fn optimal_worker_processes(cores: usize, memory_bytes: u64) -> usize {
    let memory_workers = (memory_bytes / (1 << 30)) as usize;
    cores.min(memory_workers).max(1)
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
    fn one_worker_process_per_core_within_memory() {
        // 2 cores, 24 GiB (this machine): two processes.
        assert_eq!(optimal_worker_processes(2, 24 * GIB), 2);
        assert_eq!(optimal_worker_processes(16, 64 * GIB), 16);
        // Memory-bound: 16 cores but 8 GiB.
        assert_eq!(optimal_worker_processes(16, 8 * GIB), 8);
        assert_eq!(optimal_worker_processes(1, GIB / 2), 1);
        assert_eq!(optimal_worker_processes(4, GIB / 2), 1);
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
