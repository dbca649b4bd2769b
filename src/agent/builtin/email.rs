//! `email`: composes an email draft from a template and variables, and validates it.
//!
//! Input: `{"to": "a@x.org" | ["a@x.org", ...], "from"?: "...", "cc"?: [...],
//! "subject": "Hello {{name}}", "template": "Dear {{name}}, ...", "variables"?: {...}}`.
//! Output: the rendered draft plus `valid` and a list of `problems` (bad addresses,
//! unfilled placeholders, an over-long subject). Input without recipients or template is a
//! permanent error.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::agent::{Agent, AgentContext, AgentError};

/// Longest subject that mail clients show whole.
const MAX_SUBJECT_CHARS: usize = 78;
/// Largest rendered subject or body: placeholders repeated over a large variable could
/// otherwise render gigabytes from a small task.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

pub struct EmailAgent;

#[async_trait]
impl Agent for EmailAgent {
    fn name(&self) -> &'static str {
        "email"
    }

    /// Deterministic: the same input always gives the same result.
    fn cache_ttl(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(3600))
    }

    fn cpu_bound(&self) -> bool {
        true
    }

    async fn run(&self, input: &Value, _context: &AgentContext) -> Result<Value, AgentError> {
        let to = addresses(input.get("to"))
            .filter(|list| !list.is_empty())
            .ok_or_else(|| AgentError::invalid_input("to", "an address or a list of addresses"))?;
        let cc = match input.get("cc") {
            None | Some(Value::Null) => Vec::new(),
            some => addresses(some)
                .ok_or_else(|| AgentError::invalid_input("cc", "a list of addresses"))?,
        };
        let template = input
            .get("template")
            .and_then(Value::as_str)
            .ok_or_else(|| AgentError::invalid_input("template", "a string"))?;
        let subject_template = input.get("subject").and_then(Value::as_str).unwrap_or("");
        let empty = Map::new();
        let variables = match input.get("variables") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(map)) => map,
            Some(_) => return Err(AgentError::invalid_input("variables", "an object")),
        };
        let from = input.get("from").and_then(Value::as_str);

        let mut problems = Vec::new();
        let (subject, unfilled_subject) = render(subject_template, variables)?;
        let (body, unfilled_body) = render(template, variables)?;
        for name in unfilled_subject.iter().chain(&unfilled_body) {
            problems.push(format!("no value for placeholder {{{{{name}}}}}"));
        }
        for address in to.iter().chain(&cc).copied().chain(from) {
            if !valid_address(address) {
                problems.push(format!("invalid address {address:?}"));
            }
        }
        if subject.trim().is_empty() {
            problems.push("subject is empty".to_string());
        } else if subject.chars().count() > MAX_SUBJECT_CHARS {
            problems.push(format!(
                "subject is longer than {MAX_SUBJECT_CHARS} characters"
            ));
        }
        if body.trim().is_empty() {
            problems.push("body is empty".to_string());
        }
        Ok(json!({
            "to": to,
            "cc": cc,
            "from": from,
            "subject": subject,
            "body": body,
            "word_count": super::text::words(&body).len(),
            "valid": problems.is_empty(),
            "problems": problems,
        }))
    }
}

fn addresses(value: Option<&Value>) -> Option<Vec<&str>> {
    match value? {
        Value::String(one) => Some(vec![one.as_str()]),
        Value::Array(many) => many.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// Substitutes `{{ name }}` placeholders; returns the text and the names left unfilled.
///
/// Fails (permanently) when the text would grow past [`MAX_RENDERED_BYTES`].
fn render(
    template: &str,
    variables: &Map<String, Value>,
) -> Result<(String, Vec<String>), AgentError> {
    let too_large = || {
        AgentError::permanent(format!(
            "the rendered email would exceed {MAX_RENDERED_BYTES} bytes"
        ))
    };
    let mut out = String::with_capacity(template.len());
    let mut unfilled = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + 2 + len].trim();
        match variables.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {
                out.push_str(&rest[start..start + len + 4]);
                unfilled.push(name.to_string());
            }
            Some(other) => out.push_str(&other.to_string()),
        }
        if out.len() > MAX_RENDERED_BYTES {
            return Err(too_large());
        }
        rest = &rest[start + len + 4..];
    }
    out.push_str(rest);
    if out.len() > MAX_RENDERED_BYTES {
        return Err(too_large());
    }
    Ok((out, unfilled))
}

/// A practical address check: `local@domain.tld` with sane characters in each part.
pub fn valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> AgentContext {
        AgentContext {
            task_id: uuid::Uuid::nil(),
            attempt: 1,
            max_attempts: 3,
            deadline: std::time::Instant::now(),
            progress: Default::default(),
            checkpoint: None,
            cancellation: Default::default(),
        }
    }

    #[tokio::test]
    async fn composes_and_flags_problems() {
        let out = EmailAgent
            .run(
                &json!({
                    "to": ["ann@example.org", "bad@"],
                    "subject": "Hello {{name}}",
                    "template": "Dear {{ name }}, your order {{order}} ships {{day}}.",
                    "variables": {"name": "Ann", "order": 42}
                }),
                &context(),
            )
            .await
            .unwrap();
        assert_eq!(out["subject"], "Hello Ann");
        assert_eq!(out["body"], "Dear Ann, your order 42 ships {{day}}.");
        assert_eq!(out["valid"], false);
        let problems = out["problems"].to_string();
        assert!(problems.contains("{{day}}"), "{problems}");
        assert!(problems.contains("bad@"), "{problems}");
    }

    #[tokio::test]
    async fn missing_recipient_is_permanent() {
        let err = EmailAgent
            .run(&json!({"template": "x"}), &context())
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Permanent(_)));
    }

    #[test]
    fn addresses() {
        assert!(valid_address("first.last+tag@mail.example.co"));
        for bad in [
            "plain",
            "@x.org",
            "a@b",
            "a@-x.org",
            "a..b@x.org",
            "a@x.c0m",
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
    }
}
