//! Scaling: what the host is doing, who is working, and whether to add or remove workers
//! (the seed's `ResourceManager`), plus sizing a worker from its machine.

mod host;
mod roster;
mod signals;
mod sizing;

pub use host::{HostSampler, HostUsage, available_cores, available_memory_bytes};
pub use roster::{WorkerPresence, answer_roll_calls, roll_call};
pub use signals::{ROLL_CALL_WAIT, ScaleMeter, ScaleSignals};
pub use sizing::{auto_concurrency, concurrency_for, optimal_worker_processes, slots};
