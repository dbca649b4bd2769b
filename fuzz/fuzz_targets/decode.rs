//! Any bytes on any subject, with any content type: the worker's decode and validation
//! must return a task or a rejection with a reason, never panic, and a rejection's dead
//! letter must fit the broker's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_director::{
    broker::Subjects,
    dlq::{DeadLetter, DeadReason, RawMessage, Source},
    task::Codec,
    worker::delivery,
};

fuzz_target!(|input: &[u8]| {
    let (selector, body) = input.split_first().unwrap_or((&0, &[]));
    let content_type = match selector % 4 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("application/msgpack"),
        _ => Some("text/plain"),
    };
    let subjects = Subjects::new("swarm");
    let subject = if selector & 4 == 0 { "swarm.tasks.p5.echo" } else { "swarm.tasks.p05.echo" };
    match delivery::decode(&subjects, subject, content_type, body, 1 << 20) {
        Ok(task) => {
            // What decodes and validates encodes again in both codecs.
            for codec in [Codec::Json, Codec::MessagePack] {
                let bytes = codec.encode(&task).expect("a valid task encodes");
                codec.decode(&bytes).expect("and decodes again");
            }
        }
        Err(rejection) => {
            let mut letter = DeadLetter {
                id: uuid::Uuid::nil(),
                agent_type: "echo".into(),
                reason: rejection.reason,
                error: rejection.error,
                attempts: Vec::new(),
                envelope: None,
                raw: Some(RawMessage::new(serde_json::Value::Null, body, usize::MAX)),
                source: Source {
                    stream: "S".into(),
                    stream_sequence: 1,
                    subject: subject.into(),
                    delivered: 1,
                },
                worker_id: "fuzz".into(),
                dead_at: chrono::Utc::now(),
                trace_id: None,
                traceparent: None,
                truncated: false,
                original_sizes: Default::default(),
            };
            let limit = 4096;
            if let Some(encoded) = letter.encode_within(limit) {
                assert!(encoded.len() <= limit);
            }
            assert_ne!(letter.reason, DeadReason::MaxDeliveries);
        }
    }
});
