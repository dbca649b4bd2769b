//! Built-in agents, one per file. `email`, `quality` and `review` do real, deterministic
//! work named after the seed's agents; `echo`, `sleep` and `fail` serve tests and benchmarks;
//! `crash` (opt-in) aborts the process for fault drills.

mod crash;
mod echo;
mod email;
mod fail;
mod quality;
mod review;
mod sleep;
mod text;

pub use crash::CrashAgent;
pub use echo::EchoAgent;
pub use email::EmailAgent;
pub use fail::FailAgent;
pub use quality::QualityAgent;
pub use review::ReviewAgent;
pub use sleep::SleepAgent;
