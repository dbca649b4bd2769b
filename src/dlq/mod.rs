//! Dead letters: tasks that will not run again and messages that never became tasks, kept
//! in their own JetStream stream with everything needed to understand and replay them.

mod record;
mod replay;
mod stream;

pub use record::{DeadLetter, DeadReason, RawMessage, Source};
pub use replay::{ReplayError, replay, replay_envelope};
pub use stream::{DeadLetterStream, DlqError, Filter, PAGE_SCAN_LIMIT, Page, StoredDeadLetter};
