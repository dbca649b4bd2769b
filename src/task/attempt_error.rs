//! One failed attempt of a task, as kept in its row, its dead letter and the legacy mirror.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub error: String,
    pub at: DateTime<Utc>,
}
