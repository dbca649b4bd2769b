//! `review`: reviews a draft against editorial rules before it is sent.
//!
//! Input: `{"subject"?: "...", "body": "...", "rules"?: {"max_links": 3,
//! "require_greeting": true, "banned_words": ["..."]}}`. Findings with severity `error`
//! (placeholders left, missing subject, banned words) block approval; `warning`s (no
//! greeting, too many or insecure links, shouting) do not.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::text::{is_shouted, words};
use crate::agent::{Agent, AgentContext, AgentError};

const GREETINGS: [&str; 7] = [
    "hi",
    "hello",
    "dear",
    "hey",
    "greetings",
    "good morning",
    "good afternoon",
];
const PLACEHOLDER_MARKERS: [&str; 4] = ["{{", "TODO", "XXX", "lorem ipsum"];

pub struct ReviewAgent;

#[async_trait]
impl Agent for ReviewAgent {
    fn name(&self) -> &'static str {
        "review"
    }

    /// Deterministic: the same input always gives the same result.
    fn cache_ttl(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(3600))
    }

    fn cpu_bound(&self) -> bool {
        true
    }

    async fn run(&self, input: &Value, _context: &AgentContext) -> Result<Value, AgentError> {
        let body = input
            .get("body")
            .and_then(Value::as_str)
            .ok_or_else(|| AgentError::invalid_input("body", "a string"))?;
        let subject = input.get("subject").and_then(Value::as_str).unwrap_or("");
        let rules = Rules::from_input(input.get("rules"))?;
        let findings = review(subject, body, &rules);
        let approved = findings.iter().all(|f| f.severity != "error");
        Ok(json!({
            "approved": approved,
            "findings": findings.iter().map(|f| json!({
                "rule": f.rule, "severity": f.severity, "message": f.message,
            })).collect::<Vec<_>>(),
        }))
    }
}

/// Most banned words one review checks.
const MAX_BANNED_WORDS: usize = 1000;

struct Rules {
    max_links: usize,
    require_greeting: bool,
    banned_words: Vec<String>,
}

impl Rules {
    fn from_input(rules: Option<&Value>) -> Result<Self, AgentError> {
        let get = |key: &str| rules.and_then(|r| r.get(key));
        let banned_words = match get("banned_words") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|w| w.as_str().map(str::to_lowercase))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    AgentError::invalid_input("rules.banned_words", "a list of strings")
                })?,
            Some(_) => {
                return Err(AgentError::invalid_input(
                    "rules.banned_words",
                    "a list of strings",
                ));
            }
        };
        if banned_words.len() > MAX_BANNED_WORDS {
            return Err(AgentError::invalid_input(
                "rules.banned_words",
                "a list of at most 1000 strings",
            ));
        }
        Ok(Self {
            max_links: get("max_links").and_then(Value::as_u64).unwrap_or(3) as usize,
            require_greeting: get("require_greeting")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            banned_words,
        })
    }
}

struct Finding {
    rule: &'static str,
    severity: &'static str,
    message: String,
}

fn review(subject: &str, body: &str, rules: &Rules) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut add = |rule, severity, message: String| {
        findings.push(Finding {
            rule,
            severity,
            message,
        })
    };
    let full = format!("{subject}\n{body}");

    if subject.trim().is_empty() {
        add("subject", "error", "the draft has no subject".into());
    }
    for marker in PLACEHOLDER_MARKERS {
        if full.to_lowercase().contains(&marker.to_lowercase()) {
            add(
                "placeholder",
                "error",
                format!("placeholder text {marker:?} is left in the draft"),
            );
        }
    }
    if let Some(bracketed) = bracketed_placeholder(&full) {
        add(
            "placeholder",
            "error",
            format!("placeholder {bracketed} is left in the draft"),
        );
    }
    let first_line = body
        .trim_start()
        .lines()
        .next()
        .unwrap_or("")
        .to_lowercase();
    if rules.require_greeting && !GREETINGS.iter().any(|g| first_line.starts_with(g)) {
        add(
            "greeting",
            "warning",
            "the body does not open with a greeting".into(),
        );
    }
    let links: Vec<&str> = full
        .split_whitespace()
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .collect();
    if links.len() > rules.max_links {
        add(
            "links",
            "warning",
            format!("{} links (at most {})", links.len(), rules.max_links),
        );
    }
    for link in links.iter().filter(|l| l.starts_with("http://")) {
        add("links", "warning", format!("insecure link {link}"));
    }
    let shouted: Vec<&str> = words(&full).into_iter().filter(|w| is_shouted(w)).collect();
    if shouted.len() >= 2 || full.contains("!!") {
        add(
            "shouting",
            "warning",
            format!(
                "shouting: {} words in capitals{}",
                shouted.len(),
                if full.contains("!!") {
                    ", repeated '!'"
                } else {
                    ""
                }
            ),
        );
    }
    // One pass over the words and one lookup per rule: rules × words would let a large
    // draft with many rules keep a worker busy for minutes.
    let lower_words: std::collections::HashSet<String> =
        words(&full).iter().map(|w| w.to_lowercase()).collect();
    for banned in &rules.banned_words {
        if lower_words.contains(banned) {
            add("banned_word", "error", format!("banned word {banned:?}"));
        }
    }
    findings
}

/// A `[NAME]`-style placeholder: capitals and underscores in square brackets.
fn bracketed_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let close = after.find(']')?;
        let inner = &after[..close];
        if !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c == ' ')
        {
            return Some(&rest[open..open + close + 2]);
        }
        rest = &after[close + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_draft_is_approved() {
        let rules = Rules::from_input(None).unwrap();
        let findings = review(
            "Your order",
            "Hello Ann,\nyour order ships today.\nBest",
            &rules,
        );
        assert!(
            findings.is_empty(),
            "{:?}",
            findings.iter().map(|f| &f.message).collect::<Vec<_>>()
        );
    }

    #[test]
    fn placeholders_shouting_and_links_are_found() {
        let rules =
            Rules::from_input(Some(&json!({"max_links": 1, "banned_words": ["free"]}))).unwrap();
        let body =
            "Dear [CUSTOMER NAME], BUY NOW!! Free stuff at http://a.example https://b.example";
        let rules_hit: Vec<&str> = review("", body, &rules).iter().map(|f| f.rule).collect();
        for rule in ["subject", "placeholder", "shouting", "links", "banned_word"] {
            assert!(
                rules_hit.contains(&rule),
                "{rule} missing from {rules_hit:?}"
            );
        }
    }
}
