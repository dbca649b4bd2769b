//! A claim check: where a large value (a task's data, an agent's result) was put instead of
//! riding in the message or the row — an object of the fleet's JetStream Object Store
//! bucket, holding the value's JSON text.

use serde::{Deserialize, Serialize};

/// Longest object name accepted in a reference.
const MAX_NAME_CHARS: usize = 256;

/// Where a value was stored, and how big it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadRef {
    /// Object Store bucket (`<tasks stream>_PAYLOADS`).
    pub bucket: String,
    /// Object name (`<task id>.data`, `<task id>.result`).
    pub name: String,
    /// Bytes of the stored JSON text.
    pub size: u64,
}

impl PayloadRef {
    /// Whether the reference could name an object: a bucket name JetStream accepts and a
    /// name of printable characters.
    pub fn is_well_formed(&self) -> bool {
        let bucket_ok = !self.bucket.is_empty()
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let name_ok = (1..=MAX_NAME_CHARS).contains(&self.name.chars().count())
            && !self.name.chars().any(char::is_control);
        bucket_ok && name_ok
    }
}
