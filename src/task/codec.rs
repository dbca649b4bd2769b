//! Envelope bytes: JSON or MessagePack (a map with named fields), told apart by the
//! `Content-Type` header so producers in any language can pick either.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::TaskEnvelope;

/// A body encoding of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    MessagePack,
}

/// Why bytes could not become an envelope.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown content type {0:?} (expected application/json or application/msgpack)")]
    ContentType(String),
    #[error("body is not a valid JSON task envelope: {0}")]
    Json(String),
    #[error("body is not a valid MessagePack task envelope: {0}")]
    MessagePack(String),
}

/// Why an envelope could not become bytes.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode envelope as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode envelope as MessagePack: {0}")]
    MessagePack(#[from] rmp_serde::encode::Error),
}

impl Codec {
    /// The `Content-Type` header value producers send with this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::MessagePack => "application/msgpack",
        }
    }

    /// The codec a `Content-Type` header names. Without a header the body decides: JSON
    /// objects start with `{`, anything else is read as MessagePack.
    pub fn for_message(content_type: Option<&str>, body: &[u8]) -> Result<Codec, DecodeError> {
        let Some(raw) = content_type else {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            return Ok(if first == Some(&b'{') {
                Codec::Json
            } else {
                Codec::MessagePack
            });
        };
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(Codec::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(Codec::MessagePack)
            }
            _ => Err(DecodeError::ContentType(raw.to_string())),
        }
    }

    pub fn encode(self, task: &TaskEnvelope) -> Result<Bytes, EncodeError> {
        match self {
            Codec::Json => Ok(serde_json::to_vec(task)?.into()),
            Codec::MessagePack => {
                let mut buf = Vec::with_capacity(256);
                // Named fields and string ids/timestamps, so any msgpack library reads it.
                let mut ser = rmp_serde::Serializer::new(&mut buf)
                    .with_struct_map()
                    .with_human_readable();
                task.serialize(&mut ser)?;
                Ok(buf.into())
            }
        }
    }

    /// Whether `body` is a well-formed document in this encoding, whatever its shape.
    pub fn is_well_formed(self, body: &[u8]) -> bool {
        match self {
            Codec::Json => serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
            Codec::MessagePack => rmp_serde::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
        }
    }

    /// Reads an envelope. The error names the offending field (`priority: invalid type ...`).
    pub fn decode(self, body: &[u8]) -> Result<TaskEnvelope, DecodeError> {
        // Tracking the path costs a tenth of the decoding: it is only done again for the
        // error of a body that failed.
        match self {
            Codec::Json => {
                let mut de = serde_json::Deserializer::from_slice(body);
                TaskEnvelope::deserialize(&mut de).or_else(|_| {
                    let mut de = serde_json::Deserializer::from_slice(body);
                    serde_path_to_error::deserialize(&mut de)
                        .map_err(|e| DecodeError::Json(located(e.path(), e.inner())))
                })
            }
            Codec::MessagePack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(body).with_human_readable();
                TaskEnvelope::deserialize(&mut de).or_else(|_| {
                    let mut de = rmp_serde::Deserializer::from_read_ref(body).with_human_readable();
                    serde_path_to_error::deserialize(&mut de)
                        .map_err(|e| DecodeError::MessagePack(located(e.path(), e.inner())))
                })
            }
        }
    }
}

fn located(path: &serde_path_to_error::Path, error: &impl std::fmt::Display) -> String {
    match path.to_string().as_str() {
        "." | "" => error.to_string(),
        field => format!("{field}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> TaskEnvelope {
        let mut task = TaskEnvelope::new("email", json!({"to": "a@b.c", "n": [1, 2.5, null]}));
        task.timeout = Some(1.5);
        task.idempotency_key = Some("k-1".into());
        task
    }

    #[test]
    fn both_codecs_round_trip() {
        for codec in [Codec::Json, Codec::MessagePack] {
            let task = sample();
            let bytes = codec.encode(&task).unwrap();
            assert_eq!(codec.decode(&bytes).unwrap(), task, "{codec:?}");
        }
    }

    #[test]
    fn messagepack_is_a_map_with_string_id() {
        let task = sample();
        let bytes = Codec::MessagePack.encode(&task).unwrap();
        // Read it back as a generic value, as another language would.
        let value: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(value["id"], json!(task.id.to_string()));
        assert_eq!(value["agent_type"], json!("email"));
    }

    #[test]
    fn errors_name_the_field() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["priority"] = json!("high");
        let body = serde_json::to_vec(&value).unwrap();
        let err = Codec::Json.decode(&body).unwrap_err().to_string();
        assert!(err.contains("priority: invalid type"), "{err}");
        let packed = rmp_serde::to_vec_named(&value).unwrap();
        let err = Codec::MessagePack.decode(&packed).unwrap_err().to_string();
        assert!(err.contains("priority"), "{err}");
    }

    #[test]
    fn content_type_selects_the_codec() {
        assert_eq!(
            Codec::for_message(Some("application/json; charset=utf-8"), b"").unwrap(),
            Codec::Json
        );
        assert_eq!(
            Codec::for_message(Some("application/msgpack"), b"").unwrap(),
            Codec::MessagePack
        );
        assert_eq!(Codec::for_message(None, b" {}").unwrap(), Codec::Json);
        assert_eq!(
            Codec::for_message(None, &[0x85]).unwrap(),
            Codec::MessagePack
        );
        assert!(matches!(
            Codec::for_message(Some("text/plain"), b"{}"),
            Err(DecodeError::ContentType(_))
        ));
    }
}
