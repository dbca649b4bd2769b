//! `quality`: scores a text 0-100 with a breakdown.
//!
//! Input: `{"text": "..."}`. The score weighs readability (Flesch reading ease), length
//! (50-300 words reads best for a message) and repetition (share of distinct words).

use std::collections::HashSet;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::text::{sentence_count, syllables, words};
use crate::agent::{Agent, AgentContext, AgentError};

const IDEAL_WORDS: std::ops::RangeInclusive<usize> = 50..=300;

pub struct QualityAgent;

#[async_trait]
impl Agent for QualityAgent {
    fn name(&self) -> &'static str {
        "quality"
    }

    /// Deterministic: the same input always gives the same result.
    fn cache_ttl(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(3600))
    }

    fn cpu_bound(&self) -> bool {
        true
    }

    async fn run(&self, input: &Value, _context: &AgentContext) -> Result<Value, AgentError> {
        let text = input
            .get("text")
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| AgentError::invalid_input("text", "a non-empty string"))?;
        Ok(score(text))
    }
}

fn score(text: &str) -> Value {
    let words = words(text);
    let word_count = words.len().max(1) as f64;
    let sentences = sentence_count(text) as f64;
    let syllable_count: usize = words.iter().map(|w| syllables(w)).sum();
    let flesch =
        206.835 - 1.015 * (word_count / sentences) - 84.6 * (syllable_count as f64 / word_count);
    let readability = flesch.clamp(0.0, 100.0);

    let length = if IDEAL_WORDS.contains(&words.len()) {
        100.0
    } else if words.len() < *IDEAL_WORDS.start() {
        100.0 * words.len() as f64 / *IDEAL_WORDS.start() as f64
    } else {
        (100.0 * *IDEAL_WORDS.end() as f64 / words.len() as f64).max(20.0)
    };

    let distinct: HashSet<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let distinct_ratio = distinct.len() as f64 / word_count;
    // Natural prose repeats function words; at 60 % distinct words or more nothing is lost.
    let repetition = (distinct_ratio / 0.6 * 100.0).min(100.0);

    let total = 0.4 * readability + 0.3 * length + 0.3 * repetition;
    let round = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "score": total.round() as u32,
        "breakdown": {
            "readability": round(readability),
            "length": round(length),
            "repetition": round(repetition),
        },
        "stats": {
            "words": words.len(),
            "sentences": sentences as usize,
            "flesch_reading_ease": round(flesch),
            "distinct_word_ratio": round(distinct_ratio * 100.0) / 100.0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_text_beats_repetitive_text() {
        let clear = "The team shipped the new release today. It fixes the login bug and makes \
            search faster. Please update your app and tell us what you think. We read every \
            message and reply within a day. Thanks for helping us build a better product for \
            everyone who relies on it each week.";
        let repetitive = "buy buy buy buy buy buy buy buy buy buy now now now now now";
        let good = score(clear)["score"].as_u64().unwrap();
        let bad = score(repetitive)["score"].as_u64().unwrap();
        assert!(good > bad, "{good} <= {bad}");
        assert!(good <= 100);
        assert_eq!(score(clear)["stats"]["sentences"], 5);
    }
}
