//! The wire contract: what a task looks like on the broker, and how its bytes are read.
//! `schemas/task-envelope.schema.json` is the same contract for other languages.

mod agent_filter;
mod attempt_error;
mod codec;
mod envelope;
mod payload_ref;
#[cfg(test)]
mod properties;

pub use agent_filter::AgentFilter;
pub use attempt_error::AttemptError;
pub use codec::{Codec, DecodeError, EncodeError};
pub use envelope::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, EnvelopeError, MAX_DATA_DEPTH, MAX_PRIORITY,
    MAX_TIMEOUT_SECS, TaskEnvelope, WAIT_OUT_UP_TO, check_value, integral, valid_agent_type,
};
pub use payload_ref::PayloadRef;
