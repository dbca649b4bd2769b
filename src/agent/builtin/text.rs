//! Plain-text measures shared by the text agents: words, sentences and syllables.

/// The words of `text`: runs of letters, digits and apostrophes.
pub fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Sentences, counted by their terminators; a text without one is one sentence.
pub fn sentence_count(text: &str) -> usize {
    let mut count = 0;
    let mut in_terminator = false;
    for c in text.chars() {
        let terminator = matches!(c, '.' | '!' | '?');
        if terminator && !in_terminator {
            count += 1;
        }
        in_terminator = terminator;
    }
    let trailing_words = text
        .rsplit(['.', '!', '?'])
        .next()
        .is_some_and(|tail| tail.chars().any(char::is_alphanumeric));
    (count + usize::from(trailing_words)).max(1)
}

/// English syllables by vowel groups, with a silent final `e`; at least one per word.
pub fn syllables(word: &str) -> usize {
    let lower = word.to_lowercase();
    let mut count = 0;
    let mut previous_vowel = false;
    for c in lower.chars() {
        let vowel = matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y');
        if vowel && !previous_vowel {
            count += 1;
        }
        previous_vowel = vowel;
    }
    if lower.ends_with('e') && !lower.ends_with("le") && count > 1 {
        count -= 1;
    }
    count.max(1)
}

/// A word in capitals that is long enough to read as shouting (not "I" or "OK").
pub fn is_shouted(word: &str) -> bool {
    word.chars().filter(|c| c.is_alphabetic()).count() >= 3
        && word.chars().all(|c| !c.is_alphabetic() || c.is_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(
            words("Hello, world! It's fine."),
            vec!["Hello", "world", "It's", "fine"]
        );
        assert_eq!(sentence_count("One. Two! Three"), 3);
        assert_eq!(sentence_count("Wait..."), 1);
        assert_eq!(syllables("readability"), 5);
        assert_eq!(syllables("the"), 1);
        assert!(is_shouted("FREE"));
        assert!(!is_shouted("OK"));
    }
}
