//! JetStream, the fleet's source of work: subject names, stream and consumer setup,
//! publishing envelopes, and pulling them highest priority first.

mod backlog;
mod connection;
mod error;
mod lanes;
mod publisher;
mod puller;
mod subjects;

pub use backlog::{Backlog, LaneBacklog, PriorityBacklog};
pub use connection::Broker;
pub use error::BrokerError;
pub use lanes::{AgentFilter, lane_name};
pub use publisher::{PublishReceipt, headers};
pub use puller::{Doorbell, Priorities, PriorityPuller};
pub use subjects::Subjects;
