//! JetStream, the fleet's source of work: subject names, stream and consumer setup,
//! publishing envelopes, pulling them highest priority first, and finding messages stored
//! on subjects no lane reads (strays).

mod backlog;
mod cancellations;
mod connection;
mod delayed;
mod doorbell;
mod error;
mod lane_counts;
mod lanes;
mod payloads;
mod publisher;
mod puller;
mod results;
mod server_version;
mod strays;
mod stream_setup;
mod subjects;

pub use backlog::{Backlog, LaneBacklog, PriorityBacklog};
pub use cancellations::CancelNotice;
pub use connection::Broker;
pub use delayed::DelayedCounts;
pub use doorbell::{Doorbell, Rung};
pub use error::{BrokerError, NatsError};
pub use lanes::Priorities;
pub use lanes::lane_name;
pub use payloads::PayloadError;
pub use publisher::{PublishOptions, PublishReceipt, headers};
pub use puller::PriorityPuller;
pub use results::{Announcement, OutcomeWatch, TaskOutcome};
pub use server_version::ServerVersion;
pub use strays::STRAY_BATCH;
pub(crate) use stream_setup::ensure as ensure_stream_config;
pub use subjects::Subjects;
